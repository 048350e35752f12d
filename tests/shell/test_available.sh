#!/usr/bin/env bash
# Model discovery: the root `available` file lists every GGUF file under model_dirs from
# its header (subfolders and broken files included), and `load NAME FILE` takes a name
# relative to a model_dirs folder, refusing ones that climb out.
. "$(dirname "$0")/lib.sh" "$@"

mkdir "$T/models/sub"
cp "$MODELS/stories260K.gguf" "$T/models/sub/copy.gguf"
echo "not a model" >"$T/models/junk.gguf"
echo "not listed" >"$T/models/notes.txt"
llmfs_mount
A=$(cat "$MNT/available") || fail "cannot read available"

want=$(( $(ls "$MODELS"/*.gguf | wc -l) + 2 ))
[ "$(echo "$A" | wc -l)" = "$want" ] || fail "available has $(echo "$A" | wc -l) lines, wanted $want: $A"
line=$(echo "$A" | grep '^stories260K.gguf ') || fail "no stories260K.gguf line: $A"
read -r file arch params type size <<<"$line"
[ "$arch" = llama ] || fail "arch '$arch' in '$line'"
[ "$type" = F32 ] || fail "type '$type' in '$line'"
[ "$size" = "$(stat -c %s "$MODELS/stories260K.gguf")" ] || fail "size '$size' in '$line'"
# the parameter count is the one the loaded model reports
put "$MNT/ctl" "load st stories260K.gguf"
n=$(awk '/^params /{ print $2 }' "$MNT/st/info")
[ "$params" = "$(awk -v n="$n" 'BEGIN { printf "%.2fK", n / 1e3 }')" ] || fail "params '$params', the model has $n"
pass "available: $line (loaded by its relative name)"

line=$(echo "$A" | grep '^qwen3-tiny-q4_k.gguf ') || fail "no qwen3 line"
[ "$(echo "$line" | awk '{ print $2, $4 }')" = "qwen3 Q4_K_M" ] || fail "qwen3 line '$line'"
echo "$A" | grep -qx "sub/copy.gguf llama [0-9.]*K F32 $(stat -c %s "$MODELS/stories260K.gguf")" ||
    fail "no sub/copy.gguf line: $A"
echo "$A" | grep -qx "junk.gguf invalid invalid invalid 12" || fail "no junk.gguf line: $A"
echo "$A" | grep -q notes.txt && fail "a non-GGUF file is listed"
pass "subfolders, other architectures and broken files are listed as they are"

put "$MNT/ctl" "load cp sub/copy.gguf"
[ -d "$MNT/cp" ] || fail "load by a name in a subfolder"
must_fail "Permission denied" put_closing "$MNT/ctl" "load up ../models/sub/copy.gguf"
grep -q "model folder" "$MNT/error" || fail "error after ..: $(cat "$MNT/error")"
must_fail "No such file" put_closing "$MNT/ctl" "load no none.gguf"
pass "load NAME FILE: relative names resolve in model_dirs; .. and missing files are refused"
exit 0
