/* fsfuzz.c — random file-system operations on a mounted llmfs from several threads.
 *
 * Each thread picks a path (every file kind of the root, of each model folder and of
 * session folders, found by listing the mount as it goes, plus names that do not exist,
 * too long or with odd bytes) and an operation: open with random flags, read at random
 * offsets and sizes, write ctl lines (settings of every kind, commands, garbage) or
 * prompts, close, stat, list a folder, and the calls llmfs refuses (mkdir, unlink,
 * rename, truncate, create). Any errno is an answer; what must never happen is the
 * daemon going away (ENOTCONN, ECONNABORTED) or a call that never returns (the
 * watchdog fails the run). Output and transcript reads are non-blocking, or bounded by
 * stop written to the session's ctl from time to time.
 *
 * Usage: fsfuzz MOUNTPOINT SECONDS [THREADS [SEED]]
 * Prints the number of operations and the errno counts; exits 1 if the mount died.
 */

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static const char *mnt;
static double deadline;
static atomic_bool dead, stop_all;
static atomic_long n_ops, n_ok, errs[200];
static atomic_long last_progress_ms;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

typedef struct rng {
    uint64_t s;
} rng;

static uint64_t rnd(rng *r)
{
    uint64_t z = (r->s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static unsigned pick(rng *r, unsigned n)
{
    return (unsigned)(rnd(r) % n);
}

static void note(int rc, int err)
{
    atomic_fetch_add(&n_ops, 1);
    atomic_store(&last_progress_ms, (long)(now_s() * 1000));
    if (rc >= 0) {
        atomic_fetch_add(&n_ok, 1);
        return;
    }
    if (err == ENOTCONN || err == ECONNABORTED) {
        if (!atomic_exchange(&dead, true))
            fprintf(stderr, "fsfuzz: the mount is gone (%s)\n", strerror(err));
    }
    atomic_fetch_add(&errs[err > 0 && err < 200 ? err : 0], 1);
}

/* Runs a call and notes its result with the errno it left (read after the call). */
#define CALL(expr)                          \
    do {                                    \
        errno = 0;                          \
        long r_ = (long)(expr);             \
        note(r_ < 0 ? -1 : 0, errno);       \
    } while (0)

static const char *const files[] = {"ctl",   "models", "stats", "metrics",   "error", "prompt", "output",
                                    "transcript", "placement", "kv", "info", "clone", "nope", ".",
                                    "..", "ctl/x", "\xff\xfe", ""};
#define N_FILES (unsigned)(sizeof files / sizeof files[0])

static const char *const lines[] = {
    "temp 0", "temp 2", "temp -1", "temp nan", "top_k 5", "top_p 0.5", "min_p 0.1", "seed 42",
    "n_predict 8", "n_predict -1", "n_predict 0", "mode raw", "mode chat", "mode bogus",
    "system Be brief.", "repeat_penalty 1.1", "ctx 64", "ctx 256", "ctx 1", "parallel 2",
    "parallel 0", "batch 16", "ubatch 8", "ubatch 600", "ubatch 0", "cache_type_k q8_0",
    "cache_type_k f16", "flash_attn on", "flash_attn off", "threads 3", "ngl 0", "mmap off",
    "idle_unload 0", "session_idle 0", "profile mtp", "profile nope", "stop", "reset", "close",
    "stop now", "unknown 1", "max_sessions 3", "model_dirs /", "load x /nonexistent.gguf",
    "unload x", "unload", "# comment", "", "=", "temp", "temp=0.5\ntop_k 3\n", "ctx 99999999999",
};
#define N_LINES (unsigned)(sizeof lines / sizeof lines[0])

/* A folder: the root, a model folder, a session folder (by listing), or a bad one. */
static void pick_dir(rng *r, char *out, size_t cap)
{
    unsigned k = pick(r, 10);
    if (k == 0) {
        snprintf(out, cap, "%s", mnt);
        return;
    }
    if (k == 1) {
        static const char *const bad[] = {"nope", "s/999", "s/-1", "s/0x1", "..", "s/0/..",
                                          "sssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssssss"};
        snprintf(out, cap, "%s/%s", mnt, bad[pick(r, 7)]);
        return;
    }
    const char *model = pick(r, 2) ? "s" : "q";
    if (k < 5) {
        snprintf(out, cap, "%s/%s", mnt, model);
        return;
    }
    /* a session folder that exists now, if any */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/%s", mnt, model);
    errno = 0;
    DIR *d = opendir(dir);
    int e = errno;
    note(d ? 0 : -1, e);
    int ids[64], n = 0;
    if (d) {
        for (struct dirent *de; (de = readdir(d)) && n < 64;)
            if (de->d_name[0] >= '0' && de->d_name[0] <= '9')
                ids[n++] = atoi(de->d_name);
        closedir(d);
    }
    snprintf(out, cap, "%s/%s/%d", mnt, model, n ? ids[pick(r, (unsigned)n)] : 0);
}

static void do_write(rng *r, int fd, const char *file)
{
    char buf[4096];
    size_t n;
    unsigned k = pick(r, 10);
    if (strcmp(file, "prompt") == 0 && k < 7) {
        static const char *const prompts[] = {"Once upon a time", "Hello", "\xff\xfe bad", "a\n",
                                              "The little dog went to the park"};
        n = (size_t)snprintf(buf, sizeof buf, "%s", prompts[pick(r, 5)]);
        if (pick(r, 4) == 0) { /* long: past a small context */
            size_t o = 0;
            while (o + 10 < sizeof buf)
                o += (size_t)snprintf(buf + o, sizeof buf - o, "and then ");
            n = o;
        }
    } else if (k < 8) {
        n = (size_t)snprintf(buf, sizeof buf, "%s\n", lines[pick(r, N_LINES)]);
    } else {
        n = 1 + pick(r, 64);
        for (size_t i = 0; i < n; i++)
            buf[i] = (char)rnd(r);
    }
    CALL(pick(r, 4) ? write(fd, buf, n) : pwrite(fd, buf, n, (off_t)pick(r, 100)));
}

static void one_op(rng *r)
{
    char dir[512], path[1024];
    pick_dir(r, dir, sizeof dir);
    const char *file = files[pick(r, N_FILES)];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    bool stream = strcmp(file, "output") == 0 || strcmp(file, "transcript") == 0;
    unsigned op = pick(r, 12);
    errno = 0;
    switch (op) {
    case 0: {
        struct stat st;
        CALL(stat(path, &st));
        break;
    }
    case 1: {
        errno = 0;
        DIR *d = opendir(dir);
        int e = errno;
        note(d ? 0 : -1, e);
        if (d) {
            for (int i = 0; i < 100 && readdir(d); i++)
                ;
            closedir(d);
        }
        break;
    }
    case 2:
        CALL(mkdir(path, 0700));
        break;
    case 3:
        CALL(unlink(path));
        break;
    case 4: {
        char to[1100];
        snprintf(to, sizeof to, "%s.x", path);
        CALL(rename(path, to));
        break;
    }
    case 5:
        CALL(truncate(path, (off_t)pick(r, 10)));
        break;
    default: {
        static const int modes[] = {O_RDONLY, O_WRONLY, O_RDWR};
        int flags = modes[pick(r, 3)];
        if (pick(r, 8) == 0)
            flags |= O_CREAT;
        if (pick(r, 8) == 0)
            flags |= O_TRUNC;
        if (pick(r, 8) == 0)
            flags |= O_APPEND;
        if (pick(r, 16) == 0)
            flags |= O_DIRECTORY;
        if (pick(r, 16) == 0)
            flags |= O_EXCL;
        if (stream || pick(r, 2))
            flags |= O_NONBLOCK;
        errno = 0;
        int fd = open(path, flags, 0600);
        int e = errno;
        note(fd, e);
        if (fd < 0)
            break;
        int n_io = (int)pick(r, 6);
        for (int i = 0; i < n_io && !atomic_load(&stop_all); i++) {
            errno = 0;
            if ((flags & O_ACCMODE) != O_RDONLY && pick(r, 2)) {
                do_write(r, fd, file);
            } else {
                char buf[8192];
                size_t want = 1 + pick(r, sizeof buf);
                CALL(pick(r, 3) ? read(fd, buf, want) : pread(fd, buf, want, (off_t)pick(r, 4096)));
            }
        }
        CALL(close(fd));
        break;
    }
    }
}

/* Every session of both models gets stop now and then, so that a blocking read of an
 * output (a non-stream file opened without O_NONBLOCK never blocks) cannot wait on a
 * reply that runs forever. */
static void stop_everything(void)
{
    static const char *const models[] = {"s", "q"};
    for (int k = 0; k < 2; k++) {
        char dir[512];
        snprintf(dir, sizeof dir, "%s/%s", mnt, models[k]);
        char p[600];
        snprintf(p, sizeof p, "%s/ctl", dir);
        int fd = open(p, O_WRONLY);
        if (fd >= 0) {
            if (write(fd, "stop\n", 5) < 0) {
                /* refused or gone: the next round tries again */
            }
            close(fd);
        }
    }
}

static void *worker(void *arg)
{
    rng r = {(uint64_t)(uintptr_t)arg};
    while (!atomic_load(&stop_all) && !atomic_load(&dead) && now_s() < deadline)
        one_op(&r);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: fsfuzz MOUNTPOINT SECONDS [THREADS [SEED]]\n");
        return 2;
    }
    mnt = argv[1];
    double seconds = atof(argv[2]);
    int threads = argc > 3 ? atoi(argv[3]) : 4;
    uint64_t seed = argc > 4 ? strtoull(argv[4], NULL, 10) : (uint64_t)time(NULL);
    if (threads < 1 || threads > 64)
        threads = 4;
    printf("fsfuzz: %s, %.0f s, %d threads, seed %llu\n", mnt, seconds, threads, (unsigned long long)seed);
    deadline = now_s() + seconds;
    atomic_store(&last_progress_ms, (long)(now_s() * 1000));
    pthread_t th[64];
    for (int i = 0; i < threads; i++)
        pthread_create(&th[i], NULL, worker, (void *)(uintptr_t)(seed * 64 + (uint64_t)i + 1));
    /* watchdog: stops replies now and then; fails when no call has returned for 60 s */
    int rc = 0;
    while (now_s() < deadline && !atomic_load(&dead)) {
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
        stop_everything();
        if ((long)(now_s() * 1000) - atomic_load(&last_progress_ms) > 60000) {
            fprintf(stderr, "fsfuzz: no call returned for 60 s\n");
            rc = 1;
            break;
        }
    }
    atomic_store(&stop_all, true);
    /* the threads end after their current call: a hang shows up as the test's timeout */
    for (int i = 0; i < threads; i++)
        pthread_join(th[i], NULL);
    printf("fsfuzz: %ld operations, %ld succeeded; errors:", atomic_load(&n_ops), atomic_load(&n_ok));
    for (int e = 0; e < 200; e++)
        if (atomic_load(&errs[e]))
            printf(" %s %ld,", e ? strerrorname_np(e) : "other", atomic_load(&errs[e]));
    printf("\n");
    if (atomic_load(&dead))
        rc = 1;
    return rc;
}
