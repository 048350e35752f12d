#!/usr/bin/env bash
# gpt-oss through the file tree: a harmony chat reply streams to output while reasoning
# (the analysis channel) follows output's rules, one stream per reply; n_cpu_moe keeps
# the first layers' experts, their biases with them, on the CPU.
. "$(dirname "$0")/lib.sh" "$@"

llmfs_mount
put "$MNT/ctl" "load g $MODELS/gptoss-tiny-mxfp4.gguf n_cpu_moe=2"
M=$MNT/g
grep -q "^chat_template_name harmony" "$M/info" || fail "info: $(grep chat_template "$M/info")"

# 8 experts of 64x64 in MXFP4 (17 bytes per 32 values) for gate, up and down, and an f32
# bias row of 64 per expert for each: the experts' group holds both
exps=$(( 3 * 8 * 64 * 64 / 32 * 17 + 3 * 8 * 64 * 4 ))
for l in 0 1; do
    grep -q "^blk.$l.ffn_exps CPU mxfp4 $exps$" "$M/placement" ||
        fail "placement: $(grep "^blk.$l.ffn_exps" "$M/placement"), wanted CPU with $exps bytes"
done
grep -q "^n_cpu_moe 2$" "$M/ctl" || fail "n_cpu_moe: $(grep ^n_cpu_moe "$M/ctl")"
pass "n_cpu_moe 2 keeps the experts and their biases of layers 0 and 1 on the CPU"

put "$M/ctl" "mode chat"
put "$M/ctl" "temp 0"
put "$M/ctl" "n_predict 12"
# a reader of reasoning opened before the prompt waits for the reply, then ends
timeout 30 cat "$M/reasoning" >"$T/reasoning1" &
reader=$!
sleep 0.3
kill -0 $reader 2>/dev/null || fail "reasoning ended before any reply"
put "$M/prompt" "Hi"
first=$(timeout 30 cat "$M/output") || fail "no reply"
wait $reader || fail "the reader of reasoning did not end with the reply"
wait_idle "$M"
[ -n "$first" ] || fail "an empty reply"
[ "$(stat_value "$M/stats" n_gen)" = 12 ] || fail "n_gen $(stat_value "$M/stats" n_gen)"
# the transcript keeps the reply as written: the answer and the reasoning are in it
grep -qF -- "$first" "$M/transcript" || fail "the transcript lacks the answer '$first'"
if [ -s "$T/reasoning1" ]; then
    grep -qF -- "$(head -n1 "$T/reasoning1")" "$M/transcript" || fail "the transcript lacks the reasoning"
fi
cmp -s "$T/reasoning1" <(cat "$M/reasoning") || fail "reasoning read after the reply differs from while it streamed"
pass "a harmony reply streams to output, reasoning ends with the reply"

# the next prompt starts a fresh reasoning stream; a reader opened now waits for it
put "$M/prompt" "And then?"
timeout 30 cat "$M/output" >/dev/null || fail "no second reply"
timeout 30 cat "$M/reasoning" >"$T/reasoning2" || fail "reasoning of the second reply did not end"
wait_idle "$M"
[ "$(stat_value "$M/stats" turns)" = 2 ] || fail "turns $(stat_value "$M/stats" turns)"
grep -c '^### turn' "$M/transcript" | grep -qx 2 || fail "the transcript does not keep both turns"
pass "each reply has its own reasoning stream"
exit 0
