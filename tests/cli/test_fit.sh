#!/usr/bin/env bash
# `llmfs fit` on the MoE test model: the decision follows the VRAM budget (experts leave
# the GPU before layers do), bad input fails with a one-line reason.
# Usage: test_fit.sh PATH-TO-LLMFS REPO-ROOT
set -u
LLMFS=$1
ROOT=$2
SHARED=${LLMFS_SHARED:-$ROOT/../shared}
MODEL=$SHARED/models/qwen3moe-tiny-q8_0.gguf
if [ ! -f "$MODEL" ]; then
    echo "*** SKIPPED test_fit.sh: test assets not found in $SHARED ***"
    exit 77
fi
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp" || exit 1
setting() { sed -n "s/^settings .*\b$1=\([0-9-]*\).*/\1/p" "$2"; }

# plenty of room: both layers and the output on the GPU, no expert on the CPU
"$LLMFS" fit -m "$MODEL" --fit-ctx 512 --fit-target 0 --vram-limit 1000 >out.big 2>&1 || fail "fit exited $?"
[ "$(setting ngl out.big)" = 3 ] || fail "large budget: ngl $(setting ngl out.big), want 3"
[ "$(setting n_cpu_moe out.big)" = 0 ] || fail "large budget: n_cpu_moe $(setting n_cpu_moe out.big), want 0"
grep -q 'headroom' out.big || fail "no headroom in the decision"

# the weights are about 3 MiB (experts most of it) and compute 102 MiB: a budget just
# above compute + non-expert weights moves experts out but keeps every layer (without
# streaming, which would want room for two layers' experts)
"$LLMFS" fit -m "$MODEL" --fit-ctx 512 --fit-target 0 --vram-limit 104 -ob 0 >out.mid 2>&1 || fail "fit exited $?"
[ "$(setting n_cpu_moe out.mid)" -gt 0 ] 2>/dev/null || fail "mid budget: n_cpu_moe $(setting n_cpu_moe out.mid), want > 0"
[ "$(setting ngl out.mid)" = 3 ] || fail "mid budget: ngl $(setting ngl out.mid), want 3 (experts go first)"
grep -q 'stream 0)' out.mid || fail "mid budget without streaming: room kept for it: $(cat out.mid)"
# with streaming (the default) the same budget cannot take the two layers' experts in
# flight as well: the decision differs and keeps a non-negative headroom
"$LLMFS" fit -m "$MODEL" --fit-ctx 512 --fit-target 0 --vram-limit 104 >out.stream 2>&1 || fail "fit exited $?"
[ "$(setting ngl out.stream) $(setting n_cpu_moe out.stream)" != "$(setting ngl out.mid) $(setting n_cpu_moe out.mid)" ] ||
    fail "streaming: the decision without room for it: $(cat out.stream)"
grep -q 'headroom [0-9]' out.stream || fail "streaming: negative headroom: $(cat out.stream)"
# experts on the CPU by override: the room for two layers of them shows
"$LLMFS" fit -m "$MODEL" --fit-ctx 512 --fit-target 0 --vram-limit 1000 -ot 'ffn_.*_exps=CPU' >out.ot 2>&1 || fail "fit exited $?"
grep -q 'stream [1-9][0-9]*)' out.ot || fail "experts on the CPU: no room kept for streaming: $(cat out.ot)"

# no room at all: everything on the CPU
"$LLMFS" fit -m "$MODEL" --fit-ctx 512 --fit-target 0 --vram-limit 1 >out.none 2>&1 || fail "fit exited $?"
[ "$(setting ngl out.none)" = 0 ] || fail "tiny budget: ngl $(setting ngl out.none), want 0"

# a draft model: its weights and its KV cache (512 cells of f16 K and V per layer) are
# counted and shown; q8_0 K/V make its cache smaller
DRAFT=$SHARED/models/llama-tiny-q4_0.gguf
"$LLMFS" fit -m "$MODEL" --fit-ctx 512 --fit-target 0 --vram-limit 1000 -md "$DRAFT" >out.draft 2>&1 ||
    fail "fit -md exited $?"
grep -q 'draft model GPU 1.5 MiB (weights 1.0, KV 0.5)' out.draft || fail "draft not counted: $(cat out.draft)"
"$LLMFS" fit -m "$MODEL" --fit-ctx 512 --fit-target 0 --vram-limit 1000 -md "$DRAFT" -ctkd q8_0 -ctvd q8_0 \
    >out.draftq 2>&1 ||
    fail "fit -md -ctkd exited $?"
grep -q 'KV 0.3)' out.draftq || fail "draft KV as q8_0: $(cat out.draftq)"

# errors: one line on stderr, non-zero exit
"$LLMFS" fit -m "$MODEL" -md /nonexistent-draft.gguf >/dev/null 2>err && fail "missing draft accepted"
[ "$(wc -l <err)" = 1 ] || fail "missing draft: not one line: $(cat err)"
"$LLMFS" fit -m "$MODEL" --vram-limit 100 --override-tensor 'exps=TPU' >/dev/null 2>err && fail "bad device accepted"
grep -q "unknown device 'TPU'" err || fail "bad device: $(cat err)"
"$LLMFS" fit -m /nonexistent.gguf >/dev/null 2>err && fail "missing model accepted"
[ "$(wc -l <err)" = 1 ] || fail "missing model: not one line: $(cat err)"
"$LLMFS" fit -m "$MODEL" --fit-ctx x >/dev/null 2>err && fail "bad number accepted"

[ $fails -eq 0 ] && echo "test_fit: ok"
exit $((fails > 0))
