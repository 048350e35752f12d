#!/usr/bin/env bash
# Chat mode: turns build one conversation (the transcript shows them, the second turn
# reuses the first's cache), and reset forgets it.
. "$(dirname "$0")/lib.sh" "$@"

llmfs_mount
put "$MNT/ctl" "load q $MODELS/qwen2-tiny-q8_0.gguf"
M=$MNT/q
grep -q "^chat_template_name chatml" "$M/info" || fail "info: $(grep chat_template "$M/info")"
put "$M/ctl" "mode chat"
put "$M/ctl" "temp 0"
put "$M/ctl" "n_predict 8"
put "$M/ctl" "system You are terse."
grep -q "^system You are terse.$" "$M/ctl" || fail "system setting: $(grep ^system "$M/ctl")"

put "$M/prompt" "Hi"
first=$(timeout 30 cat "$M/output") || fail "no first reply"
wait_idle "$M"
[ "$(stat_value "$M/stats" turns)" = 1 ] || fail "turns after one prompt: $(stat_value "$M/stats" turns)"
used1=$(stat_value "$M/stats" kv_used)

put "$M/prompt" "How are you?"
second=$(timeout 30 cat "$M/output") || fail "no second reply"
wait_idle "$M"
[ "$(stat_value "$M/stats" turns)" = 2 ] || fail "turns after two prompts: $(stat_value "$M/stats" turns)"
[ "$(stat_value "$M/stats" n_cached)" -gt 0 ] || fail "the second turn reused no cache"
used2=$(stat_value "$M/stats" kv_used)
[ "$used2" -gt "$used1" ] || fail "kv_used did not grow: $used1 -> $used2"
grep -q "Hi" "$M/transcript" || fail "the transcript misses the first turn"
grep -q "How are you?" "$M/transcript" || fail "the transcript misses the second turn"
pass "two chat turns make one conversation"

put "$M/ctl" "reset"
put "$M/prompt" "Hi"
again=$(timeout 30 cat "$M/output") || fail "no reply after reset"
wait_idle "$M"
[ "$again" = "$first" ] || fail "after reset 'Hi' gives '$again', the first time '$first'"
[ "$(stat_value "$M/stats" kv_used)" = "$used1" ] ||
    fail "after reset and one turn kv_used is $(stat_value "$M/stats" kv_used), after the first turn $used1"
pass "reset forgets the conversation"
exit 0
