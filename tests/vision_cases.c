/* vision_cases.c — the vision fixtures and the checks test_vision and gpu_vision share
 * (vision_cases.h). */
#include "vision_cases.h"

#include "fixture.h"
#include "kv.h"
#include "model.h"
#include "quant.h"
#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

vcase vcases[16];
int n_vcases;

/* The cases are found before any test runs: a broken one ends the program. */
static void need(bool ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "vision fixture %s is incomplete\n", what);
        exit(1);
    }
}

static int meta_int(const char *meta, const char *key)
{
    char v[64];
    if (test_meta_get(meta, key, v, sizeof v)) {
        fprintf(stderr, "%s: no %s\n", meta, key);
        exit(1);
    }
    return atoi(v);
}

void vcase_find(void)
{
    char root[1024];
    test_shared_path("fixtures", root, sizeof root);
    static const char *const models[] = {"gemma3-tiny-q8_0", "gemma4-tiny-q8_0"};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++) {
        char mdir[1200];
        snprintf(mdir, sizeof mdir, "%.1000s/%s", root, models[i]);
        DIR *d = opendir(mdir);
        if (!d)
            continue;
        struct dirent *e;
        while ((e = readdir(d)) && n_vcases < 16) {
            if (strncmp(e->d_name, "vision-", 7))
                continue;
            vcase *c = &vcases[n_vcases++];
            snprintf(c->dir, sizeof c->dir, "%.900s/%.100s", mdir, e->d_name);
            snprintf(c->name, sizeof c->name, "%s/%s", models[i], e->d_name);
        }
        closedir(d);
    }
    for (int i = 0; i < n_vcases; i++) {
        vcase *c = &vcases[i];
        char meta[1100], v[256], rel[300];
        /* paths stay far below these sizes; the precisions say so to the compiler */
        snprintf(meta, sizeof meta, "%.1000s/meta.txt", c->dir);
        need(!test_meta_get(meta, "model", v, sizeof v), meta);
        snprintf(rel, sizeof rel, "models/%.250s", v);
        test_shared_path(rel, c->model, sizeof c->model);
        need(!test_meta_get(meta, "mmproj", v, sizeof v), meta);
        snprintf(rel, sizeof rel, "models/%.250s", v);
        test_shared_path(rel, c->mmproj, sizeof c->mmproj);
        need(!test_meta_get(meta, "image", v, sizeof v), meta);
        snprintf(rel, sizeof rel, "images/%.250s", v);
        test_shared_path(rel, c->image, sizeof c->image);
        c->nx = meta_int(meta, "image_nx");
        c->ny = meta_int(meta, "image_ny");
        c->n_img = meta_int(meta, "n_image_tokens");
        c->img_pos = meta_int(meta, "image_pos");
        c->n_embd = meta_int(meta, "n_embd");
        c->min_tok = meta_int(meta, "image_min_tokens");
        c->max_tok = meta_int(meta, "image_max_tokens");
        need(!test_meta_get(meta, "pixels_shape", v, sizeof v) && sscanf(v, "3 %d %d", &c->ph, &c->pw) == 2, meta);
    }
}

void *vcase_file(const vcase *c, const char *file, size_t *len)
{
    char p[1200];
    snprintf(p, sizeof p, "%.1000s/%.100s", c->dir, file);
    void *b = test_read_file(p, len);
    ck_assert_msg(b, "cannot read %s", p);
    return b;
}

clip_model *vcase_clip(const char *path, backend *be)
{
    llmfs_error err = {0};
    clip_model *cm = clip_load_on(path, 2, be, &err);
    ck_assert_msg(cm, "mmproj %s: %s", path, err.msg);
    return cm;
}

image_rgb vcase_stored_rgb(const vcase *c)
{
    size_t len;
    uint8_t *rgb = vcase_file(c, "image_rgb.u8", &len);
    ck_assert_uint_eq(len, (size_t)c->nx * c->ny * 3);
    return (image_rgb){c->nx, c->ny, rgb};
}

/* The image rows from the image file through our whole path (decode, preprocess, tower) */
float *vcase_encode(const vcase *c, clip_model *cm)
{
    size_t len;
    char *file = test_read_file(c->image, &len);
    ck_assert(file);
    image_rgb img;
    llmfs_error err = {0};
    ck_assert_msg(image_decode(file, len, &img, &err) == 0, "%s", err.msg);
    free(file);
    float *px;
    int w, h;
    ck_assert(clip_preprocess(cm, &img, c->min_tok, c->max_tok, &px, &w, &h, &err) == 0);
    image_free(&img);
    const int T = clip_n_tokens(cm, w, h);
    ck_assert_int_eq(T, c->n_img);
    float *out = malloc(sizeof(float) * (size_t)T * clip_hp(cm)->n_embd_out);
    ck_assert(out);
    ck_assert_msg(clip_encode(cm, px, w, h, out, &err) == 0, "encode: %s", err.msg);
    free(px);
    return out;
}

double vcase_check_embd(const vcase *c, const float *out)
{
    size_t len;
    float *ref = vcase_file(c, "image_embd.f32", &len);
    ck_assert_uint_eq(len, sizeof(float) * (size_t)c->n_img * c->n_embd);
    double worst = 0;
    for (int t = 0; t < c->n_img; t++)
        worst = fmax(worst, logits_rel_rms(out + (size_t)t * c->n_embd, ref + (size_t)t * c->n_embd, c->n_embd));
    fprintf(stderr, "%s: image_embd %d rows, largest relative RMS error %.3g\n", c->name, c->n_img, worst);
    ck_assert_msg(worst <= 5e-3, "%s: image_embd off by %g", c->name, worst);
    free(ref);
    return worst;
}

double vcase_check_text(const vcase *c, const float *embd, int ngl)
{
    model_opts o = {.n_threads = 2, .n_threads_batch = 2, .ngl = ngl};
    llmfs_error err = {0};
    model *m = model_load(c->model, &o, &err);
    ck_assert_msg(m, "%s: %s", c->model, err.msg);
    ck_assert_int_eq(m->hp.n_embd, c->n_embd);
    kv_cache *kv = test_kv_cache(m, 512, 1, T_F16, T_F16);
    const int V = m->hp.n_vocab;

    char p[1200];
    int32_t *tok, *greedy, *rows;
    float *margin;
    snprintf(p, sizeof p, "%.1000s/tokens.txt", c->dir);
    int n_tok = test_read_ints(p, &tok);
    snprintf(p, sizeof p, "%.1000s/greedy.txt", c->dir);
    int n_greedy = test_read_ints(p, &greedy);
    snprintf(p, sizeof p, "%.1000s/greedy_margin.txt", c->dir);
    ck_assert_int_eq(test_read_floats(p, &margin), n_greedy);
    snprintf(p, sizeof p, "%.1000s/logits_pos.txt", c->dir);
    int n_rows = test_read_ints(p, &rows);
    size_t len;
    float *ref = vcase_file(c, "logits.f32", &len);
    ck_assert_uint_eq(len, sizeof(float) * (size_t)n_rows * V);
    for (int i = 0; i < n_tok; i++)
        ck_assert_msg((tok[i] < 0) == (i >= c->img_pos && i < c->img_pos + c->n_img), "image positions");

    /* the prompt then greedy[:-1], as llama.cpp's chunks: text, the image, text */
    const int n_all = n_tok + n_greedy - 1;
    int32_t *all = malloc(sizeof(int32_t) * (size_t)n_all), *pos = malloc(sizeof(int32_t) * (size_t)n_all);
    int32_t *seq = calloc((size_t)n_all, sizeof(int32_t));
    int8_t *lg = malloc((size_t)n_all);
    float *out = malloc(sizeof(float) * (size_t)n_all * V);
    float *in = calloc((size_t)c->n_img * c->n_embd, sizeof(float));
    ck_assert(all && pos && seq && lg && out && in);
    memcpy(all, tok, sizeof(int32_t) * (size_t)n_tok);
    memcpy(all + n_tok, greedy, sizeof(int32_t) * (size_t)(n_greedy - 1));
    for (int i = 0; i < n_all; i++) {
        pos[i] = i;
        lg[i] = 1;
    }
    const int a = c->img_pos, b = c->img_pos + c->n_img;
    fwd_batch text1 = {a, all, pos, seq, lg};
    fwd_batch img = {c->n_img, all + a, pos + a, seq, lg};
    fwd_batch text2 = {n_all - b, all + b, pos + b, seq, lg};
    ck_assert_msg(model_forward(m, kv, &text1, out, false, &err) == 0, "%s", err.msg);
    ck_assert_msg(model_forward_embd(m, kv, &img, embd, true, out + (size_t)a * V, false, &err) == 0, "%s", err.msg);
    ck_assert_msg(model_forward(m, kv, &text2, out + (size_t)b * V, false, &err) == 0, "%s", err.msg);

    const char *slash = strrchr(c->model, '/');
    const double tol = fixture_tolerance(slash ? slash + 1 : c->model, "f16");
    double worst = 0;
    for (int r = 0; r < n_rows; r++) {
        const float *x = out + (size_t)rows[r] * V, *y = ref + (size_t)r * V;
        double e = logits_rel_rms(x, y, V);
        worst = fmax(worst, e);
        ck_assert_msg(e <= tol, "%s: position %d off by %g (tolerance %g)", c->name, rows[r], e, tol);
        int ax = 0, ay = 0;
        for (int v = 1; v < V; v++) {
            ax = x[v] > x[ax] ? v : ax;
            ay = y[v] > y[ay] ? v : ay;
        }
        if (logits_top2_margin(y, V) > 0.5f)
            ck_assert_msg(ax == ay, "%s: position %d argmax %d, llama.cpp %d", c->name, rows[r], ax, ay);
    }
    int checked = 0;
    for (int j = 0; j < n_greedy; j++) {
        const float *x = out + (size_t)(n_tok - 1 + j) * V;
        int ax = 0;
        for (int v = 1; v < V; v++)
            ax = x[v] > x[ax] ? v : ax;
        if (margin[j] > 0.5f) {
            ck_assert_msg(ax == greedy[j], "%s: greedy step %d chose %d, llama.cpp %d (margin %.2f)", c->name, j,
                          ax, greedy[j], margin[j]);
            checked++;
        }
    }
    fprintf(stderr, "%s (ngl %d): logits at %d positions, largest relative RMS error %.3g (tolerance %g); %d greedy steps checked\n",
            c->name, ngl, n_rows, worst, tol, checked);
    ck_assert_int_gt(checked, n_greedy / 2);
    free(all);
    free(pos);
    free(seq);
    free(lg);
    free(out);
    free(in);
    free(ref);
    free(rows);
    free(margin);
    free(greedy);
    free(tok);
    kv_cache_free(kv);
    model_free(m);
    return worst;
}
