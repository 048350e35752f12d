/* Streams: concurrent readers, waiting, waking, watchers. */
#include "stream.h"
#include "testutil.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

enum { N_WRITES = 2000, N_READERS = 8 };

static void expected_bytes(char *buf, size_t *len)
{
    size_t o = 0;
    for (int i = 0; i < N_WRITES; i++)
        o += (size_t)sprintf(buf + o, "chunk %d;", i);
    *len = o;
}

typedef struct reader_arg {
    llmfs_stream *st;
    char *got;
    size_t len;
    int chunk; /* read size, different per reader */
} reader_arg;

static void *reader(void *p)
{
    reader_arg *a = p;
    uint64_t off = 0;
    for (;;) {
        if (!llmfs_stream_wait(a->st, off, -1))
            continue;
        size_t n = llmfs_stream_read(a->st, a->got + off, (size_t)a->chunk, off);
        if (n == 0) {
            bool done;
            uint64_t size = llmfs_stream_size(a->st, &done);
            if (done && size == off)
                break;
            continue;
        }
        off += n;
    }
    a->len = (size_t)off;
    return NULL;
}

START_TEST(concurrent_readers_each_see_everything)
{
    static char want[N_WRITES * 16];
    size_t want_len;
    expected_bytes(want, &want_len);
    llmfs_stream *st = stream_new();
    pthread_t th[N_READERS];
    reader_arg args[N_READERS];
    for (int r = 0; r < N_READERS; r++) {
        args[r] = (reader_arg){stream_ref(st), calloc(want_len + 1, 1), 0, 1 + r * 7};
        pthread_create(&th[r], NULL, reader, &args[r]);
    }
    for (int i = 0; i < N_WRITES; i++) {
        ck_assert_int_eq(stream_printf(st, "chunk %d;", i), 0);
        if (i % 97 == 0)
            sched_yield();
    }
    stream_finish(st);
    ck_assert_int_eq(stream_append(st, "x", 1), -EPIPE);
    for (int r = 0; r < N_READERS; r++) {
        pthread_join(th[r], NULL);
        ck_assert_uint_eq(args[r].len, want_len);
        ck_assert_msg(memcmp(args[r].got, want, want_len) == 0, "reader %d saw different bytes", r);
        free(args[r].got);
        llmfs_stream_put(args[r].st);
    }
    /* a late reader still gets the whole stream, then EOF */
    char buf[64];
    ck_assert_uint_eq(llmfs_stream_read(st, buf, 8, 0), 8);
    ck_assert(memcmp(buf, "chunk 0;", 8) == 0);
    ck_assert_uint_eq(llmfs_stream_read(st, buf, 8, want_len), 0);
    ck_assert_int_eq(llmfs_stream_wait(st, want_len, -1), 1);
    llmfs_stream_put(st);
}
END_TEST

START_TEST(wait_times_out_and_sees_data)
{
    llmfs_stream *st = stream_new();
    double t0 = now_ms();
    ck_assert_int_eq(llmfs_stream_wait(st, 0, 100), 0);
    double dt = now_ms() - t0;
    ck_assert_msg(dt >= 90 && dt < 5000, "waited %.1f ms", dt);
    stream_append(st, "ab", 2);
    ck_assert_int_eq(llmfs_stream_wait(st, 0, 100), 1);
    ck_assert_int_eq(llmfs_stream_wait(st, 1, 0), 1);
    ck_assert_int_eq(llmfs_stream_wait(st, 2, 0), 0);
    bool done = true;
    ck_assert_uint_eq(llmfs_stream_size(st, &done), 2);
    ck_assert(!done);
    ck_assert_int_eq(stream_last_byte(st), 'b');
    stream_finish(st);
    ck_assert_int_eq(llmfs_stream_wait(st, 2, -1), 1);
    ck_assert(stream_is_done(st));
    llmfs_stream_put(st);
}
END_TEST

typedef struct waiter_arg {
    llmfs_stream *st;
    int rc;
    double ms;
} waiter_arg;

static void *waiter(void *p)
{
    waiter_arg *a = p;
    double t0 = now_ms();
    a->rc = llmfs_stream_wait(a->st, 0, -1);
    a->ms = now_ms() - t0;
    return NULL;
}

START_TEST(wake_releases_blocked_waiters)
{
    llmfs_stream *st = stream_new();
    pthread_t th[4];
    waiter_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (waiter_arg){st, -1, 0};
        pthread_create(&th[i], NULL, waiter, &a[i]);
    }
    struct timespec ts = {0, 100 * 1000000L};
    nanosleep(&ts, NULL);
    llmfs_stream_wake(st);
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        ck_assert_int_eq(a[i].rc, 0); /* woken, no data */
        ck_assert(a[i].ms >= 50);
    }
    llmfs_stream_put(st);
}
END_TEST

typedef struct counter {
    atomic_int calls;
    llmfs_stream *st;
    atomic_uint_fast64_t seen_size;
} counter;

static void on_change(void *p)
{
    counter *c = p;
    atomic_fetch_add(&c->calls, 1);
    /* a watcher may read the stream: the data lock is not held */
    atomic_store(&c->seen_size, llmfs_stream_size(c->st, NULL));
}

START_TEST(watchers_are_called_until_removed)
{
    llmfs_stream *st = stream_new();
    counter a = {0}, b = {0};
    a.st = b.st = st;
    int ta = llmfs_stream_watch(st, on_change, &a);
    int tb = llmfs_stream_watch(st, on_change, &b);
    ck_assert_int_gt(ta, 0);
    ck_assert_int_ne(ta, tb);
    ck_assert_int_eq(llmfs_stream_watch(st, NULL, NULL), -EINVAL);
    stream_append(st, "hello", 5);
    stream_append(st, "", 0); /* nothing appended, nobody told */
    ck_assert_int_eq(atomic_load(&a.calls), 1);
    ck_assert_int_eq(atomic_load(&b.calls), 1);
    ck_assert_uint_eq(atomic_load(&a.seen_size), 5);
    llmfs_stream_unwatch(st, ta);
    stream_append(st, "!", 1);
    ck_assert_int_eq(atomic_load(&a.calls), 1);
    ck_assert_int_eq(atomic_load(&b.calls), 2);
    stream_finish(st);
    ck_assert_int_eq(atomic_load(&b.calls), 3);
    stream_finish(st); /* idempotent, no second end */
    ck_assert_int_eq(atomic_load(&b.calls), 3);
    llmfs_stream_unwatch(st, tb);
    llmfs_stream_unwatch(st, 999); /* unknown token: no effect */
    llmfs_stream_put(st);
}
END_TEST

START_TEST(refcount_keeps_data_alive)
{
    llmfs_stream *st = stream_new();
    llmfs_stream *r = stream_ref(st);
    stream_append(st, "data", 4);
    llmfs_stream_put(st);
    char buf[8] = {0};
    ck_assert_uint_eq(llmfs_stream_read(r, buf, sizeof buf, 0), 4);
    ck_assert_str_eq(buf, "data");
    llmfs_stream_put(r);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("stream");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, concurrent_readers_each_see_everything);
    tcase_add_test(tc, wait_times_out_and_sees_data);
    tcase_add_test(tc, wake_releases_blocked_waiters);
    tcase_add_test(tc, watchers_are_called_until_removed);
    tcase_add_test(tc, refcount_keeps_data_alive);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(make_suite());
}
