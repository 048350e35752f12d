# lib.sh — what the mount tests share. A test sources it with its own arguments:
#   . "$(dirname "$0")/lib.sh" "$@"      ($1 = the llmfs binary, $2 = the repository root)
# It makes a temporary folder with a mount point and a configuration file, and a trap
# that unmounts and removes everything however the test ends. The mount is driven only
# with echo, cat, tail, head, ls, stat and grep (timeout, kill and sleep for control).
set -u

LLMFS=$1
REPO=$2
SHARED=$(cd "$REPO/.." && pwd)/shared
MODELS=$SHARED/models
FIXTURES=$SHARED/fixtures

skip() {
    echo "********************************************************" >&2
    echo "SKIPPED: $*" >&2
    echo "********************************************************" >&2
    exit 77
}
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
pass() {
    echo "ok - $*"
}

[ -c /dev/fuse ] || skip "/dev/fuse is missing: mount tests need FUSE"
[ -d "$MODELS" ] || skip "the test assets are missing: $SHARED (see /work/shared/README.md)"
[ -x "$LLMFS" ] || fail "no llmfs binary at $LLMFS"
"$LLMFS" mount --help >/dev/null 2>&1 || skip "$LLMFS has no mount command (built without the file server?)"

T=$(mktemp -d "${TMPDIR:-/tmp}/llmfs-test.XXXXXX")
MNT=$T/mnt
CONF=$T/llmfs.ini
mkdir "$MNT"
DAEMON_PID=

# The configuration the tests start from; a test may append [model] sections.
cat >"$CONF" <<CONF
[llmfs]
model_dirs = $MODELS:$T/models
CONF
mkdir "$T/models"

is_mounted() {
    grep -q " $MNT fuse" /proc/mounts
}

cleanup() {
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID" 2>/dev/null
        for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DAEMON_PID" 2>/dev/null
    fi
    if is_mounted; then
        fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null
    fi
    rm -rf "$T"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# llmfs_mount [ARGS]: mounts in the background (the command returns once the mount is
# up) and remembers the daemon's pid, which the root stats file shows.
llmfs_mount() {
    "$LLMFS" mount -c "$CONF" "$@" "$MNT" || fail "llmfs mount $* failed"
    is_mounted || fail "llmfs mount returned but $MNT is not mounted"
    local line
    line=$(grep -m1 '^pid ' "$MNT/stats") || fail "no pid in $MNT/stats"
    DAEMON_PID=${line#pid }
}

# llmfs_unmount: SIGTERM, then the daemon must exit and the mount must be gone.
llmfs_unmount() {
    kill -TERM "$DAEMON_PID" || fail "no daemon $DAEMON_PID"
    for _ in $(seq 100); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$DAEMON_PID" 2>/dev/null && fail "the daemon did not exit on SIGTERM"
    is_mounted && fail "still mounted after SIGTERM"
    DAEMON_PID=
}

# put FILE TEXT: writes TEXT and a newline to FILE with the shell's echo.
put() {
    echo "$2" >"$1"
}

# put_closing FILE TEXT: the same with /bin/echo, which reports an error of close(2)
# (the shell's builtin echo does not).
put_closing() {
    /bin/echo "$2" >"$1"
}

# must_fail TEXT CMD...: CMD must fail and say TEXT (an strerror text) on stderr.
must_fail() {
    local want=$1 out
    shift
    if out=$("$@" 2>&1); then
        fail "'$*' succeeded; wanted '$want'"
    fi
    case $out in
    *"$want"*) ;;
    *) fail "'$*' said '$out'; wanted '$want'" ;;
    esac
}

# expect_file FILE TEXT: FILE's whole content must be TEXT.
expect_file() {
    local got
    got=$(cat "$1") || fail "cannot read $1"
    [ "$got" = "$2" ] || fail "$1 is '$got', wanted '$2'"
}

# stat_value FILE KEY: the value of a `key value` line.
stat_value() {
    local line
    line=$(grep -m1 "^$2 " "$1") || fail "no $2 in $1"
    echo "${line#"$2" }"
}

# wait_idle DIR [SECONDS]: waits until DIR/stats says state idle.
wait_idle() {
    local n=$(( ${2:-30} * 20 ))
    for _ in $(seq "$n"); do
        grep -q '^state idle' "$1/stats" && return 0
        sleep 0.05
    done
    fail "$1 did not become idle"
}

# wait_state DIR STATE: waits until DIR/stats shows STATE.
wait_state() {
    for _ in $(seq 600); do
        grep -q "^state $2" "$1/stats" && return 0
        sleep 0.05
    done
    fail "$1 never reached state $2"
}

# now_ms: milliseconds, for measuring how long something took.
now_ms() {
    local t=${EPOCHREALTIME/./}
    echo $(( t / 1000 ))
}

# long_generation DIR: starts a reply that runs until stopped (in raw mode, no token
# limit, a context far longer than the test lasts) and waits until it is generating.
long_generation() {
    put "$1/ctl" "mode raw"
    put "$1/ctl" "n_predict -1"
    put "$1/prompt" "Once upon a time"
    wait_state "$1" generating
}
