/* tok_bpe.c — byte-level BPE encoding (tokenizer.ggml.model "gpt2").
 *
 * The pre-tokenizer cuts the text into words; each word's bytes are spelled with
 * GPT-2's byte-to-code-point table, and inside each word the adjacent pair with the
 * lowest merge rank merges first (the leftmost on ties) until no listed merge applies. */
#include "tok_internal.h"

#include "unicode.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Printable bytes stand for themselves; the other 68 (controls, space, DEL, the C1
 * range, NBSP and soft hyphen) are moved, in byte order, to U+0100..U+0143. */
uint32_t tok_byte_to_cp(uint8_t b)
{
    if (b <= 32)
        return 256u + b;
    if (b >= 127 && b <= 160)
        return 256u + 33 + (b - 127u);
    if (b == 173)
        return 256u + 67;
    return b;
}

int tok_cp_to_byte(uint32_t cp)
{
    if (cp < 256)
        return (cp <= 32 || (cp >= 127 && cp <= 160) || cp == 173) ? -1 : (int)cp;
    if (cp <= 256 + 32)
        return (int)(cp - 256);
    if (cp <= 256 + 66)
        return (int)(cp - 256 - 33 + 127);
    if (cp == 256 + 67)
        return 173;
    return -1;
}

/* BPE merges by rank, the lowest first. */
static bool merge_rank(const tokenizer *t, const char *s, uint32_t split, uint32_t n, double *key)
{
    int32_t rank = tok_merge_rank(t, s, split, n);
    *key = rank;
    return rank >= 0;
}

/* BPE inside one byte-encoded word w[0..wn). */
static int encode_word(const tokenizer *t, const char *w, size_t wn, tok_sym *syms, tok_pair_heap *h,
                       tok_vec *out)
{
    if (t->ignore_merges) {
        int32_t id = tok_lookup(t, w, wn);
        if (id >= 0)
            return tok_vec_push(out, id);
    }
    int32_t ns = tok_merge_all(t, w, wn, syms, merge_rank, h);
    if (ns < 0)
        return ns;
    int rc = 0;
    for (int32_t i = 0; i != -1 && ns && !rc; i = syms[i].next) {
        int32_t id = tok_lookup(t, w + syms[i].start, syms[i].n);
        if (id >= 0) {
            rc = tok_vec_push(out, id);
            continue;
        }
        /* a piece that is no token: whatever of its single bytes are (llama.cpp) */
        for (uint32_t k = 0; k < syms[i].n && !rc; k++) {
            int32_t bid = tok_lookup(t, w + syms[i].start + k, 1);
            if (bid >= 0)
                rc = tok_vec_push(out, bid);
        }
    }
    return rc;
}

int tok_bpe_encode(const tokenizer *t, const char *s, size_t n, tok_vec *out)
{
    uint32_t *cps = malloc((n + 1) * sizeof *cps);
    size_t *ends = malloc((n + 1) * sizeof *ends);
    size_t *tmp = malloc((n + 1) * sizeof *tmp);
    char *w = NULL;
    tok_sym *syms = NULL;
    tok_pair_heap h = {0};
    int rc = 0;
    if (!cps || !ends || !tmp) {
        rc = -ENOMEM;
        goto done;
    }
    size_t nc = 0;
    for (size_t off = 0; off < n;)
        cps[nc++] = utf8_decode((const uint8_t *)s, n, &off);
    size_t nw = pretok_split(t->pre, cps, nc, ends, tmp);
    size_t longest = 0;
    for (size_t i = 0, start = 0; i < nw; start = ends[i++])
        if (ends[i] - start > longest)
            longest = ends[i] - start;
    /* a code point is at most 4 bytes, and a byte at most 2 once spelled */
    w = malloc(8 * longest + 1);
    syms = malloc((4 * longest + 1) * sizeof *syms);
    if (!w || !syms) {
        rc = -ENOMEM;
        goto done;
    }
    for (size_t i = 0, start = 0; i < nw && !rc; start = ends[i++]) {
        size_t wn = 0;
        for (size_t k = start; k < ends[i]; k++) {
            char u[4];
            int ul = utf8_encode(cps[k], u);
            for (int j = 0; j < ul; j++)
                wn += (size_t)utf8_encode(tok_byte_to_cp((uint8_t)u[j]), w + wn);
        }
        rc = encode_word(t, w, wn, syms, &h, out);
    }
done:
    free(cps);
    free(ends);
    free(tmp);
    free(w);
    free(syms);
    free(h.v);
    return rc;
}

/* One piece of Gemma 4 text: ranked merges over its characters; a merged piece that is
 * no token is spelled with the <0xXX> byte tokens. */
static int spm_merges_piece(const tokenizer *t, const char *w, size_t wn, tok_sym *syms, tok_pair_heap *h,
                            tok_vec *out)
{
    int32_t ns = tok_merge_all(t, w, wn, syms, merge_rank, h);
    if (ns < 0)
        return ns;
    int rc = 0;
    for (int32_t i = 0; i != -1 && ns && !rc; i = syms[i].next) {
        int32_t id = tok_lookup(t, w + syms[i].start, syms[i].n);
        if (id >= 0) {
            rc = tok_vec_push(out, id);
            continue;
        }
        for (uint32_t k = 0; k < syms[i].n && !rc; k++) {
            char b[8];
            snprintf(b, sizeof b, "<0x%02X>", (uint8_t)w[syms[i].start + k]);
            int32_t bid = tok_lookup(t, b, 6);
            if (bid < 0)
                bid = t->unk;
            if (bid >= 0)
                rc = tok_vec_push(out, bid);
        }
    }
    return rc;
}

int tok_spm_merges_encode(const tokenizer *t, const char *s, size_t n, tok_vec *out)
{
    char *e = malloc(3 * n + 1);
    tok_sym *syms = malloc((3 * n + 1) * sizeof *syms);
    tok_pair_heap h = {0};
    int rc = 0;
    if (!e || !syms) {
        rc = -ENOMEM;
        goto done;
    }
    size_t en = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(e + en, "\xe2\x96\x81", 3);
            en += 3;
        } else {
            e[en++] = s[i];
        }
    }
    /* runs of newlines, and the text between them */
    for (size_t start = 0, end; start < en && !rc; start = end) {
        bool nl = e[start] == '\n';
        for (end = start; end < en && (e[end] == '\n') == nl; end++)
            ;
        int32_t id = nl ? tok_lookup(t, e + start, end - start) : -1;
        rc = id >= 0 ? tok_vec_push(out, id) : spm_merges_piece(t, e + start, end - start, syms, &h, out);
    }
done:
    free(e);
    free(syms);
    free(h.v);
    return rc;
}
