#!/usr/bin/env bash
# Autobahn|Testsuite conformance run against the gateway's public WebSocket listener.
#
#   scripts/autobahn.sh            every case (1.* to 13.*); report in target/autobahn-report/full
#   scripts/autobahn.sh --quick    cases 1.* 2.* 3.* 4.* 5.* 6.1.* 6.4.* 7.* 12.1.1 13.3.1 13.7.1 (target/autobahn-report/quick)
#   options:
#     --cases "P1 P2 …"   other case patterns, e.g. --cases "9.1.* 7.5.1" (target/autobahn-report/custom)
#     --debug             use debug binaries (default: release)
#     --bin-dir DIR       use register, gateway and business-worker from DIR; build nothing
#     --case-timeout S    a case making no progress for S seconds is a hang (default 300)
#
# Starts a register, a gateway and a business worker (app = "echo", which echoes text as text and
# binary as binary) on loopback ports chosen by the OS, waits until the worker is linked, runs the
# suite's fuzzing client (wstest -m fuzzingclient, Python 2.7, installed once into
# target/autobahn-venv from scripts/autobahn/requirements-py27.txt), then checks index.json:
#   no case FAILED or UNIMPLEMENTED; behaviorClose OK or INFORMATIONAL; NON-STRICT only for 6.4.x
#   and 12.x/13.x; the compression cases 12.x/13.x (permessage-deflate, on by default) OK or
#   NON-STRICT.
# Exit status: 0 when every rule holds (or "SKIP: no Python 2.7 interpreter"), 1 on a violation,
# a crashed or hung case, 2 when the tools cannot be set up. Every process is stopped on exit.
# Python 2.7: $AUTOBAHN_PYTHON2, else pyenv's 2.7.x ($(pyenv root) or ~/.pyenv), else python2.7 on PATH.
# Reports: index.html/index.json and one .html/.json per case in the report directory, with
# summary.txt (counts, violations grouped), violations.txt (every violating case: expected and
# observed events and close codes), wstest.log, and logs/ (daemon logs, configs, spec.json).
# Time on 2 cores: the environment is built once (~2.5 min); then, besides cargo build, --quick
# runs ~20 s; the full suite ~35 s before its 216 compression cases (12.x/13.x, 1,000 messages of
# up to 128 KiB each), which take ~20 min on a busy machine, nearly all of it in wstest itself.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
HERE="$ROOT/scripts/autobahn"

MODE=full
CASES=()
PROFILE=release
BIN_DIR=""
CASE_TIMEOUT=300
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) MODE=quick ;;
        --cases) MODE=custom; read -r -a CASES <<<"$2"; shift ;;
        --debug) PROFILE=debug ;;
        --bin-dir) BIN_DIR="$2"; shift ;;
        --case-timeout) CASE_TIMEOUT="$2"; shift ;;
        -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
    shift
done
case "$MODE" in
    full) CASES=("*") ;;
    quick) CASES=("1.*" "2.*" "3.*" "4.*" "5.*" "6.1.*" "6.4.*" "7.*" "12.1.1" "13.3.1" "13.7.1") ;;
esac
T0=$(date +%s)
elapsed() { local s=$(($(date +%s) - T0)); printf '%dm%02ds' $((s / 60)) $((s % 60)); }

# ---- Python 2.7 ---------------------------------------------------------------------------------
is_py27() { [ -x "$1" ] && "$1" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (2, 7) else 1)' 2>/dev/null; }
find_py27() {
    local c roots=()
    if [ -n "${AUTOBAHN_PYTHON2:-}" ]; then
        is_py27 "$AUTOBAHN_PYTHON2" && { echo "$AUTOBAHN_PYTHON2"; return 0; }
        echo "AUTOBAHN_PYTHON2=$AUTOBAHN_PYTHON2 is not a Python 2.7 interpreter" >&2
        return 1
    fi
    command -v pyenv >/dev/null 2>&1 && roots+=("$(pyenv root 2>/dev/null)")
    roots+=("${PYENV_ROOT:-}" "$HOME/.pyenv")
    for r in "${roots[@]}"; do
        [ -n "$r" ] || continue
        for c in "$r/versions/2.7.18/bin/python" "$r"/versions/2.7*/bin/python; do
            is_py27 "$c" && { echo "$c"; return 0; }
        done
    done
    for c in python2.7 python2; do
        c=$(command -v "$c" 2>/dev/null) && is_py27 "$c" && { echo "$c"; return 0; }
    done
    return 1
}
if ! PY27=$(find_py27); then
    echo "SKIP: no Python 2.7 interpreter (set AUTOBAHN_PYTHON2, or install 2.7.18 with pyenv); Autobahn|Testsuite not run"
    exit 0
fi

# ---- the wstest environment (cached; rebuilt when the requirements or the interpreter change) ---
VENV_ROOT="$ROOT/target/autobahn-venv"
VENV="$VENV_ROOT/py27"
WSTEST="$VENV/bin/wstest"
mkdir -p "$VENV_ROOT"
STAMP_WANT=$(cat "$HERE/requirements-py27.txt" "$HERE/requirements-bootstrap.txt" <(echo "$PY27") | sha256sum | cut -d' ' -f1)
setup_venv() {
    [ -x "$WSTEST" ] && [ "$(cat "$VENV/.stamp" 2>/dev/null)" = "$STAMP_WANT" ] && return 0
    echo "== creating the wstest environment in $VENV (Python 2.7: $PY27); takes a few minutes once" >&2
    local boot="$VENV_ROOT/bootstrap"
    if ! "$boot/bin/python" -m virtualenv --version >/dev/null 2>&1; then
        rm -rf "$boot"
        python3 -m venv "$boot" || { echo "python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; return 1; }
        "$boot/bin/pip" install -q -r "$HERE/requirements-bootstrap.txt" || return 1
    fi
    rm -rf "$VENV"
    "$boot/bin/python" -m virtualenv -q -p "$PY27" "$VENV" || return 1
    if ! PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONWARNINGS=ignore "$VENV/bin/pip" install --prefer-binary \
        -r "$HERE/requirements-py27.txt" >"$VENV_ROOT/pip.log" 2>&1; then
        grep -v DEPRECATION "$VENV_ROOT/pip.log" | tail -n 30 >&2
        echo "pip install failed; full log: $VENV_ROOT/pip.log" >&2
        return 1
    fi
    "$WSTEST" --help >/dev/null 2>&1 || { echo "wstest does not run after installation" >&2; return 1; }
    echo "$STAMP_WANT" >"$VENV/.stamp"
}
# One installer at a time (two runs started together share the cache).
if ! ( flock 9 && setup_venv ) 9>"$VENV_ROOT/.lock"; then
    echo "ERROR: could not set up Autobahn|Testsuite in $VENV" >&2
    exit 2
fi

# ---- binaries -----------------------------------------------------------------------------------
if [ -z "$BIN_DIR" ]; then
    echo "== building ($PROFILE)" >&2
    if [ "$PROFILE" = release ]; then
        cargo build --release -q -p gw-register -p gw-gateway -p gw-business-worker -p gw-chat-demo
    else
        cargo build -q -p gw-register -p gw-gateway -p gw-business-worker -p gw-chat-demo
    fi
    BIN_DIR="${CARGO_TARGET_DIR:-$ROOT/target}/$PROFILE"
fi
for b in register gateway business-worker; do
    [ -x "$BIN_DIR/$b" ] || { echo "ERROR: no $BIN_DIR/$b" >&2; exit 2; }
done

# ---- cluster ------------------------------------------------------------------------------------
OUTDIR="$ROOT/target/autobahn-report/$MODE"
rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/gw-autobahn.XXXXXX")
DAEMONS=()   # "name:pid"
WS_PID=""

stop_pid() { # stop_pid PID SECONDS: TERM, then KILL (with its children) after SECONDS
    local pid=$1 i kids
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < $2 * 10; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
        kids=$(pgrep -P "$pid" || true)
        kill -KILL "$pid" $kids 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$? i d
    trap - EXIT INT TERM
    [ -n "$WS_PID" ] && stop_pid "$WS_PID" 5
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        d=${DAEMONS[$i]}
        stop_pid "${d#*:}" 15
    done
    mkdir -p "$OUTDIR/logs"
    cp "$TMP"/*.log "$TMP"/*.toml "$TMP"/spec.json "$OUTDIR/logs/" 2>/dev/null || true
    rm -rf "$TMP"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start NAME: runs BIN_DIR/NAME with TMP/NAME.toml, output to TMP/NAME.log; sets PID
start() {
    "$BIN_DIR/$1" --config "$TMP/$1.toml" start >"$TMP/$1.log" 2>&1 &
    PID=$!
    DAEMONS+=("$1:$PID")
}
logwait() { python3 "$HERE/logwait.py" "$@"; }

cat >"$TMP/register.toml" <<EOF
name = "register-autobahn"
listen = "127.0.0.1:0"
[log]
format = "json"
[process]
run_dir = "$TMP/run-register"
admin = ""
EOF
start register
REG=$(logwait "$TMP/register.log" "$PID" "register listening" listen --timeout 30)

# Test profile: the 9.x cases send messages of up to 16 MiB (and 9.7/9.8 a thousand messages
# before reading the echoes), so the message size, both send-queue bounds and link.max_frame (the
# echo crosses the internal links twice: gateway and worker) are raised. Server heartbeats are off,
# so no ping frame of ours appears among the events a case observes.
cat >"$TMP/gateway.toml" <<EOF
name = "gateway-autobahn"
listen = "127.0.0.1:0"
internal_listen = "127.0.0.1:0"
registers = ["$REG"]
max_message_size = 16777216
send_queue = 100000
send_queue_bytes = 67108864
handshake_timeout = "10s"
grace_period = "2s"
ping_interval = "0s"
ping_not_response_limit = 0
[link]
max_frame = 67108864
[log]
format = "json"
[process]
run_dir = "$TMP/run-gateway"
admin = ""
EOF
start gateway
GW_PID=$PID
WS_ADDR=$(logwait "$TMP/gateway.log" "$PID" "gateway listening" public --timeout 30)

cat >"$TMP/business-worker.toml" <<EOF
name = "worker-autobahn"
app = "echo"
registers = ["$REG"]
count = 1
grace_period = "2s"
[link]
max_frame = 67108864
[log]
format = "json"
[process]
run_dir = "$TMP/run-worker"
admin = ""
EOF
start business-worker
logwait "$TMP/gateway.log" "$GW_PID" "worker connected" --timeout 60 >/dev/null
echo "== cluster up: register $REG, gateway ws://$WS_ADDR/, echo worker ($BIN_DIR)" >&2

# ---- the suite ----------------------------------------------------------------------------------
python3 - "$TMP/spec.json" "ws://$WS_ADDR/" "$OUTDIR" "${CASES[@]}" <<'EOF'
import json, sys
path, url, outdir, cases = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
spec = {"outdir": outdir, "servers": [{"agent": "gatewayrs", "url": url}],
        "cases": cases, "exclude-cases": [], "exclude-agent-cases": {}}
json.dump(spec, open(path, "w"), indent=2)
EOF
WSLOG="$OUTDIR/wstest.log"
echo "== wstest -m fuzzingclient, cases: ${CASES[*]} (log: $WSLOG)" >&2
(cd "$TMP" && PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore exec "$WSTEST" -m fuzzingclient -s "$TMP/spec.json") >"$WSLOG" 2>&1 &
WS_PID=$!

# Progress, and the watchdog: a daemon that dies or a case that makes no progress ends the run.
TROUBLE=""
last_n=0 last_section="" last_change=$(date +%s)
while kill -0 "$WS_PID" 2>/dev/null; do
    sleep 1
    n=$(grep -c '^Running test case ID' "$WSLOG" || true)
    cur=$(grep '^Running test case ID' "$WSLOG" | tail -n 1 | awk '{print $5}' || true)
    if [ "$n" != "$last_n" ]; then
        last_n=$n last_change=$(date +%s)
        if [ "${cur%%.*}" != "$last_section" ]; then
            last_section=${cur%%.*}
            total=$(sed -n 's/^Ok, will run \([0-9]*\) test cases.*/\1/p' "$WSLOG" | head -n 1)
            echo "   [$(elapsed)] case $n/${total:-?}: section $last_section.* ($cur)" >&2
        fi
    fi
    for d in "${DAEMONS[@]}"; do
        if ! kill -0 "${d#*:}" 2>/dev/null || [ "$(awk '{print $3}' "/proc/${d#*:}/stat" 2>/dev/null)" = Z ]; then
            TROUBLE="CRASH: ${d%%:*} (pid ${d#*:}) exited; last case started: ${cur:-none}"
            break 2
        fi
    done
    if [ $(($(date +%s) - last_change)) -gt "$CASE_TIMEOUT" ]; then
        TROUBLE="HANG: no progress for ${CASE_TIMEOUT}s in case ${cur:-<before the first case>} (or in the opening handshake of the case after it)"
        break
    fi
done
if [ -n "$TROUBLE" ]; then
    echo "$TROUBLE" | tee "$OUTDIR/trouble.txt"
    stop_pid "$WS_PID" 5
    WS_PID=""
    echo "--- wstest log (tail)"; tail -n 15 "$WSLOG"
    for d in "${DAEMONS[@]}"; do echo "--- ${d%%:*} log (tail)"; tail -n 15 "$TMP/${d%%:*}.log"; done
    echo "== Autobahn|Testsuite ($MODE): FAIL after $(elapsed); logs in $OUTDIR/logs"
    exit 1
fi
WS_RC=0
wait "$WS_PID" || WS_RC=$?
WS_PID=""
if [ ! -s "$OUTDIR/index.json" ]; then
    echo "ERROR: wstest exited with status $WS_RC and wrote no $OUTDIR/index.json"
    tail -n 30 "$WSLOG"
    exit 1
fi

# ---- verdict ------------------------------------------------------------------------------------
RC=0
python3 "$HERE/summary.py" "$OUTDIR" --agent gatewayrs | tee "$OUTDIR/summary.txt" || RC=1
if [ "$RC" -eq 0 ]; then
    echo "== Autobahn|Testsuite ($MODE): PASS in $(elapsed); report: $OUTDIR/index.html"
else
    echo "== Autobahn|Testsuite ($MODE): FAIL in $(elapsed); report: $OUTDIR/index.html, summary: $OUTDIR/summary.txt"
fi
exit "$RC"
