/* stream_io.c — stream reads answered now or deferred (see stream_io.h).
 *
 * The rules that keep a deferred reply safe:
 * - A waiting read is answered exactly once, by whoever takes it off the file's list
 *   under the file's lock (the loop when the stream changes or the read is interrupted,
 *   the close), or by the read handler itself when it never went on the list.
 * - Its interrupt callback only marks it and hands the file to the loop: libfuse calls
 *   the callback holding the request's lock, so replying there, or waiting there for
 *   anything that waits for that lock, could deadlock or free the request under it.
 * - Before replying, the answerer clears the interrupt callback, which waits out one
 *   that is running; only then is the record freed.
 * - The file is reference counted: the open file holds one reference, and every
 *   hand-over to the loop another, so a close racing with a wake-up frees nothing the
 *   loop is about to use.
 * Lock order: the request's lock (libfuse), then the file's mu, then the stream's.
 */
#include "stream_io.h"

#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdlib.h>

typedef struct waiting_read {
    struct waiting_read *next;
    sio *s;
    fuse_req_t req;
    size_t size;
    uint64_t off;
    bool interrupted; /* guarded by s->mu */
} waiting_read;

struct sio {
    loop_work work; /* the loop's run: poll notification and waiting reads */
    atomic_int refs;
    llmfs_stream *st;
    bool blocking;
    int watch;          /* llmfs_stream_watch token of an output, 0 none */
    pthread_mutex_t mu; /* guards what follows */
    bool closed;
    uint64_t pos;       /* end of the last read, where poll(2) looks for new bytes */
    struct fuse_pollhandle *ph;
    waiting_read *waiting;
};

static void sio_put(sio *s)
{
    if (atomic_fetch_sub(&s->refs, 1) != 1)
        return;
    llmfs_stream_put(s->st);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

/* Hands the file to the loop, which then sends a pending poll notification and
 * answers the waiting reads that can be answered. */
static void kick(sio *s)
{
    atomic_fetch_add(&s->refs, 1);
    if (!loop_post(&s->work))
        sio_put(s); /* queued already (that run will see the change) or shutting down */
}

/* Whether a read at off has something to return now: bytes, or the end. */
static bool has_answer(sio *s, uint64_t off)
{
    bool done;
    return llmfs_stream_size(s->st, &done) > off || done;
}

/* Replies with the bytes at off (up to size), or end of file when the stream is done;
 * when there is neither, with err (0: an empty read, as a transcript's end gives). */
static void reply_read(sio *s, fuse_req_t req, size_t size, uint64_t off, int err)
{
    bool done;
    uint64_t have = llmfs_stream_size(s->st, &done);
    size_t n = have > off ? (size_t)(have - off) : 0;
    if (n > size)
        n = size;
    if (n == 0 && !done && err) {
        fuse_reply_err(req, err);
        return;
    }
    if (n == 0 && done && llmfs_stream_failed(s->st)) {
        fuse_reply_err(req, EIO); /* the reply broke off: not a clean end of file */
        return;
    }
    /* Only what is there is copied: readers ask for 128 KiB and a token is a few bytes.
     * A buffer of the asked size is one the allocator may map and unmap per read, and an
     * unmap interrupts this process's generating threads on every core. */
    char *buf = n ? malloc(n) : NULL;
    if (n && !buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t got = n ? llmfs_stream_read(s->st, buf, n, off) : 0;
    pthread_mutex_lock(&s->mu);
    s->pos = off + got;
    pthread_mutex_unlock(&s->mu);
    fuse_reply_buf(req, buf, got);
    free(buf);
}

/* Answers a read taken off the list (or never put on it) and frees its record. */
static void answer(waiting_read *w, bool closed)
{
    fuse_req_interrupt_func(w->req, NULL, NULL); /* waits out a running on_interrupt */
    reply_read(w->s, w->req, w->size, w->off, closed ? EIO : w->interrupted ? EINTR : EAGAIN);
    free(w);
}

static void answer_all(waiting_read *list, bool closed)
{
    while (list) {
        waiting_read *next = list->next;
        answer(list, closed);
        list = next;
    }
}

/* Takes the reads that can be answered now off the list; under s->mu. */
static waiting_read *take_ready(sio *s)
{
    waiting_read *ready = NULL;
    for (waiting_read **p = &s->waiting; *p;) {
        waiting_read *w = *p;
        if (w->interrupted || has_answer(s, w->off)) {
            *p = w->next;
            w->next = ready;
            ready = w;
        } else {
            p = &w->next;
        }
    }
    return ready;
}

/* On the loop's thread. */
static void on_loop(loop_work *work)
{
    sio *s = (sio *)work;
    pthread_mutex_lock(&s->mu);
    struct fuse_pollhandle *ph = s->ph;
    s->ph = NULL;
    waiting_read *ready = take_ready(s);
    pthread_mutex_unlock(&s->mu);
    if (ph) {
        fuse_lowlevel_notify_poll(ph);
        fuse_pollhandle_destroy(ph);
    }
    answer_all(ready, false);
    sio_put(s);
}

/* Called by the core after each append and at the end (its thread, no core lock held). */
static void on_stream_change(void *arg)
{
    sio *s = arg;
    pthread_mutex_lock(&s->mu);
    bool wanted = s->ph || s->waiting;
    pthread_mutex_unlock(&s->mu);
    if (wanted)
        kick(s);
}

/* libfuse's interrupt callback (the request's lock held): mark, and let the loop answer. */
static void on_interrupt(fuse_req_t req, void *data)
{
    (void)req;
    waiting_read *w = data;
    pthread_mutex_lock(&w->s->mu);
    w->interrupted = true;
    pthread_mutex_unlock(&w->s->mu);
    kick(w->s);
}

sio *sio_open(llmfs_stream *st, bool blocking)
{
    if (!st)
        return NULL;
    sio *s = calloc(1, sizeof *s);
    if (!s) {
        llmfs_stream_put(st);
        return NULL;
    }
    atomic_init(&s->refs, 1);
    s->work.fn = on_loop;
    s->st = st;
    s->blocking = blocking;
    pthread_mutex_init(&s->mu, NULL);
    if (blocking) {
        /* Watched from the open on, so a read or poll never races with setting it up. */
        int tok = llmfs_stream_watch(st, on_stream_change, s);
        if (tok < 0) {
            sio_put(s);
            return NULL;
        }
        s->watch = tok;
    }
    return s;
}

void sio_close(sio *s)
{
    if (s->watch > 0)
        llmfs_stream_unwatch(s->st, s->watch); /* on_stream_change is not running after this */
    pthread_mutex_lock(&s->mu);
    s->closed = true;
    waiting_read *all = s->waiting;
    s->waiting = NULL;
    struct fuse_pollhandle *ph = s->ph;
    s->ph = NULL;
    pthread_mutex_unlock(&s->mu);
    if (ph)
        fuse_pollhandle_destroy(ph);
    answer_all(all, true);
    sio_put(s);
}

void sio_read(fuse_req_t req, sio *s, size_t size, off_t off, int flags)
{
    if (off < 0) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    if (!s->blocking || size == 0 || has_answer(s, (uint64_t)off)) {
        reply_read(s, req, size, (uint64_t)off, 0);
        return;
    }
    if (flags & O_NONBLOCK) {
        fuse_reply_err(req, EAGAIN);
        return;
    }
    waiting_read *w = calloc(1, sizeof *w);
    if (!w) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    w->s = s;
    w->req = req;
    w->size = size;
    w->off = (uint64_t)off;
    /* Set before the record is listed, where another thread may answer and free it.
     * Calls on_interrupt at once if the request was already interrupted. */
    fuse_req_interrupt_func(req, on_interrupt, w);
    pthread_mutex_lock(&s->mu);
    /* Checked again under the lock the watcher takes: an append after this check finds
     * the record listed and hands the file to the loop. */
    bool closed = s->closed;
    bool now = closed || w->interrupted || has_answer(s, w->off);
    if (!now) {
        w->next = s->waiting;
        s->waiting = w;
    }
    pthread_mutex_unlock(&s->mu);
    if (now)
        answer(w, closed);
}

void sio_poll(fuse_req_t req, sio *s, struct fuse_pollhandle *ph)
{
    if (!s->blocking) {
        if (ph)
            fuse_pollhandle_destroy(ph);
        fuse_reply_poll(req, POLLIN | POLLRDNORM);
        return;
    }
    pthread_mutex_lock(&s->mu);
    if (ph) {
        if (s->ph)
            fuse_pollhandle_destroy(s->ph);
        s->ph = ph;
    }
    uint64_t pos = s->pos;
    pthread_mutex_unlock(&s->mu);
    /* Checked after the handle is in place, so an append racing with this poll either
     * shows here or finds the handle to notify. */
    unsigned revents = has_answer(s, pos) ? (POLLIN | POLLRDNORM) : 0;
    fuse_reply_poll(req, revents);
}
