#!/usr/bin/env bash
# bench-http.sh — generation throughput through the HTTP endpoint against the same load
# through the file tree.
#
#   scripts/bench-http.sh [-m MODEL.gguf] [-c STREAMS] [-n TOKENS] [-r RUNS] [--llmfs PATH]
#
# One daemon, one model loaded with parallel=STREAMS. Each run starts STREAMS replies of
# TOKENS tokens at once (raw mode, temp 0) two ways, alternating run by run so that drift
# in the machine's speed hits both alike:
#   files  STREAMS clone sessions, `echo > prompt` then `cat output` in each
#   http   STREAMS streaming POSTs to /v1/completions from one curl process (--parallel)
# Throughput is the model's generated tokens (gen_tokens_total in its stats, before and
# after) over the wall time from the first request to the last reply's end; on a busy
# machine wall time swings by more than the effect, so each run also counts the daemon's
# CPU time per generated token (/proc/PID/stat), which the other load does not inflate as
# much. Prints every run, the medians of each way, and http's as a share of the files'.
# Without -m it makes a random-weight 91M-parameter llama (Q4_K_M) with `llmfs mkmodel`.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
LLMFS=$here/build/llmfs
MODEL=
STREAMS=8
N=128
RUNS=3
while [ $# -gt 0 ]; do
    case $1 in
    -m) MODEL=$2; shift 2 ;;
    -c) STREAMS=$2; shift 2 ;;
    -n) N=$2; shift 2 ;;
    -r) RUNS=$2; shift 2 ;;
    --llmfs) LLMFS=$2; shift 2 ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "bench-http.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -x "$LLMFS" ] || { echo "bench-http.sh: no llmfs at $LLMFS (build first, or --llmfs PATH)" >&2; exit 1; }
command -v curl >/dev/null || { echo "bench-http.sh: curl is needed" >&2; exit 1; }

T=$(mktemp -d "${TMPDIR:-/tmp}/llmfs-bench.XXXXXX")
MNT=$T/mnt
mkdir "$MNT"
PID=
cleanup() {
    if [ -n "$PID" ]; then
        kill -TERM "$PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    fi
    grep -q " $MNT fuse" /proc/mounts && fusermount3 -u -z "$MNT"
    rm -rf "$T"
}
trap cleanup EXIT

if [ -z "$MODEL" ]; then
    MODEL=$T/model.gguf
    "$LLMFS" mkmodel --arch llama --n-embd 1024 --n-layer 8 --n-head 16 --n-head-kv 4 \
        --n-ff 2816 --ctx 8192 --type q4_k_m -q -o "$MODEL"
fi
MODEL=$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")
PORT=$((20000 + RANDOM % 30000))
cat >"$T/llmfs.ini" <<CONF
[llmfs]
http_listen = 127.0.0.1:$PORT
max_sessions = $((STREAMS * 2 + 4))
[model b]
path = $MODEL
parallel = $STREAMS
ctx = $((N + 64))
mode = raw
temp = 0
n_predict = $N
CONF
"$LLMFS" mount -c "$T/llmfs.ini" "$MNT"
PID=$(awk '/^pid /{ print $2 }' "$MNT/stats")
M=$MNT/b

gen_total() { awk '/^gen_tokens_total /{ print $2 }' "$M/stats"; }
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$PID/stat"; }
HZ=$(getconf CLK_TCK)
now() { date +%s.%N; }
prompt_of() { echo "Story number $1 begins"; }

files_run() {
    local ids=() i
    for i in $(seq "$STREAMS"); do ids+=("$(cat "$M/clone")"); done
    local g0 t0 c0
    g0=$(gen_total)
    c0=$(cpu_ticks)
    t0=$(now)
    for i in $(seq "$STREAMS"); do
        (prompt_of "$i" >"$M/${ids[$((i - 1))]}/prompt" && cat "$M/${ids[$((i - 1))]}/output" >/dev/null) &
    done
    wait
    local t1
    t1=$(now)
    local c1
    c1=$(cpu_ticks)
    for id in "${ids[@]}"; do echo close >"$M/$id/ctl"; done
    echo "$(( $(gen_total) - g0 )) $t0 $t1 $((c1 - c0))"
}

http_run() {
    # One client process holds the STREAMS connections (curl --parallel), as a front end
    # serving several users does: STREAMS separate curl processes would spend about a
    # tenth of these two cores starting up beside the daemon, which the files way does
    # not pay (its clients are a subshell and cat each).
    local g0 t0 i c0 args=()
    for i in $(seq "$STREAMS"); do
        [ "$i" -gt 1 ] && args+=(--next)
        args+=(-sS -N -o /dev/null "http://127.0.0.1:$PORT/v1/completions"
            -d "{\"model\":\"b\",\"prompt\":\"$(prompt_of "$i")\",\"max_tokens\":$N,\"temperature\":0,\"stream\":true}")
    done
    g0=$(gen_total)
    c0=$(cpu_ticks)
    t0=$(now)
    curl -s --no-progress-meter --parallel --parallel-immediate --parallel-max "$STREAMS" "${args[@]}"
    local t1
    t1=$(now)
    echo "$(( $(gen_total) - g0 )) $t0 $t1 $(( $(cpu_ticks) - c0 ))"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) printf "%.3g", v[(NR + 1) / 2]; else printf "%.3g", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "model: $MODEL"
echo "streams: $STREAMS, tokens per stream: $N, runs: $RUNS"
: >"$T/files"
: >"$T/http"
: >"$T/files.cpu"
: >"$T/http.cpu"
for r in $(seq "$RUNS"); do
    for way in files http; do
        read -r toks t0 t1 ticks < <("${way}_run")
        rate=$(awk -v n="$toks" -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", n / (b - a) }')
        cpu=$(awk -v n="$toks" -v c="$ticks" -v hz="$HZ" 'BEGIN { printf "%.3f", 1000 * c / hz / n }')
        echo "$rate" >>"$T/$way"
        echo "$cpu" >>"$T/$way.cpu"
        echo "run $r $way: $toks tokens in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }') s = $rate t/s, daemon CPU $cpu ms/token"
    done
done
f=$(median <"$T/files")
h=$(median <"$T/http")
fc=$(median <"$T/files.cpu")
hc=$(median <"$T/http.cpu")
echo "median files: $f t/s, daemon CPU $fc ms/token"
echo "median http:  $h t/s ($(awk -v f="$f" -v h="$h" 'BEGIN { printf "%.1f", 100 * h / f }')% of files), daemon CPU $hc ms/token ($(awk -v f="$fc" -v h="$hc" 'BEGIN { printf "%.1f", 100 * h / f }')% of files)"
