/* text.c — growable text buffers (see text.h). */
#include "text.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bool reserve(fs_text *t, size_t extra)
{
    if (t->oom)
        return false;
    if (t->len + extra + 1 <= t->cap)
        return true;
    size_t cap = t->cap ? t->cap : 1024;
    while (cap < t->len + extra + 1)
        cap *= 2;
    char *b = realloc(t->buf, cap);
    if (!b) {
        t->oom = true;
        return false;
    }
    t->buf = b;
    t->cap = cap;
    return true;
}

void text_put(fs_text *t, const char *s, size_t n)
{
    if (!reserve(t, n))
        return;
    memcpy(t->buf + t->len, s, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

void text_puts(fs_text *t, const char *s)
{
    text_put(t, s, strlen(s));
}

void text_printf(fs_text *t, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof small, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof small) {
        text_put(t, small, (size_t)n);
        return;
    }
    if (!reserve(t, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(t->buf + t->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
}

void text_fill(fs_text *t, int (*fill)(void *arg, char *buf, size_t cap), void *arg)
{
    size_t want = 4096;
    for (int tries = 0; tries < 4; tries++) {
        if (!reserve(t, want))
            return;
        size_t room = t->cap - t->len;
        int n = fill(arg, t->buf + t->len, room);
        if (n < 0)
            return;
        if ((size_t)n < room) {
            t->len += (size_t)n;
            return;
        }
        want = (size_t)n + 1;
    }
    t->buf[t->len] = '\0';
}

void text_escaped(fs_text *t, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '\\':
            text_put(t, "\\\\", 2);
            break;
        case '\n':
            text_put(t, "\\n", 2);
            break;
        case '\t':
            text_put(t, "\\t", 2);
            break;
        default:
            text_put(t, s, 1);
        }
    }
}

int text_finish(fs_text *t)
{
    if (!t->oom)
        return 0;
    text_free(t);
    return -ENOMEM;
}

void text_free(fs_text *t)
{
    free(t->buf);
    t->buf = NULL;
    t->len = t->cap = 0;
}
