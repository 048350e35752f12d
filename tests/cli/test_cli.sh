#!/usr/bin/env bash
# End-to-end runs of the llmfs binary: help, an unknown command, and `llmfs run` on
# stories260K reproducing llama.cpp's greedy continuation.
# Usage: test_cli.sh PATH-TO-LLMFS REPO-ROOT
set -u
LLMFS=$1
ROOT=$2
SHARED=${LLMFS_SHARED:-$ROOT/../shared}
if [ ! -d "$SHARED/models" ]; then
    echo "*** SKIPPED test_cli.sh: test assets not found in $SHARED ***"
    exit 77
fi
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# help lists every command with a description, exit 0
"$LLMFS" help >"$tmp/help" 2>"$tmp/err" || fail "llmfs help exited $?"
for c in run tokenize detok logits info bench mkmodel fit; do
    grep -Eq "^  $c +[a-z]" "$tmp/help" || fail "help does not list $c"
done
"$LLMFS" help bench >"$tmp/hb" 2>&1 || fail "llmfs help bench exited $?"
grep -q "usage: llmfs bench" "$tmp/hb" || fail "help bench shows no usage"

# unknown command: non-zero, one line on stderr, nothing on stdout
if "$LLMFS" frobnicate >"$tmp/out" 2>"$tmp/err"; then fail "unknown command exited 0"; fi
[ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "unknown command: stderr is not one line: $(cat "$tmp/err")"
grep -q "^llmfs: unknown command 'frobnicate'" "$tmp/err" || fail "unknown command message: $(cat "$tmp/err")"
[ -s "$tmp/out" ] && fail "unknown command wrote to stdout"

# no command at all: usage on stderr, non-zero
if "$LLMFS" >/dev/null 2>&1; then fail "llmfs without a command exited 0"; fi

# bad option of a subcommand: one line, non-zero
if "$LLMFS" tokenize --frob >"$tmp/out" 2>"$tmp/err"; then fail "bad option exited 0"; fi
[ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "bad option: stderr is not one line"

# run: greedy continuation of a fixture prompt equals llama.cpp's, up to the first step
# whose top-2 margin is below 0.5 (a near tie that legitimate rounding may flip)
M="$SHARED/models/stories260K.gguf"
for case in once-upon-a-time lily-and-tom; do
    F="$SHARED/fixtures/stories260K/$case"
    read -r -a greedy <"$F/greedy.txt"
    mapfile -t margins < <(tr ' ' '\n' <"$F/greedy_margin.txt" | grep -v '^$')
    k=0
    while [ $k -lt ${#greedy[@]} ] && awk -v m="${margins[$k]}" 'BEGIN { exit !(m > 0.5) }'; do
        k=$((k + 1))
    done
    [ $k -gt 0 ] || continue
    "$LLMFS" detok -m "$M" "${greedy[@]:0:$k}" >"$tmp/want" || fail "detok failed"
    "$LLMFS" run -m "$M" -f "$F/prompt.txt" --temp 0 -n 32 -t 2 >"$tmp/got" 2>"$tmp/err" ||
        fail "run ($case) exited $?: $(cat "$tmp/err")"
    want=$(cat "$tmp/want"; echo x)
    want=${want%x}
    got=$(cat "$tmp/got"; echo x)
    got=${got%x}
    case "$got" in
    "$want"*) echo "ok: run $case matches the first $k greedy tokens" ;;
    *) fail "run $case: got '$got', want it to start with '$want'" ;;
    esac
    # 32 tokens were generated: the whole continuation when no margin was small
    if [ $k -eq ${#greedy[@]} ]; then
        "$LLMFS" detok -m "$M" "${greedy[@]}" >"$tmp/all"
        cmp -s "$tmp/all" "$tmp/got" || fail "run $case: not exactly the 32-token continuation"
    fi
done

# run with -p and a prompt on stdin give the same text
"$LLMFS" run -m "$M" -p "Once upon a time" --temp 0 -n 8 >"$tmp/a" 2>/dev/null || fail "run -p failed"
printf 'Once upon a time' | "$LLMFS" run -m "$M" --temp 0 -n 8 >"$tmp/b" 2>/dev/null || fail "run from stdin failed"
cmp -s "$tmp/a" "$tmp/b" || fail "run -p and stdin differ"
[ -s "$tmp/a" ] || fail "run printed nothing"

# --set reaches the settings table: an unknown key is refused with one line
if "$LLMFS" run -m "$M" -p hi --set no_such_key=1 >/dev/null 2>"$tmp/err"; then fail "--set bad key exited 0"; fi
[ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "--set bad key: stderr is not one line"

if [ $fails -ne 0 ]; then
    echo "$fails failure(s)"
    exit 1
fi
echo "all command-line checks passed"
