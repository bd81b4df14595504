#!/usr/bin/env bash
# The demo: build in release, then run the mitigation ladder on embedded
# defaults (in-process origin database: SQLite; gateways; a redis-server on a
# free port for the fleet rungs when one is installed). Writes
# docs/results/RESULTS.md, results.json and the charts. Extra arguments go
# to `stampede-bench ladder` (see `--help`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace --bins --locked
exec target/release/stampede-bench ladder "$@"
