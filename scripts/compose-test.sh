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
# shellcheck source=lib/docker_test.sh
source "$ROOT/scripts/lib/docker_test.sh"

skip_without_docker
# Compose v2 (`docker compose`) or v1 (`docker-compose`); both read the same files.
if docker compose version >/dev/null 2>&1; then
    COMPOSE_BIN=(docker compose)
elif command -v docker-compose >/dev/null 2>&1 && docker-compose version >/dev/null 2>&1; then
    COMPOSE_BIN=(docker-compose)
else
    echo "SKIP: docker not available (neither \`docker compose\` nor \`docker-compose\` works)"
    exit 0
fi
need_python3

PROJECT="gwct$(date +%s)$$"
IMAGE="${COMPOSE_TEST_IMAGE:-gatewayrs:local-$PROJECT}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gw-compose-test.XXXXXX")
COMPOSE=("${COMPOSE_BIN[@]}" -p "$PROJECT" -f "$ROOT/docker-compose.yml" -f "$ROOT/docker/compose.test.yml")

# What the compose files interpolate. Loopback-only ephemeral host ports; a fresh secret.
export_cluster_env "$IMAGE" "127.0.0.1:" "127.0.0.1:" "127.0.0.1:"

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
on_exit cleanup

# ---- WebSocket client library, binaries and the local image --------------------------------------
use_websockets "$WORK"
local_image "$IMAGE" "${COMPOSE_TEST_IMAGE:+1}" "${COMPOSE_TEST_SKIP_BUILD:-}" "$WORK"

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
