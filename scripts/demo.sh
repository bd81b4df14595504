#!/usr/bin/env bash
# The demo: build in release, then run the mitigation ladder on embedded
# defaults (origin-sim with its SQLite database, gateways, a redis-server on a
# free port for the fleet rows), all on 127.0.0.1.
#
#   ./scripts/demo.sh          quick profile: the headline rows of the
#                              before/after table (naive … full stack, 3
#                              gateways on one Redis), 10 s each — about a
#                              minute after the build. Prints the headline
#                              table; writes target/ladder-quick/QUICK.md
#                              (never the committed results).
#   ./scripts/demo.sh --full   every rung (about 15 minutes): regenerates
#                              docs/results/RESULTS.md, results.json, charts.
#
# Further arguments go to `stampede-bench ladder` (see its --help).
#
# What the chosen profile needs and is missing (redis-server; for --full also
# nginx and Varnish, the peers and hit-path rungs) is installed from Debian's
# packages when apt-get is available (as root, or through passwordless sudo),
# with `--no-install-recommends`; set STAMPEDE_NO_INSTALL=1 to skip that. The ladder
# itself never installs anything: without them it reports those rows as
# skipped, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=quick
if [ "${1:-}" = "--full" ]; then
    profile=full
    shift
elif [ "${1:-}" = "--quick" ]; then
    shift
fi

have() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ]
}

# install BINARY:PACKAGE...: install the packages whose binary is missing.
install() {
    local missing=() pair
    for pair in "$@"; do
        have "${pair%%:*}" || missing+=("${pair#*:}")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ -n "${STAMPEDE_NO_INSTALL:-}" ]; then
        echo "demo: ${missing[*]} not installed (STAMPEDE_NO_INSTALL set): their rows are skipped" >&2
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "demo: ${missing[*]} not installed and apt-get is not available: their rows are skipped" >&2
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            echo "demo: ${missing[*]} not installed, and installing needs root (or passwordless sudo): their rows are skipped" >&2
            return 0
        fi
    fi
    # The packages' own services would listen on :80 / :6081 / :6379. Keep
    # them from starting while we install (a policy-rc.d that denies starts,
    # only when the system has none of its own; removed again right after).
    # The ladder runs its own instances on free loopback ports either way, and
    # never touches a service it did not start.
    local policy=/usr/sbin/policy-rc.d created=""
    if [ ! -e "$policy" ] && printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null 2>&1; then
        "${sudo[@]}" chmod 755 "$policy"
        created=1
        trap '"${sudo[@]}" rm -f "$policy"' EXIT INT TERM
    fi
    echo "demo: installing ${missing[*]} from Debian's packages (apt-get install --no-install-recommends)" >&2
    if "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
        echo "demo: installed ${missing[*]}" >&2
    else
        echo "demo: installing ${missing[*]} failed: continuing; their rows are reported as skipped" >&2
    fi
    if [ -n "$created" ]; then
        "${sudo[@]}" rm -f "$policy"
        trap - EXIT INT TERM
    fi
}

if [ "$profile" = full ]; then
    install redis-server:redis-server nginx:nginx varnishd:varnish
else
    install redis-server:redis-server
fi
cargo build --release --workspace --bins --locked
exec target/release/stampede-bench ladder --profile "$profile" "$@"
