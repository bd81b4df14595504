# Sourced by scripts/hit-ab.sh and scripts/hit-wrk.sh: the hit-path setup
# both measure. Needs BIN (the binaries' directory) and OUT (a directory for
# the logs). Extra gateway flags: GATEWAY_FLAGS. With SERVER_CPU set (a CPU
# number), the gateway runs pinned to that CPU (`taskset -c`) with its tokio
# runtime sized to it (`TOKIO_WORKER_THREADS=1`); with LOAD_CPU set,
# origin-sim runs pinned there (it is idle once the hot key is filled, and
# stays off the server's core).

# Exit 2, loudly, unless every command after the first two arguments is on
# PATH: require SCRIPT "INSTALL HINT" COMMAND...
require() {
  local who=$1 hint=$2 t
  shift 2
  for t in "$@"; do
    command -v "$t" >/dev/null || { echo "$who: $t not found ($hint)" >&2; exit 2; }
  done
}

# A free 127.0.0.1 port.
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The command prefix that pins to CPU $1 (`taskset -c`, which execs: the
# PID stays the command's); none when $1 is empty.
pin() { [ -z "$1" ] || echo "taskset -c $1"; }

# Start origin-sim (5 ms per query) and one gateway in front of it
# (in-process store, --mitigations all, --ttl 1h: every request after the
# first is a hit) on free ports; sets OP, GP, AP (ports) and O, G (PIDs).
# GATEWAY_WRAP prefixes the gateway's command (e.g. valgrind, which keeps
# the PID).
start_hit_stack() {
  OP=$(port); GP=$(port); AP=$(port)
  local sized=""
  [ -z "${SERVER_CPU:-}" ] || sized="env TOKIO_WORKER_THREADS=1"
  # shellcheck disable=SC2046
  $(pin "${LOAD_CPU:-}") "$BIN/origin-sim" --listen "127.0.0.1:$OP" --latency-ms 5 >"$OUT/origin.log" 2>&1 & O=$!
  # shellcheck disable=SC2046,SC2086
  $sized $(pin "${SERVER_CPU:-}") ${GATEWAY_WRAP:-} "$BIN/gateway" --listen "127.0.0.1:$GP" --admin-listen "127.0.0.1:$AP" \
    --origin "http://127.0.0.1:$OP" --ttl 1h --mitigations all ${GATEWAY_FLAGS:-} >"$OUT/gateway.log" 2>&1 & G=$!
}

# Wait until every URL answers 2xx (at most READY_SECONDS, default 10);
# fail loudly otherwise.
wait_ready() {
  local _ u ok secs=${READY_SECONDS:-10}
  for _ in $(seq $((secs * 10))); do
    ok=1
    for u in "$@"; do curl -sf -o /dev/null "$u" || { ok=0; break; }; done
    [ "$ok" = 1 ] && return 0
    sleep 0.1
  done
  echo "$(basename "$0"): not ready after $secs s: $* (logs in $OUT)" >&2
  return 1
}

# CPU clock ticks of each PID, one "pid total user kernel" line each (total
# = utime + stime); a PID already gone is left out.
ticks() {
  local q
  for q in "$@"; do
    [ -r "/proc/$q/stat" ] && echo "$q $(awk '{print $14 + $15, $14, $15}' "/proc/$q/stat")"
  done
  true
}

# Busy clock ticks of CPU $1 (user + nice + system + irq + softirq of its
# /proc/stat line; idle, iowait and steal left out): everything that ran on
# that core, the kernel's softirq work and kernel threads included, which a
# process's own utime + stime can miss.
core_ticks() {
  awk -v c="cpu$1" '$1 == c { print $2 + $3 + $4 + $7 + $8 }' /proc/stat
}
