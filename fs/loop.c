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

/* Guards the work queue, `alive` and sends on `wake` (which must not be touched once
 * the loop is closed). */
static pthread_mutex_t queue_mu = PTHREAD_MUTEX_INITIALIZER;
static loop_work *queue_head, *queue_tail;
static size_t queue_len;
static bool alive, stopping;

static loop_work *pop_work(void)
{
    pthread_mutex_lock(&queue_mu);
    loop_work *w = queue_head;
    if (w) {
        queue_head = w->next;
        if (!queue_head)
            queue_tail = NULL;
        queue_len--;
        w->next = NULL;
        w->queued = false; /* from here a new post queues it again */
    }
    pthread_mutex_unlock(&queue_mu);
    return w;
}

/* Runs what was queued when it started; what is posted meanwhile waits for the next
 * wake-up, so a stream that grows without pause cannot keep the loop from its timer
 * and signals. */
static void run_queue(void)
{
    pthread_mutex_lock(&queue_mu);
    size_t n = queue_len;
    pthread_mutex_unlock(&queue_mu);
    for (size_t i = 0; i < n; i++) {
        loop_work *w = pop_work();
        if (!w)
            break;
        w->fn(w);
    }
}

static void on_wake(uv_async_t *h)
{
    (void)h;
    run_queue();
    pthread_mutex_lock(&queue_mu);
    bool stop = stopping;
    bool more = queue_len > 0;
    pthread_mutex_unlock(&queue_mu);
    if (more)
        uv_async_send(&wake);
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
    run_queue();
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

bool loop_post(loop_work *w)
{
    pthread_mutex_lock(&queue_mu);
    bool post = alive && !w->queued;
    if (post) {
        w->queued = true;
        w->next = NULL;
        if (queue_tail)
            queue_tail->next = w;
        else
            queue_head = w;
        queue_tail = w;
        queue_len++;
        uv_async_send(&wake);
    }
    pthread_mutex_unlock(&queue_mu);
    return post;
}
