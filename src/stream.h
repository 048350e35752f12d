/* stream.h — the writer's side of llmfs_stream (the reader's side is in llmfs.h).
 *
 * A stream is an append-only byte log guarded by one mutex. Readers wait on a condition
 * variable; watchers (poll) are called after the mutex is released, under a second lock
 * that llmfs_stream_unwatch also takes, so once unwatch returns the callback is not
 * running and will not run again. A watcher must not call watch/unwatch on its own
 * stream.
 */
#ifndef LLMFS_STREAM_H
#define LLMFS_STREAM_H

#include "llmfs.h"

/* A new empty stream with one reference. NULL on out of memory. */
llmfs_stream *stream_new(void);
/* A new reference to st. */
llmfs_stream *stream_ref(llmfs_stream *st);
/* Appends n bytes; -ENOMEM if the log cannot grow, -EPIPE once done. */
int stream_append(llmfs_stream *st, const void *data, size_t n);
int stream_printf(llmfs_stream *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Marks the end: readers at the end get EOF. Idempotent. */
void stream_finish(llmfs_stream *st);
bool stream_is_done(llmfs_stream *st);
/* Marks that the stream ends in an error (the reply failed): its reader gets EIO at the
 * end instead of end of file. Call before stream_finish. */
void stream_fail(llmfs_stream *st);
/* The last byte written, or -1 if empty (to know whether a newline is needed). */
int stream_last_byte(llmfs_stream *st);

#endif
