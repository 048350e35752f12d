/* stream_io.h — reads of output and transcript through FUSE.
 *
 * output: a read at the end of a stream that is not done waits for bytes (any amount
 * comes back at once, as from a pipe), returns EAGAIN for O_NONBLOCK, and EINTR when the
 * reader is interrupted by a signal. transcript: reads end at its current size, like a
 * regular file that grows (what `tail -f` expects).
 * poll(2) reports output readable when bytes past the reader's last read, or the end,
 * are there; the wake-up comes through the control loop, never from the core's thread.
 */
#ifndef LLMFS_FS_STREAM_IO_H
#define LLMFS_FS_STREAM_IO_H

#include "server.h"

/* Answers a read request (reply included). */
void sio_read(fuse_req_t req, fs_file *f, size_t size, off_t off, int flags);
/* Answers a poll request (reply included). */
void sio_poll(fuse_req_t req, fs_file *f, struct fuse_pollhandle *ph);
/* Stops poll notifications for a file being closed. */
void sio_release(fs_file *f);

#endif
