/* detok.c — ids back to text: one token's bytes, and a streaming decoder that only
 * ever hands out whole, well-formed UTF-8 characters. */
#include "tok_internal.h"

#include "unicode.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int put(char *buf, int cap, int at, const char *s, int n)
{
    for (int i = 0; i < n; i++)
        if (at + i < cap)
            buf[at + i] = s[i];
    return at + n;
}

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int tokenizer_piece(const tokenizer *t, int32_t id, bool special, char *buf, int cap)
{
    if (!t || id < 0 || id >= t->n_vocab)
        return 0;
    if (!buf)
        cap = 0;
    int type = t->type[id];
    const char *s = t->text + t->off[id];
    int n = (int)t->len[id];
    switch (type) {
    case TOKT_CONTROL:
    case TOKT_UNKNOWN:
        return special ? put(buf, cap, 0, s, n) : 0;
    case TOKT_USER_DEFINED:
        return put(buf, cap, 0, s, n);
    case TOKT_NORMAL: {
        int at = 0;
        if (t->kind == TOK_SPM) {
            for (int i = 0; i < n;) {
                if (i + 3 <= n && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
                    at = put(buf, cap, at, " ", 1);
                    i += 3;
                } else {
                    at = put(buf, cap, at, s + i, 1);
                    i++;
                }
            }
            return at;
        }
        for (size_t off = 0; off < (size_t)n;) {
            size_t o0 = off;
            uint32_t cp = utf8_decode((const uint8_t *)s, (size_t)n, &off);
            int b = tok_cp_to_byte(cp);
            if (b >= 0) {
                char c = (char)b;
                at = put(buf, cap, at, &c, 1);
            } else {
                at = put(buf, cap, at, s + o0, (int)(off - o0));
            }
        }
        return at;
    }
    case TOKT_BYTE:
        if (t->kind == TOK_SPM && n == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>') {
            int hi = hex_digit(s[3]), lo = hex_digit(s[4]);
            if (hi >= 0 && lo >= 0) {
                char c = (char)(hi * 16 + lo);
                return put(buf, cap, 0, &c, 1);
            }
        }
        return 0;
    default:
        return 0;
    }
}

int tokenizer_decode(const tokenizer *t, const int32_t *ids, int n, bool special, char *buf, int cap)
{
    if (!t || n < 0 || (n && !ids) || cap < 0 || (cap && !buf))
        return -EINVAL;
    int at = 0;
    bool strip = t->kind == TOK_SPM && t->add_space_prefix;
    for (int i = 0; i < n; i++) {
        if (i == 0 && ids[i] == t->bos)
            continue;
        int room = at < cap ? cap - at : 0;
        int len;
        if (strip) { /* the first piece loses the space SentencePiece added */
            strip = false;
            len = tokenizer_piece(t, ids[i], special, NULL, 0);
            char *p = malloc((size_t)len + 1);
            if (!p)
                return -ENOMEM;
            tokenizer_piece(t, ids[i], special, p, len);
            int skip = len > 0 && p[0] == ' ';
            len = put(room ? buf + at : NULL, room, 0, p + skip, len - skip);
            free(p);
        } else {
            len = tokenizer_piece(t, ids[i], special, room ? buf + at : NULL, room);
        }
        if (len > INT32_MAX - at)
            return -EOVERFLOW;
        at += len;
    }
    return at;
}

/* ---- streaming ---- */

static const char replacement[3] = {'\xef', '\xbf', '\xbd'};

static void emit(char *out, int cap, int *w, const char *s, int n)
{
    if (*w + n <= cap) { /* whole characters only */
        memcpy(out + *w, s, (size_t)n);
        *w += n;
    }
}

static int seq_need(uint8_t lead)
{
    if (lead >= 0xC2 && lead <= 0xDF)
        return 2;
    if (lead >= 0xE0 && lead <= 0xEF)
        return 3;
    if (lead >= 0xF0 && lead <= 0xF4)
        return 4;
    return 0;
}

/* Whether b may follow the pending bytes of a well-formed sequence. */
static bool continues(const detok_state *st, uint8_t b)
{
    if (st->n_pending == 1) {
        uint8_t lead = (uint8_t)st->pending[0];
        uint8_t lo = 0x80, hi = 0xBF;
        if (lead == 0xE0)
            lo = 0xA0;
        else if (lead == 0xED)
            hi = 0x9F;
        else if (lead == 0xF0)
            lo = 0x90;
        else if (lead == 0xF4)
            hi = 0x8F;
        return b >= lo && b <= hi;
    }
    return (b & 0xC0) == 0x80;
}

static void feed(detok_state *st, const char *s, int n, char *out, int cap, int *w)
{
    for (int i = 0; i < n;) {
        uint8_t b = (uint8_t)s[i];
        if (st->n_pending == 0) {
            if (b < 0x80)
                emit(out, cap, w, s + i, 1);
            else if (seq_need(b))
                st->pending[st->n_pending++] = (char)b;
            else
                emit(out, cap, w, replacement, 3);
            i++;
            continue;
        }
        if (!continues(st, b)) {
            /* the pending sequence is cut short: replace it, and look at b afresh */
            emit(out, cap, w, replacement, 3);
            st->n_pending = 0;
            continue;
        }
        st->pending[st->n_pending++] = (char)b;
        i++;
        if (st->n_pending == seq_need((uint8_t)st->pending[0])) {
            emit(out, cap, w, st->pending, st->n_pending);
            st->n_pending = 0;
        }
    }
}

int detok_push(const tokenizer *t, detok_state *st, int32_t id, char *out, int cap)
{
    if (!t || !st || cap < 0 || (cap && !out))
        return 0;
    if (st->n_pending < 0 || st->n_pending > 3)
        st->n_pending = 0;
    char small[256];
    int n = tokenizer_piece(t, id, st->special, small, (int)sizeof small);
    const char *piece = small;
    char *big = NULL;
    if (n > (int)sizeof small) {
        big = malloc((size_t)n);
        if (!big)
            return 0;
        tokenizer_piece(t, id, st->special, big, n);
        piece = big;
    }
    int w = 0;
    feed(st, piece, n, out, cap, &w);
    free(big);
    return w;
}

int detok_flush(detok_state *st, char *out, int cap)
{
    if (!st || cap < 0 || (cap && !out))
        return 0;
    int w = 0;
    if (st->n_pending > 0)
        emit(out, cap, &w, replacement, 3);
    st->n_pending = 0;
    return w;
}
