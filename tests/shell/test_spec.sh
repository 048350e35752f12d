#!/usr/bin/env bash
# Speculative decoding through the files: a model loaded with a draft model replies as
# it does without one, stats, metrics, kv and placement show the drafts, `spec off` turns
# a session's drafting off, and a draft of another vocabulary is refused in `error` while
# the model serves.
. "$(dirname "$0")/lib.sh" "$@"

llmfs_mount
put "$MNT/ctl" "load plain $MODELS/llama-tiny-f16.gguf mode=raw temp=0 n_predict=24 ctx=256"
put "$MNT/ctl" "load spec $MODELS/llama-tiny-f16.gguf mode=raw temp=0 n_predict=24 ctx=256 spec_type=draft+ngram spec_draft_model=$MODELS/llama-tiny-q4_0.gguf"
P="Once upon a time there was a little"
put "$MNT/plain/prompt" "$P"
want=$(timeout 60 cat "$MNT/plain/output") || fail "no reply without speculation"
put "$MNT/spec/prompt" "$P"
got=$(timeout 60 cat "$MNT/spec/output") || fail "no reply with speculation"
wait_idle "$MNT/spec"
[ "$got" = "$want" ] || fail "with speculation '$got', without '$want'"
[ "$(stat_value "$MNT/spec/stats" draft_n)" -gt 0 ] || fail "no drafts: $(cat "$MNT/spec/stats")"
grep -q "^acceptance 0\.[0-9]*$\|^acceptance 1\.0000$" "$MNT/spec/stats" || fail "acceptance: $(grep ^acceptance "$MNT/spec/stats")"
grep -q "^accepted_per_step " "$MNT/spec/stats" || fail "no accepted_per_step"
grep -q "^spec ngram draft llama-tiny-q4_0.gguf$" "$MNT/spec/stats" || fail "spec line: $(grep ^spec "$MNT/spec/stats")"
grep -q "^llmfs_spec_draft_tokens_total{model=\"spec\"} [1-9]" "$MNT/metrics" || fail "metrics: $(grep spec_ "$MNT/metrics")"
grep -q "^llmfs_spec_steps_total{model=\"plain\"} 0$" "$MNT/metrics" || fail "metrics of the plain model"
grep -q "^draft_bytes [1-9]" "$MNT/spec/kv" || fail "kv: $(cat "$MNT/spec/kv")"
grep -q "^draft CPU " "$MNT/spec/placement" || fail "placement: $(cat "$MNT/spec/placement")"
grep -q "drafted [1-9][0-9]*, accepted" "$MNT/spec/transcript" || fail "transcript end line: $(tail -1 "$MNT/spec/transcript")"
pass "a draft model: the same reply, drafts counted in stats, metrics, kv, placement, transcript"

put "$MNT/spec/ctl" "spec off"
put "$MNT/spec/prompt" "$P"
again=$(timeout 60 cat "$MNT/spec/output") || fail "no reply with spec off"
wait_idle "$MNT/spec"
[ "$again" = "$want" ] || fail "spec off: '$again'"
[ "$(stat_value "$MNT/spec/stats" draft_n)" = 0 ] || fail "spec off still drafts"
pass "spec off"

put "$MNT/ctl" "load other $MODELS/llama-tiny-q8_0.gguf mode=raw temp=0 n_predict=8 spec_type=draft spec_draft_model=$MODELS/qwen2-tiny-q8_0.gguf"
grep -q "^draft model refused: draft vocabulary differs" "$MNT/other/error" || fail "error: $(cat "$MNT/other/error")"
[ "$(grep -vc '^warning ' "$MNT/other/error")" = 1 ] || fail "the reason is not one line: $(cat "$MNT/other/error")"
put "$MNT/other/prompt" "$P"
timeout 60 cat "$MNT/other/output" >/dev/null || fail "no reply after a refused draft"
grep -q "^spec none$" "$MNT/other/stats" || fail "spec after a refused draft: $(grep ^spec "$MNT/other/stats")"
pass "a draft of another vocabulary is refused, the model serves"
exit 0
