#!/usr/bin/env bash
# Gemma 4 MoE through the file tree: a chat reply, and the KV cache by layer kind: the
# sliding-window layers keep a ring of window + ubatch cells, the full layers the whole
# context, in the bytes the file's metadata implies (llmfs info); swa_full gives the
# window layers the whole context again.
. "$(dirname "$0")/lib.sh" "$@"

GGUF=$MODELS/gemma4moe-tiny-q8_0.gguf
# "layers:  3 sliding-window (window 8, kv 2 x 32, ...), 1 full (kv 1 x 64)"
line=$("$LLMFS" info "$GGUF" | grep '^layers:') || fail "llmfs info shows no layer kinds"
read -r n_swa window swa_heads swa_hd n_full full_heads full_hd < <(echo "$line" |
    sed -E 's/.* ([0-9]+) sliding-window \(window ([0-9]+), kv ([0-9]+) x ([0-9]+).*, ([0-9]+) full \(kv ([0-9]+) x ([0-9]+)\).*/\1 \2 \3 \4 \5 \6 \7/')
[ -n "$full_hd" ] || fail "cannot read the layer kinds from '$line'"

llmfs_mount
put "$MNT/ctl" "load g $GGUF ctx=2048 ubatch=64"
M=$MNT/g
# f16 K and V: 2 bytes per value, K and V
swa_bytes=$(( (window + 64) * swa_heads * swa_hd * 2 * 2 ))
full_bytes=$(( 2048 * full_heads * full_hd * 2 * 2 ))
grep -qx "layers swa $n_swa cells $(( window + 64 )) bytes_each $swa_bytes" "$M/kv" ||
    fail "kv: $(grep '^layers swa' "$M/kv"), wanted $n_swa layers of $(( window + 64 )) cells, $swa_bytes bytes"
grep -qx "layers full $n_full cells 2048 bytes_each $full_bytes" "$M/kv" ||
    fail "kv: $(grep '^layers full' "$M/kv"), wanted $n_full layers of 2048 cells, $full_bytes bytes"
[ "$(stat_value "$M/kv" bytes)" = $(( n_swa * swa_bytes + n_full * full_bytes )) ] ||
    fail "kv bytes $(stat_value "$M/kv" bytes)"
pass "kv: $n_swa window layers keep $(( window + 64 )) cells, $n_full full layers 2048"

put "$M/ctl" "mode chat"
put "$M/ctl" "temp 0"
put "$M/ctl" "n_predict 200"
put "$M/prompt" "Hi"
first=$(timeout 60 cat "$M/output") || fail "no reply"
wait_idle "$M"
[ -n "$first" ] || fail "an empty reply"
used=$(( $(stat_value "$M/stats" n_prompt) + $(stat_value "$M/stats" n_gen) ))
[ "$used" -gt $(( 2 * (window + 64) )) ] || fail "$used cells: the rings did not wrap"
# the prompt and reply (past the ring's cells twice) again with the whole context in
# every layer: the same greedy reply
put "$M/ctl" "swa_full on"
grep -q "^layers swa" "$M/kv" && fail "swa_full on still shows window layers: $(grep '^layers' "$M/kv")"
[ "$(stat_value "$M/kv" bytes)" = $(( (n_swa * swa_heads * swa_hd + n_full * full_heads * full_hd) * 4 * 2048 )) ] ||
    fail "kv bytes with swa_full: $(stat_value "$M/kv" bytes)"
put "$M/ctl" "reset"
put "$M/prompt" "Hi"
again=$(timeout 60 cat "$M/output") || fail "no reply with swa_full"
wait_idle "$M"
[ "$again" = "$first" ] || fail "with swa_full the reply is '$again', with rings '$first'"
pass "a chat reply with rings equals the one with the whole context"
exit 0
