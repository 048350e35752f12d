#!/usr/bin/env bash
# The soak test: 64 clone sessions of two tiny models generating at once, with random
# settings, stops, closes and readers that come and go (tests/soak.c), for MINUTES
# (default 2, what CI runs). Builds build/ (Release) first. Fails on any crash, lost
# or mixed reply, or resident memory at the end more than 5% above that after the first
# round. SOAK_SEED=N repeats a run; SANITIZE=1 runs the ASan+UBSan build instead.
# Usage: scripts/soak.sh [MINUTES] [SESSIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=${1:-2}
sessions=${2:-64}
if [ "${SANITIZE:-0}" = 1 ]; then
  dir=build-asan
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DLLMFS_WERROR=ON -DLLMFS_SANITIZE=ON -DLLMFS_CUDA=OFF >/dev/null
else
  dir=build
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Release -DLLMFS_WERROR=ON >/dev/null
fi
cmake --build "$dir" -j"$(nproc)" --target soak
seconds=$(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 }')
"$dir/tests/soak" "$seconds" "$sessions"
