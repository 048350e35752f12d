#!/usr/bin/env bash
# Installs the Debian 12 packages llmfs builds and tests with (only what is missing).
set -euo pipefail
pkgs=(build-essential cmake pkg-config libfuse3-dev fuse3 libuv1-dev libinih-dev libpng-dev libjpeg62-turbo-dev check)
[ "${1:-}" = "--test" ] && pkgs+=(clang prometheus procps)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
