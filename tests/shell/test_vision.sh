#!/usr/bin/env bash
# Images through the mount: a model loaded with its projector (mmproj) shows it in info
# and placement; the fixture's picture copied to a session's image file and the
# fixture's prompt written to prompt give llama.cpp's greedy continuation (up to the
# first near tie, as test_greedy.sh), in raw mode with the marker and in chat mode where
# the image goes before the text. A file that is not an image, an image over
# max_image_bytes, a model without a projector, a projector of another family, an image
# over the micro-batch and a marker without an image are refused with a reason, and the
# session keeps working.
. "$(dirname "$0")/lib.sh" "$@"
export LC_ALL=C
"$LLMFS" detok --help >/dev/null 2>&1 || skip "this llmfs has no detok command to compute the expected text"

llmfs_mount --max_image_bytes=12000 # gradient.png is 11592 bytes
CASE=$FIXTURES/gemma3-tiny-q8_0/vision-gradient
IMAGES=$SHARED/images
put "$MNT/ctl" "load v $MODELS/gemma3-tiny-q8_0.gguf mmproj=$MODELS/gemma3-tiny-mmproj-f16.gguf"
M=$MNT/v
[ "$(stat_value "$M/info" projector)" = gemma3 ] || fail "info: no gemma3 projector"
[ "$(stat_value "$M/info" image_tokens)" = 4..4 ] || fail "info: image_tokens $(stat_value "$M/info" image_tokens)"
grep -q '^mmproj ' "$M/placement" || fail "placement has no projector row: $(cat "$M/placement")"
grep -q '^mmproj_buffers ' "$M/placement" || fail "placement has no projector buffers row"
pass "info and placement show the projector"

# the expected text: the greedy ids up to the first near tie
read -r -a ids <"$CASE/greedy.txt"
read -r -a margins <"$CASE/greedy_margin.txt"
k=0
while [ "$k" -lt "${#ids[@]}" ] && [[ ${margins[$k]} != 0.[0-4]* ]] && [ "${margins[$k]}" != 0 ]; do
    k=$((k + 1))
done
[ "$k" -gt 0 ] || fail "the case's first greedy step is a near tie: nothing to compare"
"$LLMFS" detok -m "$MODELS/gemma3-tiny-q8_0.gguf" "${ids[@]:0:$k}" >"$T/want" || fail "llmfs detok failed"
want=$(iconv -c -f UTF-8 -t UTF-8 <"$T/want"; echo .)
want=${want%.}

check_reply() { # WHAT
    timeout 60 cat "$M/output" >"$T/out" || fail "$1: reading output failed"
    wait_idle "$M"
    local got
    got=$(cat "$T/out"; echo .)
    got=${got%.}
    got=${got//$'\xef\xbf\xbd'/}
    [ "${got:0:${#want}}" = "$want" ] || fail "$1: output '$got' does not start with '$want'"
    # the cache may keep text before the image from an earlier turn, never an image
    local evaluated=$(($(stat_value "$M/stats" n_prompt) + $(stat_value "$M/stats" n_cached)))
    [ "$evaluated" = "$(stat_value "$CASE/meta.txt" n_tokens)" ] ||
        fail "$1: $evaluated prompt tokens, wanted $(stat_value "$CASE/meta.txt" n_tokens)"
    [ "$(stat_value "$M/stats" n_cached)" -le "$(stat_value "$CASE/meta.txt" image_pos)" ] ||
        fail "$1: $(stat_value "$M/stats" n_cached) tokens cached, past the image"
    pass "$1: the greedy reply matches llama.cpp's (its first $k tokens)"
}

put "$M/ctl" "mode raw"
put "$M/ctl" "temp 0"
put "$M/ctl" "n_predict 32"
cat "$IMAGES/gradient.png" >"$M/image" || fail "image refused: $(cat "$M/error")"
expect_file "$M/image" "160x120"
# prompt.txt ends with a newline, and the prompt file drops one: one more, by the same
# writer (each close submits)
cat "$CASE/prompt.txt" - <<<"" >"$M/prompt" || fail "prompt refused: $(cat "$M/error")"
check_reply "raw mode, the marker in the prompt"
expect_file "$M/image" ""

# chat mode: the image without a marker goes before the text, the template wraps it
S=$M/$(cat "$M/clone")
M_SAVE=$M
M=$S
put "$M/ctl" "mode chat"
put "$M/ctl" "temp 0"
put "$M/ctl" "n_predict 32"
cat "$IMAGES/gradient.png" >"$M/image" || fail "image refused: $(cat "$M/error")"
put "$M/prompt" "Describe the image."
check_reply "chat mode, the image before the text"
M=$M_SAVE

# refused: not an image, too big, a model without a projector; the session goes on
must_fail "Invalid argument" cp "$CASE/meta.txt" "$M/image"
grep -q "not a PNG or JPEG" "$M/error" || fail "error after a text file: $(cat "$M/error")"
cat "$IMAGES/gradient.png" "$IMAGES/gradient.png" >"$T/big.png"
must_fail "File too large" cp "$T/big.png" "$M/image"
grep -q "max_image_bytes" "$M/error" || fail "error after a big image: $(cat "$M/error")"
put "$MNT/ctl" "load t $MODELS/gemma3-tiny-q8_0.gguf"
must_fail "Invalid argument" cp "$IMAGES/checker.png" "$MNT/t/image"
grep -q "no vision projector" "$MNT/t/error" || fail "error without a projector: $(cat "$MNT/t/error")"
# (the write to the root ctl fails; the reason is in error)
/bin/echo "load w $MODELS/gemma4-tiny-q8_0.gguf mmproj=$MODELS/gemma3-tiny-mmproj-f16.gguf" >"$MNT/ctl" 2>/dev/null &&
    fail "a gemma3 projector loaded with a Gemma 4 model"
grep -q "does not fit a gemma4 model" "$MNT/error" || fail "error of a mismatched projector: $(cat "$MNT/error")"
pass "a projector of another family is refused"
# refused with the prompt: an image of more tokens than the micro-batch, a marker without
# an image (the refused prompt took the image)
put "$M/ctl" "ubatch 2"
cat "$IMAGES/gradient.png" >"$M/image" || fail "image refused: $(cat "$M/error")"
must_fail "Argument list too long" cp "$CASE/prompt.txt" "$M/prompt"
grep -q "micro-batch" "$M/error" || fail "error after an image over ubatch: $(cat "$M/error")"
put "$M/ctl" "ubatch 512"
must_fail "Invalid argument" cp "$CASE/prompt.txt" "$M/prompt"
grep -q "image marker" "$M/error" || fail "error after a marker without an image: $(cat "$M/error")"
pass "images over the micro-batch and markers without images are refused"
cat "$IMAGES/gradient.png" >"$M/image" || fail "image refused after the errors: $(cat "$M/error")"
cat "$CASE/prompt.txt" - <<<"" >"$M/prompt" || fail "prompt refused after the errors: $(cat "$M/error")"
check_reply "after refused images"

# Gemma 4: the image's token count follows image_min_tokens / image_max_tokens (the
# fixture's 4 and 8: gradient.png becomes 3x2 tokens); its first greedy step is a near
# tie, so the prompt's length is what is compared
CASE4=$FIXTURES/gemma4-tiny-q8_0/vision-gradient
put "$MNT/ctl" "load g4 $MODELS/gemma4-tiny-q8_0.gguf mmproj=$MODELS/gemma4-tiny-mmproj-f16.gguf image_min_tokens=4 image_max_tokens=8"
G=$MNT/g4
[ "$(stat_value "$G/info" projector)" = gemma4v ] || fail "info: no gemma4v projector"
[ "$(stat_value "$G/info" image_tokens)" = 4..8 ] || fail "info: image_tokens $(stat_value "$G/info" image_tokens)"
put "$G/ctl" "mode raw"
put "$G/ctl" "temp 0"
put "$G/ctl" "n_predict 4"
cat "$IMAGES/gradient.png" >"$G/image" || fail "gemma4: image refused: $(cat "$G/error")"
cat "$CASE4/prompt.txt" >"$G/prompt" || fail "gemma4: prompt refused: $(cat "$G/error")"
timeout 60 cat "$G/output" >/dev/null || fail "gemma4: reading output failed"
wait_idle "$G"
[ "$(stat_value "$G/stats" n_prompt)" = "$(stat_value "$CASE4/meta.txt" n_tokens)" ] ||
    fail "gemma4: n_prompt $(stat_value "$G/stats" n_prompt), wanted $(stat_value "$CASE4/meta.txt" n_tokens)"
pass "gemma4: the image becomes the fixture's 6 tokens"

# The HTTP endpoint: an image_url content part (a data: URL) in a chat request is the
# image of the prompt, in the place of the part; the greedy reply is the fixture's.
command -v curl >/dev/null && command -v node >/dev/null || {
    echo "SKIP the HTTP part: curl and node are needed (scripts/deps.sh --test)"
    exit 0
}
llmfs_unmount
PORT=$((20000 + RANDOM % 30000))
if ! out=$("$LLMFS" mount -c "$CONF" --http_listen "127.0.0.1:$PORT" "$MNT" 2>&1); then
    case $out in
    *"built without the HTTP endpoint"*) echo "SKIP the HTTP part: built without the endpoint"; exit 0 ;;
    *) fail "mount with http_listen: $out" ;;
    esac
fi
put "$MNT/ctl" "load v $MODELS/gemma3-tiny-q8_0.gguf mmproj=$MODELS/gemma3-tiny-mmproj-f16.gguf"
chat() { # FILE-WITH-THE-MESSAGES-JSON -> reply in $T/r, status printed
    curl -s -o "$T/r" -w '%{http_code}' "http://127.0.0.1:$PORT/v1/chat/completions" \
        -H 'Content-Type: application/json' --data-binary @"$1"
}
image_request() { # URL TEXT [EARLIER-TURN-JSON]
    printf '{"model":"v","temperature":0,"max_tokens":32,"messages":[%s{"role":"user","content":[{"type":"image_url","image_url":{"url":"%s"}},{"type":"text","text":"%s"}]}]}' \
        "${3:-}" "$1" "$2" >"$T/req"
}
image_request "data:image/png;base64,$(base64 -w0 "$IMAGES/gradient.png")" "Describe the image."
code=$(chat "$T/req")
[ "$code" = 200 ] || fail "chat with an image_url part: $code $(cat "$T/r")"
node -e 'const r = JSON.parse(require("fs").readFileSync(process.argv[1])); process.stdout.write(r.choices[0].message.content + "\n" + r.usage.prompt_tokens)' "$T/r" >"$T/http" ||
    fail "the reply is not a chat completion: $(cat "$T/r")"
got=$(head -n -1 "$T/http"; echo .)
got=${got%.}
got=${got%$'\n'}
got=${got//$'\xef\xbf\xbd'/}
[ "${got:0:${#want}}" = "$want" ] || fail "http: reply '$got' does not start with '$want'"
[ "$(tail -n 1 "$T/http")" = "$(stat_value "$CASE/meta.txt" n_tokens)" ] ||
    fail "http: prompt_tokens $(tail -n 1 "$T/http"), wanted $(stat_value "$CASE/meta.txt" n_tokens)"
pass "http: an image_url part gives llama.cpp's greedy reply (its first $k tokens)"
# refused with a reason: a URL to fetch, bad base64, not an image, an image in an earlier turn
image_request "https://example.com/a.png" "Describe the image."
[ "$(chat "$T/req")" = 400 ] && grep -q 'only data: URLs' "$T/r" || fail "an https URL: $(cat "$T/r")"
image_request "data:image/png;base64,@@@" "x"
[ "$(chat "$T/req")" = 400 ] && grep -q 'base64 is malformed' "$T/r" || fail "bad base64: $(cat "$T/r")"
image_request "data:text/plain;base64,$(base64 -w0 "$CASE/meta.txt")" "x"
[ "$(chat "$T/req")" = 400 ] && grep -q 'not a PNG or JPEG' "$T/r" || fail "a text file: $(cat "$T/r")"
image_request "data:image/png;base64,$(base64 -w0 "$IMAGES/gradient.png")" "x" \
    "{\"role\":\"user\",\"content\":[{\"type\":\"image_url\",\"image_url\":{\"url\":\"data:image/png;base64,$(base64 -w0 "$IMAGES/gradient.png")\"}}]},{\"role\":\"assistant\",\"content\":\"ok\"},"
[ "$(chat "$T/req")" = 400 ] && grep -q 'last user message only' "$T/r" || fail "an image in an earlier turn: $(cat "$T/r")"
pass "http: image URLs to fetch, bad base64, non-images and images in earlier turns are refused"
exit 0
