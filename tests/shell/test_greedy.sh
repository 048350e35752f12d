#!/usr/bin/env bash
# Greedy output through the mount equals llama.cpp's greedy continuation of the fixture
# cases (raw mode, temp 0, n_predict 32), detokenized with `llmfs detok`. As
# ../shared/README.md prescribes for free-running comparisons, the text must match up to
# the first step whose reference top-2 margin is below 0.5 (a near tie that legitimate
# rounding differences may flip); where no such step comes, the whole reply must match.
# The mount serves valid UTF-8: where the tokens' bytes are not (random-weight models emit
# stray byte tokens), it writes U+FFFD. Such bytes are left out of both texts before they
# are compared, so every valid character still has to match, in place.
. "$(dirname "$0")/lib.sh" "$@"
export LC_ALL=C # byte-wise lengths and substrings
"$LLMFS" detok --help >/dev/null 2>&1 || skip "this llmfs has no detok command to compute the expected text"

llmfs_mount
check_case() { # MODEL-STEM CASE
    local dir=$FIXTURES/$1/$2 name=g$RANDOM
    local model
    model=$(grep -m1 '^model ' "$dir/meta.txt") || fail "no model in $dir/meta.txt"
    model=${model#model }
    put "$MNT/ctl" "load $name $MODELS/$model"
    local M=$MNT/$name
    put "$M/ctl" "mode raw"
    put "$M/ctl" "temp 0"
    put "$M/ctl" "n_predict 32"
    cat "$dir/prompt.txt" >"$M/prompt" || fail "$1/$2: prompt refused: $(cat "$M/error")"
    timeout 60 cat "$M/output" >"$T/out" || fail "$1/$2: reading output failed"
    wait_idle "$M"

    local ids margins k=0
    read -r -a ids <"$dir/greedy.txt"
    read -r -a margins <"$dir/greedy_margin.txt"
    while [ "$k" -lt "${#ids[@]}" ] && [[ ${margins[$k]} != 0.[0-4]* ]] && [ "${margins[$k]}" != 0 ]; do
        k=$((k + 1))
    done
    "$LLMFS" detok -m "$MODELS/$model" "${ids[@]:0:$k}" >"$T/want" || fail "llmfs detok failed"
    local got want
    got=$(cat "$T/out"; echo .)
    want=$(iconv -c -f UTF-8 -t UTF-8 <"$T/want"; echo .)
    got=${got%.}
    want=${want%.}
    got=${got//$'\xef\xbf\xbd'/}
    if [ "$k" = "${#ids[@]}" ]; then
        [ "$got" = "$want" ] || fail "$1/$2: output '$got', wanted '$want'"
    else
        [ "${got:0:${#want}}" = "$want" ] ||
            fail "$1/$2: output '$got' does not start with '$want' (the first $k tokens)"
    fi
    [ "$(stat_value "$M/stats" n_gen)" = "${#ids[@]}" ] ||
        fail "$1/$2: n_gen $(stat_value "$M/stats" n_gen), wanted ${#ids[@]}"
    [ "$(stat_value "$M/stats" n_prompt)" = "$(stat_value "$dir/meta.txt" n_tokens)" ] ||
        fail "$1/$2: n_prompt $(stat_value "$M/stats" n_prompt), wanted $(stat_value "$dir/meta.txt" n_tokens)"
    [ "$(stat -c %s "$M/output")" = "$(stat -c %s "$T/out")" ] || fail "$1/$2: stat size of output"
    put "$MNT/ctl" "unload $name"
    pass "$1/$2: greedy output matches (the first $k of ${#ids[@]} tokens are checked exactly)"
}

check_case stories260K once-upon-a-time
check_case llama-tiny-q8_0 story
check_case stories260K lily-and-tom
exit 0
