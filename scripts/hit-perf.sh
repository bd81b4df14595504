#!/usr/bin/env bash
# Where a pinned hit's time goes: the gateway on CPU 0 (one tokio worker) and
# wrk on CPU 1 as in scripts/hit-wrk.sh, `perf record` of the gateway for 3 s
# of a 6 s wrk run, then microseconds per request in the kernel and in user
# space (hits/s of the run split by where the samples fell), for the hit and
# for the floor (the admin `/healthz`). With KEEP=DIR the perf.data files
# stay in DIR for `perf report` (dwarf call graphs).
#
# usage: scripts/hit-perf.sh BINDIR
#   needs perf, wrk and taskset
set -euo pipefail
BIN=${1:?usage: scripts/hit-perf.sh BINDIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/hit-common.sh
. "$ROOT/scripts/hit-common.sh"
require hit-perf "Debian: apt-get install linux-perf wrk util-linux" perf wrk taskset
OUT=${KEEP:-$(mktemp -d)}
mkdir -p "$OUT"
SERVER_CPU=0 LOAD_CPU=1
start_hit_stack
trap 'kill -INT $G $O 2>/dev/null; wait $G $O 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$OUT"' EXIT
wait_ready "http://127.0.0.1:$OP/metrics" "http://127.0.0.1:$AP/readyz"
curl -sf -o /dev/null "http://127.0.0.1:$GP/items/1"
for row in "hit http://127.0.0.1:$GP/items/1" "floor http://127.0.0.1:$AP/healthz"; do
  # shellcheck disable=SC2086
  set -- $row
  taskset -c 1 wrk -t1 -c50 -d2s "$2" >/dev/null
  taskset -c 1 wrk -t1 -c50 -d6s "$2" >"$OUT/$1.wrk" & W=$!
  sleep 1
  perf record -F 1999 --call-graph dwarf,16384 -p "$G" -o "$OUT/$1.perf.data" -- sleep 3 >/dev/null 2>&1
  wait $W
  rps=$(awk '/Requests\/sec/ {print $2}' "$OUT/$1.wrk")
  kernel=$(perf report -i "$OUT/$1.perf.data" --no-children --sort dso --stdio -g none 2>/dev/null |
    awk '/\[kernel.kallsyms\]/ {gsub("%", "", $1); print $1; exit}')
  python3 -c "import sys; rps, k = float(sys.argv[2]), float(sys.argv[3]); per = 1e6 / rps
print(f'{sys.argv[1]}: {rps:.0f} requests/s, {per:.2f} us per request: kernel {per * k / 100:.2f}, user space {per * (100 - k) / 100:.2f}')" "$1" "$rps" "$kernel"
done
