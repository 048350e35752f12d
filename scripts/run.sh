#!/usr/bin/env bash
# The main job: installs what is missing, builds, mounts llmfs with a model at MOUNTPOINT
# (default /mnt/llm), shows an echo/cat session, and leaves the file server running.
#   scripts/run.sh [MOUNTPOINT]          unmount later with: fusermount3 -u MOUNTPOINT
set -euo pipefail
cd "$(dirname "$0")/.."
mnt=${1:-${LLMFS_MNT:-/mnt/llm}}
scripts/deps.sh
scripts/build.sh
llmfs=$PWD/build/llmfs
run=$PWD/build/run
mkdir -p "$run"

# A model: the trained stories260K from the test assets when they are here, else a
# random-weight one made on the spot (its text is noise, but every file works).
shared=${LLMFS_SHARED:-$(cd .. && pwd)/shared}
if [ -f "$shared/models/stories260K.gguf" ]; then
    model=$shared/models/stories260K.gguf name=stories prompt='Once upon a time'
else
    model=$run/tiny-q8_0.gguf name=tiny prompt='Hello'
    [ -f "$model" ] || "$llmfs" mkmodel --arch llama --shape llama-tiny --type q8_0 -o "$model"
fi
cat >"$run/llmfs.ini" <<CONF
[llmfs]
mountpoint = $mnt
model_dirs = $(dirname "$model"):$run

[model $name]
path = $model
mode = raw
n_predict = 96
temp = 0.8
seed = 42
CONF

# A mount left by a crashed daemon is cleared by llmfs mount itself.
mountpoint -q "$mnt" && fusermount3 -u "$mnt" 2>/dev/null || true
mkdir -p "$mnt"
"$llmfs" mount -c "$run/llmfs.ini" "$mnt"

show() { printf '\n$ %s\n' "$*"; eval "$@"; }
show "ls $mnt $mnt/$name"
show "echo '$prompt' > $mnt/$name/prompt"
show "cat $mnt/$name/output"
show "cat $mnt/$name/stats"
show "echo 'temp 0.2' > $mnt/$name/ctl"
show "grep temp $mnt/$name/ctl"
printf '\nllmfs is serving %s (model %s). Unmount with: fusermount3 -u %s\n' "$mnt" "$name" "$mnt"
