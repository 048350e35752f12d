/* threadpool.h — a fixed pool of workers for splitting one operation across cores.
 *
 * threadpool_run(pool, fn, ctx, n) calls fn(ctx, i, n) for every i in [0, n) on the
 * pool's threads (the caller's thread takes part) and returns when all are done. Workers
 * spin briefly before sleeping, because decode issues thousands of short runs a second.
 */
#ifndef LLMFS_THREADPOOL_H
#define LLMFS_THREADPOOL_H

typedef struct threadpool threadpool;
typedef void (*threadpool_fn)(void *ctx, int i, int n);

threadpool *threadpool_new(int n_threads); /* n_threads includes the caller */
void threadpool_free(threadpool *p);
int threadpool_size(const threadpool *p);
/* The kernel thread ids of the helper threads (size - 1 of them; the caller's thread is
 * not among them), for pinning and priorities. Returns the count, fills at most cap. */
int threadpool_tids(threadpool *p, int *tids, int cap);
/* Runs fn on min(n_threads, size) threads: ith = 0..n_threads-1, each index exactly once
 * (n_threads may exceed the size: the indices are shared out). Runs are serialized; fn
 * must not call threadpool_run on the same pool. */
void threadpool_run(threadpool *p, threadpool_fn fn, void *ctx, int n_threads);

/* Physical cores of this machine (not hyper-threads) that this process may run on
 * (its CPU affinity), at least 1. */
int cpu_physical_cores(void);

#endif
