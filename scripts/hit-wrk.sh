#!/usr/bin/env bash
# Issue #12's own protocol for the hit path: wrk, 50 connections, one hot
# key, the gateway (in-process store, --mitigations all, --ttl 1h) and nginx
# `proxy_cache` (2 workers; the hit-path rung's config,
# docs/results/peers/nginx-hit.conf) in front of the same origin-sim,
# alternated ROUNDS times. Everything on 127.0.0.1 ports picked free.
# Prints, per round and server, wrk's requests/s and p99 and the server's
# CPU (user + system; nginx: master and workers) per request, then the
# median gateway ÷ nginx ratio. The hit-path rung of the ladder measures the
# same with the bench's own load generator (RESULTS.md §12); this script
# shows the figure under the load generator the issue was filed with.
#
# usage: scripts/hit-wrk.sh BINDIR [DURATION=10s] [ROUNDS=3]
#   needs wrk and nginx (Debian: apt-get install wrk nginx-light)
# WRK_THREADS (default 2) sets wrk's -t; GATEWAY_FLAGS adds gateway flags.
set -euo pipefail
BIN=${1:?usage: scripts/hit-wrk.sh BINDIR [DURATION] [ROUNDS]}
DUR=${2:-10s}
ROUNDS=${3:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONF="$ROOT/docs/results/peers/nginx-hit.conf"
for b in origin-sim gateway; do
  [ -x "$BIN/$b" ] || { echo "hit-wrk: $BIN/$b missing (cargo build --release --workspace)" >&2; exit 2; }
done
for t in wrk nginx; do
  command -v "$t" >/dev/null || { echo "hit-wrk: $t not found (Debian: apt-get install wrk nginx-light)" >&2; exit 2; }
done
[ -f "$CONF" ] || { echo "hit-wrk: $CONF missing (written by ./scripts/demo.sh --full)" >&2; exit 2; }
OUT=$(mktemp -d)
chmod 755 "$OUT"   # nginx workers run as an unprivileged user when started as root
# shellcheck source=scripts/hit-common.sh
. "$ROOT/scripts/hit-common.sh"
start_hit_stack
N=""
trap 'kill $G $O $N 2>/dev/null; wait $G $O $N 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$OUT"' EXIT
NP=$(port)
# The rung's config with this run's directory and ports.
sed -E -e "s#<tmp>/[^/ ;]+#$OUT/nginx#g" \
  -e "s/server 127\.0\.0\.1:[0-9]+;/server 127.0.0.1:$OP;/" \
  -e "s/listen 127\.0\.0\.1:[0-9]+;/listen 127.0.0.1:$NP;/" "$CONF" >"$OUT/nginx.conf"
mkdir -p "$OUT/nginx"
nginx -e "$OUT/nginx/error.log" -c "$OUT/nginx.conf" -p "$OUT/nginx/" -g 'daemon off;' >"$OUT/nginx.log" 2>&1 & N=$!
wait_ready "http://127.0.0.1:$OP/metrics" "http://127.0.0.1:$AP/readyz" "http://127.0.0.1:$NP/__ready"
GW="http://127.0.0.1:$GP/items/1"; NG="http://127.0.0.1:$NP/items/1"
curl -sf -o /dev/null "$GW"; curl -sf -o /dev/null "$NG"   # fill both caches
for u in "$GW" "$NG"; do
  curl -sfi "$u" | grep -qi '^cache-status: [a-z]*; hit' || { echo "hit-wrk: $u is not answered from cache" >&2; exit 1; }
done
pids() { if [ "$1" = gateway ]; then echo "$G"; else echo "$N $(cat "/proc/$N/task/$N/children")"; fi; }
WT=${WRK_THREADS:-2}
wrk -t"$WT" -c50 -d2s "$GW" >/dev/null; wrk -t"$WT" -c50 -d2s "$NG" >/dev/null   # warm-up
for r in $(seq "$ROUNDS"); do
  for s in gateway nginx; do
    url=$GW; [ "$s" = nginx ] && url=$NG
    p=$(pids "$s")
    # shellcheck disable=SC2086
    ticks $p >"$OUT/before"
    wrk -t"$WT" -c50 -d"$DUR" --latency "$url" >"$OUT/wrk"
    # shellcheck disable=SC2086
    ticks $p >"$OUT/after"
    python3 - "$r" "$s" "$OUT/wrk" "$OUT/before" "$OUT/after" "$(getconf CLK_TCK)" <<'PY' | tee -a "$OUT/rows"
import re, sys
r, s, wrk, before, after, hz = sys.argv[1:]
text = open(wrk).read()
reqs = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
p99 = re.search(r"\s99%\s+(\S+)", text).group(1)
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
sock = re.search(r"Socket errors: (.*)", text)
b = dict(l.split() for l in open(before)); a = dict(l.split() for l in open(after))
used = sum(int(a[p]) - int(b[p]) for p in a if p in b)   # a PID gone in between (nginx's cache loader) is left out
print(f"round {r} {s:8} {rps:9.0f} req/s  p99 {p99:>7}  CPU {used / int(hz) * 1e6 / max(reqs, 1):5.1f} us/request"
      f"  non-2xx {errs.group(1) if errs else 0}  socket errors {sock.group(1) if sock else 'none'}")
PY
  done
done
python3 - "$OUT/rows" <<'PY'
import re, statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
rps = {(l[1], l[2]): float(l[3]) for l in rows}
ratios = [rps[(r, "gateway")] / rps[(r, "nginx")] for r in sorted({l[1] for l in rows}, key=int)]
print("gateway ÷ nginx per round: " + " / ".join(f"{x:.2f}" for x in ratios) + f"; median {statistics.median(ratios):.2f}")
PY
