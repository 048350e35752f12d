#!/usr/bin/env bash
# bench-fs.sh — what reading `output` through the mount costs generation.
#
#   scripts/bench-fs.sh [-m MODEL.gguf | --shape NAME] [-n TOKENS] [-r RUNS] [-t THREADS] [--llmfs PATH]
#
# Measures token generation (tg) speed three ways on the same model and threads,
# interleaved run by run so that drift in the machine's speed hits all three alike:
#   bench      `llmfs bench -p 0 -n TOKENS -r 1` (no file system at all)
#   mount      a prompt written through the mount, nobody reading output
#   mount+cat  the same with `cat output` streaming the reply while it is generated
# and prints each median (t/s; the mount's from the session's tg_tps) and the slowdown
# of mount+cat against the others. On a busy machine speeds swing by more than the
# effect, so it also counts CPU time: the daemon's per generated token, and what a
# reader adds — the FUSE worker threads that serve its reads and cat itself — as a
# share of the daemon's. BENCH_FS_RAW=1 prints every run.
# Without -m it makes a random-weight model with `llmfs mkmodel` (a 91M-parameter
# llama in Q4_K_M; --shape NAME for a real model's shape instead).
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
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
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

median() { sort -g | awk '{ v[NR] = $1 } END { if (!NR) print "nan"; else if (NR % 2) printf "%.2f", v[(NR + 1) / 2]; else printf "%.2f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "model: $MODEL"
echo "tokens per run: $N, runs: $RUNS${THREADS:+, threads: $THREADS}"

# -- through the mount --
# The model comes from the configuration, so the daemon's main thread loads it and the
# core's threads do not inherit the FUSE workers' thread name.
{
    echo "[model b]"
    echo "path = $MODEL"
    echo "ctx = $((N + 64))"
    [ -n "$THREADS" ] && printf 'threads = %s\nthreads_batch = %s\n' "$THREADS" "$THREADS"
} >"$T/bench.ini"
"$LLMFS" mount -f -c "$T/bench.ini" --set model_dirs="$(dirname "$MODEL")" "$MNT" 2>"$T/mount.err" &
PID=$!
B=$MNT/b
for _ in $(seq 600); do [ -e "$B/ctl" ] && break; sleep 0.1; done
[ -e "$B/ctl" ] || { echo "bench-fs.sh: the mount did not come up: $(cat "$T/mount.err")" >&2; exit 1; }
printf 'mode raw\ntemp 0\nn_predict %d\n' "$N" >"$B/ctl"

# CPU time in seconds of a process, or with a second argument of its threads of that
# name (the FUSE workers are "llmfs-fuse"), from the scheduler's nanosecond counters.
cpu_of() {
    local files=()
    for t in /proc/"$1"/task/*; do
        [ $# -lt 2 ] || [ "$(cat "$t/comm" 2>/dev/null)" = "$2" ] && files+=("$t/schedstat")
    done
    cat "${files[@]}" 2>/dev/null | awk '{ s += $1 } END { printf "%.6f\n", s / 1e9 }'
}

one_run() { # reader: 0 or 1; prints: tg_tps daemon-cpu-s reader-cpu-s n_gen fuse-cpu-s
    local reader=$1 cat_pid= c0 c1 f0 f1 n_gen tg cat_cpu=0
    if [ "$reader" = 1 ]; then
        # After the reply and a newline, cat copies its own CPU counters.
        cat "$B/output" "$T/newline" /proc/self/schedstat >"$T/cat.out" &
        cat_pid=$!
        sleep 0.1
    fi
    c0=$(cpu_of "$PID")
    f0=$(cpu_of "$PID" llmfs-fuse)
    echo "Once upon a time" >"$B/prompt"
    until grep -q '^state idle' "$B/stats"; do sleep 0.2; done
    c1=$(cpu_of "$PID")
    f1=$(cpu_of "$PID" llmfs-fuse)
    if [ -n "$cat_pid" ]; then
        wait "$cat_pid"
        cat_cpu=$(tail -n 1 "$T/cat.out" | awk '{ printf "%.6f", $1 / 1e9 }')
    fi
    n_gen=$(awk '$1 == "n_gen" { print $2 }' "$B/stats")
    tg=$(awk '$1 == "tg_tps" { print $2 }' "$B/stats")
    [ "$n_gen" -lt "$N" ] && echo "bench-fs.sh: warning: a run ended after $n_gen tokens" >&2
    echo "$tg $(awk -v a="$c0" -v b="$c1" 'BEGIN { print b - a }') $cat_cpu $n_gen $(awk -v a="$f0" -v b="$f1" 'BEGIN { print b - a }')"
}

echo >"$T/newline"
one_run 0 >/dev/null # warm-up
: >"$T/plain"
: >"$T/reading"
: >"$T/bench"
for _ in $(seq "$RUNS"); do # interleaved, so drift in machine speed hits all three alike
    "$LLMFS" bench -m "$MODEL" -p 0 -n "$N" -r 1 "${targs[@]}" -o csv |
        awk -F, 'NR > 1 { print $(NF-1) }' >>"$T/bench"
    one_run 0 >>"$T/plain"
    one_run 1 >>"$T/reading"
done
bench_tg=$(median <"$T/bench")
if [ -n "${BENCH_FS_RAW:-}" ]; then
    echo "bench runs (tg t/s):"; cat "$T/bench"
    echo "runs without a reader (tg_tps cpu_s cat_s n_gen fuse_s):"; cat "$T/plain"
    echo "runs with a reader:"; cat "$T/reading"
fi
mount_tg=$(awk '{ print $1 }' "$T/plain" | median)
cat_tg=$(awk '{ print $1 }' "$T/reading" | median)
# CPU microseconds per generated token: the whole daemon without a reader; with one, the
# FUSE workers that serve it (stats polling included, as in the runs without) and cat.
us_plain=$(awk '{ s += $2; n += $4 } END { printf "%.1f", s / n * 1e6 }' "$T/plain")
us_fuse0=$(awk '{ s += $5; n += $4 } END { printf "%.1f", s / n * 1e6 }' "$T/plain")
us_fuse=$(awk '{ s += $5; n += $4 } END { printf "%.1f", s / n * 1e6 }' "$T/reading")
us_cat=$(awk '{ s += $3; n += $4 } END { printf "%.1f", s / n * 1e6 }' "$T/reading")

printf '\n| %-10s | %10s | %26s |\n|------------|-----------:|---------------------------:|\n' \
    "how" "tg t/s" "CPU us / token"
printf '| %-10s | %10s | %26s |\n' bench "$bench_tg" "" mount "$mount_tg" "$us_plain (fuse $us_fuse0)" \
    "mount+cat" "$cat_tg" "fuse $us_fuse + cat $us_cat"
awk -v b="$bench_tg" -v m="$mount_tg" -v c="$cat_tg" -v p="$us_plain" -v f0="$us_fuse0" -v f="$us_fuse" -v r="$us_cat" 'BEGIN {
    printf "\nspeed: mount+cat is %.2f%% slower than mount, %.2f%% slower than bench\n",
        (m - c) / m * 100, (b - c) / b * 100
    printf "work:  a reader costs %.1f us of CPU per token (FUSE workers %.1f, cat %.1f), %.2f%% of the %.0f us generation takes\n",
        f - f0 + r, f - f0, r, (f - f0 + r) / p * 100, p }'
