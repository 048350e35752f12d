#!/usr/bin/env bash
# Many blocked readers cost no threads: 200 `cat output` readers wait on one mount for a
# prompt, then each gets the whole reply, while the daemon's thread count stays below
# 64 (a waiting read is a deferred reply, not a parked FUSE thread). Half of a second,
# smaller crowd is interrupted while blocked and must go at once; the other half still
# ends with the reply. Readers still waiting at the unmount are answered with an error.
. "$(dirname "$0")/lib.sh" "$@"

N=200
MAX_THREADS=64

llmfs_mount
# threads=1: the count measured is the file server's, not the CPU's core count
put "$MNT/ctl" "load m $MODELS/stories260K.gguf threads=1"
M=$MNT/m
put "$M/ctl" "mode raw"
put "$M/ctl" "temp 0"
put "$M/ctl" "n_predict 24"

threads() {
    grep '^Threads:' "/proc/$DAEMON_PID/status" | awk '{print $2}'
}

# start_readers COUNT FILE_PREFIX: readers of output in the background, pids in
# `readers` (no timeout wrapper: the cleanup's unmount ends a reader that hangs)
start_readers() {
    readers=()
    for i in $(seq "$1"); do
        cat "$M/output" >"$2$i" &
        readers+=($!)
    done
}

# blocked_readers: how many of `readers` are still running
blocked_readers() {
    local n=0
    for p in "${readers[@]}"; do
        kill -0 "$p" 2>/dev/null && n=$((n + 1))
    done
    echo "$n"
}

# wait_blocked: until every reader has opened output and waits in the kernel for the
# file system's answer to its read
wait_blocked() {
    local waiting w
    for _ in $(seq 300); do
        waiting=0
        for p in "${readers[@]}"; do
            w=
            read -r w <"/proc/$p/wchan" 2>/dev/null
            [ "$w" = request_wait_answer ] && waiting=$((waiting + 1))
        done
        [ "$waiting" -ge "${#readers[@]}" ] && return 0
        sleep 0.1
    done
    fail "only $waiting of ${#readers[@]} readers are waiting in the file system"
}

# ---- N readers blocked before the prompt, then the reply ----
start_readers "$N" "$T/r"
wait_blocked
[ "$(blocked_readers)" = "$N" ] || fail "a reader returned before any prompt was written"
most=$(threads)
pass "$N readers are blocked on output; the daemon has $most threads"
[ "$most" -lt "$MAX_THREADS" ] || fail "$most threads with $N blocked readers (wanted < $MAX_THREADS)"

put "$M/prompt" "Once upon a time"
for _ in $(seq 600); do
    [ "$(blocked_readers)" -gt 0 ] || break
    t=$(threads)
    [ "$t" -gt "$most" ] && most=$t
    sleep 0.05
done
for p in "${readers[@]}"; do
    wait "$p" || fail "a reader of output failed"
done
cat "$M/output" >"$T/after"
[ -s "$T/after" ] || fail "empty reply"
for i in $(seq "$N"); do
    cmp -s "$T/r$i" "$T/after" || fail "reader $i got '$(cat "$T/r$i")', the reply is '$(cat "$T/after")'"
done
[ "$most" -lt "$MAX_THREADS" ] || fail "the daemon reached $most threads (wanted < $MAX_THREADS)"
pass "each of $N readers got the whole reply; at most $most threads"

# ---- interrupted while blocked: half the crowd leaves, the rest gets the reply ----
K=40
s=$(cat "$M/clone")
M=$MNT/m/$s
put "$M/ctl" "mode raw"
put "$M/ctl" "temp 0"
put "$M/ctl" "n_predict 24"
start_readers "$K" "$T/s"
wait_blocked
t0=$(now_ms)
for i in $(seq 0 2 $((K - 1))); do
    kill -TERM "${readers[$i]}"
done
for i in $(seq 0 2 $((K - 1))); do
    wait "${readers[$i]}"
done
t1=$(now_ms)
[ $((t1 - t0)) -lt 5000 ] || fail "$((K / 2)) interrupted readers took $((t1 - t0)) ms to go"
for i in $(seq 1 2 $((K - 1))); do
    kill -0 "${readers[$i]}" 2>/dev/null || fail "reader $i went away with the interrupted ones"
done
put "$M/prompt" "Lily and Tom"
for i in $(seq 1 2 $((K - 1))); do
    wait "${readers[$i]}" || fail "a reader of output failed after the others left"
done
cat "$M/output" >"$T/after2"
[ -s "$T/after2" ] || fail "empty reply"
for i in $(seq 2 2 "$K"); do
    cmp -s "$T/s$i" "$T/after2" || fail "reader $i got '$(cat "$T/s$i")', the reply is '$(cat "$T/after2")'"
done
pass "$((K / 2)) interrupted readers went in $((t1 - t0)) ms; the other $((K / 2)) got the reply"

# ---- unmounting with readers still waiting: each is answered, the daemon exits ----
s=$(cat "$MNT/m/clone")
M=$MNT/m/$s
start_readers "$K" "$T/u"
wait_blocked
llmfs_unmount
for p in "${readers[@]}"; do
    wait "$p" && fail "a reader waiting at the unmount ended as if the reply were complete"
done
pass "$K readers still waiting at the unmount were answered; the daemon exited"
exit 0
