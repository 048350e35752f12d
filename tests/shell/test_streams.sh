#!/usr/bin/env bash
# output and transcript as streams: readers that start before the prompt block and then
# get the whole reply, each of several readers gets all of it, a signal interrupts a
# blocked read at once, a reader that leaves does not hold up generation, stop ends a
# reply, tail -f follows the transcript, and stat shows the current sizes.
. "$(dirname "$0")/lib.sh" "$@"

llmfs_mount
put "$MNT/ctl" "load m $MODELS/stories260K.gguf"
M=$MNT/m
put "$M/ctl" "mode raw"
put "$M/ctl" "temp 0"
put "$M/ctl" "n_predict 24"

# ---- readers started before the prompt ----
pids=()
for i in 1 2 3 4; do
    timeout 30 cat "$M/output" >"$T/reader$i" &
    pids+=($!)
done
sleep 0.5
for p in "${pids[@]}"; do
    kill -0 "$p" 2>/dev/null || fail "cat output returned before any prompt was written"
done
put "$M/prompt" "Once upon a time"
for p in "${pids[@]}"; do
    wait "$p" || fail "a reader of output failed or timed out"
done
cat "$M/output" >"$T/after"
[ -s "$T/after" ] || fail "empty reply"
for i in 1 2 3 4; do
    [ "$(cat "$T/reader$i")" = "$(cat "$T/after")" ] ||
        fail "reader $i got '$(cat "$T/reader$i")', the reply is '$(cat "$T/after")'"
done
[ "$(stat -c %s "$M/output")" = "$(stat -c %s "$T/after")" ] ||
    fail "stat says output has $(stat -c %s "$M/output") bytes, reading gives $(stat -c %s "$T/after")"
expect_file "$M/prompt" "Once upon a time"
pass "4 readers that started before the prompt each got the whole reply"

# ---- a read blocked in the kernel returns at once on a signal ----
s=$(cat "$M/clone")
t0=$(now_ms)
timeout -s INT 1 cat "$M/$s/output"
rc=$?
t1=$(now_ms)
[ "$rc" = 124 ] || fail "timeout -s INT cat output: status $rc, wanted 124"
[ $((t1 - t0)) -lt 2500 ] || fail "the interrupted read took $((t1 - t0)) ms to return"
cat "$M/$s/output" >"$T/bg" &
bg=$!
sleep 0.3
kill -TERM "$bg"
t0=$(now_ms)
wait "$bg"
t1=$(now_ms)
[ $((t1 - t0)) -lt 1500 ] || fail "a blocked cat took $((t1 - t0)) ms to die on SIGTERM"
pass "interrupted reads return promptly"

# ---- a reader that goes away mid-reply; stop ends a reply ----
S=$M/$s
put "$S/ctl" "temp 0"
cat "$S/output" >/dev/null &
gone=$!
long_generation "$S"
kill -KILL "$gone"
wait "$gone" 2>/dev/null
n1=$(stat_value "$S/stats" n_gen)
sleep 0.5
n2=$(stat_value "$S/stats" n_gen)
[ "$n2" -gt "$n1" ] || fail "generation stalled after its reader went away ($n1 -> $n2 tokens)"
timeout 20 cat "$S/output" >"$T/stopped" &
reader=$!
sleep 0.2
put "$S/ctl" "stop"
wait "$reader" || fail "cat output did not end after stop"
wait_idle "$S"
[ "$(stat_value "$S/stats" stop_reason)" = stopped ] ||
    fail "stop reason $(stat_value "$S/stats" stop_reason), wanted stopped"
[ -s "$T/stopped" ] || fail "the stopped reply was empty"
pass "a reader that leaves does not stall generation; stop ends the reply"

# ---- tail -f follows the transcript ----
t_before=$(stat -c %s "$M/transcript")
tail -n +1 -f "$M/transcript" >"$T/tail" &
tailpid=$!
put "$M/prompt" "Lily and Tom went to"
wait_idle "$M"
put "$M/prompt" "The little dog"
wait_idle "$M"
t_after=$(stat -c %s "$M/transcript")
[ "$t_after" -gt "$t_before" ] || fail "transcript size did not grow ($t_before -> $t_after)"
# tail polls: it may have read part of the last reply while it was being generated, so it
# has caught up only once its copy is as long as the transcript
t_len=$(cat "$M/transcript" | wc -c)
for _ in $(seq 100); do
    [ "$(wc -c <"$T/tail")" -ge "$t_len" ] && break
    sleep 0.1
done
kill "$tailpid"
grep -q "Once upon a time" "$T/tail" || fail "tail -f missed the first turn"
grep -q "Lily and Tom went to" "$T/tail" || fail "tail -f missed the second turn"
grep -q "The little dog" "$T/tail" || fail "tail -f missed the third turn"
[ "$(cat "$M/transcript")" = "$(cat "$T/tail")" ] || fail "tail -f and cat disagree on the transcript"
pass "tail -f transcript sees new turns"

exit 0
