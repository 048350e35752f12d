/* tok_merge.c — the merge loop both SentencePiece and BPE encoding run: adjacent
 * symbols join, the pair with the smallest key first (the leftmost on ties), until no
 * adjacent pair is a merge. Candidates wait in a binary heap; a queued pair whose sides
 * have changed since is skipped when it comes up, which is cheaper than removing it. */
#include "tok_internal.h"

#include "unicode.h"

#include <errno.h>
#include <stdlib.h>

static bool before(const tok_pair *a, const tok_pair *b)
{
    return a->key < b->key || (a->key == b->key && a->left < b->left);
}

static int heap_push(tok_pair_heap *h, tok_pair p)
{
    if (h->n == h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        tok_pair *v = realloc(h->v, cap * sizeof *v);
        if (!v)
            return -ENOMEM;
        h->v = v;
        h->cap = cap;
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&p, &h->v[parent]))
            break;
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = p;
    return 0;
}

static tok_pair heap_pop(tok_pair_heap *h)
{
    tok_pair top = h->v[0], last = h->v[--h->n];
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

static int try_pair(const tokenizer *t, const char *s, const tok_sym *syms, int32_t l, int32_t r,
                    tok_merge_key key, tok_pair_heap *h)
{
    if (l < 0 || r < 0)
        return 0;
    uint32_t size = syms[l].n + syms[r].n;
    double k;
    if (!key(t, s + syms[l].start, syms[l].n, size, &k))
        return 0;
    return heap_push(h, (tok_pair){k, l, r, size});
}

int32_t tok_merge_all(const tokenizer *t, const char *s, size_t n, tok_sym *syms, tok_merge_key key,
                      tok_pair_heap *h)
{
    int32_t ns = 0;
    for (size_t off = 0; off < n;) {
        size_t cl = (size_t)utf8_seq_len((uint8_t)s[off]);
        if (cl > n - off)
            cl = n - off;
        syms[ns] = (tok_sym){ns - 1, off + cl == n ? -1 : ns + 1, (uint32_t)off, (uint32_t)cl};
        ns++;
        off += cl;
    }
    int rc = 0;
    h->n = 0;
    for (int32_t i = 1; i < ns && !rc; i++)
        rc = try_pair(t, s, syms, i - 1, i, key, h);
    while (h->n && !rc) {
        tok_pair p = heap_pop(h);
        tok_sym *l = &syms[p.left], *r = &syms[p.right];
        if (l->n == 0 || r->n == 0 || l->n + r->n != p.size)
            continue; /* one side changed since this pair was queued */
        l->n += r->n;
        r->n = 0;
        l->next = r->next;
        if (r->next >= 0)
            syms[r->next].prev = p.left;
        rc = try_pair(t, s, syms, l->prev, p.left, key, h);
        if (!rc)
            rc = try_pair(t, s, syms, p.left, l->next, key, h);
    }
    return rc ? rc : ns;
}
