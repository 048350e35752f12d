/* test_vision.c — images into Gemma 3 and Gemma 4 against llama.cpp's vision fixtures.
 *
 * Every fixtures/<model>/vision-* case: the image file decodes to image_rgb.u8 (PNG
 * exactly, JPEG within one step per channel); preprocessing image_rgb.u8 gives
 * pixels.f32 (max abs 1e-4); the projector turns our own pixels into image_embd.f32
 * (relative RMS 5e-3 per row); the text model, fed the prompt's tokens and our image
 * rows as llama.cpp's chunks (text, the image non-causal, text), gives the stored logits
 * within the text model's tolerance and the greedy continuation by the margin rule.
 * Then the error paths of decoding and loading.
 */
#include "testutil.h"

#include "clip.h"
#include "fixture.h"
#include "image.h"
#include "kv.h"
#include "model.h"
#include "quant.h"
#include "vision.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct vcase {
    char dir[1024], name[300];
    char model[1024], mmproj[1024], image[1024];
    int nx, ny, n_img, img_pos, n_embd, min_tok, max_tok, ph, pw;
} vcase;

static vcase vcases[16];
static int n_vcases;

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

static void find_cases(void)
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

static void *read_case_file(const vcase *c, const char *file, size_t *len)
{
    char p[1200];
    snprintf(p, sizeof p, "%.1000s/%.100s", c->dir, file);
    void *b = test_read_file(p, len);
    ck_assert_msg(b, "cannot read %s", p);
    return b;
}

static clip_model *load_clip(const char *path)
{
    llmfs_error err = {0};
    clip_model *cm = clip_load(path, 2, &err);
    ck_assert_msg(cm, "mmproj %s: %s", path, err.msg);
    return cm;
}

/* The stored decoded image as an image_rgb (malloc'd pixels) */
static image_rgb stored_rgb(const vcase *c)
{
    size_t len;
    uint8_t *rgb = read_case_file(c, "image_rgb.u8", &len);
    ck_assert_uint_eq(len, (size_t)c->nx * c->ny * 3);
    return (image_rgb){c->nx, c->ny, rgb};
}

/* (1) the image file decodes to image_rgb.u8: PNG exactly, JPEG within one step */
START_TEST(decode)
{
    const vcase *c = &vcases[_i];
    size_t len;
    char *file = test_read_file(c->image, &len);
    ck_assert_msg(file, "cannot read %s", c->image);
    image_rgb img;
    llmfs_error err = {0};
    ck_assert_msg(image_decode(file, len, &img, &err) == 0, "%s: %s", c->image, err.msg);
    image_rgb ref = stored_rgb(c);
    ck_assert_int_eq(img.nx, ref.nx);
    ck_assert_int_eq(img.ny, ref.ny);
    bool jpeg = strstr(c->image, ".jpg") != NULL;
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
    /* JPEG: libjpeg's IDCT is one step from stb_image's per Y/Cb/Cr sample, which the
     * colour conversion scales by up to 1.77 (image.h); the image_embd test decodes the
     * JPEG itself, so what this costs downstream is checked there */
    ck_assert_msg(worst <= (jpeg ? 3 : 0), "%s: decoded bytes differ by %d", c->name, worst);
    ck_assert_msg(far * 200 <= (jpeg ? n : 0), "%s: %zu bytes differ by more than 1", c->name, far);
    image_free(&img);
    image_free(&ref);
    free(file);
}
END_TEST

/* (2) preprocessing image_rgb.u8 gives pixels.f32 */
START_TEST(preprocess)
{
    const vcase *c = &vcases[_i];
    clip_model *cm = load_clip(c->mmproj);
    image_rgb img = stored_rgb(c);
    float *px;
    int w, h;
    llmfs_error err = {0};
    ck_assert(clip_preprocess(cm, &img, c->min_tok, c->max_tok, &px, &w, &h, &err) == 0);
    ck_assert_int_eq(w, c->pw);
    ck_assert_int_eq(h, c->ph);
    ck_assert_int_eq(clip_n_tokens(cm, w, h), c->n_img);
    size_t len;
    float *ref = read_case_file(c, "pixels.f32", &len);
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

/* The image rows from the image file through our whole path (decode, preprocess, tower) */
static float *encode_case(const vcase *c, clip_model *cm)
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

/* (3) tower + projector: image_embd.f32 */
START_TEST(embeddings)
{
    const vcase *c = &vcases[_i];
    clip_model *cm = load_clip(c->mmproj);
    ck_assert_int_eq(clip_hp(cm)->n_embd_out, c->n_embd);
    float *out = encode_case(c, cm);
    size_t len;
    float *ref = read_case_file(c, "image_embd.f32", &len);
    ck_assert_uint_eq(len, sizeof(float) * (size_t)c->n_img * c->n_embd);
    double worst = 0;
    for (int t = 0; t < c->n_img; t++)
        worst = fmax(worst, logits_rel_rms(out + (size_t)t * c->n_embd, ref + (size_t)t * c->n_embd, c->n_embd));
    fprintf(stderr, "%s: image_embd %d rows, largest relative RMS error %.3g\n", c->name, c->n_img, worst);
    ck_assert_msg(worst <= 5e-3, "%s: image_embd off by %g", c->name, worst);
    free(ref);
    free(out);
    clip_free(cm);
}
END_TEST

/* (4) the text model with our image rows: stored logits and the greedy continuation */
START_TEST(text_logits)
{
    const vcase *c = &vcases[_i];
    clip_model *cm = load_clip(c->mmproj);
    float *embd = encode_case(c, cm);
    clip_free(cm);

    model_opts o = {.n_threads = 2, .n_threads_batch = 2};
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
    float *ref = read_case_file(c, "logits.f32", &len);
    ck_assert_uint_eq(len, sizeof(float) * (size_t)n_rows * V);
    for (int i = 0; i < n_tok; i++)
        ck_assert_msg((tok[i] < 0) == (i >= c->img_pos && i < c->img_pos + c->n_img), "image positions");

    /* prompt.txt with its marker gives tokens.txt: the text around the image, the
     * projector's begin/end strings, one -1 per image row */
    {
        size_t plen;
        char *prompt = read_case_file(c, "prompt.txt", &plen);
        char *text = strndup(prompt, plen);
        clip_model *cm2 = load_clip(c->mmproj);
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

    char model_file[256];
    const char *slash = strrchr(c->model, '/');
    snprintf(model_file, sizeof model_file, "%s", slash ? slash + 1 : c->model);
    const double tol = fixture_tolerance(model_file, "f16");
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
    fprintf(stderr, "%s: logits at %d positions, largest relative RMS error %.3g (tolerance %g); %d greedy steps checked\n",
            c->name, n_rows, worst, tol, checked);
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
    free(embd);
    kv_cache_free(kv);
    model_free(m);
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
    clip_model *cm = load_clip(p);
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

int main(void)
{
    if (!test_shared_dir())
        test_skip_no_shared("test_vision");
    find_cases();
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
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
