#!/usr/bin/env bash
# Every error path of the mount: the failing write or open gets the errno, nothing
# changes, and the nearest error file says why.
. "$(dirname "$0")/lib.sh" "$@"

printf 'GGUF\003\000\000\000garbage' >"$T/models/bad.gguf"
llmfs_mount --set max_ctl_line=200 --max_sessions 3 --max_prompt_bytes=4096
M=$MNT/m

# ---- root ctl ----
must_fail "No such file or directory" put "$MNT/ctl" "no_such_setting 1"
grep -q no_such_setting "$MNT/error" || fail "root error: $(cat "$MNT/error")"
must_fail "Invalid argument" put "$MNT/ctl" "temp warm"
grep -q temp "$MNT/error" || fail "root error after a bad value: $(cat "$MNT/error")"
must_fail "Operation not permitted" put "$MNT/ctl" "model_dirs /"
grep -q model_dirs "$MNT/error" || fail "root error after model_dirs: $(cat "$MNT/error")"
must_fail "Permission denied" put "$MNT/ctl" "load m /etc/passwd"
grep -q "outside" "$MNT/error" || fail "root error after a load outside model_dirs: $(cat "$MNT/error")"
must_fail "No such file or directory" put "$MNT/ctl" "load m $MODELS/no-such-model.gguf"
grep -q "no-such-model" "$MNT/error" || fail "root error after a missing model: $(cat "$MNT/error")"
must_fail "Invalid argument" put "$MNT/ctl" "load m $T/models/bad.gguf"
grep -q gguf "$MNT/error" || fail "no root error after a malformed model"
must_fail "Invalid argument" put "$MNT/ctl" "load stats $MODELS/stories260K.gguf"
must_fail "Invalid argument" put "$MNT/ctl" "load m"
must_fail "No such file or directory" put "$MNT/ctl" "unload m"
long=$(printf 'x%.0s' $(seq 300))
must_fail "Argument list too long" put "$MNT/ctl" "temp $long"
grep -q max_ctl_line "$MNT/error" || fail "root error after a long line: $(cat "$MNT/error")"
expect_file "$MNT/models" ""
pass "root ctl errors"

put "$MNT/ctl" "load m $MODELS/stories260K.gguf"
must_fail "File exists" put "$MNT/ctl" "load m $MODELS/stories260K.gguf"
grep -q "^m llama " "$MNT/models" || fail "models: $(cat "$MNT/models")"
pass "load, and load of a taken name"

# ---- model ctl: a bad line fails, changes nothing, and says why ----
put "$M/ctl" "temp 0.5"
before=$(cat "$M/ctl")
must_fail "Invalid argument" put "$M/ctl" "temp 500"
grep -q temp "$M/error" || fail "model error after temp 500: $(cat "$M/error")"
must_fail "No such file or directory" put "$M/ctl" "no_such_setting 1"
grep -q no_such_setting "$M/error" || fail "model error: $(cat "$M/error")"
must_fail "Invalid argument" put "$M/ctl" "mode poetry"
[ "$(cat "$M/ctl")" = "$before" ] || fail "a failed ctl write changed the settings"
must_fail "Argument list too long" put "$M/ctl" "system $long"
must_fail "Permission denied" put "$M/stats" "x"
must_fail "Permission denied" put "$M/info" "x"
must_fail "Permission denied" put "$MNT/new-file" "x"
pass "model ctl errors leave the settings as they were"

# ---- the settings read back from ctl can be written back as they are ----
cat "$M/ctl" >"$T/saved"
cat "$T/saved" >"$M/ctl" || fail "writing the ctl text back failed: $(cat "$M/error")"
[ "$(cat "$M/ctl")" = "$(cat "$T/saved")" ] || fail "ctl text changed by writing it back"
pass "ctl text round-trips"

# ---- sessions ----
must_fail "No such file or directory" ls "$M/99"
must_fail "No such file or directory" cat "$M/99/ctl"
must_fail "No such file or directory" cat "$M/0/ctl"
must_fail "No such file or directory" cat "$M/007/ctl"
a=$(cat "$M/clone") || fail "clone"
b=$(cat "$M/clone") || fail "clone"
c=$(cat "$M/clone") || fail "clone"
[ -d "$M/$a" ] && [ -d "$M/$b" ] && [ -d "$M/$c" ] || fail "clone folders $a $b $c missing"
must_fail "Too many open files" cat "$M/clone"
grep -q . "$M/error" || fail "no model error after too many sessions"
put "$M/$a/ctl" "close"
must_fail "No such file or directory" ls "$M/$a"
d=$(cat "$M/clone") || fail "clone after a close"
cat "$M/$b/ctl" >"$T/saved-session"
cat "$T/saved-session" >"$M/$b/ctl" || fail "writing a session's ctl text back failed: $(cat "$M/$b/error")"
grep -q "^ctx " "$T/saved-session" && fail "a session's ctl shows model settings"
must_fail "Invalid argument" put "$M/$b/ctl" "top_k -5"
grep -q top_k "$M/$b/error" || fail "session error: $(cat "$M/$b/error")"
pass "session errors"

# ---- prompts ----
put "$M/ctl" "mode raw"
big=$(printf 'word %.0s' $(seq 1000))
must_fail "File too large" put "$M/prompt" "$big"
grep -q max_prompt_bytes "$M/error" || fail "model error after a big prompt: $(cat "$M/error")"
# Too long for the context: refused when the file is closed, which /bin/echo reports.
put "$M/$b/ctl" "mode raw"
put "$M/ctl" "ctx 64"
small=$(printf 'once %.0s' $(seq 200))
must_fail "Argument list too long" put_closing "$M/$b/prompt" "$small"
grep -q . "$M/$b/error" || fail "no session error after a prompt longer than the context"
pass "prompt limits"

# ---- busy ----
put "$M/ctl" "ctx 4096"
S=$M/$d
long_generation "$S"
must_fail "Device or resource busy" put "$S/prompt" "another prompt"
grep -q "generation is running" "$S/error" || fail "session error while busy: $(cat "$S/error")"
must_fail "Device or resource busy" put_closing "$S/prompt" "another prompt"
must_fail "Device or resource busy" put "$M/ctl" "ctx 2048"
grep -q . "$M/error" || fail "no model error after ctx while generating"
put "$S/ctl" "stop"
wait_idle "$S"
put "$S/ctl" "n_predict 4"
put "$S/prompt" "Once upon a time"
wait_idle "$S"
pass "a prompt while generating is refused with EBUSY, and accepted after stop"

exit 0
