# syntax=docker/dockerfile:1
# Two images from one build (compose.yaml builds both):
#   docker build -t stampede-layer:local .                         gateway + origin-sim (the
#                                                                  default: the last stage, runtime)
#   docker build --target bench -t stampede-layer-bench:local .    stampede-bench, the load
#                                                                  generator (compose's load job)
# The runtime image carries no load generator. Needs BuildKit (the default
# builder since Docker 23) for the cache mounts.

FROM rust:1-bookworm AS builder
# No system library to install: the binaries link glibc only (stampede-bench
# draws its charts with plotters' own rasteriser, ab_glyph, and a DejaVu font
# compiled in; nothing links fontconfig or freetype).
WORKDIR /src
COPY . .
# target/ is a cache mount (reused between builds, not part of the layer), so
# the binaries are copied out in the same RUN.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p gateway -p origin-sim -p stampede-bench \
 && install -D -m 0755 -t /out/runtime target/release/gateway target/release/origin-sim \
 && install -D -m 0755 -t /out/bench target/release/stampede-bench

# What both images share: a small Debian and an unprivileged user. No
# package at all: the binaries link glibc only, and https:// origins and
# rediss:// are verified against the roots compiled into the gateway
# (webpki-roots, Mozilla's list) plus a private CA given with --origin-ca /
# --redis-ca (mount its PEM); the system store is never read. No curl: health
# checks speak HTTP/1.0 through bash's /dev/tcp.
FROM debian:bookworm-slim AS base
RUN groupadd --system --gid 10001 stampede \
 && useradd --system --uid 10001 --gid stampede --home-dir /var/lib/stampede \
      --create-home --shell /usr/sbin/nologin stampede
USER stampede:stampede
WORKDIR /var/lib/stampede

# The load generator (stampede-bench load / ladder / soak / campaign).
FROM base AS bench
COPY --from=builder /out/bench/ /usr/local/bin/
CMD ["stampede-bench", "--help"]

# The default image: gateway and origin-sim.
FROM base AS runtime
COPY --from=builder /out/runtime/ /usr/local/bin/
# proxy, origin-sim, admin (/metrics, /healthz, /readyz, /admin/*)
EXPOSE 8080 8081 9080
# The gateway's liveness: GET /healthz on its admin listener (the port of
# STAMPEDE_ADMIN_LISTEN, else 9080 as in CMD) answers 200. Liveness, not
# readiness: a gateway that is warming its cache or draining is alive and must
# not be replaced (compose gates on /readyz itself). Running origin-sim from
# this image, override it (compose.yaml does).
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "addr=${STAMPEDE_ADMIN_LISTEN:-0.0.0.0:9080}; exec 3<>/dev/tcp/127.0.0.1/${addr##*:} && printf 'GET /healthz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
CMD ["gateway", "--listen", "0.0.0.0:8080", "--admin-listen", "0.0.0.0:9080"]
