#!/usr/bin/env bash
# 16 clone sessions generating at once: each gets exactly the reply it gets alone, with
# nothing lost or mixed in from the others.
. "$(dirname "$0")/lib.sh" "$@"

llmfs_mount --set max_sessions=32
put "$MNT/ctl" "load m $MODELS/stories260K.gguf parallel=16"
M=$MNT/m
prompts=("Once upon a time" "The little dog" "Lily and Tom went to" "One day, a girl"
    "The sun was" "Tim had a big" "Mom said" "There was a cat"
    "The bird flew" "A boy named Ben" "The park was" "She liked to"
    "The tree was very" "He saw a" "They played with" "At night, the")
N=${#prompts[@]}
ids=()
for i in $(seq 0 $((N - 1))); do
    id=$(cat "$M/clone") || fail "clone $i"
    ids+=("$id")
    put "$M/$id/ctl" "mode raw"
    put "$M/$id/ctl" "temp 0"
    put "$M/$id/ctl" "n_predict 32"
done
[ "$(ls "$M" | grep -c '^[0-9]')" = "$N" ] || fail "ls $M shows $(ls "$M" | grep -c '^[0-9]') sessions, wanted $N"

# Alone, one after another.
for i in $(seq 0 $((N - 1))); do
    S=$M/${ids[$i]}
    put "$S/prompt" "${prompts[$i]}"
    timeout 60 cat "$S/output" >"$T/alone$i" || fail "session ${ids[$i]} alone"
    [ -s "$T/alone$i" ] || fail "session ${ids[$i]} gave an empty reply"
    put "$S/ctl" "reset"
done

# All at once, each with a reader that starts before its prompt.
pids=()
for i in $(seq 0 $((N - 1))); do
    timeout 120 cat "$M/${ids[$i]}/output" >"$T/together$i" &
    pids+=($!)
done
sleep 0.3
for i in $(seq 0 $((N - 1))); do
    put "$M/${ids[$i]}/prompt" "${prompts[$i]}" &
    pids+=($!)
done
wait_all=0
for p in "${pids[@]}"; do
    wait "$p" || wait_all=1
done
[ "$wait_all" = 0 ] || fail "a prompt write or a reader failed or timed out"
for i in $(seq 0 $((N - 1))); do
    [ "$(cat "$T/together$i")" = "$(cat "$T/alone$i")" ] ||
        fail "session ${ids[$i]} ('${prompts[$i]}'): together '$(cat "$T/together$i")', alone '$(cat "$T/alone$i")'"
    [ "$(cat "$M/${ids[$i]}/output")" = "$(cat "$T/alone$i")" ] || fail "session ${ids[$i]}: output changed"
    grep -q "^stop_reason length" "$M/${ids[$i]}/stats" || fail "session ${ids[$i]}: $(grep stop_reason "$M/${ids[$i]}/stats")"
done
pass "$N sessions at once give what each gives alone"

# Closing sessions removes their folders.
for id in "${ids[@]}"; do
    put "$M/$id/ctl" "close"
done
[ "$(ls "$M" | grep -c '^[0-9]')" = 0 ] || fail "sessions left after close: $(ls "$M")"
pass "close removes the sessions"
exit 0
