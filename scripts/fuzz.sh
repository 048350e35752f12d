#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz/fuzz_*.c) with clang in build-fuzz and runs each
# for SECONDS (default 60) on a fresh copy of its seed corpus (tests/fuzz/corpus/<name>).
# Fails on the first crash, leak or timeout; the input that caused it is kept in
# build-fuzz/artifacts/. Usage: scripts/fuzz.sh [SECONDS] [fuzz_NAME ...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
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
mkdir -p build-fuzz/artifacts
for t in "${targets[@]}"; do
  seeds="tests/fuzz/corpus/${t#fuzz_}"
  work="build-fuzz/corpus/${t#fuzz_}"
  rm -rf "$work"
  mkdir -p "$work"
  if [ -d "$seeds" ]; then
    cp -r "$seeds"/. "$work"/
  fi
  echo "== $t: ${secs}s on $(find "$work" -type f | wc -l) seed inputs"
  # libFuzzer exits non-zero on any crash, sanitizer report, leak or timeout.
  "build-fuzz/tests/$t" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
    -artifact_prefix=build-fuzz/artifacts/ "$work"
done
echo "fuzz: no crashes in ${targets[*]} (${secs}s each)"
