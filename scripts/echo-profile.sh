#!/usr/bin/env bash
# Instructions per echo round trip in the gateway or the business worker, counted by callgrind
# (repeatable on a shared machine, where timings are not): starts a register, a gateway and a
# business worker (app = "echo", one worker process) from BIN_DIR, with one of them under
# `valgrind --tool=callgrind`, runs `gw-bench echo` against it, zeroes the counters when the
# measurement window opens and dumps them when it closes, and prints
#
#   PROFILE target=gateway conns=… inflight=… round_trips=… instructions=… per_round_trip=… out=FILE
#
# (FILE: the callgrind dump, for callgrind_annotate). Issue 29 (BENCHMARKS.md, "Echo (issue 29)").
# With --target none nothing runs under valgrind and only gw-bench's RESULT line is printed (on
# stdout): the A/B pairs of BENCHMARKS.md alternate such runs of two builds' --bin directories.
#
#   scripts/echo-profile.sh [--bin DIR] [--target gateway|worker|none] [--conns N] [--inflight W]
#                           [--warmup S] [--duration S] [--keep DIR]
#
# Defaults: --bin target/release, --target gateway, 20 conns × 4 in flight (the ping-pong shape
# is --conns 1 --inflight 1), 5 s warm-up, 20 s window. Under callgrind the profiled process runs
# about 50× slower, so round trips are few; the count per round trip is what matters.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release
TARGET=gateway
CONNS=20
INFLIGHT=4
WARMUP=5
DURATION=20
KEEP=""
while [ $# -gt 0 ]; do
    case "$1" in
        --bin) BIN="$2"; shift ;;
        --target) TARGET="$2"; shift ;;
        --conns) CONNS="$2"; shift ;;
        --inflight) INFLIGHT="$2"; shift ;;
        --warmup) WARMUP="$2"; shift ;;
        --duration) DURATION="$2"; shift ;;
        --keep) KEEP="$2"; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "unknown option $1" >&2; exit 64 ;;
    esac
    shift
done
case "$TARGET" in gateway|worker|none) ;; *) echo "--target gateway, worker or none" >&2; exit 64 ;; esac
[ "$TARGET" = none ] || command -v valgrind >/dev/null || { echo "echo-profile: valgrind not found" >&2; exit 1; }
BENCH="$BIN/gw-bench"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/gw-echo-profile.XXXXXX")
# shellcheck source=scripts/lib/procs.sh
. scripts/lib/procs.sh
trap 'stop_all; [ -n "$KEEP" ] || rm -rf "$TMP"' EXIT
trap 'exit 130' INT TERM
[ -n "$KEEP" ] && mkdir -p "$KEEP"

read -r -a ports <<<"$("$BENCH" ports 3)"
reg="127.0.0.1:${ports[0]}" ws="127.0.0.1:${ports[1]}" internal="127.0.0.1:${ports[2]}"
common="[log]
level = \"warn\"
[process]
run_dir = \"$TMP/run\""
mkdir -p "$TMP/run"
printf 'name = "register"\nlisten = "%s"\n%s\n' "$reg" "$common" >"$TMP/register.toml"
printf 'name = "gateway"\nlisten = "%s"\ninternal_listen = "%s"\nregisters = ["%s"]\n%s\n' \
    "$ws" "$internal" "$reg" "$common" >"$TMP/gateway.toml"
printf 'name = "worker"\napp = "echo"\ncount = 1\nregisters = ["%s"]\n%s\n' "$reg" "$common" >"$TMP/worker.toml"

CG="valgrind --tool=callgrind --trace-children=yes --callgrind-out-file=$TMP/callgrind.%p"
gw_cmd="$BIN/gateway" wk_cmd="$BIN/business-worker"
case "$TARGET" in gateway) gw_cmd="$CG $gw_cmd" ;; worker) wk_cmd="$CG $wk_cmd" ;; esac
"$BIN/register" --config "$TMP/register.toml" >"$TMP/register.log" 2>&1 &
PIDS+=($!)
$gw_cmd --config "$TMP/gateway.toml" >"$TMP/gateway.log" 2>&1 &
PIDS+=($!)
$wk_cmd --config "$TMP/worker.toml" >"$TMP/worker.log" 2>&1 &
PIDS+=($!)
"$BENCH" wait --url "ws://$ws/" --timeout 300 >&2
if [ "$TARGET" = none ]; then
    "$BENCH" echo --url "ws://$ws/" --conns "$CONNS" --inflight "$INFLIGHT" --size 64 \
        --warmup "$WARMUP" --duration "$DURATION" --server-pids "$(IFS=,; echo "${PIDS[*]}")" | grep '^RESULT'
    exit 0
fi

"$BENCH" echo --url "ws://$ws/" --conns "$CONNS" --inflight "$INFLIGHT" --size 64 \
    --warmup "$WARMUP" --duration "$DURATION" >"$TMP/bench.out" &
bench=$!
sleep "$WARMUP"
callgrind_control -z >/dev/null 2>&1
sleep "$DURATION"
callgrind_control -d >/dev/null 2>&1
wait "$bench"
result=$(grep '^RESULT' "$TMP/bench.out")
echo "$result" >&2
rtt=$(sed -n 's/.* rtt_per_sec=\([0-9]*\).*/\1/p' <<<"$result")
round_trips=$((rtt * DURATION))
# The dump with the most instructions is the profiled process (a worker master's own is tiny).
best="" best_ir=0
for f in "$TMP"/callgrind.*.[0-9]*; do
    [ -e "$f" ] || continue
    ir=$(sed -n 's/^summary: *\([0-9]*\).*/\1/p' "$f" | head -n 1)
    [ -n "$ir" ] && [ "$ir" -gt "$best_ir" ] && { best=$f; best_ir=$ir; }
done
[ -n "$best" ] || { echo "echo-profile: no callgrind dump" >&2; exit 1; }
out=$best
if [ -n "$KEEP" ]; then out="$KEEP/callgrind.$TARGET.$(basename "$best")"; cp "$best" "$out"; fi
echo "PROFILE target=$TARGET conns=$CONNS inflight=$INFLIGHT round_trips=$round_trips instructions=$best_ir" \
    "per_round_trip=$((best_ir / (round_trips > 0 ? round_trips : 1))) out=$out"
