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

/* SentencePiece merges the pair whose concatenation is the best-scored token first. */
static bool merge_score(const tokenizer *t, const char *s, uint32_t split, uint32_t n, double *key)
{
    (void)split;
    int32_t id = tok_lookup(t, s, n);
    if (id < 0)
        return false;
    *key = -(double)t->score[id];
    return true;
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
    tok_sym *syms = NULL;
    tok_pair_heap h = {0};
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

    int32_t ns = tok_merge_all(t, buf, bl, syms, merge_score, &h);
    if (ns < 0) {
        rc = ns;
        goto done;
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
