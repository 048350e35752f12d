#!/usr/bin/env bash
# Random file-system operations from several threads on a real mount (tests/fsfuzz.c):
# every file kind, names that do not exist, every open mode, ctl lines and prompts of
# every sort. The daemon must survive, ls must still answer, and a prompt must still get
# its greedy reply. LLMFS_FSFUZZ_SECONDS (default 20) bounds the run.
. "$(dirname "$0")/lib.sh" "$@"

FSFUZZ=$(dirname "$LLMFS")/tests/fsfuzz
[ -x "$FSFUZZ" ] || fail "no fsfuzz program at $FSFUZZ"
llmfs_mount --set max_sessions=16
put "$MNT/ctl" "load s $MODELS/stories260K.gguf parallel=4 ctx=256 threads=1"
put "$MNT/ctl" "load q $MODELS/qwen2-tiny-q8_0.gguf parallel=2 ctx=256 threads=1"

# What a prompt gives before the storm.
put "$MNT/s/ctl" "mode raw"
put "$MNT/s/ctl" "temp 0"
put "$MNT/s/ctl" "n_predict 16"
put "$MNT/s/prompt" "Once upon a time"
timeout 60 cat "$MNT/s/output" >"$T/before" || fail "the first reply"

seconds=${LLMFS_FSFUZZ_SECONDS:-20}
timeout $((seconds + 120)) "$FSFUZZ" "$MNT" "$seconds" 6 "${LLMFS_FSFUZZ_SEED:-$RANDOM}" ||
    fail "fsfuzz: the mount died or hung"
kill -0 "$DAEMON_PID" 2>/dev/null || fail "the daemon is gone"
pass "the daemon survived ${seconds}s of random operations"

timeout 20 ls "$MNT" >"$T/ls" || fail "ls does not answer"
grep -qx s "$T/ls" || fail "model s is not listed: $(cat "$T/ls")"
timeout 20 cat "$MNT/models" >/dev/null || fail "models does not answer"

# the sessions the storm cloned go
for d in "$MNT"/s/[0-9]* "$MNT"/q/[0-9]*; do
    [ -d "$d" ] && { echo close >"$d/ctl"; } 2>/dev/null
done

# The same prompt on a fresh session gives the same reply (the storm may have changed
# the model's settings: the clone sets its own).
id=$(timeout 20 cat "$MNT/s/clone") || fail "clone after the storm"
S=$MNT/s/$id
put "$MNT/s/ctl" "stop"
for line in "mode raw" "temp 0" "n_predict 16" "repeat_penalty 1" "top_k 40" "system "; do
    put "$S/ctl" "$line"
done
# a model setting the storm changed may make the model refuse prompts until set back
put "$MNT/s/ctl" "ctx 256" 2>/dev/null || true
put "$S/prompt" "Once upon a time"
timeout 60 cat "$S/output" >"$T/after" || fail "the reply after the storm"
cmp -s "$T/before" "$T/after" || fail "the reply changed: '$(cat "$T/before")' then '$(cat "$T/after")'"
pass "ls, models and a prompt still answer, with the same reply"
llmfs_unmount
