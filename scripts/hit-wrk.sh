#!/usr/bin/env bash
# The hit path measured with wrk, server and load generator each on its own
# core (issue #22): origin-sim, one gateway (in-process store, --mitigations
# all, --ttl 1h) and nginx `proxy_cache` (the hit-path rung's config,
# docs/results/peers/nginx-hit.conf) in front of it, on 127.0.0.1 ports
# picked free. The server runs on CPU SERVER_CPU (default 0) with its
# runtime sized to that one core — the gateway with TOKIO_WORKER_THREADS=1,
# nginx with `worker_processes 1` — and wrk on CPU LOAD_CPU (default 1),
# `wrk -t1 -c50`, one hot key. Three rows per round, alternated ROUNDS
# times: the gateway's hit, nginx's hit, and the floor — the gateway's own
# admin `GET /healthz`, served by the same process and the same server code
# without the stack, the proxy service or the store.
#
# Per round and row: wrk's requests/s and p99, the server's CPU per request
# (user + system of the process: the gateway's threads, nginx's master and
# worker; and that split, as the kernel accounts it) and, when pinned, the
# busy time of the server's core per request (/proc/stat: the kernel's
# softirq and kernel-thread work on that core included). Then the medians
# of gateway ÷ nginx and gateway ÷ floor.
#
# usage: scripts/hit-wrk.sh BINDIR [DURATION=8s] [ROUNDS=3]
#   needs wrk, nginx and taskset (Debian: apt-get install wrk nginx-light util-linux);
#   with h2load (nghttp2-client) each round adds the gateway's hit over h2c
# SERVER_CPU= LOAD_CPU= (empty) runs unpinned, as before #22; WRK_THREADS
# (default 1) sets wrk's -t; NGINX_WORKERS (default 1 pinned, else the
# config's) nginx's worker_processes; GATEWAY_FLAGS adds gateway flags;
# KEEP=1 keeps the logs.
set -euo pipefail
BIN=${1:?usage: scripts/hit-wrk.sh BINDIR [DURATION] [ROUNDS]}
DUR=${2:-8s}
ROUNDS=${3:-3}
SERVER_CPU=${SERVER_CPU-0}
LOAD_CPU=${LOAD_CPU-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CONF="$ROOT/docs/results/peers/nginx-hit.conf"
for b in origin-sim gateway; do
  [ -x "$BIN/$b" ] || { echo "hit-wrk: $BIN/$b missing (cargo build --release --workspace)" >&2; exit 2; }
done
for t in wrk nginx taskset; do
  command -v "$t" >/dev/null || { echo "hit-wrk: $t not found (Debian: apt-get install wrk nginx-light util-linux)" >&2; exit 2; }
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
WORKERS=${NGINX_WORKERS:-}
[ -n "$WORKERS" ] || [ -z "$SERVER_CPU" ] || WORKERS=1
# The rung's config with this run's directory, ports and (pinned) one worker.
sed -E -e "s#<tmp>/[^/ ;]+#$OUT/nginx#g" \
  -e "s/server 127\.0\.0\.1:[0-9]+;/server 127.0.0.1:$OP;/" \
  -e "s/listen 127\.0\.0\.1:[0-9]+;/listen 127.0.0.1:$NP;/" \
  ${WORKERS:+-e "s/^worker_processes [0-9]+;/worker_processes $WORKERS;/"} "$CONF" >"$OUT/nginx.conf"
mkdir -p "$OUT/nginx"
# shellcheck disable=SC2046
$(pin "$SERVER_CPU") nginx -e "$OUT/nginx/error.log" -c "$OUT/nginx.conf" -p "$OUT/nginx/" -g 'daemon off;' >"$OUT/nginx.log" 2>&1 & N=$!
wait_ready "http://127.0.0.1:$OP/metrics" "http://127.0.0.1:$AP/readyz" "http://127.0.0.1:$NP/__ready"
GW="http://127.0.0.1:$GP/items/1"; NG="http://127.0.0.1:$NP/items/1"; FL="http://127.0.0.1:$AP/healthz"
curl -sf -o /dev/null "$GW"; curl -sf -o /dev/null "$NG"   # fill both caches
for u in "$GW" "$NG"; do
  curl -sfi "$u" | grep -qi '^cache-status: [a-z]*; hit' || { echo "hit-wrk: $u is not answered from cache" >&2; exit 1; }
done
pids() { if [ "$1" = nginx ]; then echo "$N $(cat "/proc/$N/task/$N/children")"; else echo "$G"; fi; }
url() { case $1 in gateway) echo "$GW" ;; nginx) echo "$NG" ;; floor) echo "$FL" ;; esac; }
WT=${WRK_THREADS:-1}
# shellcheck disable=SC2046
load() { $(pin "$LOAD_CPU") wrk -t"$WT" -c50 "$@"; }
echo "hit-wrk: server on CPU ${SERVER_CPU:-any} (gateway TOKIO_WORKER_THREADS=$([ -n "$SERVER_CPU" ] && echo 1 || echo unset), nginx worker_processes $(awk '/^worker_processes/ {print $2+0}' "$OUT/nginx.conf")), wrk -t$WT -c50 on CPU ${LOAD_CPU:-any}, $DUR × $ROUNDS rounds"
for s in gateway nginx floor; do load -d2s "$(url $s)" >/dev/null; done   # warm-up
for r in $(seq "$ROUNDS"); do
  for s in gateway nginx floor; do
    p=$(pids "$s")
    # shellcheck disable=SC2086
    ticks $p >"$OUT/before"; core0=$([ -z "$SERVER_CPU" ] || core_ticks "$SERVER_CPU")
    load -d"$DUR" --latency "$(url $s)" >"$OUT/wrk"
    # shellcheck disable=SC2086
    ticks $p >"$OUT/after"; core1=$([ -z "$SERVER_CPU" ] || core_ticks "$SERVER_CPU")
    python3 - "$r" "$s" "$OUT/wrk" "$OUT/before" "$OUT/after" "$(getconf CLK_TCK)" "${core0:-}" "${core1:-}" <<'PY' | tee -a "$OUT/rows"
import re, sys
r, s, wrk, before, after, hz, c0, c1 = sys.argv[1:]
text = open(wrk).read()
reqs = int(re.search(r"(\d+) requests in", text).group(1))
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
m = re.search(r"\s99%\s+([\d.]+)(us|ms|s)\b", text)
p99 = float(m.group(1)) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[m.group(2)]
errs = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
sock = re.search(r"Socket errors: (.*)", text)
b = {l.split()[0]: l.split()[1:] for l in open(before)}; a = {l.split()[0]: l.split()[1:] for l in open(after)}
# total, user, kernel; a PID gone in between (nginx's cache loader) is left out
used, user, kernel = (sum(int(a[p][i]) - int(b[p][i]) for p in a if p in b) for i in range(3))
per = lambda ticks: ticks / int(hz) * 1e6 / max(reqs, 1)
core = f"{per(int(c1) - int(c0)):5.1f}" if c0 else "    -"
print(f"round {r} {s:8} {rps:9.0f} req/s  p99 {p99:6.2f} ms  CPU {per(used):5.1f} us/request"
      f" (user {per(user):4.1f} + kernel {per(kernel):4.1f})  core {core} us/request"
      f"  non-2xx {errs.group(1) if errs else 0}  socket errors {sock.group(1).strip() if sock else 'none'}")
PY
  done
  # HTTP/2 beside HTTP/1.1 (issue #23): the same gateway hit over h2c, h2load
  # pinned like wrk (-c50, one stream at a time per connection).
  if command -v h2load >/dev/null; then
    p=$(pids gateway)
    # shellcheck disable=SC2086
    ticks $p >"$OUT/before"
    # shellcheck disable=SC2046
    $(pin "$LOAD_CPU") h2load -c50 -m1 -t1 -D "${DUR%s}" "$GW" >"$OUT/h2load" 2>&1
    # shellcheck disable=SC2086
    ticks $p >"$OUT/after"
    python3 - "$r" "$OUT/h2load" "$OUT/before" "$OUT/after" "$(getconf CLK_TCK)" <<'PY' | tee -a "$OUT/h2rows"
import re, sys
r, out, before, after, hz = sys.argv[1:]
text = open(out).read()
rps = float(re.search(r"finished in [\d.]+s, ([\d.]+) req/s", text).group(1))
m = re.search(r"requests: (\d+) total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed", text)
b = {l.split()[0]: int(l.split()[1]) for l in open(before)}; a = {l.split()[0]: int(l.split()[1]) for l in open(after)}
used = sum(a[p] - b[p] for p in a if p in b)
per = used / int(hz) * 1e6 / max(int(m.group(2)), 1)
print(f"round {r} gateway-h2 {rps:9.0f} req/s  (h2c, h2load)  CPU {per:5.1f} us/request  failed {m.group(3)}")
PY
  fi
done
python3 - "$OUT/rows" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
rps = {(l[1], l[2]): float(l[3]) for l in rows}
p99 = {(l[1], l[2]): float(l[6]) for l in rows}
rounds = sorted({l[1] for l in rows}, key=int)
def ratio(a, b):
    v = [rps[(r, a)] / rps[(r, b)] for r in rounds]
    return " / ".join(f"{x:.2f}" for x in v) + f"; median {statistics.median(v):.2f}"
print("gateway ÷ nginx per round: " + ratio("gateway", "nginx"))
print("gateway ÷ floor per round: " + ratio("gateway", "floor"))
print("nginx ÷ floor per round:   " + ratio("nginx", "floor"))
print("median p99 ms: " + ", ".join(f"{s} {statistics.median(p99[(r, s)] for r in rounds):.2f}" for s in ("gateway", "nginx", "floor")))
split = {(l[1], l[2]): (float(l[12]), float(l[15].rstrip(")"))) for l in rows}
print("median CPU us per request, user + kernel: " + ", ".join(
    f"{s} {statistics.median(split[(r, s)][0] for r in rounds):.1f} + {statistics.median(split[(r, s)][1] for r in rounds):.1f}"
    for s in ("gateway", "nginx", "floor")))
PY
