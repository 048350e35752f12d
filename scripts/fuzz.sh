#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/fuzz_*.c) with clang in build-fuzz and runs
# them in turn, SECONDS in all (default 120) split evenly between them, each on a fresh
# copy of its seed corpus (tests/fuzz/corpus/<name>) and with its dictionary
# (tests/fuzz/<name>.dict) and extra libFuzzer flags (tests/fuzz/<name>.flags) when there
# are. Fails on the first crash, leak, timeout or
# out-of-memory; the input that caused it is kept in build-fuzz/artifacts/.
# Usage: scripts/fuzz.sh [SECONDS] [fuzz_NAME ...]
set -euo pipefail
cd "$(dirname "$0")/.."
total=${1:-120}
shift || true
cmake -S . -B build-fuzz -DLLMFS_FUZZ=ON -DCMAKE_C_COMPILER=clang -DLLMFS_CUDA=OFF -DLLMFS_FUSE=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for src in tests/fuzz/fuzz_*.c; do
    targets+=("$(basename "$src" .c)")
  done
fi
cmake --build build-fuzz -j"${JOBS:-2}" --target "${targets[@]}"
secs=$(( total / ${#targets[@]} ))
if [ "$secs" -lt 1 ]; then
  secs=1
fi
mkdir -p build-fuzz/artifacts
for t in "${targets[@]}"; do
  name=${t#fuzz_}
  seeds="tests/fuzz/corpus/$name"
  work="build-fuzz/corpus/$name"
  rm -rf "$work"
  mkdir -p "$work"
  if [ -d "$seeds" ]; then
    cp -r "$seeds"/. "$work"/
  fi
  dict=()
  if [ -f "tests/fuzz/$name.dict" ]; then
    dict=("-dict=tests/fuzz/$name.dict")
  fi
  # a target's own libFuzzer flags (tests/fuzz/<name>.flags, one line), after the defaults
  flags=()
  if [ -f "tests/fuzz/$name.flags" ]; then
    read -r -a flags <"tests/fuzz/$name.flags"
  fi
  echo "== $t: ${secs}s on $(find "$work" -type f | wc -l) seed inputs"
  # libFuzzer exits non-zero on any crash, sanitizer report, leak, timeout or OOM.
  "build-fuzz/tests/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix=build-fuzz/artifacts/ ${dict[@]+"${dict[@]}"} ${flags[@]+"${flags[@]}"} "$work"
done
echo "fuzz: no crashes in ${targets[*]} (${secs}s each, ${total}s in all)"
