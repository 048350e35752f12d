#!/usr/bin/env bash
# Remote models: a second daemon (B) loads the first one's (A) HTTP endpoint as remote
# models. remote_hosts empty refuses them; the key is needed; the greedy text through
# `echo > prompt; cat output` on B equals A's (and the fixture's), in raw and chat mode,
# in clones too, with stop strings; stats, info and placement say what they should.
# Killing A mid-reply gives B's reader EIO and a reason in `error`, and B keeps serving.
. "$(dirname "$0")/lib.sh" "$@"
export LC_ALL=C

command -v curl >/dev/null || skip "curl is not installed (scripts/deps.sh --test)"
PORT=$((20000 + RANDOM % 30000))
echo "sk-remote-$RANDOM$RANDOM" >"$T/key"

# ---- daemon B: the one that loads remote models ----
MNT_B=$T/mntb
mkdir "$MNT_B"
PID_B=
stop_b() {
    [ -n "$PID_B" ] && kill -TERM "$PID_B" 2>/dev/null
    for _ in $(seq 50); do [ -n "$PID_B" ] && kill -0 "$PID_B" 2>/dev/null || break; sleep 0.1; done
    grep -q " $MNT_B fuse" /proc/mounts && { fusermount3 -u -z "$MNT_B" 2>/dev/null || umount -l "$MNT_B"; }
    PID_B=
}
trap 'stop_b; cleanup' EXIT
mount_b() { # CONF
    "$LLMFS" mount -c "$1" "$MNT_B" || fail "daemon B did not mount"
    PID_B=$(awk '/^pid /{ print $2 }' "$MNT_B/stats")
}

# remote_hosts empty: remote loading is off
cat >"$T/b0.ini" <<CONF
[llmfs]
model_dirs = $MODELS
CONF
mount_b "$T/b0.ini"
must_fail "Permission denied" put_closing "$MNT_B/ctl" "load r http://127.0.0.1:$PORT/v1 model=st"
grep -q remote_hosts "$MNT_B/error" || fail "error after a refused remote load: $(cat "$MNT_B/error")"
stop_b
pass "remote_hosts empty refuses remote models"

# ---- daemon A: serves st, qw and long over HTTP ----
llmfs_mount --http_listen "127.0.0.1:$PORT" --http_api_key_file "$T/key"
put "$MNT/ctl" "load st $MODELS/stories260K.gguf"
put "$MNT/ctl" "load qw $MODELS/qwen3-tiny-q4_k.gguf"
put "$MNT/ctl" "load long $MODELS/llama-tiny-q8_0.gguf"

cat >"$T/b.ini" <<CONF
[llmfs]
model_dirs = $MODELS
remote_hosts = 127.0.0.1:$PORT
[model ri]
path = http://127.0.0.1:$PORT/v1
model = st
api_key_file = $T/key
mode = raw
CONF
mount_b "$T/b.ini"
[ -d "$MNT_B/ri" ] || fail "the configuration's remote model did not load: $(cat "$MNT_B/error")"
must_fail "Permission denied" put_closing "$MNT_B/ctl" "load r http://127.0.0.2:$PORT/v1 model=st"
must_fail "Permission denied" put_closing "$MNT_B/ctl" "load r http://127.0.0.1:$PORT/v1 model=st"
grep -q 401 "$MNT_B/error" || fail "error without the key: $(cat "$MNT_B/error")"
must_fail "No such file" put_closing "$MNT_B/ctl" "load r http://127.0.0.1:$PORT/v1 model=nothing api_key_file=$T/key"
pass "a host outside remote_hosts, a missing key and an unknown model are refused"

put "$MNT_B/ctl" "load r http://127.0.0.1:$PORT/v1 model=st api_key_file=$T/key"
R=$MNT_B/r
grep -q '^arch remote' "$R/info" || fail "info: $(cat "$R/info")"
[ "$(cat "$R/placement")" = "remote http://127.0.0.1:$PORT/v1" ] || fail "placement: $(cat "$R/placement")"

# raw mode: the same greedy text as A gives through its own files
greedy() { # FOLDER PROMPT -> the reply
    put "$1/ctl" "temp 0"
    put "$1/ctl" "n_predict 32"
    echo "$2" >"$1/prompt" || fail "$1: prompt refused: $(cat "$1/error")"
    timeout 60 cat "$1/output" || fail "$1: reading output failed: $(cat "$1/error")"
}
put "$MNT/st/ctl" "mode raw"
put "$R/ctl" "mode raw"
prompt=$(cat "$FIXTURES/stories260K/once-upon-a-time/prompt.txt")
local_text=$(greedy "$MNT/st" "$prompt")
remote_text=$(greedy "$R" "$prompt")
[ -n "$local_text" ] && [ "$remote_text" = "$local_text" ] || fail "remote '$remote_text', local '$local_text'"
wait_idle "$R"
"$LLMFS" detok -m "$MODELS/stories260K.gguf" $(head -c 200 "$FIXTURES/stories260K/once-upon-a-time/greedy.txt" | cut -d' ' -f1-16) >"$T/want"
[ "${remote_text:0:$(wc -c <"$T/want")}" = "$(cat "$T/want")" ] || fail "remote text '$remote_text' does not start with the fixture's '$(cat "$T/want")'"
[ "$(stat_value "$R/stats" n_gen)" = 32 ] || fail "n_gen $(stat_value "$R/stats" n_gen)"
[ "$(stat_value "$R/stats" n_prompt)" = 5 ] || fail "n_prompt $(stat_value "$R/stats" n_prompt)"
[ "$(stat_value "$R/stats" stop_reason)" = length ] || fail "stop_reason $(stat_value "$R/stats" stop_reason)"
awk '/^ttft_ms /{ exit !($2 > 0) }' "$R/stats" || fail "ttft_ms: $(grep ttft "$R/stats")"
grep -q '^### end length: prompt 5 tokens' "$R/transcript" || fail "transcript: $(cat "$R/transcript")"
[ "$(greedy "$MNT_B/ri" "$prompt")" = "$local_text" ] || fail "the configuration's remote model"
pass "raw mode through the remote equals the local reply and the fixture ('$remote_text'), also from the INI"

# chat mode, and a clone
put "$MNT_B/ctl" "load rq http://127.0.0.1:$PORT/v1 model=qw api_key_file=$T/key"
put "$MNT/qw/ctl" "mode chat"
put "$MNT_B/rq/ctl" "mode chat"
local_chat=$(greedy "$MNT/qw" "Hi")
id=$(cat "$MNT_B/rq/clone")
remote_chat=$(greedy "$MNT_B/rq/$id" "Hi")
[ -n "$local_chat" ] && [ "$remote_chat" = "$local_chat" ] || fail "remote chat '$remote_chat', local '$local_chat'"
grep -q '^>>> user' "$MNT_B/rq/$id/transcript" || fail "chat transcript: $(cat "$MNT_B/rq/$id/transcript")"
pass "chat mode through the remote, in a clone, equals the local reply"

# stop strings apply here
stop=
for w in $remote_text; do [[ $w =~ ^[a-z]{3,}$ ]] && stop=$w && break; done
[ -n "$stop" ] || fail "no plain word in '$remote_text'"
put "$R/ctl" "stop_strings $stop"
cut_text=$(greedy "$R" "$prompt")
wait_idle "$R"
[ "$cut_text" = "${remote_text%%"$stop"*}" ] || fail "stop '$stop': '$cut_text'"
[ "$(stat_value "$R/stats" stop_reason)" = stop_string ] || fail "stop_reason $(stat_value "$R/stats" stop_reason)"
pass "stop_strings on a remote model ('$stop')"

# ---- A dies mid-reply: EIO for B's reader, the reason in error, B goes on ----
put "$MNT_B/ctl" "load rl http://127.0.0.1:$PORT/v1 model=long api_key_file=$T/key"
put "$MNT_B/rl/ctl" "mode raw"
put "$MNT_B/rl/ctl" "temp 0"
echo "Once upon a time" >"$MNT_B/rl/prompt" || fail "prompt to rl"
(timeout 60 cat "$MNT_B/rl/output" >"$T/partial" 2>"$T/cat.err"; echo $? >"$T/cat.rc") &
for _ in $(seq 100); do [ -s "$T/partial" ] && break; sleep 0.05; done
[ -s "$T/partial" ] || fail "no text from the long remote reply"
kill -KILL "$DAEMON_PID"
for _ in $(seq 200); do [ -s "$T/cat.rc" ] && break; sleep 0.05; done
[ "$(cat "$T/cat.rc")" != 0 ] || fail "the reader of a broken reply ended without an error"
grep -q "Input/output error" "$T/cat.err" || fail "the reader said '$(cat "$T/cat.err")', wanted EIO"
grep -q "remote" "$MNT_B/rl/error" || fail "rl/error: '$(cat "$MNT_B/rl/error")'"
[ "$(stat_value "$MNT_B/rl/stats" stop_reason)" = error ] || fail "stop_reason $(stat_value "$MNT_B/rl/stats" stop_reason)"
pass "killing the remote mid-reply: EIO for the reader, '$(cat "$MNT_B/rl/error")'"

put "$MNT_B/ctl" "load loc $MODELS/stories260K.gguf"
put "$MNT_B/loc/ctl" "mode raw"
[ "$(greedy "$MNT_B/loc" "$prompt")" = "$local_text" ] || fail "B's local model after the remote died"
echo "$prompt" >"$MNT_B/r/prompt" || fail "a prompt to the dead remote was refused at once"
! timeout 30 cat "$MNT_B/r/output" >/dev/null 2>&1 || fail "reading a reply of the dead remote succeeded"
grep -q "remote" "$MNT_B/r/error" || fail "r/error: '$(cat "$MNT_B/r/error")'"
grep -q '^r remote' "$MNT_B/models" || fail "models: $(cat "$MNT_B/models")"
pass "B keeps serving its local model; the dead remote's replies fail with '$(cat "$MNT_B/r/error")'"
stop_b
exit 0
