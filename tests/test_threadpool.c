/* test_threadpool.c — every index exactly once, results combine, threads really overlap. */
#include "threadpool.h"
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#define MAXN 64

typedef struct count_job {
    atomic_int hits[MAXN];
    atomic_int bad_n;
    int n;
} count_job;

static void count_fn(void *ctx, int i, int n)
{
    count_job *j = ctx;
    if (n != j->n || i < 0 || i >= n)
        atomic_fetch_add(&j->bad_n, 1);
    else
        atomic_fetch_add(&j->hits[i], 1);
}

START_TEST(test_every_index_once)
{
    int size = _i;
    threadpool *p = threadpool_new(size);
    ck_assert_ptr_nonnull(p);
    ck_assert_int_eq(threadpool_size(p), size);
    count_job *j = calloc(1, sizeof *j);
    for (int run = 0; run < 3000; run++) {
        int n = 1 + run % (size + 5); /* also more indices than threads */
        for (int i = 0; i < MAXN; i++)
            atomic_store(&j->hits[i], 0);
        j->n = n;
        threadpool_run(p, count_fn, j, n);
        for (int i = 0; i < MAXN; i++)
            ck_assert_msg(atomic_load(&j->hits[i]) == (i < n), "size %d run %d n %d: index %d ran %d times", size,
                          run, n, i, atomic_load(&j->hits[i]));
        /* Now and then let the workers fall asleep, so the wake-up path is used too. */
        if (run % 500 == 250)
            usleep(5000);
    }
    ck_assert_int_eq(atomic_load(&j->bad_n), 0);
    j->n = 0;
    threadpool_run(p, count_fn, j, 0);
    ck_assert_int_eq(atomic_load(&j->bad_n), 0);
    free(j);
    threadpool_free(p);
}
END_TEST

#define LEN 100003

typedef struct sum_job {
    const int32_t *v;
    int64_t partial[MAXN];
} sum_job;

static void sum_fn(void *ctx, int i, int n)
{
    sum_job *j = ctx;
    int64_t lo = (int64_t)LEN * i / n, hi = (int64_t)LEN * (i + 1) / n, s = 0;
    for (int64_t k = lo; k < hi; k++)
        s += j->v[k];
    j->partial[i] = s;
}

START_TEST(test_sums)
{
    int size = _i;
    threadpool *p = threadpool_new(size);
    int32_t *v = malloc(sizeof *v * LEN);
    int64_t want = 0;
    uint32_t x = 12345;
    for (int k = 0; k < LEN; k++) {
        x = x * 1664525u + 1013904223u;
        v[k] = (int32_t)(x >> 8) - (1 << 23);
        want += v[k];
    }
    sum_job j = {.v = v};
    for (int run = 0; run < 200; run++) {
        int n = 1 + run % 8;
        for (int i = 0; i < MAXN; i++)
            j.partial[i] = 0x7fffffff; /* poison: an index that did not run spoils the sum */
        threadpool_run(p, sum_fn, &j, n);
        int64_t got = 0;
        for (int i = 0; i < n; i++)
            got += j.partial[i];
        ck_assert_int_eq(got, want);
    }
    free(v);
    threadpool_free(p);
}
END_TEST

/* Each index waits for all others to have started: finishes only if they truly overlap. */
typedef struct meet_job {
    atomic_int arrived;
    int n;
    atomic_int timed_out;
} meet_job;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void meet_fn(void *ctx, int i, int n)
{
    (void)i;
    (void)n;
    meet_job *j = ctx;
    atomic_fetch_add(&j->arrived, 1);
    double t0 = now_s();
    while (atomic_load(&j->arrived) < j->n) {
        if (now_s() - t0 > 10) {
            atomic_store(&j->timed_out, 1);
            return;
        }
        sched_yield();
    }
}

START_TEST(test_threads_overlap)
{
    for (int size = 2; size <= 4; size++) {
        threadpool *p = threadpool_new(size);
        for (int run = 0; run < 20; run++) {
            meet_job j = {.n = size};
            threadpool_run(p, meet_fn, &j, size);
            ck_assert_msg(!atomic_load(&j.timed_out), "size %d: the %d indices never ran at the same time", size,
                          size);
            if (run == 10)
                usleep(5000);
        }
        threadpool_free(p);
    }
}
END_TEST

typedef struct work_job {
    atomic_int calls;
    double sink[MAXN];
} work_job;

/* A few microseconds of arithmetic, about the grain of one slice of a small matmul. */
static void work_fn(void *ctx, int i, int n)
{
    (void)n;
    work_job *j = ctx;
    double x = i + 1;
    for (int k = 0; k < 3000; k++)
        x = x * 1.0000001 + 1e-9;
    j->sink[i] = x;
    atomic_fetch_add(&j->calls, 1);
}

START_TEST(test_run_rate)
{
    int runs = 5000;
    double per[3] = {0};
    for (int size = 1; size <= 2; size++) {
        threadpool *p = threadpool_new(size);
        work_job j = {0};
        double t0 = now_s();
        for (int r = 0; r < runs; r++)
            threadpool_run(p, work_fn, &j, 2);
        per[size] = (now_s() - t0) / runs * 1e6;
        ck_assert_int_eq(atomic_load(&j.calls), 2 * runs);
        threadpool_free(p);
    }
    printf("threadpool: a 2-slice run takes %.1f us on 1 thread, %.1f us on 2\n", per[1], per[2]);
}
END_TEST

START_TEST(test_physical_cores)
{
    int n = cpu_physical_cores();
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    ck_assert_int_ge(n, 1);
    ck_assert_int_le(n, online);
    ck_assert_int_eq(cpu_physical_cores(), n);
    threadpool *p = threadpool_new(0);
    ck_assert_int_eq(threadpool_size(p), 1);
    threadpool_free(p);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("threadpool");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_every_index_once, 1, 5);
    tcase_add_loop_test(tc, test_sums, 1, 5);
    tcase_add_test(tc, test_threads_overlap);
    tcase_add_test(tc, test_run_rate);
    tcase_add_test(tc, test_physical_cores);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
