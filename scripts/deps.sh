#!/usr/bin/env bash
# Installs the Debian 12 packages llmfs builds and tests with (only what is missing).
# --test adds the test tools, and the official `openai` npm client that the HTTP
# endpoint's test drives (into build-npm/, never at test time).
set -euo pipefail
pkgs=(build-essential cmake pkg-config libfuse3-dev fuse3 libuv1-dev libinih-dev check
      libmicrohttpd-dev libjansson-dev libcurl4-openssl-dev libpng-dev libjpeg62-turbo-dev)
[ "${1:-}" = "--test" ] && pkgs+=(clang prometheus procps curl)
# Node.js for the HTTP endpoint's test with the official client: Debian's, unless a
# node with its npm is there already (another vendor's nodejs package ships npm itself,
# and Debian's npm package would collide with it)
if [ "${1:-}" = "--test" ] && ! { command -v node && command -v npm; } >/dev/null 2>&1; then
    pkgs+=(nodejs npm)
fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [ "${1:-}" = "--test" ]; then
    repo=$(cd "$(dirname "$0")/.." && pwd)
    [ -d "$repo/build-npm/node_modules/openai" ] ||
        npm install --prefix "$repo/build-npm" --no-save --no-audit --no-fund openai@4 >/dev/null
fi
