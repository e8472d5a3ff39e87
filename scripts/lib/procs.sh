# Shared by the scripts that start a cluster (bench.sh, scale.sh): every pid the script starts goes
# into PIDS; `stop_all` sends each SIGTERM, gives it 5 s to exit gracefully, then SIGKILL.
PIDS=()
stop_all() {
    local pid
    for pid in "${PIDS[@]:-}"; do
        [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]:-}"; do
        [ -z "$pid" ] && continue
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
}
