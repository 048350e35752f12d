/* loop.c — the libuv control loop (see loop.h). */
#include "loop.h"

#include "idle.h"


#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <uv.h>

#define TICK_MS 1000

static uv_loop_t loop;
static uv_signal_t sig_int, sig_term, sig_hup;
static uv_timer_t tick;
static uv_async_t wake;

/* Guards the poll queue, `alive` and sends on `wake` (which must not be touched once
 * the loop is closed: core threads may still append to streams during shutdown). */
static pthread_mutex_t queue_mu = PTHREAD_MUTEX_INITIALIZER;
static struct fuse_pollhandle **queue;
static size_t queue_len, queue_cap;
static bool alive, stopping;

static void drain_polls(void)
{
    pthread_mutex_lock(&queue_mu);
    struct fuse_pollhandle **q = queue;
    size_t n = queue_len;
    queue = NULL;
    queue_len = queue_cap = 0;
    pthread_mutex_unlock(&queue_mu);
    for (size_t i = 0; i < n; i++) {
        fuse_lowlevel_notify_poll(q[i]);
        fuse_pollhandle_destroy(q[i]);
    }
    free(q);
}

static void on_wake(uv_async_t *h)
{
    (void)h;
    drain_polls();
    pthread_mutex_lock(&queue_mu);
    bool stop = stopping;
    pthread_mutex_unlock(&queue_mu);
    if (stop)
        uv_stop(&loop);
}

static void on_signal(uv_signal_t *h, int signum)
{
    (void)h;
    (void)signum;
    uv_stop(&loop);
}

static void on_tick(uv_timer_t *h)
{
    (void)h;
    idle_check(fs_srv.lf);
    node_sweep(fs_dir_exists);
}

int loop_init(void)
{
    int rc = uv_loop_init(&loop);
    if (rc < 0)
        return rc;
    uv_signal_init(&loop, &sig_int);
    uv_signal_init(&loop, &sig_term);
    uv_signal_init(&loop, &sig_hup);
    uv_signal_start(&sig_int, on_signal, SIGINT);
    uv_signal_start(&sig_term, on_signal, SIGTERM);
    uv_signal_start(&sig_hup, on_signal, SIGHUP);
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, TICK_MS, TICK_MS);
    uv_async_init(&loop, &wake, on_wake);
    pthread_mutex_lock(&queue_mu);
    alive = true;
    bool stop = stopping;
    pthread_mutex_unlock(&queue_mu);
    if (stop) /* the FUSE session ended before the loop was ready */
        uv_async_send(&wake);
    return 0;
}

void loop_run(void)
{
    uv_run(&loop, UV_RUN_DEFAULT);
}

static void close_cb(uv_handle_t *h)
{
    (void)h;
}

void loop_fini(void)
{
    pthread_mutex_lock(&queue_mu);
    alive = false;
    pthread_mutex_unlock(&queue_mu);
    drain_polls();
    uv_close((uv_handle_t *)&sig_int, close_cb);
    uv_close((uv_handle_t *)&sig_term, close_cb);
    uv_close((uv_handle_t *)&sig_hup, close_cb);
    uv_close((uv_handle_t *)&tick, close_cb);
    uv_close((uv_handle_t *)&wake, close_cb);
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
}

void loop_stop(void)
{
    pthread_mutex_lock(&queue_mu);
    stopping = true;
    if (alive)
        uv_async_send(&wake);
    pthread_mutex_unlock(&queue_mu);
}

void loop_notify_poll(struct fuse_pollhandle *ph)
{
    pthread_mutex_lock(&queue_mu);
    if (!alive) {
        pthread_mutex_unlock(&queue_mu);
        fuse_pollhandle_destroy(ph);
        return;
    }
    if (queue_len == queue_cap) {
        size_t cap = queue_cap ? queue_cap * 2 : 16;
        struct fuse_pollhandle **q = realloc(queue, cap * sizeof *q);
        if (!q) {
            pthread_mutex_unlock(&queue_mu);
            /* Without room to queue it, notify from here rather than lose the wake-up. */
            fuse_lowlevel_notify_poll(ph);
            fuse_pollhandle_destroy(ph);
            return;
        }
        queue = q;
        queue_cap = cap;
    }
    queue[queue_len++] = ph;
    uv_async_send(&wake);
    pthread_mutex_unlock(&queue_mu);
}
