#!/usr/bin/env bash
# Configures and builds llmfs in build/ (extra arguments go to cmake).
set -euo pipefail
cd "$(dirname "$0")/.."
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DLLMFS_WERROR=ON "$@" >/dev/null
cmake --build build -j"$(nproc)"
