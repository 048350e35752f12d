#!/usr/bin/env bash
# shellcheck disable=SC2317  # the stage functions are called by name at the end
# gpu-run.sh — everything llmfs checks on a GPU machine, in stages:
#   build    configure for Hopper (sm_90) without FUSE, Check from .carry/check
#   test     ctest -L gpu (every op against the CPU backend; every fixture on the GPU) and
#            the host checks of the kernels; a skipped GPU test counts as a failure here
#   isolate  after a failed test stage (or alone): gpu_ops again area by area (a kernel
#            fault poisons the rest of a process), then compute-sanitizer memcheck on the
#            first areas that fail
#   models   benchmark models of real shapes with `llmfs mkmodel` (random weights)
#   bench    per model (made first when missing, so the budget cuts between models):
#            llmfs bench -p 512 -n 128 -ngl 99 --fa on, tg128 at depth 4096 for qwen3-8b,
#            and qwen3-30b-a3b with every expert on the CPU (-ncmoe 48 -t 16, tg64; pp512
#            with the experts streamed to the GPU, as measured, and computed on the CPU, -ob 0)
#   report   a markdown table: t/s and the share of 4.28 TB/s the weights read per token take
#   spec     speculative decoding with MTP on the GPU: tg with and without, acceptance
# Usage: scripts/gpu-run.sh [STAGE...]  (default: build test spec bench report)
# Environment:
#   OUT      results folder (default ./gpu-out)
#   PACK     a file that gets OUT as a .tar.gz after every stage and at exit, so that a
#            caller that can bring back only a few files gets all of them in one
#   BUDGET   seconds this run may take (default 560): later stages and models that would
#            start too late are skipped, and long commands are cut off, so PACK is written
#   LLMFS_SHARED  test assets (default .carry/shared, see gpu-carry.sh)
#   MODELS   benchmark models folder (default /tmp/llmfs-models); REPS bench repetitions (3)
#   ONLY     a regex: the benchmark models to make and run (to split the work over calls)
#   BENCH_SET  the model list itself, "name shape type" entries separated by commas
#   TESTS    a regex: the GPU tests to run; TEST_TIMEOUT per test program (default 300 s)
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-out}
PACK=${PACK:-}
BUDGET=${BUDGET:-560}
MODELS=${MODELS:-/tmp/llmfs-models}
REPS=${REPS:-3}
TEST_TIMEOUT=${TEST_TIMEOUT:-300}
BUILD=$ROOT/build-gpu
CHECK_ROOT=$ROOT/.carry/check
export LLMFS_SHARED=${LLMFS_SHARED:-$ROOT/.carry/shared}
export LD_LIBRARY_PATH=$CHECK_ROOT/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
JOBS=$(nproc)
# images that install the toolkit without putting it on PATH
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
    export PATH=/usr/local/cuda/bin:$PATH
fi
mkdir -p "$OUT" "$MODELS"
STAGES=${*:-build test spec bench report}
LLMFS=$BUILD/llmfs
status=0
tests_ran=0 tests_failed=0

log() { echo "=== $* (${SECONDS}s, $(date +%T))" | tee -a "$OUT/run.log"; }
note() { echo "$*" | tee -a "$OUT/run.log"; }
# seconds left in the budget
left() { echo $((BUDGET - SECONDS)); }
# runs a command for at most the budget left less $1 seconds (kept for what follows)
bounded() {
    local keep=$1 t
    shift
    t=$(($(left) - keep))
    if [ "$t" -lt 10 ]; then
        note "skipped (budget): $*"
        status=1
        return 124
    fi
    timeout --kill-after=5 "$t" "$@"
}
pack() {
    [ -n "$PACK" ] || return 0
    tar -czf "$PACK.tmp" -C "$OUT" . 2>/dev/null && mv -f "$PACK.tmp" "$PACK"
}
trap pack EXIT

# name shape type
if [ -n "${BENCH_SET:-}" ]; then
    IFS=, read -r -a BENCH_MODELS <<<"$BENCH_SET"
else
    BENCH_MODELS=(
        "qwen3-0.6b-q8_0 qwen3-0.6b q8_0"
        "qwen3-8b-q4_k_m qwen3-8b q4_k_m"
        "llama-2-7b-q4_0 llama-2-7b q4_0"
        "qwen3-30b-a3b-q4_k_m qwen3-30b-a3b q4_k_m"
    )
fi

stage_build() {
    log build
    { nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
      nvcc --version | tail -2
      command -v compute-sanitizer || echo "no compute-sanitizer"; } >"$OUT/gpu.txt" 2>&1
    cat "$OUT/gpu.txt"
    if [ ! -f "$CHECK_ROOT/usr/include/check.h" ]; then
        note "no Check under $CHECK_ROOT: run scripts/gpu-carry.sh where packages can be fetched and carry .carry"
        status=1
    fi
    bounded 30 cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLLMFS_WERROR=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
        -DLLMFS_FUSE=OFF -DLLMFS_CUDA=ON -DCHECK_ROOT="$CHECK_ROOT" >"$OUT/cmake.log" 2>&1 &&
        bounded 30 cmake --build "$BUILD" -j"$JOBS" >"$OUT/build.log" 2>&1
    local rc=$?
    tail -3 "$OUT/build.log"
    [ "$rc" -eq 0 ] || { note "build failed (see cmake.log, build.log)"; exit 1; }
}

stage_test() {
    log "test (ctest -L gpu, and the host checks of the kernels)"
    # on this machine every GPU test must run: a skip would hide a broken build
    export LLMFS_TEST_REQUIRE=1
    tests_ran=1
    if ! bounded 20 ctest --test-dir "$BUILD" -L gpu -R "${TESTS:-.}" --output-on-failure \
        --timeout "$TEST_TIMEOUT" >"$OUT/ctest-gpu.log" 2>&1; then
        status=1
        grep -qE "gpu_ops .*(Failed|Timeout|Exception)" "$OUT/ctest-gpu.log" && tests_failed=1
        # tell a fault of the recorded decode steps from one of the kernels
        if grep -qE "gpu_fixtures[_0-9of]* .*(Failed|Timeout|Exception)" "$OUT/ctest-gpu.log"; then
            LLMFS_CUDA_GRAPHS=0 bounded 20 ctest --test-dir "$BUILD" -R gpu_fixtures --output-on-failure \
                --timeout "$TEST_TIMEOUT" >"$OUT/ctest-gpu-nographs.log" 2>&1
            note "without CUDA graphs: gpu_fixtures $(grep -qE '100% tests passed' "$OUT/ctest-gpu-nographs.log" && echo passed || echo failed)"
        fi
    fi
    bounded 10 ctest --test-dir "$BUILD" -R cuda_host --output-on-failure >>"$OUT/ctest-gpu.log" 2>&1 || status=1
    grep -E "tests passed|tests failed|Passed|Failed|Timeout|\*\*\*|:F:|:E:" "$OUT/ctest-gpu.log" | head -40 |
        tee -a "$OUT/run.log"
}

stage_isolate() {
    if [ "$tests_ran" -eq 1 ] && [ "$tests_failed" -eq 0 ]; then
        note "isolate: skipped, gpu_ops passed"
        return 0
    fi
    log "isolate (gpu_ops area by area)"
    local bin=$BUILD/tests/gpu_ops failed=()
    export LLMFS_TEST_REQUIRE=1 CK_DEFAULT_TIMEOUT=600
    for a in memory matmul elementwise attention moe sampling graphs errors; do
        CK_RUN_CASE=$a bounded 30 "$bin" >"$OUT/isolate-$a.log" 2>&1
        local rc=$?
        note "gpu_ops $a: $([ "$rc" -eq 0 ] && echo passed || echo "FAILED ($rc)")"
        [ "$rc" -eq 0 ] || failed+=("$a")
    done
    [ ${#failed[@]} -eq 0 ] && return 0
    status=1
    command -v compute-sanitizer >/dev/null || { note "no compute-sanitizer"; return 0; }
    for a in "${failed[@]:0:2}"; do
        # the first errors name the kernel, the access and its address
        CK_RUN_CASE=$a bounded 30 compute-sanitizer --tool memcheck --print-limit 20 --error-exitcode 99 "$bin" \
            >"$OUT/sanitizer-$a.log" 2>&1
        note "compute-sanitizer on $a: rc $? (sanitizer-$a.log)"
        grep -m 8 -E "Invalid|Misaligned|out of bounds|at 0x|by thread|Address" "$OUT/sanitizer-$a.log" | tee -a "$OUT/run.log"
    done
}

# makes $MODELS/NAME.gguf unless it is there
make_model() { # name shape type
    local name=$1 shape=$2 type=$3 t0=$SECONDS
    [ -s "$MODELS/$name.gguf" ] && return 0
    # a model cut off half-written must not be taken for a whole one next time
    if bounded 60 "$LLMFS" mkmodel --shape "$shape" --type "$type" -t "$JOBS" -q -o "$MODELS/$name.gguf.part" \
        2>>"$OUT/run.log" && mv -f "$MODELS/$name.gguf.part" "$MODELS/$name.gguf"; then
        note "mkmodel $name: $((SECONDS - t0)) s, $(du -h "$MODELS/$name.gguf" | cut -f1)"
        return 0
    fi
    rm -f "$MODELS/$name.gguf.part"
    note "mkmodel $name failed or cut off after $((SECONDS - t0)) s"
    status=1
    return 1
}

stage_models() {
    log "models (llmfs mkmodel)"
    for m in "${BENCH_MODELS[@]}"; do
        read -r name shape type <<<"$m"
        [[ $name =~ ${ONLY:-.} ]] || continue
        make_model "$name" "$shape" "$type"
    done
}

bench_one() { # name out-suffix bench-args...
    local name=$1 sfx=$2
    shift 2
    local t0=$SECONDS
    if bounded 20 "$LLMFS" bench -m "$MODELS/$name.gguf" "$@" -ngl 99 --fa on -r "$REPS" -o json \
        >"$OUT/bench-$name$sfx.json" 2>"$OUT/bench-$name$sfx.err"; then
        note "bench $name$sfx: $((SECONDS - t0)) s"
        grep -h "host memory" "$OUT/bench-$name$sfx.err" | while read -r l; do note "$name$sfx: $l"; done
    else
        note "bench $name$sfx failed: $(tail -1 "$OUT/bench-$name$sfx.err")"
        status=1
    fi
}

stage_bench() {
    log "bench"
    for m in "${BENCH_MODELS[@]}"; do
        read -r name shape type <<<"$m"
        [[ $name =~ ${ONLY:-.} ]] || continue
        make_model "$name" "$shape" "$type" || continue
        bench_one "$name" "" -p 512 -n 128
        if [ "$name" = qwen3-8b-q4_k_m ]; then
            bench_one "$name" -d4096 -p 0 -n 128 -d 4096
        fi
        if [ "$name" = qwen3-30b-a3b-q4_k_m ]; then # placement: every expert on the CPU
            bench_one "$name" -ncmoe48 -p 512 -n 64 -ncmoe 48 -t 16
            # the prompt's experts computed on the CPU instead of streamed to the GPU
            bench_one "$name" -ncmoe48-ob0 -p 512 -n 0 -ncmoe 48 -t 16 -ob 0
        fi
    done
}

# Speculative decoding on the GPU (issue: MTP must beat plain decoding where acceptance is
# above 50%): each calibrated MTP model on the prompt its head was fitted to, every layer
# and the head on the GPU, n_max 1 to 3; the Gemma 4 target with its assistant; the
# calibrated draft-model pair is CPU-made (mkmodel --calibrated) and skipped here.
# spec-MODEL-N.txt holds each run's table (speeds, acceptance); run.log its speedup line.
stage_spec() {
    log "spec (llmfs bench --spec mtp, all on the GPU)"
    local fx=$LLMFS_SHARED/fixtures md=$LLMFS_SHARED/models
    local runs=(
        "qwen35moe-mtp-tiny-q8_0.gguf|$fx/qwen35moe-mtp-tiny-q8_0/mtp-fox/prompt.txt|"
        "qwen3next-mtp-tiny-q8_0.gguf|$fx/qwen3next-mtp-tiny-q8_0/mtp-hi/prompt.txt|"
        "gemma4-tiny-q8_0.gguf|$fx/gemma4-tiny-q8_0/mtp-story/prompt.txt|-md $md/gemma4-tiny-mtp-q8_0.gguf"
    )
    for r in "${runs[@]}"; do
        IFS='|' read -r model prompt extra <<<"$r"
        [ -f "$md/$model" ] || { note "spec: no $model"; continue; }
        for nd in 1 2 3; do
            # shellcheck disable=SC2086  # extra is two words or none
            if bounded 20 "$LLMFS" bench -m "$md/$model" --spec mtp $extra --spec-prompt "$prompt" -nd "$nd" \
                -n 32 -r 10 -ngl 99 >"$OUT/spec-$model-$nd.txt" 2>&1; then
                note "spec $model n_max $nd: $(grep -E "^speedup" "$OUT/spec-$model-$nd.txt")"
            else
                note "spec $model n_max $nd failed: $(tail -1 "$OUT/spec-$model-$nd.txt")"
                status=1
            fi
        done
    done
}

# Weight bytes a generated token reads: every tensor once, except the embedding table
# (one row; but it is read whole when it doubles as the output), and for MoE only the
# used share of the experts.
stage_report() {
    log report
    python3 - "$OUT" "$MODELS" <<'EOF' | tee "$OUT/report.md"
import json, os, struct, sys
out, models = sys.argv[1], sys.argv[2]
BLK = {0: (1, 4), 1: (1, 2), 30: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
       10: (256, 84), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210)}
def gguf_read(path):
    f = open(path, "rb")
    def u(fmt):
        return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))[0]
    def s():
        return f.read(u("Q")).decode("utf-8", "replace")
    SZ = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
    def val(t):
        if t == 8:
            return s()
        if t == 9:
            et, n = u("I"), u("Q")
            return [val(et) for _ in range(n)]
        return u(SZ[t])
    assert f.read(4) == b"GGUF"
    u("I"); nt, nkv = u("Q"), u("Q")
    kv = {}
    for _ in range(nkv):
        k = s(); kv[k] = val(u("I"))
    ts = []
    for _ in range(nt):
        name = s(); nd = u("I"); ne = [u("Q") for _ in range(nd)]; t = u("I"); u("Q")
        n = 1
        for x in ne:
            n *= x
        b, bb = BLK.get(t, (1, 0))
        ts.append((name, n // b * bb))
    return kv, ts
def bytes_per_token(path):
    kv, ts = gguf_read(path)
    arch = kv.get("general.architecture", "")
    ne, nu = kv.get(arch + ".expert_count", 0), kv.get(arch + ".expert_used_count", 0)
    tied = not any(n == "output.weight" for n, _ in ts)
    tot = 0.0
    for n, b in ts:
        if n == "token_embd.weight" and not tied:
            continue
        tot += b * (nu / ne if ne and "_exps" in n else 1)
    return tot
print("| model | test | t/s | weight GB/token | bandwidth share of 4.28 TB/s |")
print("| --- | --- | ---: | ---: | ---: |")
for fn in sorted(os.listdir(out)):
    if not (fn.startswith("bench-") and fn.endswith(".json")):
        continue
    variant = fn[6:-5]
    name = variant.replace("-d4096", "").replace("-ncmoe48", "").replace("-ob0", "")
    variant = variant[len(name):].replace("-", " ").strip()
    try:
        rows = json.load(open(os.path.join(out, fn)))
    except Exception as e:
        print(f"| {name} | (no result: {e}) | | | |")
        continue
    try:
        bpt = bytes_per_token(os.path.join(models, name + ".gguf"))
    except Exception:
        bpt = None  # the model was made by another run
    for r in rows:
        ts = r["avg_ts"]
        share = f"{bpt * ts / 4.28e12 * 100:.1f}%" if r["n_gen"] and bpt else "-"
        gb = f"{bpt / 1e9:.3f}" if bpt else "?"
        print(f"| {r['model']} | {r['test']} {variant} | {ts:.1f} ± {r['stddev_ts']:.1f} | {gb} | {share} |")
EOF
}

for s in $STAGES; do
    if ! declare -F "stage_$s" >/dev/null; then
        note "no stage '$s' (build test isolate models bench report spec)"
        exit 2
    fi
done
for s in $STAGES; do
    if [ "$(left)" -lt 15 ]; then
        note "stage $s skipped: the budget of ${BUDGET}s is spent"
        status=1
        continue
    fi
    "stage_$s"
    pack
done
log "done, status $status"
exit $status
