# syntax=docker/dockerfile:1
# One image for the three binaries: gateway, origin-sim, stampede-bench.
#   docker build -t stampede-layer:local .      (compose.yaml does this)
# Needs BuildKit (the default builder since Docker 23) for the cache mounts.

FROM rust:1-bookworm AS builder
# plotters' "ttf" feature (stampede-bench charts) pulls font-kit, which links
# fontconfig and freetype found through pkg-config.
RUN apt-get update \
 && apt-get install -y --no-install-recommends pkg-config libfontconfig1-dev libfreetype-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# target/ is a cache mount (reused between builds, not part of the layer), so
# the binaries are copied out in the same RUN.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p gateway -p origin-sim -p stampede-bench \
 && install -D -m 0755 -t /out \
      target/release/gateway target/release/origin-sim target/release/stampede-bench

FROM debian:bookworm-slim
# No ca-certificates: https:// origins and rediss:// are verified against the
# roots compiled into the gateway (webpki-roots, Mozilla's list), plus a
# private CA given with --origin-ca / --redis-ca (mount its PEM); the system
# store is never read. libfontconfig1 (+ libfreetype6): linked by
# stampede-bench; fonts-dejavu-core: text in the charts `stampede-bench ladder`
# draws. No curl: compose healthchecks use bash's /dev/tcp (see compose.yaml).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libfontconfig1 fonts-dejavu-core \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 stampede \
 && useradd --system --uid 10001 --gid stampede --home-dir /var/lib/stampede \
      --create-home --shell /usr/sbin/nologin stampede
COPY --from=builder /out/ /usr/local/bin/
USER stampede:stampede
WORKDIR /var/lib/stampede
# proxy, origin-sim, admin (/metrics, /healthz, /readyz, /admin/*)
EXPOSE 8080 8081 9080
CMD ["gateway", "--listen", "0.0.0.0:8080", "--admin-listen", "0.0.0.0:9080"]
