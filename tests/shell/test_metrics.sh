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

# placement's rows add up to its total, which is what stats counts as CPU weights; kv's
# line for the default session agrees with stats.
for m in a b; do
    sum=0 total=
    while read -r group device type bytes; do
        if [ "$group" = total ]; then
            total=$bytes
        elif [ "$group" != fit ]; then
            [ "$device" = CPU ] || fail "$m: a row on $device without a GPU"
            [ -n "$type" ] || fail "$m: a placement row without a type"
            sum=$((sum + bytes))
        fi
    done <"$MNT/$m/placement"
    [ -n "$total" ] || fail "$m: placement has no total: $(cat "$MNT/$m/placement")"
    [ "$sum" = "$total" ] || fail "$m: placement rows add up to $sum, the total says $total"
    [ "$total" = "$(stat_value "$MNT/$m/stats" weight_bytes_cpu)" ] ||
        fail "$m: placement total $total, stats weight_bytes_cpu $(stat_value "$MNT/$m/stats" weight_bytes_cpu)"
    grep -q "^session 0 used $(stat_value "$MNT/$m/stats" kv_used) size $(stat_value "$MNT/$m/stats" kv_size)\$" "$MNT/$m/kv" ||
        fail "$m: kv and stats disagree: $(grep '^session 0' "$MNT/$m/kv")"
    grep -q "^layers [1-9]" "$MNT/$m/info" || fail "$m: info has no layers"
done
pass "placement, kv and info agree with stats"
exit 0
