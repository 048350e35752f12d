/* tok_spm.c — SentencePiece-style encoding (tokenizer.ggml.model "llama").
 *
 * Spaces become U+2581 ("▁"), with one added in front when asked. The text starts as
 * one symbol per UTF-8 character; the adjacent pair whose concatenation is the
 * vocabulary token with the highest score merges first (the leftmost on ties), until
 * no pair forms a token. A character that is not a token falls back to its bytes'
 * <0xNN> tokens. */
#include "tok_internal.h"

#include "unicode.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct sym {
    int32_t prev, next;
    uint32_t start, n; /* n == 0: merged into its left neighbour */
} sym;

typedef struct bigram {
    float score;
    int32_t left, right;
    uint32_t size;
} bigram;

typedef struct heap {
    bigram *v;
    size_t n, cap;
} heap;

static bool before(const bigram *a, const bigram *b)
{
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static int heap_push(heap *h, bigram b)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        bigram *p = realloc(h->v, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        h->v = p;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&b, &h->v[parent]))
            break;
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = b;
    return 0;
}

static bigram heap_pop(heap *h)
{
    bigram top = h->v[0], last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n)
            break;
        if (c + 1 < h->n && before(&h->v[c + 1], &h->v[c]))
            c++;
        if (!before(&h->v[c], &last))
            break;
        h->v[i] = h->v[c];
        i = c;
    }
    if (h->n)
        h->v[i] = last;
    return top;
}

static int try_pair(const tokenizer *t, const char *buf, const sym *s, int32_t l, int32_t r, heap *h)
{
    if (l < 0 || r < 0)
        return 0;
    uint32_t size = s[l].n + s[r].n;
    int32_t id = tok_lookup(t, buf + s[l].start, size);
    if (id < 0)
        return 0;
    return heap_push(h, (bigram){t->score[id], l, r, size});
}

static int32_t byte_token(const tokenizer *t, uint8_t b)
{
    char name[8];
    snprintf(name, sizeof name, "<0x%02X>", b);
    int32_t id = tok_lookup(t, name, 6);
    if (id < 0)
        id = tok_lookup(t, (const char *)&b, 1);
    return id >= 0 ? id : t->unk;
}

int tok_spm_encode(const tokenizer *t, const char *s, size_t n, bool add_prefix, tok_vec *out)
{
    size_t cap = 3 * (n + 1);
    char *buf = malloc(cap);
    sym *syms = NULL;
    heap h = {0};
    int rc = 0;
    if (!buf) {
        rc = -ENOMEM;
        goto done;
    }
    size_t bl = 0;
    if (add_prefix) {
        memcpy(buf, "\xe2\x96\x81", 3);
        bl = 3;
    }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(buf + bl, "\xe2\x96\x81", 3);
            bl += 3;
        } else {
            buf[bl++] = s[i];
        }
    }
    if (bl == 0)
        goto done;
    /* at most one symbol per byte: a lead byte may swallow part of an escaped space */
    syms = malloc(bl * sizeof *syms);
    if (!syms) {
        rc = -ENOMEM;
        goto done;
    }

    int32_t ns = 0;
    for (size_t off = 0; off < bl;) {
        size_t cl = (size_t)utf8_seq_len((uint8_t)buf[off]);
        if (cl > bl - off)
            cl = bl - off;
        syms[ns] = (sym){ns - 1, off + cl == bl ? -1 : ns + 1, (uint32_t)off, (uint32_t)cl};
        ns++;
        off += cl;
    }
    for (int32_t i = 1; i < ns && !rc; i++)
        rc = try_pair(t, buf, syms, i - 1, i, &h);
    while (h.n && !rc) {
        bigram b = heap_pop(&h);
        sym *l = &syms[b.left], *r = &syms[b.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != b.size)
            continue; /* one side changed since this pair was queued */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            syms[r->next].prev = b.left;
        rc = try_pair(t, buf, syms, l->prev, b.left, &h);
        if (!rc)
            rc = try_pair(t, buf, syms, b.left, l->next, &h);
    }
    for (int32_t i = 0; i != -1 && !rc; i = syms[i].next) {
        int32_t id = tok_lookup(t, buf + syms[i].start, syms[i].n);
        if (id >= 0) {
            rc = tok_vec_push(out, id);
            continue;
        }
        for (uint32_t k = 0; k < syms[i].n && !rc; k++) {
            int32_t bid = byte_token(t, (uint8_t)buf[syms[i].start + k]);
            if (bid >= 0)
                rc = tok_vec_push(out, bid);
        }
    }
done:
    free(buf);
    free(syms);
    free(h.v);
    return rc;
}
