#!/usr/bin/env bash
# metrics is valid Prometheus text (promtool check metrics) and agrees with the stats files.
. "$(dirname "$0")/lib.sh" "$@"
command -v promtool >/dev/null || skip "promtool (package prometheus) is not installed"

llmfs_mount
cat "$MNT/metrics" >"$T/empty.prom"
promtool check metrics <"$T/empty.prom" || fail "promtool rejects the metrics of an empty mount"

put "$MNT/ctl" "load a $MODELS/stories260K.gguf"
put "$MNT/ctl" "load b\"q $MODELS/llama-tiny-q8_0.gguf" 2>/dev/null # a bad name: refused
put "$MNT/ctl" "load b $MODELS/llama-tiny-q8_0.gguf"
for m in a b; do
    put "$MNT/$m/ctl" "mode raw"
    put "$MNT/$m/ctl" "n_predict 12"
    put "$MNT/$m/prompt" "Once upon a time"
    timeout 30 cat "$MNT/$m/output" >/dev/null || fail "no reply from $m"
done
wait_idle "$MNT/a"
wait_idle "$MNT/b"
cat "$MNT/metrics" >"$T/m.prom"
promtool check metrics <"$T/m.prom" || fail "promtool rejects the metrics: $(cat "$T/m.prom")"
for m in a b; do
    gen=$(stat_value "$MNT/$m/stats" gen_tokens_total)
    grep -q "^llmfs_generated_tokens_total{model=\"$m\"} $gen\$" "$T/m.prom" ||
        fail "metrics disagree with $m/stats gen_tokens_total $gen: $(grep generated_tokens "$T/m.prom")"
    grep -q "^llmfs_model_info{model=\"$m\",arch=\"llama\"" "$T/m.prom" || fail "no llmfs_model_info for $m"
done
grep -q '^llmfs_models 2$' "$T/m.prom" || fail "llmfs_models: $(grep '^llmfs_models' "$T/m.prom")"
grep -q '^# TYPE llmfs_requests_total counter$' "$T/m.prom" || fail "llmfs_requests_total is not a counter"
pass "metrics pass promtool and agree with stats"

# placement's rows add up, per device, to that device's total, which is what stats counts
# as the device's weights (rows on CUDA0 only where there is a GPU); kv's line for the
# default session agrees with stats.
for m in a b; do
    declare -A sum=([CPU]=0 [CUDA0]=0) total=([CPU]=0 [CUDA0]=0)
    while read -r group device type bytes; do
        if [ "$group" = total ]; then
            total[$device]=$bytes
        elif [ "$group" = stream ]; then
            # "stream layers N bytes B threshold T ...": only where a GPU holds part of the model
            [ "$(stat_value "$MNT/$m/stats" vram_used_load)" != 0 ] || fail "$m: a stream line without a GPU in use"
            [ "$device" = layers ] || [ "$device" = error ] || fail "$m: a malformed stream line: $device $type $bytes"
        elif [ "$group" != fit ]; then
            [ "$device" = CPU ] || { [ "$device" = CUDA0 ] && [ "$(stat_value "$MNT/$m/stats" vram_used_load)" != 0 ]; } ||
                fail "$m: a row on $device without a GPU in use"
            [ -n "$type" ] || fail "$m: a placement row without a type"
            sum[$device]=$((sum[$device] + bytes))
        fi
    done <"$MNT/$m/placement"
    [ "${total[CPU]}${total[CUDA0]}" != 00 ] || fail "$m: placement has no total: $(cat "$MNT/$m/placement")"
    for dev in CPU CUDA0; do
        [ "${sum[$dev]}" = "${total[$dev]}" ] || fail "$m: $dev rows add up to ${sum[$dev]}, the total says ${total[$dev]}"
    done
    [ "${total[CPU]}" = "$(stat_value "$MNT/$m/stats" weight_bytes_cpu)" ] ||
        fail "$m: placement CPU total ${total[CPU]}, stats weight_bytes_cpu $(stat_value "$MNT/$m/stats" weight_bytes_cpu)"
    [ "${total[CUDA0]}" = "$(stat_value "$MNT/$m/stats" weight_bytes_gpu)" ] ||
        fail "$m: placement CUDA0 total ${total[CUDA0]}, stats weight_bytes_gpu $(stat_value "$MNT/$m/stats" weight_bytes_gpu)"
    # GPU memory held: at least the weights there, and never less after steps than at load
    vl=$(stat_value "$MNT/$m/stats" vram_used_load) vn=$(stat_value "$MNT/$m/stats" vram_used_now)
    [ "$vl" -ge "${total[CUDA0]}" ] && [ "$vn" -ge "$vl" ] ||
        fail "$m: vram_used_load $vl, vram_used_now $vn, GPU weights ${total[CUDA0]}"
    [ "${total[CUDA0]}" = 0 ] || [ "$vl" -gt 0 ] || fail "$m: weights on the GPU but vram_used_load 0"
    grep -q "^session 0 used $(stat_value "$MNT/$m/stats" kv_used) size $(stat_value "$MNT/$m/stats" kv_size)\$" "$MNT/$m/kv" ||
        fail "$m: kv and stats disagree: $(grep '^session 0' "$MNT/$m/kv")"
    grep -q "^layers [1-9]" "$MNT/$m/info" || fail "$m: info has no layers"
done
pass "placement, kv and info agree with stats"
exit 0
