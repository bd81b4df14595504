#!/usr/bin/env bash
# A/B of the gateway's hit path (issue #12): origin-sim + one gateway
# (--mitigations all, in-process store, --ttl 1h) from BINDIR on free-ish
# 127.0.0.1 ports, one fill, a 2 s warm-up, then `stampede-bench load
# --concurrency 50 --hot-fraction 1.0` for DURATION: every request a hit.
# Prints "hits/s p99_ms gateway_cpu_us_per_request". Run it alternately for
# two BINDIRs (e.g. a copy of the parent commit's target/release and this
# one's): the machine's drift shows in both.
#
# usage: scripts/hit-ab.sh BINDIR [DURATION=10s] [PERF_OUT]
#   PERF_OUT: also `perf record` the gateway for 5 s of the load into it.
# Extra gateway flags: GATEWAY_FLAGS="--near-cache-ttl 0s" scripts/hit-ab.sh …
set -euo pipefail
BIN=${1:?usage: scripts/hit-ab.sh BINDIR [DURATION] [PERF_OUT]}
DUR=${2:-10s}
PERF=${3:-}
for b in origin-sim gateway stampede-bench; do
  [ -x "$BIN/$b" ] || { echo "hit-ab: $BIN/$b missing (cargo build --release --workspace)" >&2; exit 2; }
done
OUT=$(mktemp -d)
# shellcheck source=scripts/hit-common.sh
. "$(dirname "$0")/hit-common.sh"
start_hit_stack
trap 'kill $G $O 2>/dev/null; wait $G $O 2>/dev/null; rm -rf "$OUT"' EXIT
wait_ready "http://127.0.0.1:$OP/metrics" "http://127.0.0.1:$AP/readyz"
curl -sf -o /dev/null "http://127.0.0.1:$GP/items/1"
load() { "$BIN/stampede-bench" load --target "http://127.0.0.1:$GP" --concurrency 50 --duration "$1" \
  --hot-fraction 1.0 --origin none --quiet; }
load 2s >/dev/null
if [ -n "$PERF" ]; then perf record -F ${PERF_FREQ:-499} --call-graph dwarf,16384 -p "$G" -o "$PERF" -- sleep 5 >/dev/null 2>&1 & P=$!; fi
cpu() { ticks "$G" | cut -d' ' -f2; }   # utime + stime, clock ticks
before=$(cpu)
load "$DUR" >"$OUT/load.json"
after=$(cpu)
[ -n "$PERF" ] && wait "$P"
python3 - "$OUT/load.json" "$before" "$after" "$(getconf CLK_TCK)" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ticks = int(sys.argv[3]) - int(sys.argv[2])
us = ticks / int(sys.argv[4]) * 1e6 / max(d["requests"], 1)
print(f'{d["requests_per_sec"]:.0f} hits/s  p99 {d["latency"]["all"]["p99_ms"]:.1f} ms  gateway CPU {us:.1f} us/request  errors {d["failed_requests"]}')
PY
