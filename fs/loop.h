/* loop.h — the daemon's control loop (libuv), run on the main thread while FUSE
 * threads serve requests: SIGINT/SIGTERM/SIGHUP start a clean unmount, a timer closes
 * idle sessions and unloads idle models, and work handed over by other threads (a
 * stream that grew, a read that was interrupted, a FUSE session that ended) is done
 * here. Deferred replies and poll notifications are sent from this thread alone, so
 * neither a core thread nor a FUSE thread ever waits on the kernel for them. */
#ifndef LLMFS_FS_LOOP_H
#define LLMFS_FS_LOOP_H

#include "server.h"

/* A piece of work another thread hands to the loop. It is embedded in its owner, so
 * handing it over never allocates; one that is queued and has not run yet is not
 * queued twice (many wake-ups before the loop gets to it cost one run). */
typedef struct loop_work {
    struct loop_work *next;
    bool queued; /* guarded by the loop's queue lock */
    void (*fn)(struct loop_work *w);
} loop_work;

/* Sets up the loop; 0 or a negative errno. */
int loop_init(void);
/* Runs until loop_stop or a termination signal. */
void loop_run(void);
/* Runs what is still queued, closes the loop's handles and frees it. */
void loop_fini(void);
/* From any thread: makes loop_run return. */
void loop_stop(void);
/* From any thread: queues w->fn(w) to run on the loop's thread. Returns false when
 * nothing was queued (w is queued already, or the loop is gone): then w->fn will not
 * run for this call, and what the caller meant to hand over with it stays its own. */
bool loop_post(loop_work *w);

#endif
