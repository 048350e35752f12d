#!/usr/bin/env bash
# bench-fs.sh — what reading `output` through the mount costs generation.
#
#   scripts/bench-fs.sh [-m MODEL.gguf | --shape NAME] [-n TOKENS] [-r RUNS] [-t THREADS] [--llmfs PATH]
#
# Measures token generation (tg) speed three ways on the same model and threads:
#   bench      `llmfs bench -p 0 -n TOKENS` (no file system at all)
#   mount      a prompt written through the mount, nobody reading output
#   mount+cat  the same with `cat output` streaming the reply while it is generated
# and prints each mean (t/s, from the session's own tg_tps) and the slowdown of
# mount+cat against mount and against bench. Without -m it makes a random-weight model
# with `llmfs mkmodel` (default shape: a small llama, --shape to choose another).
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
LLMFS=$here/build/llmfs
MODEL=
SHAPE=
N=256
RUNS=3
THREADS=
while [ $# -gt 0 ]; do
    case $1 in
    -m) MODEL=$2; shift 2 ;;
    --shape) SHAPE=$2; shift 2 ;;
    -n) N=$2; shift 2 ;;
    -r) RUNS=$2; shift 2 ;;
    -t) THREADS=$2; shift 2 ;;
    --llmfs) LLMFS=$2; shift 2 ;;
    -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "bench-fs.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
[ -x "$LLMFS" ] || { echo "bench-fs.sh: no llmfs at $LLMFS (build first, or --llmfs PATH)" >&2; exit 1; }

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
    if [ -n "$SHAPE" ]; then
        "$LLMFS" mkmodel --shape "$SHAPE" -q -o "$MODEL"
    else
        "$LLMFS" mkmodel --arch llama --n-embd 1024 --n-layer 8 --n-head 16 --n-head-kv 4 \
            --n-ff 2816 --ctx 8192 --type q4_k_m -q -o "$MODEL"
    fi
fi
MODEL=$(cd "$(dirname "$MODEL")" && pwd)/$(basename "$MODEL")
targs=()
[ -n "$THREADS" ] && targs=(-t "$THREADS")

mean() { awk '{ s += $1; n++ } END { if (n) printf "%.2f", s / n; else print "nan" }'; }

echo "model: $MODEL"
echo "tokens per run: $N, runs: $RUNS${THREADS:+, threads: $THREADS}"

# -- bench: the engine alone --
bench_tg=$("$LLMFS" bench -m "$MODEL" -p 0 -n "$N" -r "$RUNS" "${targs[@]}" -o csv |
    awk -F, 'NR > 1 { print $(NF-1) }' | mean)

# -- through the mount --
"$LLMFS" mount -f --set model_dirs="$(dirname "$MODEL")" "$MNT" 2>"$T/mount.err" &
PID=$!
for _ in $(seq 100); do [ -e "$MNT/ctl" ] && break; sleep 0.1; done
[ -e "$MNT/ctl" ] || { echo "bench-fs.sh: the mount did not come up: $(cat "$T/mount.err")" >&2; exit 1; }
load="load b $MODEL ctx=$((N + 64))"
[ -n "$THREADS" ] && load="$load threads=$THREADS threads_batch=$THREADS"
echo "$load" >"$MNT/ctl"
B=$MNT/b
printf 'mode raw\ntemp 0\nn_predict %d\n' "$N" >"$B/ctl"

one_run() { # reader: 0 or 1; prints tg_tps of the run
    local reader=$1 cat_pid=
    if [ "$reader" = 1 ]; then
        cat "$B/output" >/dev/null &
        cat_pid=$!
        sleep 0.1
    fi
    echo "Once upon a time" >"$B/prompt"
    until grep -q '^state idle' "$B/stats"; do sleep 0.2; done
    [ -n "$cat_pid" ] && wait "$cat_pid"
    local n_gen
    n_gen=$(awk '$1 == "n_gen" { print $2 }' "$B/stats")
    [ "$n_gen" -lt "$N" ] && echo "bench-fs.sh: warning: a run ended after $n_gen tokens" >&2
    awk '$1 == "tg_tps" { print $2 }' "$B/stats"
}

one_run 0 >/dev/null # warm-up
plain=()
reading=()
for _ in $(seq "$RUNS"); do # interleaved, so drift in machine speed hits both alike
    plain+=("$(one_run 0)")
    reading+=("$(one_run 1)")
done
mount_tg=$(printf '%s\n' "${plain[@]}" | mean)
cat_tg=$(printf '%s\n' "${reading[@]}" | mean)

printf '\n| %-10s | %10s |\n|------------|-----------:|\n' "how" "tg t/s"
printf '| %-10s | %10s |\n' bench "$bench_tg" mount "$mount_tg" "mount+cat" "$cat_tg"
awk -v b="$bench_tg" -v m="$mount_tg" -v c="$cat_tg" 'BEGIN {
    printf "\nreading output costs %.2f%% against the mount without a reader, %.2f%% against bench\n",
        (m - c) / m * 100, (b - c) / b * 100 }'
