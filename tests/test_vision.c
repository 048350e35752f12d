/* test_vision.c — images into Gemma 3 and Gemma 4 against llama.cpp's vision fixtures.
 *
 * Every fixtures/<model>/vision-* case: the image file decodes to image_rgb.u8 exactly
 * (PNG and JPEG); preprocessing image_rgb.u8 gives pixels.f32 (max abs 1e-4); the
 * projector turns our own pixels into image_embd.f32 (relative RMS 5e-3 per row); the
 * text model, fed the prompt's tokens and our image rows as llama.cpp's chunks (text,
 * the image non-causal, text), gives the stored logits within the text model's
 * tolerance and the greedy continuation by the margin rule.
 * Then the error paths of decoding and loading.
 */
#include "testutil.h"

#include "clip.h"
#include "fixture.h"
#include "backend.h"
#include "gguf.h"
#include "image.h"
#include "kv.h"
#include "model.h"
#include "quant.h"
#include "vision.h"
#include "vision_cases.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* (1) the image file decodes to image_rgb.u8 exactly, PNG and JPEG */
START_TEST(decode)
{
    const vcase *c = &vcases[_i];
    size_t len;
    char *file = test_read_file(c->image, &len);
    ck_assert_msg(file, "cannot read %s", c->image);
    image_rgb img;
    llmfs_error err = {0};
    ck_assert_msg(image_decode(file, len, &img, &err) == 0, "%s: %s", c->image, err.msg);
    image_rgb ref = vcase_stored_rgb(c);
    ck_assert_int_eq(img.nx, ref.nx);
    ck_assert_int_eq(img.ny, ref.ny);
    int worst = 0;
    size_t off = 0, far = 0, n = (size_t)ref.nx * ref.ny * 3;
    for (size_t i = 0; i < n; i++) {
        int d = abs((int)img.rgb[i] - (int)ref.rgb[i]);
        off += d != 0;
        far += d > 1;
        worst = d > worst ? d : worst;
    }
    fprintf(stderr, "%s: decoded %dx%d, %zu bytes differ from stb_image's, %zu by more than 1, at most %d\n",
            c->name, img.nx, img.ny, off, far, worst);
    /* JPEG too: 4:4:4 pictures go through stb_image's own IDCT and colour conversion
     * (image.c), so any byte off is a regression */
    ck_assert_msg(off == 0, "%s: %zu bytes differ, %zu by more than 1, at most %d", c->name, off, far, worst);
    image_free(&img);
    image_free(&ref);
    free(file);
}
END_TEST

/* (2) preprocessing image_rgb.u8 gives pixels.f32 */
START_TEST(preprocess)
{
    const vcase *c = &vcases[_i];
    clip_model *cm = vcase_clip(c->mmproj, NULL);
    image_rgb img = vcase_stored_rgb(c);
    float *px;
    int w, h;
    llmfs_error err = {0};
    ck_assert(clip_preprocess(cm, &img, c->min_tok, c->max_tok, &px, &w, &h, &err) == 0);
    ck_assert_int_eq(w, c->pw);
    ck_assert_int_eq(h, c->ph);
    ck_assert_int_eq(clip_n_tokens(cm, w, h), c->n_img);
    size_t len;
    float *ref = vcase_file(c, "pixels.f32", &len);
    ck_assert_uint_eq(len, sizeof(float) * 3 * (size_t)w * h);
    double worst = 0;
    for (size_t i = 0; i < (size_t)3 * w * h; i++)
        worst = fmax(worst, fabs((double)px[i] - ref[i]));
    fprintf(stderr, "%s: pixels %dx%d, max abs difference %.3g\n", c->name, w, h, worst);
    ck_assert_msg(worst <= 1e-4, "%s: pixels differ by %g", c->name, worst);
    free(ref);
    free(px);
    image_free(&img);
    clip_free(cm);
}
END_TEST

/* (3) tower + projector: image_embd.f32 */
START_TEST(embeddings)
{
    const vcase *c = &vcases[_i];
    clip_model *cm = vcase_clip(c->mmproj, NULL);
    ck_assert_int_eq(clip_hp(cm)->n_embd_out, c->n_embd);
    float *out = vcase_encode(c, cm);
    vcase_check_embd(c, out);
    free(out);
    clip_free(cm);
}
END_TEST

/* (4) the text model with our image rows: stored logits and the greedy continuation;
 * first, prompt.txt with its marker gives tokens.txt */
START_TEST(text_logits)
{
    const vcase *c = &vcases[_i];
    clip_model *cm = vcase_clip(c->mmproj, NULL);
    float *embd = vcase_encode(c, cm);
    clip_free(cm);
    model_opts o = {.n_threads = 2, .n_threads_batch = 2};
    llmfs_error err = {0};
    model *m = model_load(c->model, &o, &err);
    ck_assert_msg(m, "%s: %s", c->model, err.msg);
    char p[1200];
    int32_t *tok;
    snprintf(p, sizeof p, "%.1000s/tokens.txt", c->dir);
    int n_tok = test_read_ints(p, &tok);
    /* prompt.txt with its marker gives tokens.txt: the text around the image, the
     * projector's begin/end strings, one -1 per image row */
    {
        size_t plen;
        char *prompt = vcase_file(c, "prompt.txt", &plen);
        char *text = strndup(prompt, plen);
        clip_model *cm2 = vcase_clip(c->mmproj, NULL);
        const char *beg, *end;
        vision_markers(cm2, &beg, &end);
        vision_embd ve = {c->n_img, c->n_embd, c->nx, c->ny, embd};
        const vision_embd *one = &ve;
        int32_t *vt;
        vision_span *sp;
        int nv = vision_tokenize(m->tok, text, "<__media__>", beg, end, &one, 1, true, &vt, &sp, &err);
        ck_assert_msg(nv == n_tok, "%s: %d tokens, llama.cpp %d (%s)", c->name, nv, n_tok, err.msg);
        for (int i = 0; i < n_tok; i++)
            ck_assert_msg(vt[i] == tok[i], "%s: token %d is %d, llama.cpp %d", c->name, i, vt[i], tok[i]);
        ck_assert_int_eq(sp[0].start, c->img_pos);
        ck_assert_int_eq(sp[0].n, c->n_img);
        ck_assert_ptr_eq(sp[0].rows, embd);
        /* a marker without an image, an image without a marker */
        ck_assert_int_eq(vision_tokenize(m->tok, text, "<__media__>", beg, end, &one, 0, true, &vt, &sp, &err), -EINVAL);
        ck_assert_int_eq(vision_tokenize(m->tok, "no marker", "<__media__>", beg, end, &one, 1, true, &vt, &sp, &err), -EINVAL);
        free(vt);
        free(sp);
        clip_free(cm2);
        free(text);
        free(prompt);
    }

    free(tok);
    model_free(m);
    vcase_check_text(c, embd, 0);
    free(embd);
}
END_TEST

/* (5) bad input: refused with a reason, never a crash */
START_TEST(decode_errors)
{
    llmfs_error err = {0};
    image_rgb img;
    ck_assert_int_eq(image_decode("hello", 5, &img, &err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "not a PNG or JPEG"));
    /* every truncation of a real PNG and JPEG */
    static const char *const files[] = {"images/checker.png", "images/checker.jpg"};
    for (int f = 0; f < 2; f++) {
        char p[1024];
        test_shared_path(files[f], p, sizeof p);
        size_t len;
        char *buf = test_read_file(p, &len);
        ck_assert(buf);
        for (size_t cut = 0; cut < len; cut += cut < 64 ? 1 : 97) {
            int rc = image_decode(buf, cut, &img, &err);
            if (rc == 0) /* libjpeg pads a cut-off scan with grey: still an image */
                image_free(&img);
            else
                ck_assert_msg(rc == -EINVAL && err.msg[0], "cut at %zu: %d %s", cut, rc, err.msg);
        }
        /* flipped bytes in the data */
        for (size_t at = 40; at < len; at += 131) {
            char save = buf[at];
            buf[at] ^= 0x5a;
            if (image_decode(buf, len, &img, &err) == 0)
                image_free(&img);
            buf[at] = save;
        }
        free(buf);
    }
    /* a text model is not a projector */
    char p[1024];
    test_shared_path("models/gemma3-tiny-q8_0.gguf", p, sizeof p);
    ck_assert_ptr_null(clip_load(p, 1, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "not a projector"));
    ck_assert_ptr_null(clip_load("/nonexistent.gguf", 1, &err));
}
END_TEST

/* (6) Gemma 4 sizes: the token limits move the preprocessed size as llama.cpp's rule */
START_TEST(gemma4_sizes)
{
    char p[1024];
    test_shared_path("models/gemma4-tiny-mmproj-f16.gguf", p, sizeof p);
    clip_model *cm = vcase_clip(p, NULL);
    int w, h;
    clip_image_dims(cm, 160, 120, 4, 8, &w, &h); /* the fixture */
    ck_assert_int_eq(w, 72);
    ck_assert_int_eq(h, 48);
    clip_image_dims(cm, 90, 150, 4, 8, &w, &h);
    ck_assert_int_eq(w, 48);
    ck_assert_int_eq(h, 72);
    /* defaults 40..280: 168x120 rounds to 35 tokens, too few: scaled by sqrt(40 / 35) */
    clip_image_dims(cm, 160, 120, 0, 0, &w, &h);
    ck_assert_int_eq(w, 192);
    ck_assert_int_eq(h, 144);
    ck_assert_int_eq(clip_n_tokens(cm, w, h), 48);
    clip_image_dims(cm, 10, 10, 0, 0, &w, &h); /* small: scaled up to at least 40 tokens */
    ck_assert_int_ge(clip_n_tokens(cm, w, h), 40);
    clip_image_dims(cm, 4000, 3000, 0, 0, &w, &h); /* large: scaled down to at most 280 */
    ck_assert_int_le(clip_n_tokens(cm, w, h), 280);
    clip_free(cm);
}
END_TEST

/* ---------------------------------------------------------------- plain reference */

/* A tensor of the projector file as doubles (malloc'd), NULL when absent */
static double *ref_tensor(gguf_file *f, const char *name, int64_t *n_out)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    if (!t)
        return NULL;
    int64_t n = t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3];
    float *tmp = malloc(sizeof(float) * (size_t)n);
    double *d = malloc(sizeof(double) * (size_t)n);
    ck_assert(tmp && d);
    dequantize_row(t->type, t->data, tmp, n);
    for (int64_t i = 0; i < n; i++)
        d[i] = tmp[i];
    free(tmp);
    if (n_out)
        *n_out = n;
    return d;
}

static double *ref_blk(gguf_file *f, int il, const char *suffix)
{
    char name[96];
    snprintf(name, sizeof name, "v.blk.%d.%s", il, suffix);
    return ref_tensor(f, name, NULL);
}

/* out[r][o] = sum_i w[o][i] x[r][i], w [no][ni] */
static void ref_matmul(double *out, const double *w, const double *x, int rows, int ni, int no)
{
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < no; o++) {
            double s = 0;
            for (int i = 0; i < ni; i++)
                s += w[(size_t)o * ni + i] * x[(size_t)r * ni + i];
            out[(size_t)r * no + o] = s;
        }
}

static void ref_rms(double *x, const double *w, int rows, int d, double eps)
{
    for (int r = 0; r < rows; r++) {
        double s = 0, *v = x + (size_t)r * d;
        for (int i = 0; i < d; i++)
            s += v[i] * v[i];
        double k = 1.0 / sqrt(s / d + eps);
        for (int i = 0; i < d; i++)
            v[i] *= k * (w ? w[i] : 1.0);
    }
}

static double ref_clamp(double v, double lo, double hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

/* A clamped linear of layer il: input and output clipped by the file's scalars */
static void ref_linear(gguf_file *f, int il, const char *lin, double *out, const double *x, int rows, int ni, int no)
{
    char name[96];
    double lim[4] = {-1e300, 1e300, -1e300, 1e300};
    static const char *const part[4] = {"input_min", "input_max", "output_min", "output_max"};
    for (int j = 0; j < 4; j++) {
        snprintf(name, sizeof name, "v.blk.%d.%s.%s", il, lin, part[j]);
        double *v = ref_tensor(f, name, NULL);
        if (v)
            lim[j] = v[0];
        free(v);
    }
    double *xi = malloc(sizeof(double) * (size_t)rows * ni);
    ck_assert(xi);
    for (size_t i = 0; i < (size_t)rows * ni; i++)
        xi[i] = ref_clamp(x[i], lim[0], lim[1]);
    snprintf(name, sizeof name, "v.blk.%d.%s.weight", il, lin);
    double *w = ref_tensor(f, name, NULL);
    ref_matmul(out, w, xi, rows, ni, no);
    for (size_t i = 0; i < (size_t)rows * no; i++)
        out[i] = ref_clamp(out[i], lim[2], lim[3]);
    free(w);
    free(xi);
}

/* NEOX rotation of n dims at off by position pos, base 100 */
static void ref_rope(double *h, int off, int n, int pos)
{
    for (int i = 0; i < n / 2; i++) {
        double th = pos * pow(100.0, -2.0 * i / n), a = h[off + i], b = h[off + i + n / 2];
        h[off + i] = a * cos(th) - b * sin(th);
        h[off + i + n / 2] = a * sin(th) + b * cos(th);
    }
}

/* The gemma4v tower and projector in double precision, straight from the description in
 * clip.h, on pixels [3][h][w]: out [T][O] */
static void ref_gemma4v(gguf_file *f, const clip_hparams *hp, const float *px, int w, int h, double *out)
{
    const int ps = hp->patch, cols = w / ps, rows = h / ps, P = cols * rows, E = hp->n_embd, F = hp->n_ff;
    const int H = hp->n_head, D = hp->head_dim, K = 3 * ps * ps, O = hp->n_embd_out;
    const double eps = hp->eps;
    double *x = calloc((size_t)P * E, sizeof(double)), *hb = calloc((size_t)P * E, sizeof(double));
    double *q = calloc((size_t)P * E, sizeof(double)), *k = calloc((size_t)P * E, sizeof(double));
    double *v = calloc((size_t)P * E, sizeof(double)), *att = calloc((size_t)P * E, sizeof(double));
    double *g = calloc((size_t)P * F, sizeof(double)), *u = calloc((size_t)P * F, sizeof(double));
    double *patch = calloc((size_t)P * K, sizeof(double)), *sc = calloc((size_t)P, sizeof(double));
    ck_assert(x && hb && q && k && v && att && g && u && patch && sc);
    for (int p = 0; p < P; p++)
        for (int c = 0; c < 3; c++)
            for (int ky = 0; ky < ps; ky++)
                for (int kx = 0; kx < ps; kx++)
                    patch[(size_t)p * K + (c * ps + ky) * ps + kx] =
                        2.0 * px[(size_t)c * w * h + (size_t)((p / cols) * ps + ky) * w + (p % cols) * ps + kx] - 1.0;
    double *wc = ref_tensor(f, "v.patch_embd.weight", NULL), *pos = ref_tensor(f, "v.position_embd.weight", NULL);
    const gguf_tensor *pt = gguf_find_tensor(f, "v.position_embd.weight");
    ref_matmul(x, wc, patch, P, K, E);
    for (int p = 0; p < P; p++)
        for (int i = 0; i < E; i++)
            x[(size_t)p * E + i] += pos[(size_t)(p % cols) * E + i] + pos[((size_t)pt->ne[1] + p / cols) * E + i];
    free(wc);
    free(pos);
    for (int il = 0; il < hp->n_layer; il++) {
        double *ln1 = ref_blk(f, il, "ln1.weight"), *ln2 = ref_blk(f, il, "ln2.weight");
        double *qn = ref_blk(f, il, "attn_q_norm.weight"), *kn = ref_blk(f, il, "attn_k_norm.weight");
        double *pa = ref_blk(f, il, "attn_post_norm.weight"), *pf = ref_blk(f, il, "ffn_post_norm.weight");
        double *os = ref_blk(f, il, "out_scale.weight");
        memcpy(hb, x, sizeof(double) * (size_t)P * E);
        ref_rms(hb, ln1, P, E, eps);
        ref_linear(f, il, "attn_q", q, hb, P, E, E);
        ref_linear(f, il, "attn_k", k, hb, P, E, E);
        ref_linear(f, il, "attn_v", v, hb, P, E, E);
        ref_rms(q, qn, P * H, D, eps);
        ref_rms(k, kn, P * H, D, eps);
        ref_rms(v, NULL, P * H, D, eps);
        for (int p = 0; p < P; p++)
            for (int hd = 0; hd < H; hd++) {
                ref_rope(q + (size_t)p * E + hd * D, 0, D / 2, p % cols);
                ref_rope(q + (size_t)p * E + hd * D, D / 2, D / 2, p / cols);
                ref_rope(k + (size_t)p * E + hd * D, 0, D / 2, p % cols);
                ref_rope(k + (size_t)p * E + hd * D, D / 2, D / 2, p / cols);
            }
        for (int hd = 0; hd < H; hd++)
            for (int i = 0; i < P; i++) { /* scale 1, every patch sees every patch */
                double mx = -1e300, sum = 0;
                for (int j = 0; j < P; j++) {
                    double s = 0;
                    for (int d = 0; d < D; d++)
                        s += q[(size_t)i * E + hd * D + d] * k[(size_t)j * E + hd * D + d];
                    sc[j] = s;
                    mx = fmax(mx, s);
                }
                for (int j = 0; j < P; j++)
                    sum += sc[j] = exp(sc[j] - mx);
                for (int d = 0; d < D; d++) {
                    double a = 0;
                    for (int j = 0; j < P; j++)
                        a += sc[j] / sum * v[(size_t)j * E + hd * D + d];
                    att[(size_t)i * E + hd * D + d] = a;
                }
            }
        ref_linear(f, il, "attn_out", hb, att, P, E, E);
        ref_rms(hb, pa, P, E, eps);
        for (size_t i = 0; i < (size_t)P * E; i++)
            x[i] += hb[i];
        memcpy(hb, x, sizeof(double) * (size_t)P * E);
        ref_rms(hb, ln2, P, E, eps);
        ref_linear(f, il, "ffn_gate", g, hb, P, E, F);
        ref_linear(f, il, "ffn_up", u, hb, P, E, F);
        for (size_t i = 0; i < (size_t)P * F; i++) /* gelu_quick */
            g[i] = g[i] / (1.0 + exp(-1.702 * g[i])) * u[i];
        ref_linear(f, il, "ffn_down", hb, g, P, F, E);
        ref_rms(hb, pf, P, E, eps);
        for (size_t i = 0; i < (size_t)P * E; i++)
            x[i] = (x[i] + hb[i]) * (os ? os[0] : 1.0);
        free(ln1), free(ln2), free(qn), free(kn), free(pa), free(pf), free(os);
    }
    const int tc = cols / 3, T = tc * (rows / 3);
    double *sb = ref_tensor(f, "v.std_bias", NULL), *ss = ref_tensor(f, "v.std_scale", NULL);
    double *pj = ref_tensor(f, "mm.input_projection.weight", NULL);
    for (int t = 0; t < T; t++) {
        double *o = hb + (size_t)t * E;
        for (int i = 0; i < E; i++) {
            double s = 0;
            for (int dy = 0; dy < 3; dy++)
                for (int dx = 0; dx < 3; dx++)
                    s += x[((size_t)((t / tc) * 3 + dy) * cols + (t % tc) * 3 + dx) * E + i];
            o[i] = (s / 9.0 * sqrt((double)E) - sb[i]) * ss[i];
        }
    }
    ref_rms(hb, NULL, T, E, eps);
    ref_matmul(out, pj, hb, T, E, O);
    free(sb), free(ss), free(pj);
    free(x), free(hb), free(q), free(k), free(v), free(att), free(g), free(u), free(patch), free(sc);
}

/* (7) the vectorised tower against the plain one, at sizes the fixtures do not have */
START_TEST(tower_plain_reference)
{
    static const int sizes[][2] = {{24, 24}, {96, 72}, {48, 120}};
    char p[1024];
    test_shared_path("models/gemma4-tiny-mmproj-f16.gguf", p, sizeof p);
    clip_model *cm = vcase_clip(p, NULL);
    const clip_hparams *hp = clip_hp(cm);
    llmfs_error err = {0};
    gguf_file *f = gguf_open(p, &(gguf_open_opts){0}, &err);
    ck_assert(f);
    const int w = sizes[_i][0], h = sizes[_i][1], T = clip_n_tokens(cm, w, h), O = hp->n_embd_out;
    float *px = malloc(sizeof(float) * 3 * (size_t)w * h), *out = malloc(sizeof(float) * (size_t)T * O);
    double *ref = malloc(sizeof(double) * (size_t)T * O);
    ck_assert(px && out && ref);
    test_rand_seed(77 + (uint64_t)_i);
    for (int i = 0; i < 3 * w * h; i++)
        px[i] = test_uniform() * 2.0f - 1.0f;
    ck_assert_msg(clip_encode(cm, px, w, h, out, &err) == 0, "%s", err.msg);
    ref_gemma4v(f, hp, px, w, h, ref);
    double worst = 0;
    for (int t = 0; t < T; t++) {
        float rr[4096];
        for (int i = 0; i < O; i++)
            rr[i] = (float)ref[(size_t)t * O + i];
        worst = fmax(worst, logits_rel_rms(out + (size_t)t * O, rr, O));
    }
    fprintf(stderr, "gemma4v %dx%d (%d tokens): largest relative RMS error against the plain tower %.3g\n", w, h,
            T, worst);
    ck_assert_msg(worst <= 5e-3, "%dx%d: off by %g", w, h, worst);
    /* a size the tower cannot take */
    ck_assert_int_eq(clip_encode(cm, px, w + 1, h, out, &err), -EINVAL);
    free(px), free(out), free(ref);
    gguf_close(f);
    clip_free(cm);
}
END_TEST

/* (8) a text model with layers on a backend without non-causal attention: an image
 * batch is refused with a reason (the session path refuses the prompt before it runs)
 * rather than computed with the wrong mask. The GPU backend has the op (gpu_vision runs
 * the fixtures there); here it is taken away from it. */
START_TEST(gpu_layers_refuse_images)
{
    if (backend_gpu_count() <= 0) {
        fprintf(stderr, "gpu_layers_refuse_images: no GPU (or simulated device) in this build: nothing to check\n");
        return;
    }
    char p[1024];
    test_shared_path("models/gemma3-tiny-q8_0.gguf", p, sizeof p);
    model_opts o = {.n_threads = 2, .n_threads_batch = 2, .ngl = 99};
    llmfs_error err = {0};
    model *m = model_load(p, &o, &err);
    ck_assert_msg(m, "%s", err.msg);
    ck_assert_ptr_null(model_non_causal_missing(m));
    const struct backend_ops *had = m->gpu->ops;
    struct backend_ops without = *had;
    without.non_causal = NULL;
    m->gpu->ops = &without;
    ck_assert_str_eq(model_non_causal_missing(m), had->name);
    kv_cache *kv = test_kv_cache(m, 64, 1, T_F16, T_F16);
    int32_t tok[4] = {-1, -1, -1, -1}, pos[4] = {0, 1, 2, 3}, seq[4] = {0};
    float *rows = calloc((size_t)4 * m->hp.n_embd, sizeof(float));
    fwd_batch b = {4, tok, pos, seq, NULL};
    ck_assert_int_eq(model_forward_embd(m, kv, &b, rows, true, NULL, false, &err), -ENOTSUP);
    ck_assert_ptr_nonnull(strstr(err.msg, "non-causal"));
    m->gpu->ops = had;
    free(rows);
    kv_cache_free(kv);
    model_free(m);
}
END_TEST

int main(void)
{
    if (!test_shared_dir())
        test_skip_no_shared("test_vision");
    vcase_find();
    fprintf(stderr, "*** vision: %d fixture cases\n", n_vcases);
    Suite *s = suite_create("vision");
    TCase *tc = tcase_create("vision");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, decode, 0, n_vcases);
    tcase_add_loop_test(tc, preprocess, 0, n_vcases);
    tcase_add_loop_test(tc, embeddings, 0, n_vcases);
    tcase_add_loop_test(tc, text_logits, 0, n_vcases);
    tcase_add_test(tc, decode_errors);
    tcase_add_test(tc, gemma4_sizes);
    tcase_add_loop_test(tc, tower_plain_reference, 0, 3);
    tcase_add_test(tc, gpu_layers_refuse_images);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
