#!/usr/bin/env bash
# shellcheck disable=SC2317  # the stage functions are called by name at the end
# gpu-run.sh — everything llmfs checks on a GPU machine, in stages:
#   build   configure for Hopper (sm_90) without FUSE, Check from .carry/check
#   test    ctest -L gpu (every op against the CPU backend; every fixture fully offloaded)
#   models  benchmark models of real shapes with `llmfs mkmodel` (random weights)
#   bench   llmfs bench -p 512 -n 128 -ngl 99 --fa on per model, tg128 at depth 4096 for qwen3-8b
#   report  a markdown table: t/s and the share of 4.28 TB/s the weights read per token take
# Usage: scripts/gpu-run.sh [STAGE...]  (default: all, in that order)
# Environment: OUT (results, default ./gpu-out), LLMFS_SHARED (test assets, default
# .carry/shared, see gpu-carry.sh), MODELS (benchmark models, default /tmp/llmfs-models),
# REPS (bench repetitions, default 3), ONLY (a regex: the benchmark models to make and run,
# to split the work over several calls), TESTS (a regex: the GPU tests to run).
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
ROOT=$PWD
OUT=${OUT:-$ROOT/gpu-out}
MODELS=${MODELS:-/tmp/llmfs-models}
REPS=${REPS:-3}
BUILD=$ROOT/build-gpu
CHECK_ROOT=$ROOT/.carry/check
export LLMFS_SHARED=${LLMFS_SHARED:-$ROOT/.carry/shared}
export LD_LIBRARY_PATH=$CHECK_ROOT/usr/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
JOBS=$(nproc)
mkdir -p "$OUT" "$MODELS"
STAGES=${*:-build test models bench report}
LLMFS=$BUILD/llmfs
status=0

log() { echo "=== $* ($(date +%T))" | tee -a "$OUT/run.log"; }

# name shape type
BENCH_MODELS=(
    "qwen3-8b-q4_k_m qwen3-8b q4_k_m"
    "llama-2-7b-q4_0 llama-2-7b q4_0"
    "qwen3-0.6b-q8_0 qwen3-0.6b q8_0"
    "qwen3-30b-a3b-q4_k_m qwen3-30b-a3b q4_k_m"
)

stage_build() {
    log build
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$OUT/gpu.txt" 2>&1
    cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DLLMFS_WERROR=ON -DCMAKE_CUDA_ARCHITECTURES=90 \
        -DLLMFS_FUSE=OFF -DLLMFS_CUDA=ON -DCHECK_ROOT="$CHECK_ROOT" >"$OUT/cmake.log" 2>&1 &&
        cmake --build "$BUILD" -j"$JOBS" >"$OUT/build.log" 2>&1
    local rc=$?
    tail -3 "$OUT/build.log"
    [ "$rc" -eq 0 ] || { echo "build failed (see build.log)"; exit 1; }
}

stage_test() {
    log "test (ctest -L gpu, and the host checks of the kernels)"
    if ! ctest --test-dir "$BUILD" -L gpu -R "${TESTS:-.}" --output-on-failure --timeout 900 >"$OUT/ctest-gpu.log" 2>&1; then
        status=1
        # tell a fault of the recorded decode steps from one of the kernels
        LLMFS_CUDA_GRAPHS=0 ctest --test-dir "$BUILD" -R gpu_fixtures --output-on-failure --timeout 900 \
            >"$OUT/ctest-gpu-nographs.log" 2>&1
        echo "without CUDA graphs: gpu_fixtures $(grep -qE '100% tests passed' "$OUT/ctest-gpu-nographs.log" && echo passed || echo failed)"
    fi
    ctest --test-dir "$BUILD" -R cuda_host --output-on-failure >>"$OUT/ctest-gpu.log" 2>&1 || status=1
    grep -E "tests passed|tests failed|Passed|Failed|\*\*\*" "$OUT/ctest-gpu.log" | tail -20
}

stage_models() {
    log "models (llmfs mkmodel)"
    for m in "${BENCH_MODELS[@]}"; do
        read -r name shape type <<<"$m"
        [[ $name =~ ${ONLY:-.} ]] || continue
        [ -s "$MODELS/$name.gguf" ] && continue
        /usr/bin/time -f "$name: %es" "$LLMFS" mkmodel --shape "$shape" --type "$type" -t "$JOBS" -q \
            -o "$MODELS/$name.gguf" 2>>"$OUT/run.log" || { echo "mkmodel $name failed"; status=1; }
    done
    du -h "$MODELS"/*.gguf | tee -a "$OUT/run.log"
}

stage_bench() {
    log "bench"
    for m in "${BENCH_MODELS[@]}"; do
        read -r name _ <<<"$m"
        [[ $name =~ ${ONLY:-.} ]] || continue
        [ -s "$MODELS/$name.gguf" ] || continue
        "$LLMFS" bench -m "$MODELS/$name.gguf" -p 512 -n 128 -ngl 99 --fa on -r "$REPS" -o json \
            >"$OUT/bench-$name.json" 2>"$OUT/bench-$name.err" ||
            { echo "bench $name failed: $(tail -1 "$OUT/bench-$name.err")"; status=1; }
    done
    if [[ qwen3-8b-q4_k_m =~ ${ONLY:-.} ]] && [ -s "$MODELS/qwen3-8b-q4_k_m.gguf" ]; then
        "$LLMFS" bench -m "$MODELS/qwen3-8b-q4_k_m.gguf" -p 0 -n 128 -d 4096 -ngl 99 --fa on -r "$REPS" -o json \
            >"$OUT/bench-qwen3-8b-q4_k_m-d4096.json" 2>"$OUT/bench-qwen3-8b-q4_k_m-d4096.err" || status=1
    fi
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
    name = fn[6:-5].replace("-d4096", "")
    try:
        rows = json.load(open(os.path.join(out, fn)))
    except Exception as e:
        print(f"| {name} | (no result: {e}) | | | |")
        continue
    bpt = bytes_per_token(os.path.join(models, name + ".gguf"))
    for r in rows:
        ts = r["avg_ts"]
        share = f"{bpt * ts / 4.28e12 * 100:.1f}%" if r["n_gen"] else "-"
        print(f"| {r['model']} | {r['test']} | {ts:.1f} ± {r['stddev_ts']:.1f} | {bpt / 1e9:.3f} | {share} |")
EOF
}

for s in $STAGES; do
    "stage_$s"
done
exit $status
