/* stream.c — append-only byte logs with blocking readers and poll watchers. */
#include "stream.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

typedef struct watcher {
    int token;
    void (*fn)(void *arg);
    void *arg;
} watcher;

struct llmfs_stream {
    atomic_int refs;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *buf;
    size_t len, cap;
    bool done;
    bool failed;       /* ends in an error (stream_fail) */
    uint64_t wake_gen; /* bumped by llmfs_stream_wake so waiters return */

    pthread_mutex_t watch_mu; /* held while watchers run; guards the list */
    watcher *watchers;
    int n_watchers, cap_watchers, next_token;
};

llmfs_stream *stream_new(void)
{
    llmfs_stream *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    atomic_init(&st->refs, 1);
    pthread_mutex_init(&st->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&st->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&st->watch_mu, NULL);
    st->next_token = 1;
    return st;
}

llmfs_stream *stream_ref(llmfs_stream *st)
{
    if (st)
        atomic_fetch_add(&st->refs, 1);
    return st;
}

void llmfs_stream_put(llmfs_stream *st)
{
    if (!st || atomic_fetch_sub(&st->refs, 1) != 1)
        return;
    pthread_mutex_destroy(&st->mu);
    pthread_cond_destroy(&st->cv);
    pthread_mutex_destroy(&st->watch_mu);
    free(st->watchers);
    free(st->buf);
    free(st);
}

static void notify_watchers(llmfs_stream *st)
{
    pthread_mutex_lock(&st->watch_mu);
    for (int i = 0; i < st->n_watchers; i++)
        st->watchers[i].fn(st->watchers[i].arg);
    pthread_mutex_unlock(&st->watch_mu);
}

int stream_append(llmfs_stream *st, const void *data, size_t n)
{
    if (n == 0)
        return 0;
    pthread_mutex_lock(&st->mu);
    if (st->done) {
        pthread_mutex_unlock(&st->mu);
        return -EPIPE;
    }
    if (st->len + n > st->cap) {
        size_t cap = st->cap ? st->cap : 256;
        while (cap < st->len + n)
            cap *= 2;
        char *b = realloc(st->buf, cap);
        if (!b) {
            pthread_mutex_unlock(&st->mu);
            return -ENOMEM;
        }
        st->buf = b;
        st->cap = cap;
    }
    memcpy(st->buf + st->len, data, n);
    st->len += n;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    notify_watchers(st);
    return 0;
}

int stream_printf(llmfs_stream *st, const char *fmt, ...)
{
    char small[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -EINVAL;
    if ((size_t)n < sizeof small)
        return stream_append(st, small, (size_t)n);
    char *big = malloc((size_t)n + 1);
    if (!big)
        return -ENOMEM;
    va_start(ap, fmt);
    vsnprintf(big, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = stream_append(st, big, (size_t)n);
    free(big);
    return rc;
}

void stream_finish(llmfs_stream *st)
{
    pthread_mutex_lock(&st->mu);
    bool was = st->done;
    st->done = true;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
    if (!was)
        notify_watchers(st);
}

void stream_fail(llmfs_stream *st)
{
    if (!st)
        return;
    pthread_mutex_lock(&st->mu);
    st->failed = true;
    pthread_mutex_unlock(&st->mu);
}

bool llmfs_stream_failed(llmfs_stream *st)
{
    pthread_mutex_lock(&st->mu);
    bool f = st->failed;
    pthread_mutex_unlock(&st->mu);
    return f;
}

bool stream_is_done(llmfs_stream *st)
{
    pthread_mutex_lock(&st->mu);
    bool d = st->done;
    pthread_mutex_unlock(&st->mu);
    return d;
}

int stream_last_byte(llmfs_stream *st)
{
    pthread_mutex_lock(&st->mu);
    int c = st->len ? (unsigned char)st->buf[st->len - 1] : -1;
    pthread_mutex_unlock(&st->mu);
    return c;
}

uint64_t llmfs_stream_size(llmfs_stream *st, bool *done)
{
    pthread_mutex_lock(&st->mu);
    uint64_t n = st->len;
    if (done)
        *done = st->done;
    pthread_mutex_unlock(&st->mu);
    return n;
}

size_t llmfs_stream_read(llmfs_stream *st, void *buf, size_t n, uint64_t off)
{
    pthread_mutex_lock(&st->mu);
    size_t got = 0;
    if (off < st->len) {
        got = st->len - (size_t)off;
        if (got > n)
            got = n;
        memcpy(buf, st->buf + off, got);
    }
    pthread_mutex_unlock(&st->mu);
    return got;
}

int llmfs_stream_wait(llmfs_stream *st, uint64_t off, int timeout_ms)
{
    struct timespec deadline;
    if (timeout_ms >= 0) {
        clock_gettime(CLOCK_MONOTONIC, &deadline);
        deadline.tv_sec += timeout_ms / 1000;
        deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (deadline.tv_nsec >= 1000000000L) {
            deadline.tv_sec++;
            deadline.tv_nsec -= 1000000000L;
        }
    }
    pthread_mutex_lock(&st->mu);
    uint64_t gen = st->wake_gen;
    int rc = 0;
    for (;;) {
        if (st->len > off || st->done) {
            rc = 1;
            break;
        }
        if (st->wake_gen != gen)
            break;
        if (timeout_ms < 0) {
            pthread_cond_wait(&st->cv, &st->mu);
        } else if (pthread_cond_timedwait(&st->cv, &st->mu, &deadline) == ETIMEDOUT) {
            rc = st->len > off || st->done;
            break;
        }
    }
    pthread_mutex_unlock(&st->mu);
    return rc;
}

void llmfs_stream_wake(llmfs_stream *st)
{
    pthread_mutex_lock(&st->mu);
    st->wake_gen++;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

int llmfs_stream_watch(llmfs_stream *st, void (*fn)(void *arg), void *arg)
{
    if (!fn)
        return -EINVAL;
    pthread_mutex_lock(&st->watch_mu);
    if (st->n_watchers == st->cap_watchers) {
        int cap = st->cap_watchers ? st->cap_watchers * 2 : 4;
        watcher *w = realloc(st->watchers, sizeof *w * (size_t)cap);
        if (!w) {
            pthread_mutex_unlock(&st->watch_mu);
            return -ENOMEM;
        }
        st->watchers = w;
        st->cap_watchers = cap;
    }
    int token = st->next_token++;
    st->watchers[st->n_watchers++] = (watcher){token, fn, arg};
    pthread_mutex_unlock(&st->watch_mu);
    return token;
}

void llmfs_stream_unwatch(llmfs_stream *st, int token)
{
    pthread_mutex_lock(&st->watch_mu);
    for (int i = 0; i < st->n_watchers; i++)
        if (st->watchers[i].token == token) {
            st->watchers[i] = st->watchers[--st->n_watchers];
            break;
        }
    pthread_mutex_unlock(&st->watch_mu);
}
