/* tok_encode.c — text to ids: special tokens first, then the vocabulary's own model on
 * the stretches of plain text between them, with BOS/EOS as the vocabulary asks. */
#include "tok_internal.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A piece of the input: plain text [off, off+len), or a token already decided. */
typedef struct frag {
    size_t off, len;
    int32_t id; /* -1 for text */
} frag;

typedef struct frag_vec {
    frag *v;
    size_t n, cap;
} frag_vec;

static int frag_push(frag_vec *fv, size_t off, size_t len, int32_t id)
{
    if (fv->n == fv->cap) {
        size_t cap = fv->cap ? fv->cap * 2 : 16;
        frag *p = realloc(fv->v, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        fv->v = p;
        fv->cap = cap;
    }
    fv->v[fv->n++] = (frag){off, len, id};
    return 0;
}

static bool is_c_space(char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r');
}

/* Cuts every text fragment at each occurrence of token id, leftmost first, the way
 * llama.cpp does it one special token at a time (longest token first). */
static int split_on_token(const tokenizer *t, int32_t id, const char *text, frag_vec *in, frag_vec *out)
{
    const char *tok = t->text + t->off[id];
    size_t tl = t->len[id];
    out->n = 0;
    for (size_t i = 0; i < in->n; i++) {
        frag f = in->v[i];
        if (f.id >= 0 || f.len < tl) {
            if (frag_push(out, f.off, f.len, f.id))
                return -ENOMEM;
            continue;
        }
        size_t pos = f.off, end = f.off + f.len;
        while (pos < end) {
            const char *m = memmem(text + pos, end - pos, tok, tl);
            if (!m)
                break;
            size_t at = (size_t)(m - text);
            size_t left_end = at;
            if (t->flags[id] & TOKF_LSTRIP)
                while (left_end > pos && is_c_space(text[left_end - 1]))
                    left_end--;
            if (left_end > pos && frag_push(out, pos, left_end - pos, -1))
                return -ENOMEM;
            if (frag_push(out, 0, 0, id))
                return -ENOMEM;
            pos = at + tl;
            if (t->flags[id] & TOKF_RSTRIP)
                while (pos < end && is_c_space(text[pos]))
                    pos++;
        }
        if (pos < end && frag_push(out, pos, end - pos, -1))
            return -ENOMEM;
    }
    return 0;
}

int tokenizer_encode(const tokenizer *t, const char *text, size_t len, bool add_special,
                     bool parse_special, int32_t *out, int cap)
{
    if (!t || (!text && len) || cap < 0 || (cap > 0 && !out))
        return -EINVAL;
    frag_vec a = {0}, b = {0};
    tok_vec ids = {0};
    int rc = 0;
    if (len > 0 && frag_push(&a, 0, len, -1))
        rc = -ENOMEM;
    for (int i = 0; i < t->n_special && !rc && a.n; i++) {
        int32_t id = t->special[i];
        /* Without parse_special, user-defined tokens are still matched (as in
         * llama.cpp and Hugging Face's tokenizers); control and unknown ones are text. */
        if (!parse_special && t->type[id] != TOKT_USER_DEFINED)
            continue;
        if (t->len[id] == 0)
            continue;
        rc = split_on_token(t, id, text, &a, &b);
        frag_vec tmp = a;
        a = b;
        b = tmp;
    }
    if (!rc && add_special && t->add_bos)
        rc = tok_vec_push(&ids, t->bos);
    bool prev_special = true; /* SentencePiece adds its space at the start and after special tokens */
    for (size_t i = 0; i < a.n && !rc; i++) {
        frag f = a.v[i];
        if (f.id >= 0) {
            rc = tok_vec_push(&ids, f.id);
            prev_special = true;
        } else if (t->spm_merges) {
            rc = tok_spm_merges_encode(t, text + f.off, f.len, &ids);
        } else if (t->kind == TOK_SPM) {
            rc = tok_spm_encode(t, text + f.off, f.len, t->add_space_prefix && prev_special, &ids);
            prev_special = false;
        } else {
            rc = tok_bpe_encode(t, text + f.off, f.len, &ids);
        }
    }
    if (!rc && add_special && t->add_eos)
        rc = tok_vec_push(&ids, t->eos);
    if (!rc && ids.n > (size_t)INT32_MAX)
        rc = -EOVERFLOW;
    if (!rc) {
        size_t n = ids.n < (size_t)cap ? ids.n : (size_t)cap;
        if (n)
            memcpy(out, ids.v, n * sizeof *out);
        rc = (int)ids.n;
    }
    free(a.v);
    free(b.v);
    free(ids.v);
    return rc;
}
