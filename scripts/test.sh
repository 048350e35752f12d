#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every CPU test
# (unit, model fixtures, command line, and mount tests when FUSE is usable).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --test
scripts/build.sh
ctest --test-dir build --output-on-failure -j"$(nproc)" -LE gpu "$@"
