# syntax=docker/dockerfile:1
#
# gatewayrs: register, gateway, business-worker, the HTTP push API (http-api) and the chat demo's
# web backend (chat-web) in one
# image; docker-compose.yml picks the binary per service. Build with BuildKit (the default of
# Docker Engine 23+ and of `docker compose build`):
#
#   docker build -t gatewayrs .
#   docker run --rm -e GW_SECRET=... gatewayrs /usr/local/bin/register --config /etc/gatewayrs/register.toml start
#
# The base images can be swapped for a mirror: --build-arg RUST_IMAGE=... --build-arg RUNTIME_IMAGE=...

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- build: the five release binaries ------------------------------------------------------------
FROM ${RUST_IMAGE} AS build
WORKDIR /src
# The slim image already has gcc and libc6-dev (ring, pulled in by rustls, compiles C).
COPY . .
# The registry and target directories are BuildKit cache mounts: a rebuild after a source change
# recompiles the workspace crates only. Binaries are copied out of the cache in the same step.
# Release binaries without debug info (the workspace profile keeps some for local profiling).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 \
    CARGO_TERM_COLOR=never
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    set -eux; \
    cargo build --release --locked \
        -p gw-register -p gw-gateway -p gw-business-worker -p gw-http-api -p gw-chat-demo \
        --bin register --bin gateway --bin business-worker --bin http-api --bin chat-web; \
    mkdir -p /out; \
    for bin in register gateway business-worker http-api chat-web; do \
        cp "target/release/$bin" /out/; \
    done

# ---- runtime: Debian slim, non-root --------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
RUN set -eux; \
    groupadd --gid 10001 gatewayrs; \
    useradd --uid 10001 --gid gatewayrs --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin gatewayrs
COPY --from=build /out/ /usr/local/bin/
# Container defaults (0.0.0.0 listeners, run_dir, admin address); docker-compose.yml mounts the
# same files from docker/ read-only, so they can be edited without a rebuild.
COPY docker/register.toml docker/gateway.toml docker/business-worker.toml docker/http-api.toml /etc/gatewayrs/
USER 10001:10001
# 7272 WebSocket (gateway), 2900 internal (gateway), 1236 register, 8080 chat page, 8090 HTTP API,
# 9100 metrics.
EXPOSE 7272 2900 1236 8080 8090 9100
# Exec form, no shell in between: the daemon is PID 1 and receives SIGTERM from `docker stop`
# directly (it stops gracefully: gateways close clients with 1001, workers drain).
# The compose file sets the command per service; alone, the image runs a gateway.
CMD ["/usr/local/bin/gateway", "--config", "/etc/gatewayrs/gateway.toml", "start"]
