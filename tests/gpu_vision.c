/* gpu_vision.c — images with the text model on a GPU (a real one, or the simulated
 * device of tests/cudasim), against llama.cpp's vision fixtures: every vision-* case's
 * stored logits and greedy continuation with all text layers on the device, the image
 * batch attending non-causally there; the tower and projector on the device
 * (image_embd.f32), and the text model fed those rows. $LLMFS_FIXTURES (an extended regular expression
 * over "<model>/<case>") keeps only the matching cases. Exits 77 (skip) without a
 * usable GPU or without the test assets. */
#include "testutil.h"

#include "backend.h"
#include "clip.h"
#include "fit.h"
#include "image.h"
#include "kv.h"
#include "model.h"
#include "quant.h"
#include "vision.h"
#include "fixture.h"
#include "vision_cases.h"

#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* (1) the text model on the GPU, fed the CPU tower's image rows */
START_TEST(text_logits_gpu)
{
    const vcase *c = &vcases[_i];
    clip_model *cm = vcase_clip(c->mmproj, NULL);
    float *embd = vcase_encode(c, cm);
    clip_free(cm);
    vcase_check_text(c, embd, 99);
    free(embd);
}
END_TEST

static backend *gpu;

/* (2) the tower and projector on the GPU: image_embd.f32 per row, then the text model on
 * the GPU fed those rows */
START_TEST(embeddings_gpu)
{
    const vcase *c = &vcases[_i];
    clip_model *cm = vcase_clip(c->mmproj, gpu);
    ck_assert_str_eq(clip_device(cm), gpu->ops->name);
    ck_assert_uint_gt(clip_device_bytes(cm), 0);
    ck_assert_uint_le(clip_device_bytes(cm), clip_weight_bytes(cm));
    float *embd = vcase_encode(c, cm);
    clip_free(cm);
    vcase_check_embd(c, embd);
    vcase_check_text(c, embd, 99);
    free(embd);
}
END_TEST

/* (3) the gemma4v tower on the GPU against the CPU's at sizes the fixtures lack: several
 * rows and columns of patches, grids that are not square */
START_TEST(tower_sizes_gpu)
{
    static const int sizes[][2] = {{24, 24}, {96, 72}, {48, 120}};
    char p[1024];
    test_shared_path("models/gemma4-tiny-mmproj-f16.gguf", p, sizeof p);
    clip_model *on_cpu = vcase_clip(p, NULL), *on_gpu = vcase_clip(p, gpu);
    ck_assert_str_eq(clip_device(on_cpu), "CPU");
    ck_assert_str_eq(clip_device(on_gpu), gpu->ops->name);
    const int w = sizes[_i][0], h = sizes[_i][1], T = clip_n_tokens(on_cpu, w, h), O = clip_hp(on_cpu)->n_embd_out;
    float *px = malloc(sizeof(float) * 3 * (size_t)w * h), *a = malloc(sizeof(float) * (size_t)T * O),
          *b = malloc(sizeof(float) * (size_t)T * O);
    ck_assert(px && a && b);
    test_rand_seed(99 + (uint64_t)_i);
    for (int i = 0; i < 3 * w * h; i++)
        px[i] = test_uniform() * 2.0f - 1.0f;
    llmfs_error err = {0};
    ck_assert_msg(clip_encode(on_cpu, px, w, h, a, &err) == 0, "%s", err.msg);
    ck_assert_msg(clip_encode(on_gpu, px, w, h, b, &err) == 0, "%s", err.msg);
    double worst = 0;
    for (int t = 0; t < T; t++)
        worst = fmax(worst, logits_rel_rms(b + (size_t)t * O, a + (size_t)t * O, O));
    fprintf(stderr, "gemma4v %dx%d (%d tokens) on the GPU: largest relative RMS error against the CPU %.3g\n", w, h,
            T, worst);
    ck_assert_msg(worst <= 5e-3, "%dx%d: off by %g", w, h, worst);
    free(px), free(a), free(b);
    clip_free(on_cpu);
    clip_free(on_gpu);
}
END_TEST

/* (4) fit with a projector (vision-12gb's Gemma 3 under a vram_limit): the plan keeps
 * room for the projector's weights and one image's buffers, and the text model with the
 * planned layers, its cache and a full micro-batch's scratch, and the projector on the
 * same device encoding an image, stay inside what fit planned and the budget. */
START_TEST(projector_inside_the_budget)
{
    char path[1024], proj[1024], img_path[1024];
    test_shared_path("models/gemma3-tiny-q8_0.gguf", path, sizeof path);
    test_shared_path("models/gemma3-tiny-mmproj-f16.gguf", proj, sizeof proj);
    test_shared_path("images/checker.png", img_path, sizeof img_path);
    const uint64_t budget = 256ull << 20; /* vram_limit 256 */
    fit_input in = {.path = path, .ctx = 512, .parallel = 1, .fit_ctx = 256, .ubatch = 512, .type_k = T_F16,
                    .type_v = T_F16, .flash = true, .vram_free = budget, .mmproj = proj};
    fit_output fo;
    llmfs_error err = {0};
    ck_assert_msg(fit_plan(&in, &fo, &err) == 0, "%s", err.msg);
    fprintf(stderr, "fit: %s\n", fo.text);
    ck_assert_int_gt(fo.ngl, 0);
    ck_assert_uint_gt(fo.projector_bytes, 0);
    ck_assert_uint_le(fo.gpu_bytes, budget);

    model_opts o = {.n_threads = 2, .n_threads_batch = 2, .ngl = fo.ngl};
    model *m = model_load(path, &o, &err);
    ck_assert_msg(m && m->gpu, "%s", err.msg);
    kv_cache *kv = test_kv_cache(m, fo.ctx, 1, T_F16, T_F16);
    /* a full micro-batch: the text model's scratch at its largest */
    const int n = in.ubatch;
    int32_t *tok = malloc(sizeof(int32_t) * n), *pos = malloc(sizeof(int32_t) * n), *seq = calloc(n, sizeof(int32_t));
    int8_t *lg = calloc(n, 1);
    float *logits = malloc(sizeof(float) * (size_t)m->hp.n_vocab);
    for (int i = 0; i < n; i++) {
        tok[i] = 2 + i % 100;
        pos[i] = i;
    }
    lg[n - 1] = 1;
    fwd_batch b = {n, tok, pos, seq, lg};
    ck_assert_msg(model_forward(m, kv, &b, logits, true, &err) == 0, "%s", err.msg);

    clip_model *cm = clip_load_on(proj, 2, m->gpu, &err);
    ck_assert_msg(cm, "%s", err.msg);
    ck_assert_str_eq(clip_device(cm), m->gpu->ops->name);
    size_t len;
    char *file = test_read_file(img_path, &len);
    ck_assert(file);
    image_rgb img;
    ck_assert(image_decode(file, len, &img, &err) == 0);
    vision_embd ve;
    ck_assert_msg(vision_encode(cm, &img, 0, 0, &ve, &err) == 0, "%s", err.msg);
    const uint64_t used = m->gpu->ops->mem_used(m->gpu);
    const uint64_t peak = used + clip_buffer_bytes(cm, 0);
    fprintf(stderr, "GPU: %.2f MiB held (text model, cache, scratch, projector), %.2f MiB with one image's buffers; "
            "planned %.2f MiB of %.0f MiB\n", used / 1048576.0, peak / 1048576.0, fo.gpu_bytes / 1048576.0,
            budget / 1048576.0);
    ck_assert_uint_le(clip_device_bytes(cm) + clip_buffer_bytes(cm, 0), fo.projector_bytes);
    ck_assert_uint_le(peak, fo.gpu_bytes);
    vision_embd_free(&ve);
    image_free(&img);
    free(file);
    clip_free(cm);
    free(tok), free(pos), free(seq), free(lg), free(logits);
    kv_cache_free(kv);
    model_free(m);
}
END_TEST

/* Keeps the cases $LLMFS_FIXTURES selects. */
static void select_cases(void)
{
    const char *pat = getenv("LLMFS_FIXTURES");
    if (!pat || !*pat)
        return;
    regex_t re;
    if (regcomp(&re, pat, REG_EXTENDED | REG_NOSUB)) {
        fprintf(stderr, "LLMFS_FIXTURES: not an extended regular expression: %s\n", pat);
        exit(1);
    }
    int k = 0;
    for (int i = 0; i < n_vcases; i++)
        if (!regexec(&re, vcases[i].name, 0, NULL, 0))
            vcases[k++] = vcases[i];
    regfree(&re);
    fprintf(stderr, "*** gpu_vision: %d of %d cases kept by LLMFS_FIXTURES=%s\n", k, n_vcases, pat);
    n_vcases = k;
}

int main(void)
{
    if (!test_shared_dir())
        test_skip_no_shared("gpu_vision");
    char err[256] = "";
    backend *probe = backend_gpu_new(0, err, sizeof err);
    if (!probe) {
        /* a device that is there but unusable is a failure, not a skip */
        if (backend_gpu_count() > 0) {
            fprintf(stderr, "\n*** FAILED gpu_vision: %d CUDA device(s) present, but: %s ***\n\n",
                    backend_gpu_count(), err);
            return 1;
        }
        fprintf(stderr, "\n*** SKIPPED gpu_vision: no usable GPU (%s) ***\n\n", err);
        return test_skip_code();
    }
    gpu = probe;
    vcase_find();
    select_cases();
    if (n_vcases == 0) {
        fprintf(stderr, "\n*** SKIPPED gpu_vision: no vision fixture cases ***\n\n");
        return test_skip_code();
    }
    fprintf(stderr, "*** gpu_vision: %d fixture cases\n", n_vcases);
    /* CUDA state does not survive fork: run the tests in this process */
    setenv("CK_FORK", "no", 1);
    Suite *s = suite_create("gpu_vision");
    TCase *tc = tcase_create("gpu_vision");
    tcase_set_timeout(tc, 900);
    tcase_add_loop_test(tc, text_logits_gpu, 0, n_vcases);
    tcase_add_loop_test(tc, embeddings_gpu, 0, n_vcases);
    tcase_add_loop_test(tc, tower_sizes_gpu, 0, 3);
    tcase_add_test(tc, projector_inside_the_budget);
    suite_add_tcase(s, tc);
    int rc = test_run_suite(s);
    backend_free(gpu);
    return rc;
}
