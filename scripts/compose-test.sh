#!/usr/bin/env bash
# The docker-compose.yml cluster (register, two gateways, two business workers running the chat
# demo, the chat page's web backend; one container each on a private network), proven with real
# WebSocket clients against the published ports:
#
#   1. clients on both gateways chat across them (group, private and uid sends)
#   2. `docker kill` of a business-worker container during traffic: no socket closes, nothing lost
#   3. a gateway container started later is discovered by the workers and serves clients
#   4. the register restarted during traffic: clients notice nothing; a later gateway is discovered
#   5. a gateway stopped: its clients get close code 1001, the others are unaffected, on_close runs
#   6. rolling restart (and an in-container reload) of the workers under numbered traffic: every
#      message answered once, in order
#   7. `docker compose down` leaves no container behind
#
# No image is pulled or built by Docker: the release binaries are built here and put in a local
# image FROM scratch (with the shared libraries `ldd` lists), which docker/compose.test.yml uses
# instead of the Dockerfile. Published ports are ephemeral loopback ports; the secret is random.
# Everything is removed on exit, also after a failure or Ctrl-C.
#
# Prints one PASS/FAIL line per check with its duration; exits non-zero if any check fails.
# Prints "SKIP: docker not available" and exits 0 without Docker.
#
# Environment: COMPOSE_TEST_KEEP=1 skips check 7 and keeps the cluster and image for inspection
# (prints how to remove them). COMPOSE_TEST_SKIP_BUILD=1 uses the binaries already in target/release.
# COMPOSE_TEST_LOGS=DIR saves every container's full log there before `down`.
# COMPOSE_TEST_IMAGE=IMAGE runs the checks on an existing image instead (e.g. one built from the
# Dockerfile where base images can be pulled: docker build -t gatewayrs:ci .); it is not removed.
# Check 8 restarts every worker container at once under traffic; COMPOSE_TEST_STRICT=0 skips it
# (`docker compose restart worker`).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
T0=$(date +%s)

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
    echo "SKIP: docker not available"
    exit 0
fi
# Compose v2 (`docker compose`) or v1 (`docker-compose`); both read the same files.
if docker compose version >/dev/null 2>&1; then
    COMPOSE_BIN=(docker compose)
elif command -v docker-compose >/dev/null 2>&1 && docker-compose version >/dev/null 2>&1; then
    COMPOSE_BIN=(docker-compose)
else
    echo "SKIP: docker not available (neither \`docker compose\` nor \`docker-compose\` works)"
    exit 0
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "FAIL: python3 is needed for the WebSocket clients" >&2
    exit 1
fi

PROJECT="gwct$(date +%s)$$"
IMAGE="${COMPOSE_TEST_IMAGE:-gatewayrs:local-$PROJECT}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gw-compose-test.XXXXXX")
COMPOSE=("${COMPOSE_BIN[@]}" -p "$PROJECT" -f "$ROOT/docker-compose.yml" -f "$ROOT/docker/compose.test.yml")

# What the compose files interpolate. Loopback-only ephemeral host ports; a fresh secret.
GW_SECRET=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')
export GW_SECRET
export GATEWAYRS_TEST_IMAGE="$IMAGE"
export GATEWAY_1_PORT="127.0.0.1:" GATEWAY_2_PORT="127.0.0.1:" CHAT_WEB_PORT="127.0.0.1:"
export GW_REGISTERS="register:1236" GW_LOG_LEVEL="info" GW_LOG_FORMAT="plain"
unset GATEWAYRS_IMAGE CHAT_WS_URL

cleanup() {
    local rc=$?
    set +e
    if [[ "${COMPOSE_TEST_KEEP:-}" == 1 ]]; then
        echo "kept: project $PROJECT, image $IMAGE; remove with:"
        echo "  GW_SECRET=x GATEWAYRS_TEST_IMAGE=$IMAGE ${COMPOSE[*]} down -v; docker rmi $IMAGE"
    else
        if [[ $rc -ne 0 && $rc -ne 130 && $rc -ne 143 && -n "${STARTED:-}" ]] \
            && [[ -n "$(docker ps -aq --filter "label=com.docker.compose.project=$PROJECT")" ]]; then
            echo "--- last log lines of every container (exit code $rc) ---"
            "${COMPOSE[@]}" logs --no-color --tail=30 2>&1 | tail -n 300
        fi
        "${COMPOSE[@]}" down -v --remove-orphans --timeout 5 >/dev/null 2>&1
        # Anything compose did not know about any more (a killed container, an extra network).
        docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" | xargs -r docker rm -f >/dev/null 2>&1
        docker network ls -q --filter "label=com.docker.compose.project=$PROJECT" | xargs -r docker network rm >/dev/null 2>&1
        [[ -n "${COMPOSE_TEST_IMAGE:-}" ]] || docker rmi -f "$IMAGE" >/dev/null 2>&1
    fi
    rm -rf "$WORK"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { printf '%s [%3ss] %s\n' "==" "$(($(date +%s) - T0))" "$*"; }

# ---- WebSocket client library -------------------------------------------------------------------
PYTHON=python3
if ! python3 -c 'import websockets, sys; sys.exit(int(websockets.__version__.split(".")[0]) < 13)' 2>/dev/null; then
    step "installing the Python websockets package"
    if python3 -m venv "$WORK/venv" >/dev/null 2>&1 && "$WORK/venv/bin/pip" install -q 'websockets>=13' >/dev/null; then
        PYTHON="$WORK/venv/bin/python"
    else
        python3 -m pip install -q --user 'websockets>=13' \
            || python3 -m pip install -q --user --break-system-packages 'websockets>=13'
    fi
fi

# ---- binaries and the local image ---------------------------------------------------------------
if [[ -n "${COMPOSE_TEST_IMAGE:-}" ]]; then
    docker image inspect "$IMAGE" >/dev/null 2>&1 || { echo "FAIL: no image $IMAGE" >&2; exit 1; }
    step "using the existing image $IMAGE"
else
    BINS=(register gateway business-worker chat-web)
    if [[ "${COMPOSE_TEST_SKIP_BUILD:-}" != 1 ]]; then
        step "cargo build --release (${BINS[*]})"
        cargo build --release --locked --quiet -p gw-register -p gw-gateway -p gw-business-worker -p gw-chat-demo \
            $(printf -- '--bin %s ' "${BINS[@]}")
    fi
    TARGET_DIR=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
        | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])' 2>/dev/null || echo "$ROOT/target")

    step "image $IMAGE (FROM scratch: the binaries and the libraries ldd lists)"
    ROOTFS="$WORK/rootfs"
    mkdir -p "$ROOTFS/usr/local/bin" "$ROOTFS/etc/gatewayrs" "$ROOTFS/tmp"
    chmod 1777 "$ROOTFS/tmp"
    for bin in "${BINS[@]}"; do
        src="$TARGET_DIR/release/$bin"
        [[ -x "$src" ]] || { echo "FAIL: $src was not built" >&2; exit 1; }
        if command -v objcopy >/dev/null 2>&1; then
            objcopy --strip-debug "$src" "$ROOTFS/usr/local/bin/$bin"
        else
            cp "$src" "$ROOTFS/usr/local/bin/$bin"
        fi
        # Every absolute path ldd names: the libraries and the dynamic loader.
        for lib in $(ldd "$src" | grep -o '/[^ ]*'); do
            [[ -e "$ROOTFS$lib" ]] || { mkdir -p "$ROOTFS$(dirname "$lib")"; cp -L "$lib" "$ROOTFS$lib"; }
        done
    done
    cp docker/register.toml docker/gateway.toml docker/business-worker.toml "$ROOTFS/etc/gatewayrs/"
    printf 'root:x:0:0:root:/root:/sbin/nologin\ngatewayrs:x:10001:10001::/nonexistent:/sbin/nologin\n' >"$ROOTFS/etc/passwd"
    printf 'root:x:0:\ngatewayrs:x:10001:\n' >"$ROOTFS/etc/group"
    printf 'hosts: files dns\n' >"$ROOTFS/etc/nsswitch.conf"
    tar -C "$ROOTFS" --numeric-owner --owner=0 --group=0 -cf - . \
        | docker import --change 'USER 10001:10001' \
            --change 'CMD ["/usr/local/bin/gateway", "--config", "/etc/gatewayrs/gateway.toml", "start"]' \
            - "$IMAGE" >/dev/null
fi

# ---- the cluster --------------------------------------------------------------------------------
step "docker compose up: register, gateway-1, gateway-2, 2 x worker, chat-web (project $PROJECT, ${COMPOSE_BIN[*]})"
STARTED=1
if ! out=$("${COMPOSE[@]}" up -d --no-build --scale worker=2 register gateway-1 gateway-2 worker chat-web 2>&1); then
    echo "$out" | sed 's/^/   /'
    echo "FAIL: docker compose up"
    exit 1
fi

step "checks"
set +e
COMPOSE_JSON=$(python3 -c 'import json,sys; print(json.dumps(sys.argv[1:]))' "${COMPOSE[@]}")
GW_COMPOSE="$COMPOSE_JSON" GW_PROJECT="$PROJECT" "$PYTHON" "$ROOT/scripts/compose_checks.py"
rc=$?
set -e
step "done in $(($(date +%s) - T0))s"
exit $rc
