/* stream_io.c — blocking, non-blocking, polled and interrupted stream reads. */
#include "stream_io.h"

#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>

/* A wait is cut into slices so that a wake-up lost in the instant between checking
 * the interrupt flag and starting to wait, or a shutdown, costs at most this long. */
#define WAIT_SLICE_MS 200

typedef struct pending_read {
    llmfs_stream *st;
    atomic_bool interrupted;
} pending_read;

static void on_interrupt(fuse_req_t req, void *data)
{
    (void)req;
    pending_read *p = data;
    atomic_store(&p->interrupted, true);
    llmfs_stream_wake(p->st);
}

static void remember_pos(fs_file *f, uint64_t pos)
{
    pthread_mutex_lock(&f->mu);
    f->pos = pos;
    pthread_mutex_unlock(&f->mu);
}

void sio_read(fuse_req_t req, fs_file *f, size_t size, off_t off, int flags)
{
    if (off < 0) {
        fuse_reply_err(req, EINVAL);
        return;
    }
    pending_read p = {.st = f->st};
    atomic_init(&p.interrupted, false);
    bool watching_intr = false;
    int err = 0;
    uint64_t have;
    for (;;) {
        bool done;
        have = llmfs_stream_size(f->st, &done);
        if (have > (uint64_t)off || done || !f->blocking || size == 0)
            break;
        if (flags & O_NONBLOCK) {
            err = EAGAIN;
            break;
        }
        if (!watching_intr) {
            /* Calls on_interrupt at once if the request was already interrupted. */
            fuse_req_interrupt_func(req, on_interrupt, &p);
            watching_intr = true;
        }
        if (atomic_load(&p.interrupted)) {
            err = EINTR;
            break;
        }
        if (atomic_load(&fs_srv.exiting)) {
            err = EIO;
            break;
        }
        llmfs_stream_wait(f->st, (uint64_t)off, WAIT_SLICE_MS);
    }
    if (watching_intr)
        fuse_req_interrupt_func(req, NULL, NULL); /* waits out a running on_interrupt */
    if (err) {
        fuse_reply_err(req, err);
        return;
    }
    /* Only what is there is copied: readers ask for 128 KiB and a token is a few bytes.
     * A buffer of the asked size is one the allocator may map and unmap per read, and an
     * unmap interrupts this process's generating threads on every core. */
    size_t n = have > (uint64_t)off ? (size_t)(have - (uint64_t)off) : 0;
    if (n > size)
        n = size;
    char *buf = n ? malloc(n) : NULL;
    if (n && !buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t got = n ? llmfs_stream_read(f->st, buf, n, (uint64_t)off) : 0;
    remember_pos(f, (uint64_t)off + got);
    fuse_reply_buf(req, buf, got);
    free(buf);
}

/* Called by the core after each append (its thread, no locks held): hands a pending
 * poll handle to the control loop, which sends the notification. */
static void on_stream_change(void *arg)
{
    fs_file *f = arg;
    pthread_mutex_lock(&f->mu);
    struct fuse_pollhandle *ph = f->ph;
    f->ph = NULL;
    pthread_mutex_unlock(&f->mu);
    if (ph)
        loop_notify_poll(ph);
}

void sio_poll(fuse_req_t req, fs_file *f, struct fuse_pollhandle *ph)
{
    if (!f->st || !f->blocking) {
        if (ph)
            fuse_pollhandle_destroy(ph);
        fuse_reply_poll(req, POLLIN | POLLRDNORM);
        return;
    }
    pthread_mutex_lock(&f->mu);
    if (ph) {
        if (f->ph)
            fuse_pollhandle_destroy(f->ph);
        f->ph = ph;
    }
    /* The watch is set up by the first poll only, so appends cost nothing for readers
     * that never poll; outside f->mu, which the watcher takes under the core's lock. */
    bool first = f->watch == 0;
    if (first)
        f->watch = -1;
    uint64_t pos = f->pos;
    pthread_mutex_unlock(&f->mu);
    if (first) {
        int tok = llmfs_stream_watch(f->st, on_stream_change, f);
        pthread_mutex_lock(&f->mu);
        f->watch = tok > 0 ? tok : 0;
        pthread_mutex_unlock(&f->mu);
    }
    /* Checked after the handle is in place, so an append racing with this poll either
     * shows here or finds the handle to notify. */
    bool done;
    uint64_t have = llmfs_stream_size(f->st, &done);
    unsigned revents = (have > pos || done) ? (POLLIN | POLLRDNORM) : 0;
    fuse_reply_poll(req, revents);
}

void sio_release(fs_file *f)
{
    if (f->watch > 0)
        llmfs_stream_unwatch(f->st, f->watch); /* on_stream_change is not running after this */
    pthread_mutex_lock(&f->mu);
    if (f->ph)
        fuse_pollhandle_destroy(f->ph);
    f->ph = NULL;
    f->watch = 0;
    pthread_mutex_unlock(&f->mu);
}
