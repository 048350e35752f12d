/* loop.h — the daemon's control loop (libuv), run on the main thread while FUSE
 * threads serve requests: SIGINT/SIGTERM/SIGHUP start a clean unmount, a timer closes
 * idle sessions and unloads idle models, and wake-ups from other threads (poll
 * notifications, a FUSE session that ended) are handled here. */
#ifndef LLMFS_FS_LOOP_H
#define LLMFS_FS_LOOP_H

#include "server.h"

/* Sets up the loop; 0 or a negative errno. */
int loop_init(void);
/* Runs until loop_stop or a termination signal. */
void loop_run(void);
/* Closes the loop's handles and frees it. */
void loop_fini(void);
/* From any thread: makes loop_run return. */
void loop_stop(void);
/* From any thread: sends a poll notification from the loop and frees the handle. */
void loop_notify_poll(struct fuse_pollhandle *ph);

#endif
