/* stream_io.h — output and transcript through FUSE.
 *
 * output: a read at the end of a stream that is not done waits for bytes (any amount
 * comes back at once, as from a pipe), returns EAGAIN for O_NONBLOCK, and EINTR when the
 * reader is interrupted by a signal. transcript: reads end at its current size, like a
 * regular file that grows (what `tail -f` expects).
 * poll(2) reports output readable when bytes past the reader's last read, or the end,
 * are there.
 *
 * A waiting read holds no thread: the read handler returns without replying and the
 * request is answered later, from the control loop, when the stream grows or ends, the
 * kernel interrupts the request, or the file is closed. A thousand blocked readers are a
 * thousand small records, not a thousand parked FUSE threads.
 */
#ifndef LLMFS_FS_STREAM_IO_H
#define LLMFS_FS_STREAM_IO_H

#include "server.h"

/* An open stream file. */
typedef struct sio sio;

/* Takes over the reference st (NULL: returns NULL). blocking: reads at the end wait
 * (output); otherwise they end there (transcript). NULL without memory. */
sio *sio_open(llmfs_stream *st, bool blocking);
/* The file's close: answers reads still waiting (with what is there, else EIO), stops
 * poll notifications and drops the file's hold; safe with reads in flight. */
void sio_close(sio *s);
/* Answers a read request, now or later (the reply always comes). */
void sio_read(fuse_req_t req, sio *s, size_t size, off_t off, int flags);
/* Answers a poll request (reply included). */
void sio_poll(fuse_req_t req, sio *s, struct fuse_pollhandle *ph);

#endif
