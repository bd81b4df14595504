#!/usr/bin/env bash
# Runs every test of the workspace, on a fresh Debian machine with only the
# Rust toolchain: installs what the tests need when it is missing, from
# Debian's packages (needs apt-get, and root or sudo):
#   redis-server          tests that need Redis start their own on a free port
#                         (Debian's is built with TLS, which the rediss:// tests use)
#   curl, nghttp2-client  curl's HTTP/2 and h2load drive the TLS and h2c tests
#   prometheus            promtool for the ops checks, and the Prometheus server
#                         bench/tests/live_prometheus.rs runs on a free port
#   python3, python3-yaml, python3-pip
#                         the ops checks; pip installs the pinned Grafana SDK
#                         under target/ (scripts/dashboard.sh)
#   nodejs, npm           the HTTP caching conformance suite (npm installs it
#                         into a temp dir: needs the npm registry)
# then checks formatting, lints, docs, the ops files (Prometheus config, alert
# rules + their unit tests, compose, dashboard) and runs `cargo test --workspace`.
# Every process a test starts listens on 127.0.0.1 on a free port.
#
# Disk: a CI run builds once, so it needs neither incremental caches nor debug
# info (no backtrace is printed without RUST_BACKTRACE): the CARGO_* exports
# below turn both off and strip the standard library's debug info from the
# ~70 linked test binaries (Cargo.toml already builds the dependencies without
# it). Each cargo step prints how big the target directory has grown and how
# much the disk has left; the run warns up front when the disk has less than
# STAMPEDE_CI_DISK_WARN_MB (default 4096) free.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*" >&2; }

export CARGO_INCREMENTAL=0 CARGO_PROFILE_DEV_DEBUG=false CARGO_PROFILE_DEV_STRIP=debuginfo
target_dir=${CARGO_TARGET_DIR:-target}
mkdir -p "$target_dir"
free_mb() { df -Pm "$target_dir" | awk 'NR == 2 { print $4 }'; }
disk() {
  printf '    disk: %s holds %s MB, %s MB free\n' "$target_dir" \
    "$(du -sm "$target_dir" 2>/dev/null | cut -f1)" "$(free_mb)" >&2
}
step "disk"
disk
free=$(free_mb)
if (( free < ${STAMPEDE_CI_DISK_WARN_MB:-4096} )); then
  echo "warning: only $free MB free for $target_dir; a clean run's build needs a few GB (each step below prints the size it reached)" >&2
fi

missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v curl >/dev/null 2>&1 || missing+=(curl)
command -v h2load >/dev/null 2>&1 || missing+=(nghttp2-client)
{ command -v promtool && command -v prometheus; } >/dev/null 2>&1 || missing+=(prometheus)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# Debian's python3-yaml and python3-pip serve /usr/bin/python3; the ops scripts
# fall back to that interpreter when the python3 on PATH (pyenv, a venv) lacks them.
has_py_module() { python3 -c "import $1" 2>/dev/null || /usr/bin/python3 -c "import $1" 2>/dev/null; }
has_py_module yaml || missing+=(python3-yaml)
has_py_module pip || missing+=(python3-pip)
# Node.js from elsewhere (NodeSource's nodejs ships npm too) is used as it is.
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
  step "installing ${missing[*]} (Debian packages)"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for tool in redis-server curl h2load promtool prometheus python3 node npm; do
  command -v "$tool" >/dev/null 2>&1 || { echo "error: $tool is still missing after the install step" >&2; exit 1; }
done
for module in yaml pip; do
  has_py_module "$module" || { echo "error: python module $module is still missing after the install step" >&2; exit 1; }
done

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, warnings are errors)"
cargo clippy --workspace --all-targets --locked -- -D warnings
disk

step "cargo doc (broken links and doc warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked
disk

step "ops files: promtool check/test, compose, dashboard"
bash scripts/check-ops.sh

step "build every binary (tests spawn them as real processes)"
cargo build --workspace --bins --locked
disk

step "cargo test --workspace: build the tests"
cargo test --workspace --locked --no-run
disk

step "cargo test --workspace"
cargo test --workspace --locked
