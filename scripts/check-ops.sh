#!/usr/bin/env bash
# Checks the operations files: Prometheus config, alert rules and their unit
# tests, compose.yaml, Grafana provisioning and the dashboard (that the
# committed JSON is what grafana/dashboard.py generates, that its PromQL parses
# and every metric it names is in the README metrics section); and that no
# relative link in the repository's markdown is dead.
#
#   scripts/check-ops.sh          (from anywhere; it cd's to the repo root)
#
# Needs promtool (Debian/Ubuntu: `apt-get install prometheus`, or the
# prometheus release tarball), python3 with PyYAML (Debian: python3-yaml) and
# pip (Debian: python3-pip; scripts/dashboard.sh installs the Grafana SDK with it
# under target/); scripts/test.sh installs all of them.
# Exit status 0 = all checks passed; the first failing step stops the run.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONDONTWRITEBYTECODE=1

die() {
    echo "check-ops: FAILED: $*" >&2
    exit 1
}

if ! command -v promtool >/dev/null 2>&1; then
    cat >&2 <<'MSG'
check-ops: FAILED: promtool not found on PATH.
  It validates prometheus.yml and alerts.yml and runs the alert unit tests.
  Install it:  apt-get install -y prometheus    (Debian/Ubuntu, ships /usr/bin/promtool)
           or  the promtool binary from https://prometheus.io/download/
MSG
    exit 1
fi
command -v python3 >/dev/null 2>&1 || die "python3 not found on PATH (needed for the compose and dashboard checks)"

step() {
    local what=$1
    shift
    echo "==> ${what}"
    "$@" || die "${what} (command: $*)"
}

echo "check-ops: $(promtool --version 2>&1 | head -n1)"
# check config also loads and checks the rule_files it names (alerts.yml).
step "promtool check config prometheus.yml" promtool check config prometheus.yml
step "promtool check rules alerts.yml" promtool check rules alerts.yml
step "promtool test rules alerts_test.yml" promtool test rules alerts_test.yml
step "compose.yaml + prometheus.yml targets + grafana provisioning" \
    python3 scripts/check_compose.py compose.yaml --prometheus prometheus.yml
step "dashboard JSON = grafana/dashboard.py output" bash scripts/dashboard.sh --check
tmp=$(mktemp -d)
trap 'rm -rf "${tmp}"' EXIT
step "dashboard, alert annotations/runbook links/test coverage, metric names vs the README metrics section" \
    python3 scripts/check_dashboard.py --promql-rules "${tmp}/dashboard-exprs.json"
# promtool parses the dashboard's PromQL too: each panel expr becomes a recording rule.
step "promtool check rules <dashboard exprs>" promtool check rules "${tmp}/dashboard-exprs.json"
step "relative links in the markdown files" python3 scripts/check_links.py
echo "check-ops: all checks passed"
