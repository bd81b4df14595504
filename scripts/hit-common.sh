# Sourced by scripts/hit-ab.sh and scripts/hit-wrk.sh: the hit-path setup
# both measure. Needs BIN (the binaries' directory) and OUT (a directory for
# the logs). Extra gateway flags: GATEWAY_FLAGS.

# A free 127.0.0.1 port.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Start origin-sim (5 ms per query) and one gateway in front of it
# (in-process store, --mitigations all, --ttl 1h: every request after the
# first is a hit) on free ports; sets OP, GP, AP (ports) and O, G (PIDs).
start_hit_stack() {
  OP=$(port); GP=$(port); AP=$(port)
  "$BIN/origin-sim" --listen "127.0.0.1:$OP" --latency-ms 5 >"$OUT/origin.log" 2>&1 & O=$!
  # shellcheck disable=SC2086
  "$BIN/gateway" --listen "127.0.0.1:$GP" --admin-listen "127.0.0.1:$AP" --origin "http://127.0.0.1:$OP" \
    --ttl 1h --mitigations all ${GATEWAY_FLAGS:-} >"$OUT/gateway.log" 2>&1 & G=$!
}

# Wait until every URL answers 2xx (at most 10 s); fail loudly otherwise.
wait_ready() {
  local _ u ok
  for _ in $(seq 100); do
    ok=1
    for u in "$@"; do curl -sf -o /dev/null "$u" || { ok=0; break; }; done
    [ "$ok" = 1 ] && return 0
    sleep 0.1
  done
  echo "$(basename "$0"): not ready after 10 s: $* (logs in $OUT)" >&2
  return 1
}

# CPU clock ticks (utime + stime) of each PID, one "pid ticks" line each; a
# PID already gone is left out.
ticks() {
  local q
  for q in "$@"; do
    [ -r "/proc/$q/stat" ] && echo "$q $(awk '{print $14 + $15}' "/proc/$q/stat")"
  done
  true
}
