#!/usr/bin/env bash
# User-space instructions per request of the gateway's hit and of its floor
# (the admin `/healthz`), counted by callgrind: a before/after measure of the
# hit path that, unlike time, does not move with the machine's load
# (issue #22). origin-sim and one gateway (in-process store, --mitigations
# all, --ttl 1h, one tokio worker) under valgrind on free 127.0.0.1 ports;
# the hot key is filled, then per row: wrk for 1 s (warm-up), counters zeroed,
# wrk -t1 -c50 for 3 s, counters dumped; instructions ÷ requests. The
# kernel's work is not counted (see scripts/hit-perf.sh for that split).
# With KEEP=DIR the counts stay in DIR/hit.callgrind and DIR/floor.callgrind
# (`callgrind_annotate --inclusive=yes DIR/hit.callgrind`: cost per function).
#
# usage: scripts/hit-callgrind.sh BINDIR
#   needs valgrind and wrk (Debian: apt-get install valgrind wrk)
set -euo pipefail
BIN=${1:?usage: scripts/hit-callgrind.sh BINDIR}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=scripts/hit-common.sh
. "$ROOT/scripts/hit-common.sh"
require hit-callgrind "Debian: apt-get install valgrind wrk" valgrind callgrind_control wrk
OUT=$(mktemp -d)
GATEWAY_WRAP="env TOKIO_WORKER_THREADS=1 valgrind --tool=callgrind --callgrind-out-file=$OUT/cg.%p"
start_hit_stack
trap 'kill -INT $G $O 2>/dev/null; wait $G $O 2>/dev/null; rm -rf "$OUT"' EXIT
READY_SECONDS=30 wait_ready "http://127.0.0.1:$OP/metrics" "http://127.0.0.1:$AP/readyz"
curl -sf -o /dev/null "http://127.0.0.1:$GP/items/1"
for row in "hit http://127.0.0.1:$GP/items/1" "floor http://127.0.0.1:$AP/healthz"; do
  # shellcheck disable=SC2086
  set -- $row
  wrk -t1 -c50 -d1s "$2" >/dev/null
  callgrind_control -z "$G" >/dev/null 2>&1
  wrk -t1 -c50 -d3s "$2" >"$OUT/wrk"
  rm -f "$OUT"/cg.*
  callgrind_control -d "$G" >/dev/null 2>&1
  sleep 1
  n=$(grep -o '[0-9]* requests in' "$OUT/wrk" | cut -d' ' -f1)
  ir=$(awk '/^summary:/ {s += $2} END {print s}' "$OUT"/cg.*)
  echo "$1: $n requests, $((ir / n)) instructions per request (user space)"
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP"; cat "$OUT"/cg.* >"$KEEP/$1.callgrind"; fi
done
