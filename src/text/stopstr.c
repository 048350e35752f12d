/* stopstr.c — stop strings (see stopstr.h). */
#include "stopstr.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int add_stop(stop_filter *f, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    char **st = realloc(f->stops, sizeof *st * (size_t)(f->n + 1));
    if (!st)
        return -ENOMEM;
    f->stops = st;
    size_t *ln = realloc(f->lens, sizeof *ln * (size_t)(f->n + 1));
    if (!ln)
        return -ENOMEM;
    f->lens = ln;
    char *c = malloc(n + 1);
    if (!c)
        return -ENOMEM;
    memcpy(c, s, n);
    c[n] = 0;
    f->stops[f->n] = c;
    f->lens[f->n] = n;
    f->n++;
    return 0;
}

int stop_filter_init(stop_filter *f, const char *list)
{
    memset(f, 0, sizeof *f);
    if (!list || !*list)
        return 0;
    size_t len = strlen(list);
    char *cur = malloc(len + 1);
    if (!cur)
        return -ENOMEM;
    size_t n = 0;
    int rc = 0;
    for (const char *p = list;; p++) {
        if (*p == '\\' && p[1]) {
            p++;
            cur[n++] = *p == 'n' ? '\n' : *p == 't' ? '\t' : *p == 'r' ? '\r' : *p == 's' ? ' ' : *p;
        } else if (*p == '|' || *p == 0) {
            if ((rc = add_stop(f, cur, n)) < 0 || *p == 0)
                break;
            n = 0;
        } else {
            cur[n++] = *p;
        }
    }
    free(cur);
    if (rc < 0)
        stop_filter_free(f);
    return rc;
}

void stop_filter_free(stop_filter *f)
{
    for (int i = 0; i < f->n; i++)
        free(f->stops[i]);
    free(f->stops);
    free(f->lens);
    free(f->held);
    memset(f, 0, sizeof *f);
}

/* Longest tail of the held text that is a proper start of some stop string: it must wait
 * for more text. */
static size_t partial_tail(const stop_filter *f)
{
    size_t best = 0;
    for (int i = 0; i < f->n; i++) {
        size_t max = f->lens[i] - 1 < f->n_held ? f->lens[i] - 1 : f->n_held;
        for (size_t k = max; k > best; k--)
            if (memcmp(f->held + f->n_held - k, f->stops[i], k) == 0) {
                best = k;
                break;
            }
    }
    return best;
}

int stop_filter_push(stop_filter *f, const char *text, size_t n, stop_emit emit, void *arg)
{
    if (f->hit)
        return 1;
    if (f->n == 0) {
        if (n)
            emit(arg, text, n);
        return 0;
    }
    if (f->n_held + n > f->cap_held) {
        size_t cap = f->cap_held ? f->cap_held : 64;
        while (cap < f->n_held + n)
            cap *= 2;
        char *h = realloc(f->held, cap);
        if (!h)
            return -ENOMEM;
        f->held = h;
        f->cap_held = cap;
    }
    memcpy(f->held + f->n_held, text, n);
    f->n_held += n;
    /* the earliest stop string in the held text wins */
    size_t at = f->n_held;
    for (int i = 0; i < f->n; i++) {
        if (f->lens[i] > f->n_held)
            continue;
        const char *hit = memmem(f->held, f->n_held, f->stops[i], f->lens[i]);
        if (hit && (size_t)(hit - f->held) < at)
            at = (size_t)(hit - f->held);
    }
    if (at < f->n_held) {
        if (at)
            emit(arg, f->held, at);
        f->n_held = 0;
        f->hit = true;
        return 1;
    }
    size_t keep = partial_tail(f);
    size_t out = f->n_held - keep;
    if (out) {
        emit(arg, f->held, out);
        memmove(f->held, f->held + out, keep);
        f->n_held = keep;
    }
    return 0;
}

void stop_filter_flush(stop_filter *f, stop_emit emit, void *arg)
{
    if (!f->hit && f->n_held)
        emit(arg, f->held, f->n_held);
    f->n_held = 0;
}
