/* threadpool.c — persistent workers with a spin-then-futex handoff.
 *
 * A run offers the job to the first k-1 workers (state OFFERED, then a bump of each one's
 * sequence word), takes part itself, and claims indices from a shared counter like every
 * helper, so a slow thread never holds up work another could do. When the caller runs out
 * of indices it withdraws the offer from every helper that has not accepted yet, and waits
 * only for those that did: a helper that was asleep or descheduled costs the run nothing.
 * Both waits (a worker for its next job, the caller for a busy helper) spin for a short
 * while before sleeping on a futex: decode issues thousands of short runs a second, and
 * a futex wake costs tens of microseconds, while a spin costs only the waiting core.
 */
#include "threadpool.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#else
#define cpu_relax() ((void)0)
#endif

/* How long a waiter spins before sleeping. */
#define SPIN_NS 100000

enum { W_IDLE, W_OFFERED, W_BUSY };

typedef struct worker {
    _Alignas(64) atomic_uint seq; /* bumped by the caller to hand over a job */
    atomic_int sleeping;          /* set while (about to be) in futex_wait on seq */
    atomic_int state;             /* W_*: the caller offers, the worker accepts or it is withdrawn */
    atomic_int tid;               /* the kernel's id of the thread, 0 until it has started */
    threadpool *pool;
    pthread_t thread;
} worker;

struct threadpool {
    int size;                     /* threads including the caller */
    worker *workers;              /* size - 1 helpers */
    pthread_mutex_t run_lock;     /* one run at a time */
    /* The current job: written before a helper's state becomes OFFERED, read only by
     * helpers that accepted it. */
    threadpool_fn fn;
    void *ctx;
    int n;
    atomic_bool stop;
    _Alignas(64) atomic_uint next;    /* next index to claim */
    _Alignas(64) atomic_int caller_sleeping;
};

static void futex_wait(void *word, int val)
{
    syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

static void futex_wake(void *word)
{
    syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Waits until *word differs from old; returns the new value. */
static unsigned wait_change(atomic_uint *word, unsigned old, atomic_int *sleeping)
{
    unsigned v;
    uint64_t until = 0;
    for (unsigned k = 0;; k++) {
        if ((v = atomic_load_explicit(word, memory_order_acquire)) != old)
            return v;
        cpu_relax();
        if ((k & 63) == 63) {
            uint64_t t = now_ns();
            if (!until)
                until = t + SPIN_NS;
            else if (t > until)
                break;
        }
    }
    /* Announce the sleep before the last look, so a bump either is seen here or sees the
     * flag and wakes us (both sides use sequentially consistent accesses). */
    for (;;) {
        atomic_store(sleeping, 1);
        if ((v = atomic_load(word)) != old)
            break;
        futex_wait(word, (int)old);
    }
    atomic_store(sleeping, 0);
    return v;
}

/* Waits until a helper that accepted the job has finished it. */
static void wait_helper(threadpool *p, worker *w)
{
    uint64_t until = 0;
    for (unsigned k = 0;; k++) {
        if (atomic_load_explicit(&w->state, memory_order_acquire) != W_BUSY)
            return;
        cpu_relax();
        if ((k & 63) == 63) {
            uint64_t t = now_ns();
            if (!until)
                until = t + SPIN_NS;
            else if (t > until)
                break;
        }
    }
    for (;;) {
        atomic_store(&p->caller_sleeping, 1);
        if (atomic_load(&w->state) != W_BUSY)
            break;
        futex_wait(&w->state, W_BUSY);
    }
    atomic_store(&p->caller_sleeping, 0);
}

static void do_work(threadpool *p)
{
    unsigned n = (unsigned)p->n;
    for (;;) {
        unsigned i = atomic_fetch_add_explicit(&p->next, 1, memory_order_relaxed);
        if (i >= n)
            return;
        p->fn(p->ctx, (int)i, (int)n);
    }
}

static void *worker_main(void *arg)
{
    worker *w = arg;
    threadpool *p = w->pool;
    unsigned seen = 0;
    atomic_store(&w->tid, (int)syscall(SYS_gettid));
    for (;;) {
        seen = wait_change(&w->seq, seen, &w->sleeping);
        if (atomic_load(&p->stop))
            return NULL;
        int offered = W_OFFERED;
        if (!atomic_compare_exchange_strong(&w->state, &offered, W_BUSY))
            continue; /* withdrawn: the caller did the work */
        do_work(p);
        atomic_store(&w->state, W_IDLE);
        if (atomic_load(&p->caller_sleeping))
            futex_wake(&w->state);
    }
}

/* Zeroed memory aligned for the cache-line-aligned members. */
static void *alloc_lines(size_t n)
{
    n = (n + 63) / 64 * 64;
    void *m = aligned_alloc(64, n);
    if (m)
        memset(m, 0, n);
    return m;
}

threadpool *threadpool_new(int n_threads)
{
    if (n_threads < 1)
        n_threads = 1;
    threadpool *p = alloc_lines(sizeof *p);
    if (!p)
        return NULL;
    p->workers = n_threads > 1 ? alloc_lines(((size_t)n_threads - 1) * sizeof *p->workers) : NULL;
    if (n_threads > 1 && !p->workers) {
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->run_lock, NULL);
    p->size = 1;
    for (int i = 0; i < n_threads - 1; i++) {
        worker *w = &p->workers[i];
        w->pool = p;
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            /* Fewer threads than asked still computes everything. */
            fprintf(stderr, "llmfs: threadpool: could only start %d of %d threads\n", p->size, n_threads);
            break;
        }
        p->size++;
    }
    return p;
}

void threadpool_free(threadpool *p)
{
    if (!p)
        return;
    atomic_store(&p->stop, true);
    for (int i = 0; i < p->size - 1; i++) {
        atomic_fetch_add(&p->workers[i].seq, 1);
        futex_wake(&p->workers[i].seq);
    }
    for (int i = 0; i < p->size - 1; i++)
        pthread_join(p->workers[i].thread, NULL);
    pthread_mutex_destroy(&p->run_lock);
    free(p->workers);
    free(p);
}

int threadpool_tids(threadpool *p, int *tids, int cap)
{
    int n = 0;
    for (int i = 0; p && i < p->size - 1; i++) {
        /* a helper records its id first thing; wait for one that has not run yet */
        int t;
        while ((t = atomic_load(&p->workers[i].tid)) == 0)
            sched_yield();
        if (n < cap)
            tids[n] = t;
        n++;
    }
    return n;
}

int threadpool_size(const threadpool *p)
{
    return p->size;
}

void threadpool_run(threadpool *p, threadpool_fn fn, void *ctx, int n_threads)
{
    if (n_threads <= 0)
        return;
    int k = n_threads < p->size ? n_threads : p->size;
    if (k == 1) {
        for (int i = 0; i < n_threads; i++)
            fn(ctx, i, n_threads);
        return;
    }
    pthread_mutex_lock(&p->run_lock);
    p->fn = fn;
    p->ctx = ctx;
    p->n = n_threads;
    atomic_store_explicit(&p->next, 0, memory_order_relaxed);
    for (int i = 0; i < k - 1; i++) {
        worker *w = &p->workers[i];
        atomic_store(&w->state, W_OFFERED);
        atomic_fetch_add(&w->seq, 1);
        if (atomic_load(&w->sleeping))
            futex_wake(&w->seq);
    }
    do_work(p);
    /* Every index is claimed now; withdraw the offers nobody took up, wait for the rest. */
    for (int i = 0; i < k - 1; i++) {
        worker *w = &p->workers[i];
        int offered = W_OFFERED;
        if (!atomic_compare_exchange_strong(&w->state, &offered, W_IDLE))
            wait_helper(p, w);
    }
    pthread_mutex_unlock(&p->run_lock);
}

/* ---- core count ---- */

static int read_int(const char *path, int *out)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    int ok = fscanf(f, "%d", out) == 1;
    fclose(f);
    return ok ? 0 : -1;
}

int cpu_physical_cores(void)
{
    static atomic_int cached;
    int n = atomic_load(&cached);
    if (n)
        return n;
    /* Distinct (package, core) pairs among the CPUs this process may run on, so that
     * hyper-thread siblings and CPUs excluded by affinity or a container do not count. */
    cpu_set_t set;
    bool have_set = sched_getaffinity(0, sizeof set, &set) == 0;
    long conf = sysconf(_SC_NPROCESSORS_CONF);
    int max_cpu = conf > 0 && conf < CPU_SETSIZE ? (int)conf : CPU_SETSIZE;
    static int pkg[CPU_SETSIZE], core[CPU_SETSIZE];
    static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_mutex_lock(&lock);
    n = 0;
    for (int cpu = 0; cpu < max_cpu; cpu++) {
        if (have_set && !CPU_ISSET(cpu, &set))
            continue;
        char path[128];
        int pk, co;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", cpu);
        if (read_int(path, &pk))
            continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", cpu);
        if (read_int(path, &co))
            continue;
        int j = 0;
        while (j < n && !(pkg[j] == pk && core[j] == co))
            j++;
        if (j == n) {
            pkg[n] = pk;
            core[n] = co;
            n++;
        }
    }
    pthread_mutex_unlock(&lock);
    if (n == 0) {
        long on = sysconf(_SC_NPROCESSORS_ONLN);
        n = on > 0 ? (int)on : 1;
    }
    atomic_store(&cached, n);
    return n;
}
