#!/usr/bin/env bash
# The OpenAI-compatible HTTP endpoint: the security rules with curl (a non-loopback
# address without a key refuses to start; a missing or wrong key gets 401), then
# tests/http/openai_test.mjs drives it with the official `openai` npm client (installed
# into build-npm/ by scripts/deps.sh --test): greedy text through HTTP equals the
# fixtures', usage, stop strings, 16 concurrent streams, a client abort stopping its
# generation, OpenAI-shaped errors, /health and /metrics. Then the file tree still serves.
. "$(dirname "$0")/lib.sh" "$@"
export LC_ALL=C

OPENAI_MODULE=$REPO/build-npm/node_modules/openai
command -v node >/dev/null || skip "node is not installed (scripts/deps.sh --test)"
command -v curl >/dev/null || skip "curl is not installed (scripts/deps.sh --test)"
[ -f "$OPENAI_MODULE/index.mjs" ] || skip "the openai npm client is not in $REPO/build-npm (run scripts/deps.sh --test)"

PORT=$((20000 + RANDOM % 30000))
echo "sk-test-$RANDOM$RANDOM" >"$T/key"
KEY=$(cat "$T/key")

# ---- security: no key, no non-loopback address ----
if out=$("$LLMFS" mount -c "$CONF" --http_listen "0.0.0.0:$PORT" "$MNT" 2>&1); then
    is_mounted && fusermount3 -u "$MNT"
    fail "a non-loopback http_listen without http_api_key_file started"
fi
case $out in
*"built without the HTTP endpoint"*) skip "this llmfs was built without the HTTP endpoint" ;;
*http_api_key_file*) pass "non-loopback http_listen without a key refuses to start ($out)" ;;
*) fail "non-loopback without a key said '$out'" ;;
esac
is_mounted && fail "mounted although the endpoint was refused"

llmfs_mount --http_listen "127.0.0.1:$PORT" --http_api_key_file "$T/key" --set max_sessions=40
BASE=http://127.0.0.1:$PORT
code=$(curl -s -o "$T/r" -w '%{http_code}' "$BASE/v1/models")
[ "$code" = 401 ] && grep -q '"error"' "$T/r" || fail "no key: $code $(cat "$T/r")"
code=$(curl -s -o "$T/r" -w '%{http_code}' -H "Authorization: Bearer wrong" "$BASE/v1/models")
[ "$code" = 401 ] && grep -q '"invalid_api_key"' "$T/r" || fail "wrong key: $code $(cat "$T/r")"
code=$(curl -s -o "$T/r" -w '%{http_code}' -H "Authorization: Bearer $KEY" "$BASE/v1/models")
[ "$code" = 200 ] || fail "right key: $code $(cat "$T/r")"
pass "requests without a key or with a wrong one get 401"

put "$MNT/ctl" "load st $MODELS/stories260K.gguf parallel=8"
put "$MNT/ctl" "load qw $MODELS/qwen3-tiny-q4_k.gguf"
put "$MNT/ctl" "load long $MODELS/llama-tiny-q8_0.gguf"
put "$MNT/ctl" "load small $MODELS/stories260K.gguf ctx=64"

# ---- the expected texts, as test_greedy.sh computes them ----
E=$T/expect
mkdir "$E"
expect() { # NAME MODEL-STEM CASE
    local dir=$FIXTURES/$2/$3 model ids margins k=0
    model=$(stat_value "$dir/meta.txt" model)
    read -r -a ids <"$dir/greedy.txt"
    read -r -a margins <"$dir/greedy_margin.txt"
    while [ "$k" -lt "${#ids[@]}" ] && [[ ${margins[$k]} != 0.[0-4]* ]] && [ "${margins[$k]}" != 0 ]; do
        k=$((k + 1))
    done
    "$LLMFS" detok -m "$MODELS/$model" "${ids[@]:0:$k}" | iconv -c -f UTF-8 -t UTF-8 >"$E/$1.want" ||
        fail "llmfs detok failed"
    [ "$k" = "${#ids[@]}" ] && echo 1 >"$E/$1.exact" || echo 0 >"$E/$1.exact"
    stat_value "$dir/meta.txt" n_tokens >"$E/$1.n_tokens"
    echo "${#ids[@]}" >"$E/$1.n_gen"
}
expect raw stories260K once-upon-a-time
printf '%s' "$(cat "$FIXTURES/stories260K/once-upon-a-time/prompt.txt")" >"$E/raw.prompt"
expect chat qwen3-tiny-q4_k chat
# the chat case's prompt is the ChatML rendering of one user message
[ "$(cat "$FIXTURES/qwen3-tiny-q4_k/chat/prompt.txt")" = $'<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant' ] ||
    fail "the qwen3 chat fixture's prompt is not the one user message 'Hi'"
printf 'Hi' >"$E/chat.user"

OPENAI_MODULE=$OPENAI_MODULE LLMFS_URL=$BASE/v1 LLMFS_KEY=$KEY LLMFS_MNT=$MNT EXPECT_DIR=$E \
    RAW_MODEL=st CHAT_MODEL=qw LONG_MODEL=long SMALL_MODEL=small \
    timeout 600 node "$REPO/tests/http/openai_test.mjs" || fail "the openai client's checks failed"

# ---- a model at max_sessions answers 429 ----
ids=()
for _ in $(seq 40); do ids+=("$(cat "$MNT/small/clone")") || fail "clone"; done
code=$(curl -s -o "$T/r" -w '%{http_code}' -H "Authorization: Bearer $KEY" "$BASE/v1/completions" \
    -d '{"model": "small", "prompt": "Once"}')
[ "$code" = 429 ] && grep -q '"too_many_sessions"' "$T/r" || fail "at max_sessions: $code $(cat "$T/r")"
for id in "${ids[@]}"; do put "$MNT/small/$id/ctl" close; done
code=$(curl -s -o "$T/r" -w '%{http_code}' -H "Authorization: Bearer $KEY" "$BASE/v1/completions" \
    -d '{"model": "small", "prompt": "Once", "max_tokens": 2}')
[ "$code" = 200 ] || fail "after closing the sessions: $code $(cat "$T/r")"
pass "a model at max_sessions answers 429 too_many_sessions, and 200 again once they close"

# ---- the requests' sessions are gone, and the file tree still serves ----
sleep 0.5
[ "$(ls "$MNT/st" | grep -c '^[0-9]')" = 0 ] || fail "sessions left after the requests: $(ls "$MNT/st")"
put "$MNT/st/ctl" "mode raw"
put "$MNT/st/ctl" "temp 0"
put "$MNT/st/ctl" "n_predict 8"
put "$MNT/st/prompt" "Once upon a time"
timeout 60 cat "$MNT/st/output" >"$T/out" && [ -s "$T/out" ] || fail "the file tree after the HTTP requests"
pass "the file tree serves after the HTTP requests; no request session is left"

# stop_strings from ctl: the reply ends before the first stop string, which is not written
out=$(cat "$T/out")
stop=
for w in $out; do [[ $w =~ ^[a-z]{3,}$ ]] && stop=$w && break; done
[ -n "$stop" ] || fail "no plain word in '$out' to stop at"
want=${out%%"$stop"*}
put "$MNT/st/ctl" "stop_strings zzz|$stop"
put "$MNT/st/prompt" "Once upon a time"
timeout 60 cat "$MNT/st/output" >"$T/out2" || fail "reading output with stop_strings"
wait_idle "$MNT/st"
[ "$(cat "$T/out2")" = "$want" ] || fail "stop_strings '$stop': output '$(cat "$T/out2")', wanted '$want'"
[ "$(stat_value "$MNT/st/stats" stop_reason)" = stop_string ] || fail "stop_reason $(stat_value "$MNT/st/stats" stop_reason)"
pass "stop_strings from ctl: '$out' stops before '$stop'"
llmfs_unmount
exit 0
