#!/usr/bin/env bash
# The demo: build in release, then run the mitigation ladder on embedded
# defaults (in-process origin database: SQLite; gateways; a redis-server on a
# free port for the fleet rungs when one is installed). Writes
# docs/results/RESULTS.md, results.json and the charts. Extra arguments go
# to `stampede-bench ladder` (see `--help`).
#
# The peers rung (9) compares against nginx and Varnish. When they are missing
# and apt-get is available (as root, or through passwordless sudo), this
# script installs them from Debian's packages first (`--no-install-recommends`);
# set STAMPEDE_NO_INSTALL=1 to skip that. The ladder itself never installs
# anything: without them it reports the peers rung as skipped, with the reason.
set -euo pipefail
cd "$(dirname "$0")/.."

have() {
    command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ]
}

install_peers() {
    local missing=()
    have nginx || missing+=(nginx)
    have varnishd || missing+=(varnish)
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ -n "${STAMPEDE_NO_INSTALL:-}" ]; then
        echo "demo: ${missing[*]} not installed (STAMPEDE_NO_INSTALL set): the peers rung skips them" >&2
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "demo: ${missing[*]} not installed and apt-get is not available: the peers rung skips them" >&2
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            sudo=(sudo -n)
        else
            echo "demo: ${missing[*]} not installed, and installing needs root (or passwordless sudo): the peers rung skips them" >&2
            return 0
        fi
    fi
    # The packages' own services would listen on :80 / :6081. Keep them from
    # starting while we install (a policy-rc.d that denies starts, only when
    # the system has none of its own; removed again right after). The ladder
    # runs its own instances on free loopback ports either way, and never
    # touches a service it did not start.
    local policy=/usr/sbin/policy-rc.d created=""
    if [ ! -e "$policy" ] && printf '#!/bin/sh\nexit 101\n' | "${sudo[@]}" tee "$policy" >/dev/null 2>&1; then
        "${sudo[@]}" chmod 755 "$policy"
        created=1
        trap '"${sudo[@]}" rm -f "$policy"' EXIT INT TERM
    fi
    echo "demo: installing ${missing[*]} from Debian's packages for the peers rung (apt-get install --no-install-recommends)" >&2
    if "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
        echo "demo: installed ${missing[*]}" >&2
    else
        echo "demo: installing ${missing[*]} failed: continuing; the peers rung reports them as skipped" >&2
    fi
    if [ -n "$created" ]; then
        "${sudo[@]}" rm -f "$policy"
        trap - EXIT INT TERM
    fi
}

install_peers
cargo build --release --workspace --bins --locked
exec target/release/stampede-bench ladder "$@"
