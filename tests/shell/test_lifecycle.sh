#!/usr/bin/env bash
# Mounting and unmounting: with no model the ctl file says how to load one; models in the
# configuration are there when `llmfs mount` returns; SIGTERM unmounts cleanly and the
# mount point can be used again; the stale mount that kill -9 leaves behind is cleared
# by the next start; -f serves in the foreground until SIGINT.
. "$(dirname "$0")/lib.sh" "$@"

# ---- no model ----
llmfs_mount
grep -q "load NAME" "$MNT/ctl" || fail "the root ctl of an empty mount does not explain loading: $(cat "$MNT/ctl")"
expect_file "$MNT/models" ""
[ "$(ls "$MNT")" = "$(printf 'available\nctl\ndiag\nerror\nmetrics\nmodels\nstats')" ] || fail "root listing: $(ls "$MNT")"
[ "$(stat -c %a "$MNT")" = 700 ] || fail "root folder mode $(stat -c %a "$MNT"), wanted 700"
[ "$(stat -c %a "$MNT/ctl")" = 600 ] || fail "ctl mode $(stat -c %a "$MNT/ctl"), wanted 600"
[ "$(stat -c %a "$MNT/stats")" = 400 ] || fail "stats mode $(stat -c %a "$MNT/stats"), wanted 400"
grep -q "^models 0" "$MNT/stats" || fail "stats: $(cat "$MNT/stats")"
llmfs_unmount
pass "an empty mount explains how to load a model; SIGTERM unmounts"

# ---- models from the configuration ----
cat >>"$CONF" <<CONF

[model tiny]
path = $MODELS/stories260K.gguf
temp = 0
mode = raw
n_predict = 8

[model q8]
path = $MODELS/llama-tiny-q8_0.gguf
profile = text-12gb
CONF
llmfs_mount
grep -q "^tiny llama " "$MNT/models" || fail "models: $(cat "$MNT/models")"
grep -q "^q8 llama " "$MNT/models" || fail "models: $(cat "$MNT/models")"
grep -q "^temp 0$" "$MNT/tiny/ctl" || fail "temp from the configuration: $(grep ^temp "$MNT/tiny/ctl")"
grep -q "^n_predict 8$" "$MNT/tiny/ctl" || fail "n_predict from the configuration"
grep -q "^load tiny $MODELS/stories260K.gguf" "$MNT/ctl" || fail "root ctl: $(cat "$MNT/ctl")"
put "$MNT/tiny/prompt" "Once upon a time"
first=$(timeout 30 cat "$MNT/tiny/output") || fail "no reply"
[ -n "$first" ] || fail "empty reply"
pass "models from the configuration are loaded when mount returns"

# ---- idle timers ----
put "$MNT/q8/ctl" "session_idle 1"
s=$(cat "$MNT/q8/clone")
[ -d "$MNT/q8/$s" ] || fail "no session folder"
for _ in $(seq 60); do [ -d "$MNT/q8/$s" ] || break; sleep 0.1; done
[ -d "$MNT/q8/$s" ] && fail "an idle session outlived session_idle"
put "$MNT/q8/ctl" "idle_unload 1"
for _ in $(seq 60); do grep -q "^q8 " "$MNT/models" || break; sleep 0.1; done
grep -q "^q8 " "$MNT/models" && fail "an idle model outlived idle_unload"
pass "idle sessions are closed and idle models unloaded"
llmfs_unmount

# ---- remount the same place ----
llmfs_mount
put "$MNT/tiny/prompt" "Once upon a time"
again=$(timeout 30 cat "$MNT/tiny/output") || fail "no reply after remounting"
[ "$again" = "$first" ] || fail "after remounting the reply is '$again', before it was '$first'"
pass "remount after a clean unmount"

# ---- kill -9 leaves a stale mount; the next start clears it ----
kill -KILL "$DAEMON_PID"
for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
DAEMON_PID=
must_fail "Transport endpoint is not connected" ls "$MNT"
llmfs_mount
grep -q "^tiny " "$MNT/models" || fail "models after clearing a stale mount: $(cat "$MNT/models")"
pass "a stale mount is cleared on the next start"

# ---- a second daemon on a live mount is refused ----
must_fail "already mounted" "$LLMFS" mount -c "$CONF" "$MNT"
llmfs_unmount

# ---- the example configuration: every key is valid; missing models only warn ----
"$LLMFS" mount -c "$REPO/conf/llmfs.ini" --set model_dirs="$MODELS" "$MNT" 2>"$T/example.err" ||
    fail "the example configuration does not mount: $(cat "$T/example.err")"
is_mounted || fail "not mounted with the example configuration"
line=$(grep -m1 '^pid ' "$MNT/stats")
DAEMON_PID=${line#pid }
grep -q "warning: model qwen" "$T/example.err" || fail "no warning for the example's missing model: $(cat "$T/example.err")"
grep -q "^model tiny: " "$MNT/error" || fail "the root error file does not name the missing model: $(cat "$MNT/error")"
llmfs_unmount
pass "the example configuration is valid"

# ---- foreground ----
"$LLMFS" mount -f -c "$CONF" "$MNT" 2>"$T/fg.err" &
fg=$!
for _ in $(seq 100); do [ -e "$MNT/tiny/ctl" ] && break; sleep 0.1; done
[ -e "$MNT/tiny/ctl" ] || fail "the foreground mount did not come up: $(cat "$T/fg.err")"
kill -INT "$fg"
wait "$fg" || fail "llmfs mount -f exited with $? on SIGINT"
is_mounted && fail "still mounted after SIGINT"
pass "-f serves in the foreground until SIGINT"
exit 0
