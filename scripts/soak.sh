#!/usr/bin/env bash
# Chaos soak: builds the release binaries, starts 1 register, 3 gateways ([recovery] on) and 4
# business workers (app = "echo") as real processes on loopback, connects numbered-message clients
# over the gateways (with connection state recovery: they resume after a break, on any gateway),
# and keeps doing random harm (kill -9, SIGSTOP/SIGCONT, graceful restarts of worker processes,
# workers, gateways and the register) for the duration; then checks delivery (order; a resumed
# client keeps its id and gets every reply once, so a graceful gateway restart loses nothing; loss
# only at killed gateways or where a client could not resume; duplicates only around worker/gateway
# crashes), recovery, panics, file descriptors and memory, and prints the totals (resumed, not
# recovered by reason, lost, duplicated, per kind of fault). Exits non-zero on any violated check.
#
#   scripts/soak.sh                 long run: 1000 clients at 5 msg/s, 10 minutes of faults
#   scripts/soak.sh --short         CI: 200 clients at 10 msg/s, 45 s of faults but gateway-stop (60-90 s in all)
#   options: --duration D (90s, 10m, ...)  --clients N  --seed S  --keep (keep logs on success)
#            anything after -- goes to gw-soak as is (see: target/release/gw-soak --help), e.g.
#            -- --faults gateway-restart   (only graceful gateway restarts)
#            -- --recovery-share 0.5       (half the clients without recovery)
#
# Logs, configs and run dirs of every process go to target/soak/run-*/ (removed on success unless
# --keep). Every process of the soak is killed when this script exits, failure or Ctrl-C included.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=long
DURATION=""
CLIENTS=""
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --short) MODE=short ;;
        --duration) DURATION="$2"; shift ;;
        --clients) CLIENTS="$2"; shift ;;
        --seed) EXTRA+=(--seed "$2"); shift ;;
        --keep) EXTRA+=(--keep) ;;
        --) shift; EXTRA+=("$@"); break ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 64 ;;
    esac
    shift
done
if [ "$MODE" = short ]; then
    # CI's short run leaves out gateway-stop (SIGSTOP/SIGCONT of a gateway) for now: relayed
    # clients of a stopped gateway resume there after SIGCONT while its worker links, timed out
    # meanwhile, hand their unacknowledged events back. The soak found those reaching the
    # workers after the resumed connection's newer events; the gateway now keeps them in order
    # (tests/recovery.rs, events_a_dead_worker_hands_back_...), but the soak has not yet been
    # seen to pass that case repeatedly. The long run keeps every fault.
    ARGS=(--clients "${CLIENTS:-200}" --duration "${DURATION:-45s}" --rate 10 --segment 15s
          --faults worker-kill,worker-stop,worker-restart,gateway-kill,gateway-restart,register-kill,register-restart)
else
    ARGS=(--clients "${CLIENTS:-1000}" --duration "${DURATION:-10m}" --rate 5)
fi

echo "== building (release)" >&2
cargo build --release -q -p gw-register -p gw-gateway -p gw-business-worker -p gw-chat-demo -p gw-soak
BIN="${CARGO_TARGET_DIR:-target}/release"

# gw-soak makes itself a process group leader (setsid); killing the group ends every daemon and
# worker process it started, including stopped ones.
"$BIN/gw-soak" --bin-dir "$BIN" "${ARGS[@]}" "${EXTRA[@]}" &
SOAK=$!
trap 'kill -KILL -- "-$SOAK" 2>/dev/null || true' EXIT
trap 'exit 130' INT TERM
wait "$SOAK"
