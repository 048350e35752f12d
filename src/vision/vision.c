/* vision.c — encoding images for a prompt and the prompt's token sequence (vision.h). */
#include "vision.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void vision_embd_free(vision_embd *v)
{
    if (!v)
        return;
    free(v->rows);
    v->rows = NULL;
    v->n_tok = 0;
}

void vision_markers(const clip_model *c, const char **begin, const char **end)
{
    if (clip_hp(c)->projector == CLIP_GEMMA4V) {
        *begin = "<|image>";
        *end = "<image|>";
    } else {
        *begin = "<start_of_image>";
        *end = "<end_of_image>";
    }
}

int vision_encode(clip_model *c, const image_rgb *img, int min_tokens, int max_tokens, vision_embd *out,
                  llmfs_error *err)
{
    memset(out, 0, sizeof *out);
    float *px = NULL;
    int w, h;
    int rc = clip_preprocess(c, img, min_tokens, max_tokens, &px, &w, &h, err);
    if (rc)
        return rc;
    const int T = clip_n_tokens(c, w, h), E = clip_hp(c)->n_embd_out;
    out->rows = malloc(sizeof(float) * (size_t)T * E);
    if (!out->rows) {
        free(px);
        return llmfs_errorf(err, ENOMEM, "image: out of memory");
    }
    rc = clip_encode(c, px, w, h, out->rows, err);
    free(px);
    if (rc) {
        vision_embd_free(out);
        return rc;
    }
    out->n_tok = T;
    out->n_embd = E;
    out->nx = img->nx;
    out->ny = img->ny;
    return 0;
}

int vision_count_markers(const char *text, const char *marker)
{
    size_t ml = strlen(marker);
    int n = 0;
    for (const char *p = text; ml && (p = strstr(p, marker)); p += ml)
        n++;
    return n;
}

/* A growing token list */
typedef struct tok_buf {
    int32_t *v;
    int n, cap;
} tok_buf;

static int reserve(tok_buf *b, int more)
{
    if (b->n + more <= b->cap)
        return 0;
    int c = b->cap ? b->cap : 256;
    while (c < b->n + more)
        c *= 2;
    int32_t *p = realloc(b->v, sizeof *p * (size_t)c);
    if (!p)
        return -ENOMEM;
    b->v = p;
    b->cap = c;
    return 0;
}

/* Appends the tokens of text[0..len) (special tokens parsed, no BOS) */
static int append_text(tok_buf *b, const tokenizer *tok, const char *text, size_t len)
{
    if (!len)
        return 0;
    int room = (int)(len < 1000000 ? len : 1000000) + 8;
    for (;;) {
        if (reserve(b, room))
            return -ENOMEM;
        int n = tokenizer_encode(tok, text, len, false, true, b->v + b->n, b->cap - b->n);
        if (n < 0)
            return n;
        if (n <= b->cap - b->n) {
            b->n += n;
            return 0;
        }
        room = n;
    }
}

int vision_tokenize(const tokenizer *tok, const char *text, const char *marker, const char *begin,
                    const char *end, const vision_embd *const *imgs, int n_imgs, bool add_bos, int32_t **toks,
                    vision_span **spans, llmfs_error *err)
{
    const int n_mark = vision_count_markers(text, marker);
    if (n_mark != n_imgs)
        return llmfs_errorf(err, EINVAL, "the prompt has %d image marker%s (%s) for %d image%s", n_mark,
                            n_mark == 1 ? "" : "s", marker, n_imgs, n_imgs == 1 ? "" : "s");
    tok_buf b = {0};
    vision_span *sp = n_imgs ? calloc((size_t)n_imgs, sizeof *sp) : NULL;
    int rc = n_imgs && !sp ? -ENOMEM : 0;
    const int32_t bos = tokenizer_bos(tok);
    if (!rc && add_bos && bos >= 0 && !(rc = reserve(&b, 1)))
        b.v[b.n++] = bos;
    const size_t ml = strlen(marker);
    const char *p = text;
    for (int i = 0; !rc && i <= n_imgs; i++) {
        const char *at = i < n_imgs ? strstr(p, marker) : p + strlen(p);
        rc = append_text(&b, tok, p, (size_t)(at - p));
        if (rc || i == n_imgs)
            break;
        /* the image: begin string, its rows, end string */
        if ((rc = append_text(&b, tok, begin, strlen(begin))) || (rc = reserve(&b, imgs[i]->n_tok)))
            break;
        sp[i] = (vision_span){b.n, imgs[i]->n_tok, imgs[i]->rows};
        for (int k = 0; k < imgs[i]->n_tok; k++)
            b.v[b.n++] = -1;
        rc = append_text(&b, tok, end, strlen(end));
        p = at + ml;
    }
    /* a template that writes the BOS text itself: keep one */
    if (!rc && add_bos && bos >= 0 && b.n > 1 && b.v[1] == bos) {
        memmove(b.v, b.v + 1, sizeof *b.v * (size_t)(b.n - 1));
        b.n--;
        for (int i = 0; i < n_imgs; i++)
            sp[i].start--;
    }
    if (!rc && b.n == 0)
        rc = llmfs_errorf(err, EINVAL, "the prompt has no tokens");
    if (rc) {
        free(b.v);
        free(sp);
        return rc == -ENOMEM ? llmfs_errorf(err, ENOMEM, "out of memory")
               : err && err->code ? rc
                                  : llmfs_errorf(err, -rc, "the prompt could not be tokenized");
    }
    *toks = b.v;
    *spans = sp;
    return b.n;
}
