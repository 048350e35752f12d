#!/usr/bin/env bash
# MTP speculative decoding through the files (spec_type mtp): a hybrid Qwen model with
# its MTP head (in its own file, or in an mtp-*.gguf named by spec_draft_model) replies as
# without it, stats, metrics, kv and placement show the head and the acceptance, a
# quantized cache brings the diagnostics' warning, `stop` in the middle of a drafted step
# leaves a state the next prompt continues from exactly, and a model without a head (or
# another model's head) is refused in `error` while the model serves.
. "$(dirname "$0")/lib.sh" "$@"

CALIB=qwen35moe-mtp-tiny-q8_0
NEXT=qwen3next-mtp-tiny-q8_0
[ -f "$MODELS/$CALIB.gguf" ] && [ -f "$MODELS/mtp-$NEXT.gguf" ] || skip "the MTP test models are missing"
COMMON="mode=raw temp=0 n_predict=32 ctx=512 threads=2"

llmfs_mount
put "$MNT/ctl" "load plain $MODELS/$CALIB.gguf $COMMON"
put "$MNT/ctl" "load mtp $MODELS/$CALIB.gguf $COMMON spec_type=mtp"
P=$(cat "$FIXTURES/$CALIB/mtp-fox/prompt.txt")
put "$MNT/plain/prompt" "$P"
want=$(timeout 60 cat "$MNT/plain/output") || fail "no reply without speculation"
put "$MNT/mtp/prompt" "$P"
got=$(timeout 60 cat "$MNT/mtp/output") || fail "no reply with the MTP head"
wait_idle "$MNT/mtp"
[ "$got" = "$want" ] || fail "with the MTP head '$got', without '$want'"
[ "$(stat_value "$MNT/mtp/stats" draft_n)" -gt 0 ] || fail "no drafts: $(cat "$MNT/mtp/stats")"
# the head of this model was fitted to this prompt: llama.cpp accepts 19 of 35 drafts
acc=$(stat_value "$MNT/mtp/stats" acceptance)
awk -v a="$acc" 'BEGIN { exit !(a >= 0.49 && a <= 0.60) }' || fail "acceptance $acc, llama.cpp's 0.543"
grep -q "^spec mtp (in the model file)$" "$MNT/mtp/stats" || fail "spec line: $(grep ^spec "$MNT/mtp/stats")"
grep -q "^llmfs_spec_accepted_tokens_total{model=\"mtp\"} [1-9]" "$MNT/metrics" || fail "metrics: $(grep spec_ "$MNT/metrics")"
grep -q "^mtp_bytes [1-9]" "$MNT/mtp/kv" || fail "kv: $(cat "$MNT/mtp/kv")"
grep -q "^state_snapshots 4$" "$MNT/mtp/kv" || fail "kv snapshots: $(cat "$MNT/mtp/kv")"
grep -q "^mtp CPU " "$MNT/mtp/placement" || fail "placement: $(cat "$MNT/mtp/placement")"
grep -q "drafted [1-9][0-9]*, accepted" "$MNT/mtp/transcript" || fail "transcript end line: $(tail -1 "$MNT/mtp/transcript")"
pass "the MTP head: the same reply, llama.cpp's acceptance, counted in stats, metrics, kv, placement"

# stop in the middle of drafted steps, then the same prompt again: the reply the model
# gives without the head (the slot's cache, recurrent state and MTP cache resume from
# what was kept)
put "$MNT/mtp/ctl" "n_predict 400"
put "$MNT/mtp/prompt" "$P"
timeout 30 cat "$MNT/mtp/output" >"$T/stopped" &
reader=$!
for _ in $(seq 200); do
    [ "$(stat_value "$MNT/mtp/stats" draft_n)" -gt 6 ] && break
    sleep 0.01
done
put "$MNT/mtp/ctl" "stop"
wait "$reader" || fail "cat output did not end after stop"
wait_idle "$MNT/mtp"
[ "$(stat_value "$MNT/mtp/stats" stop_reason)" = stopped ] || fail "stop reason $(stat_value "$MNT/mtp/stats" stop_reason)"
put "$MNT/mtp/ctl" "n_predict 32"
put "$MNT/mtp/prompt" "$P"
again=$(timeout 60 cat "$MNT/mtp/output") || fail "no reply after stop"
wait_idle "$MNT/mtp"
[ "$again" = "$want" ] || fail "after stop '$again', wanted '$want'"
[ "$(stat_value "$MNT/mtp/stats" draft_n)" -gt 0 ] || fail "no drafts after stop"
pass "stop in the middle of drafted steps: the next prompt continues exactly"

# the head of qwen3next in its own file
put "$MNT/ctl" "load nplain $MODELS/$NEXT.gguf $COMMON"
put "$MNT/ctl" "load side $MODELS/$NEXT.gguf $COMMON spec_type=mtp spec_draft_model=$MODELS/mtp-$NEXT.gguf"
P=$(cat "$FIXTURES/$NEXT/mtp-hi/prompt.txt")
put "$MNT/nplain/prompt" "$P"
want=$(timeout 60 cat "$MNT/nplain/output") || fail "no reply without speculation"
put "$MNT/side/prompt" "$P"
got=$(timeout 60 cat "$MNT/side/output") || fail "no reply with the MTP file"
wait_idle "$MNT/side"
[ "$got" = "$want" ] || fail "with the MTP file '$got', without '$want'"
grep -q "^spec mtp mtp-$NEXT.gguf$" "$MNT/side/stats" || fail "spec line: $(grep ^spec "$MNT/side/stats")"
[ "$(stat_value "$MNT/side/stats" draft_accepted)" -gt 0 ] || fail "nothing accepted: $(cat "$MNT/side/stats")"
pass "an MTP file (mtp-*.gguf) beside the model"

# a quantized cache: the warning
put "$MNT/ctl" "load q8 $MODELS/$CALIB.gguf $COMMON spec_type=mtp cache_type_k=q8_0"
grep -q "KV cache quantized.*spec_type mtp" "$MNT/q8/stats" || fail "no warning in stats: $(cat "$MNT/q8/stats")"
grep -q "^warning KV cache quantized" "$MNT/q8/error" || fail "no warning in error: $(cat "$MNT/q8/error")"
pass "spec_type mtp with cache_type_k q8_0 warns"

# no head, another model's head: refused, the model serves
put "$MNT/ctl" "load nohead $MODELS/llama-tiny-f16.gguf $COMMON spec_type=mtp"
grep -q "^MTP head refused: model: llama has no MTP (nextn) head" "$MNT/nohead/error" || fail "error: $(cat "$MNT/nohead/error")"
put "$MNT/ctl" "load other $MODELS/$CALIB.gguf $COMMON spec_type=mtp spec_draft_model=$MODELS/mtp-$NEXT.gguf"
grep -q "^MTP head refused: MTP file is qwen3next, the target qwen35moe" "$MNT/other/error" || fail "error: $(cat "$MNT/other/error")"
for d in nohead other; do
    [ "$(grep -vc '^warning ' "$MNT/$d/error")" = 1 ] || fail "the reason is not one line: $(cat "$MNT/$d/error")"
    put "$MNT/$d/prompt" "Hello"
    timeout 60 cat "$MNT/$d/output" >/dev/null || fail "no reply after a refused head ($d)"
    grep -q "^spec none$" "$MNT/$d/stats" || fail "spec after a refused head: $(grep ^spec "$MNT/$d/stats")"
done
pass "no MTP head, another model's head: refused, the model serves"
exit 0
