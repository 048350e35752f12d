/* reasoning.c — see reasoning.h. */
#include "reasoning.h"

#include <string.h>

reason_mode reason_mode_of(const char *tmpl)
{
    if (!tmpl)
        return REASON_NONE;
    if (strstr(tmpl, "<|channel|>") && strstr(tmpl, "<|message|>"))
        return REASON_HARMONY;
    if (strstr(tmpl, "<think>") && strstr(tmpl, "</think>"))
        return REASON_THINK;
    if (strstr(tmpl, "<|channel>") && strstr(tmpl, "<channel|>"))
        return REASON_GEMMA4;
    return REASON_NONE;
}

void reason_split_init(reason_split *r, reason_mode mode)
{
    memset(r, 0, sizeof *r);
    r->mode = mode;
}

enum {
    M_CHANNEL, M_MESSAGE, M_START, M_END, M_RETURN, M_CALL, M_CONSTRAIN, /* harmony */
    M_THINK, M_UNTHINK,                                                  /* <think> tags */
    M_GCHANNEL, M_GUNCHANNEL,                                            /* Gemma 4 */
    M_COUNT
};
static const char *const markers[M_COUNT] = {
    "<|channel|>", "<|message|>", "<|start|>", "<|end|>", "<|return|>", "<|call|>", "<|constrain|>",
    "<think>", "</think>", "<|channel>", "<channel|>",
};

static bool active(const reason_split *r, int k)
{
    switch (r->mode) {
    case REASON_HARMONY:
        return k < M_THINK;
    case REASON_THINK:
        return k == M_THINK || k == M_UNTHINK;
    case REASON_GEMMA4:
        return k == M_GCHANNEL || k == M_GUNCHANNEL;
    default:
        return false;
    }
}

/* Message text to where it goes now (headers collect the channel name instead). */
static void text(reason_split *r, const char *s, size_t n, reason_emit emit, void *arg)
{
    if (r->in_header && r->mode == REASON_GEMMA4) {
        /* the channel's name runs to the end of its line; what follows is its text */
        const char *nl = memchr(s, '\n', n);
        size_t k = nl ? (size_t)(nl - s) : n, room = sizeof r->header - 1 - r->n_header;
        memcpy(r->header + r->n_header, s, k < room ? k : room);
        r->n_header += k < room ? k : room;
        r->header[r->n_header] = 0;
        if (!nl)
            return;
        r->in_header = false;
        r->to_reasoning = true; /* "thought": Gemma 4's only channel is its thinking */
        s = nl + 1;
        n -= k + 1;
    }
    if (r->in_header) {
        size_t room = sizeof r->header - 1 - r->n_header;
        size_t k = n < room ? n : room;
        memcpy(r->header + r->n_header, s, k);
        r->n_header += k;
        r->header[r->n_header] = 0;
        return;
    }
    if (r->trim && !r->to_reasoning) {
        while (n && (*s == ' ' || *s == '\n' || *s == '\r' || *s == '\t'))
            s++, n--;
        if (!n)
            return;
        r->trim = false;
    }
    if (n)
        emit(arg, r->to_reasoning, s, n);
}

static void marker(reason_split *r, int k)
{
    switch (k) {
    case M_START:
    case M_CHANNEL:
        r->in_header = true;
        r->n_header = 0;
        r->header[0] = 0;
        break;
    case M_MESSAGE:
        /* the final channel is the answer; analysis and commentary are reasoning */
        if (r->in_header)
            r->to_reasoning = !strstr(r->header, "final");
        r->in_header = false;
        break;
    case M_END:
    case M_RETURN:
    case M_CALL:
        r->in_header = false;
        r->to_reasoning = false;
        break;
    case M_CONSTRAIN:
        break; /* part of a header */
    case M_THINK:
        r->to_reasoning = true;
        break;
    case M_UNTHINK:
    case M_GUNCHANNEL:
        r->in_header = false;
        r->to_reasoning = false;
        r->trim = true;
        break;
    case M_GCHANNEL:
        r->in_header = true;
        r->n_header = 0;
        r->header[0] = 0;
        break;
    }
}

/* The marker matching s[0..n) whole (its length in *len), -1 none; *partial: s is a
 * proper prefix of a marker (more bytes may complete it). */
static int match(const reason_split *r, const char *s, size_t n, size_t *len, bool *partial)
{
    *partial = false;
    for (int k = 0; k < M_COUNT; k++) {
        if (!active(r, k))
            continue;
        size_t ml = strlen(markers[k]);
        if (n >= ml && !memcmp(s, markers[k], ml)) {
            *len = ml;
            return k;
        }
        if (n < ml && !memcmp(s, markers[k], n))
            *partial = true;
    }
    return -1;
}

static void scan(reason_split *r, const char *s, size_t n, bool final, reason_emit emit, void *arg)
{
    size_t i = 0, start = 0;
    while (i < n) {
        if (s[i] != '<') {
            i++;
            continue;
        }
        size_t len;
        bool partial;
        int k = match(r, s + i, n - i, &len, &partial);
        if (k >= 0) {
            text(r, s + start, i - start, emit, arg);
            marker(r, k);
            i += len;
            start = i;
        } else if (partial && !final) {
            text(r, s + start, i - start, emit, arg);
            r->n_hold = n - i; /* shorter than the longest marker */
            memcpy(r->hold, s + i, r->n_hold);
            return;
        } else {
            i++;
        }
    }
    text(r, s + start, n - start, emit, arg);
}

void reason_split_push(reason_split *r, const char *s, size_t n, reason_emit emit, void *arg)
{
    if (r->mode == REASON_NONE) {
        if (n)
            emit(arg, false, s, n);
        return;
    }
    /* a held marker start goes in front of the new bytes */
    while (n) {
        char buf[sizeof r->hold + 1024];
        size_t h = r->n_hold, take = n < 1024 ? n : 1024;
        memcpy(buf, r->hold, h);
        memcpy(buf + h, s, take);
        r->n_hold = 0;
        scan(r, buf, h + take, false, emit, arg);
        s += take;
        n -= take;
    }
}

void reason_split_flush(reason_split *r, reason_emit emit, void *arg)
{
    if (r->n_hold) {
        size_t h = r->n_hold;
        r->n_hold = 0;
        char buf[sizeof r->hold];
        memcpy(buf, r->hold, h);
        scan(r, buf, h, true, emit, arg);
    }
}
