#!/usr/bin/env bash
# Generates the Grafana dashboard from grafana/dashboard.py (dashboard as code).
#
#   scripts/dashboard.sh           regenerate grafana/dashboards/stampede.json
#   scripts/dashboard.sh --check   regenerate into a temp file; fail on any
#                                  difference from the committed JSON
#
# The generator needs grafana-foundation-sdk (pinned in grafana/requirements.txt).
# It is installed from PyPI with pip into target/ops-python/<hash of the
# requirements>/ on first use and reused after that; nothing is installed into
# the system's Python. Needs python3 >= 3.11 with pip (Debian: python3-pip;
# scripts/test.sh installs it). Fails loudly when the install fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PYTHONDONTWRITEBYTECODE=1

die() {
  echo "dashboard: FAILED: $*" >&2
  exit 1
}

python=""
for candidate in python3 /usr/bin/python3; do
  if "$candidate" -c 'import sys; assert sys.version_info >= (3, 11)' 2>/dev/null &&
    "$candidate" -m pip --version >/dev/null 2>&1; then
    python=$candidate
    break
  fi
done
[ -n "$python" ] || die "no python3 >= 3.11 with pip found (Debian: apt-get install python3 python3-pip)"

req=grafana/requirements.txt
stamp=$(sha256sum "$req" | cut -c1-16)
lib=target/ops-python/$stamp
if [ ! -f "$lib/.complete" ]; then
  echo "dashboard: installing $(grep -v '^#' "$req" | xargs) into $lib (pip, PyPI)" >&2
  rm -rf "$lib" "$lib.partial"
  mkdir -p "$(dirname "$lib")"
  PIP_ROOT_USER_ACTION=ignore "$python" -m pip install --quiet --disable-pip-version-check --no-input \
    --no-cache-dir --target "$lib.partial" -r "$req" >&2 ||
    die "pip could not install $req into $lib.partial (PyPI unreachable?); the dashboard cannot be generated without it"
  touch "$lib.partial/.complete"
  mv "$lib.partial" "$lib"
fi

out=grafana/dashboards/stampede.json
if [ "${1:-}" = "--check" ]; then
  tmp=$(mktemp)
  trap 'rm -f "$tmp"' EXIT
  PYTHONPATH="$lib" "$python" grafana/dashboard.py "$tmp" || die "grafana/dashboard.py failed"
  diff -u "$out" "$tmp" >&2 ||
    die "$out is not what grafana/dashboard.py generates: edit grafana/dashboard.py, run scripts/dashboard.sh, commit both"
  echo "dashboard: $out is up to date with grafana/dashboard.py"
else
  PYTHONPATH="$lib" "$python" grafana/dashboard.py "$out" || die "grafana/dashboard.py failed"
  echo "dashboard: wrote $out"
fi
