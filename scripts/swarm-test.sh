#!/usr/bin/env bash
# The docker-compose.yml cluster deployed as a Docker Swarm stack (with docker/stack.yml, and
# docker/stack.test.yml for a local image and short health intervals), proven with real WebSocket
# clients against the published ports (mode: host, see docker/stack.yml):
#
#   1. clients on gateway-1 and gateway-2 chat across tasks; client ids name the tasks
#      (each gateway task advertises its own task name, {{.Task.Name}}:2900)
#   2. `docker service update --force` (rolling, parallelism 1) of gateway-1, then of
#      gateway-2, under numbered traffic from clients that ask for recovery (?gw_recover=1):
#      the task is replaced, the new one is linked to both workers, every client of the replaced
#      task reconnects (gw_resume) and is answered again, and the other gateway's clients get
#      every message exactly once, in order, without a disconnect. The replaced task hands its
#      clients over (docs/recovery.md): each comes back to the new task, which relays it to the
#      adopter, and is resumed under its id, with nothing lost, repeated or reordered either way
#      (it prints recovered / not recovered by reason, replayed, lost, resent).
#   3. `docker stack rm` leaves no service, container or network behind
#
# Swarm: a single-node swarm is enough. If this Docker is not in a swarm, the script runs
# `docker swarm init` and `docker swarm leave --force` on exit (also after a failure or Ctrl-C);
# a swarm it did not create is used as it is (this node must be a manager) and left alone.
# Prints "SKIP: ..." and exits 0 without Docker or when no swarm can be used.
#
# No image is pulled or built by Docker: the release binaries are built here and put in a local
# image FROM scratch (with the shared libraries `ldd` lists), as scripts/compose-test.sh does.
# Published ports are free ports picked at run time (host mode publishes on every interface of
# the node; the secret is random). Prints one PASS/FAIL line per check with its
# duration; exits non-zero if any check fails.
#
# Environment: SWARM_TEST_SKIP_BUILD=1 uses the binaries already in target/release.
# SWARM_TEST_IMAGE=IMAGE runs on an existing image (not removed). SWARM_TEST_KEEP=1 keeps the
# stack, image and swarm for inspection (prints how to remove them). SWARM_TEST_CLIENTS=N clients
# per gateway in check 2 (default 4). SWARM_TEST_RECONNECT=other: the replaced task's clients
# reconnect to the other gateway's port (as through a balancer) instead of their own.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=lib/docker_test.sh
source "$ROOT/scripts/lib/docker_test.sh"

skip_without_docker
need_python3

STACK="gwst$(date +%s)$$"
IMAGE="${SWARM_TEST_IMAGE:-gatewayrs:local-$STACK}"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gw-swarm-test.XXXXXX")
FILES=(-c "$ROOT/docker-compose.yml" -c "$ROOT/docker/stack.yml" -c "$ROOT/docker/stack.test.yml")
INITIALISED=""

stack_gone() {
    [[ -z "$(docker service ls -q --filter "label=com.docker.stack.namespace=$STACK" 2>/dev/null)" ]] \
        && [[ -z "$(docker ps -aq --filter "label=com.docker.stack.namespace=$STACK" 2>/dev/null)" ]] \
        && [[ -z "$(docker network ls -q --filter "label=com.docker.stack.namespace=$STACK" 2>/dev/null)" ]]
}

cleanup() {
    local rc=$?
    set +e
    if [[ -n "${CHECKS_PID:-}" ]]; then
        kill "$CHECKS_PID" 2>/dev/null
        wait "$CHECKS_PID" 2>/dev/null
    fi
    if [[ "${SWARM_TEST_KEEP:-}" == 1 ]]; then
        echo "kept: stack $STACK, image $IMAGE; remove with:"
        echo "  docker stack rm $STACK; docker rmi $IMAGE${INITIALISED:+; docker swarm leave --force}"
    else
        if [[ -n "${DEPLOYED:-}" ]] && ! stack_gone; then
            if [[ $rc -ne 0 && $rc -ne 130 && $rc -ne 143 ]]; then
                echo "--- last log lines of every service (exit code $rc) ---"
                for s in $(docker service ls -q --filter "label=com.docker.stack.namespace=$STACK"); do
                    docker service logs --no-trunc --tail 20 "$s" 2>&1 | tail -n 20
                done
            fi
            docker stack rm "$STACK" >/dev/null 2>&1
            for _ in $(seq 120); do stack_gone && break; sleep 0.5; done
            # Whatever `stack rm` left (a network still held by an exiting container).
            docker ps -aq --filter "label=com.docker.stack.namespace=$STACK" | xargs -r docker rm -f >/dev/null 2>&1
            docker network ls -q --filter "label=com.docker.stack.namespace=$STACK" | xargs -r docker network rm >/dev/null 2>&1
        fi
        [[ -n "${SWARM_TEST_IMAGE:-}" ]] || docker rmi -f "$IMAGE" >/dev/null 2>&1
        if [[ -n "$INITIALISED" ]]; then
            docker swarm leave --force >/dev/null 2>&1 && echo "== left the swarm this test created"
        fi
    fi
    rm -rf "$WORK"
    exit $rc
}
on_exit cleanup

# ---- the swarm ----------------------------------------------------------------------------------
state=$(docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null || echo unknown)
case "$state" in
    inactive)
        step "docker swarm init (a single-node swarm, left again on exit)"
        if out=$(docker swarm init 2>&1) || out=$(docker swarm init --advertise-addr 127.0.0.1 2>&1); then
            INITIALISED=1
        else
            echo "$out" | sed 's/^/   /'
            echo "SKIP: docker swarm init failed"
            exit 0
        fi
        ;;
    active)
        if [[ "$(docker info --format '{{.Swarm.ControlAvailable}}')" != true ]]; then
            echo "SKIP: this Docker is in a swarm but not a manager (docker stack deploy needs one)"
            exit 0
        fi
        step "using the swarm this Docker is already in (it is not left on exit)"
        ;;
    *)
        echo "SKIP: swarm not available (state: $state)"
        exit 0
        ;;
esac

# ---- WebSocket client library, binaries and the local image (as scripts/compose-test.sh) ----------
use_websockets "$WORK"
# The swarm's DNS names (service and task names) are looked up through libc's resolver.
local_image "$IMAGE" "${SWARM_TEST_IMAGE:+1}" "${SWARM_TEST_SKIP_BUILD:-}" "$WORK" \
    /lib/x86_64-linux-gnu/libnss_dns.so.2 /lib/x86_64-linux-gnu/libnss_files.so.2 /lib/x86_64-linux-gnu/libresolv.so.2

# ---- the stack ----------------------------------------------------------------------------------
# Free TCP ports of this node for the host-mode ports (picked now; nothing else should take them in
# the seconds before the deploy).
read -r P1 P2 PW < <(python3 -c '
import socket
ss = [socket.socket() for _ in range(3)]
for s in ss:
    s.bind(("0.0.0.0", 0))
print(*(s.getsockname()[1] for s in ss))
')
export_cluster_env "$IMAGE" "$P1" "$P2" "$PW"

step "docker stack config (docker-compose.yml + docker/stack.yml + docker/stack.test.yml; also with the HTTP API file, and compose config)"
if ! docker stack config "${FILES[@]}" >"$WORK/stack.yml" 2>"$WORK/config.err"; then
    sed 's/^/   /' "$WORK/config.err"
    echo "FAIL: docker stack config"
    exit 1
fi
# docker-compose.yml stays one file for compose and stack: with the HTTP API file as well, and
# for compose (v2 or v1) too.
docker stack config -c "$ROOT/docker-compose.yml" -c "$ROOT/docker/compose.http-api.yml" -c "$ROOT/docker/stack.yml" \
    >/dev/null || { echo "FAIL: docker stack config with docker/compose.http-api.yml"; exit 1; }
if docker compose version >/dev/null 2>&1; then COMPOSE_BIN=(docker compose); else COMPOSE_BIN=(docker-compose); fi
if "${COMPOSE_BIN[@]}" version >/dev/null 2>&1; then
    "${COMPOSE_BIN[@]}" -f "$ROOT/docker-compose.yml" -f "$ROOT/docker/compose.http-api.yml" config -q \
        || { echo "FAIL: ${COMPOSE_BIN[*]} config no longer accepts docker-compose.yml"; exit 1; }
fi
grep -q 'GW_ADVERTISE: .{{.Task.Name}}:2900' "$WORK/stack.yml" \
    || { echo "FAIL: the merged stack does not advertise per-task names"; exit 1; }
grep -q "GW_SECRET: $GW_SECRET" "$WORK/stack.yml" \
    || { echo "FAIL: the merged stack does not carry GW_SECRET as given"; exit 1; }

step "docker stack deploy $STACK: register, gateway-1 (:$P1), gateway-2 (:$P2), 2 x worker, chat-web (:$PW)"
DEPLOYED=1
if ! out=$(docker stack deploy --resolve-image never "${FILES[@]}" "$STACK" 2>&1); then
    echo "$out" | sed 's/^/   /'
    echo "FAIL: docker stack deploy"
    exit 1
fi
echo "$out" | grep -i 'ignoring' | sed 's/^/   /' || true

step "checks"
set +e
# In the background, so that a TERM (a CI timeout) runs the cleanup at once, not after the checks.
GW_STACK="$STACK" GW_PORTS="{\"gateway-1\": $P1, \"gateway-2\": $P2, \"chat-web\": $PW}" \
    "$PYTHON" "$ROOT/scripts/swarm_checks.py" &
CHECKS_PID=$!
wait "$CHECKS_PID"
rc=$?
CHECKS_PID=""
set -e
step "done in $(($(date +%s) - T0))s"
exit $rc
