#!/usr/bin/env bash
# Prepares .carry/ (git-ignored) for a GPU machine that cannot fetch anything:
#   .carry/debs    Check and subunit as Debian packages (apt-get download)
#   .carry/check   the same unpacked (dpkg -x): gpu-run.sh passes it as CHECK_ROOT
#   .carry/shared  the test assets the GPU tests read: models/ and fixtures/ (~34 MiB)
# Run it here, then carry .carry to the GPU machine with the working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${LLMFS_SHARED:-$PWD/../shared}
mkdir -p .carry/debs .carry/check .carry/shared
rm -f .carry/debs/*.deb
(cd .carry/debs && { apt-get download check libsubunit0 libsubunit-dev ||
    { apt-get update -qq && apt-get download check libsubunit0 libsubunit-dev; }; })
for d in .carry/debs/*.deb; do
    dpkg -x "$d" .carry/check
done
rm -rf .carry/shared/models .carry/shared/fixtures
cp -r "$SHARED/models" "$SHARED/fixtures" .carry/shared/
chmod -R u+w .carry/shared
du -sh .carry/*
# small enough to go to the GPU machine with the working tree (64 MiB in all)
total=$(du -sm .carry | cut -f1)
[ "$total" -lt 56 ] || { echo "gpu-carry.sh: .carry is $total MiB, too big for the GPU machine" >&2; exit 1; }
