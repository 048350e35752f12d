/* gpu_vision.c — images with the text model on a GPU (a real one, or the simulated
 * device of tests/cudasim), against llama.cpp's vision fixtures: every vision-* case's
 * stored logits and greedy continuation with all text layers on the device, the image
 * batch attending non-causally there; the tower and projector on the device
 * (image_embd.f32), and the text model fed those rows. $LLMFS_FIXTURES (an extended regular expression
 * over "<model>/<case>") keeps only the matching cases. Then the daemon (llmfs.h) with a
 * projector: on the model's GPU under vram_limit and profile vision-12gb (placement, the
 * budget, an image prompt's greedy reply, the fit-target warning), on the CPU with
 * mmproj_offload off. Exits 77 (skip) without a usable GPU or without the test assets. */
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
#include "llmfs.h"
#include "tokenizer.h"
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

/* ---- the daemon ---- */

/* The case's greedy continuation as the output stream shows it, up to the first step
 * whose llama.cpp top-2 margin is under 0.5 (where rounding may pick the other token);
 * *n_clear gets the steps it holds. */
static char *greedy_text(const char *case_dir, const char *model_path, int *n_clear)
{
    char p[1200];
    int32_t *ids;
    float *margin;
    snprintf(p, sizeof p, "%.1000s/greedy.txt", case_dir);
    int n = test_read_ints(p, &ids);
    snprintf(p, sizeof p, "%.1000s/greedy_margin.txt", case_dir);
    ck_assert_int_eq(test_read_floats(p, &margin), n);
    int k = 0;
    while (k < n && margin[k] >= 0.5f)
        k++;
    llmfs_error e = {0};
    gguf_file *g = gguf_open(model_path, NULL, &e);
    ck_assert_msg(g, "%s", e.msg);
    tokenizer *tok = tokenizer_load(g, &e);
    ck_assert_msg(tok, "%s", e.msg);
    size_t cap = 64 * (size_t)(k + 1), o = 0;
    char *out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    detok_state ds = {0};
    for (int i = 0; i < k; i++)
        o += (size_t)detok_push(tok, &ds, ids[i], out + o, (int)(cap - o));
    out[o] = 0;
    tokenizer_free(tok);
    gguf_close(g);
    free(ids);
    free(margin);
    *n_clear = k;
    return out;
}

static bool has_warning(llmfs_model *m, const char *needle, char *all, size_t cap)
{
    llmfs_model_warnings(m, all, cap);
    return strstr(all, needle) != NULL;
}

/* The CUDA0 and CPU rows of mmproj and mmproj_buffers, and the CUDA0 total. */
typedef struct proj_place {
    uint64_t gpu_mmproj, gpu_buffers, cpu_mmproj, cpu_buffers, gpu_total;
} proj_place;

static proj_place projector_placement(llmfs_model *m)
{
    llmfs_placement_row rows[256];
    int n = llmfs_model_placement(m, rows, 256);
    ck_assert_int_gt(n, 0);
    ck_assert_int_le(n, 256);
    proj_place pp = {0};
    for (int i = 0; i < n; i++) {
        const bool gpu = strcmp(rows[i].device, "CUDA0") == 0, cpu = strcmp(rows[i].device, "CPU") == 0;
        ck_assert_msg(gpu || cpu, "placement row %s on %s", rows[i].group, rows[i].device);
        if (strcmp(rows[i].group, "mmproj") == 0)
            *(gpu ? &pp.gpu_mmproj : &pp.cpu_mmproj) += rows[i].bytes;
        else if (strcmp(rows[i].group, "mmproj_buffers") == 0)
            *(gpu ? &pp.gpu_buffers : &pp.cpu_buffers) += rows[i].bytes;
        else if (strcmp(rows[i].group, "total") == 0 && gpu)
            pp.gpu_total = rows[i].bytes;
    }
    return pp;
}

#define VISION_WARNING "too little GPU memory for the vision projector"

/* (5) the daemon with Gemma 3 and its projector under vram_limit 2560 and profile
 * vision-12gb (fit_target 2048: 512 MiB for the model): fit keeps the projector's room,
 * placement puts the projector and its buffers on the device inside the limit, the
 * fixture's image and prompt through a session give llama.cpp's greedy reply with the
 * tower on the device, and no fit-target warning; a fit target under 2048 MiB with the
 * projector warns. */
START_TEST(daemon_projector_on_the_device)
{
    char model_path[1024], proj[1024], img_path[1024], cdir[1024], mm[1100];
    test_shared_path("models/gemma3-tiny-q8_0.gguf", model_path, sizeof model_path);
    test_shared_path("models/gemma3-tiny-mmproj-f16.gguf", proj, sizeof proj);
    test_shared_path("images/gradient.png", img_path, sizeof img_path);
    test_shared_path("fixtures/gemma3-tiny-q8_0/vision-gradient", cdir, sizeof cdir);
    snprintf(mm, sizeof mm, "mmproj=%s", proj);
    const uint64_t limit = 2560ull << 20;
    /* the profile first, its keys then overridden where the test needs: a short
     * context keeps the simulated device quick, and an f16 cache keeps the logits as
     * close to llama.cpp's (f16 cache) as the greedy comparison needs */
    const char *opts[] = {"profile=vision-12gb", mm, "vram_limit=2560", "threads=2", "ctx=512",
                          "cache_type_k=f16", "cache_type_v=f16", "mode=raw", "temp=0", "n_predict=32"};
    llmfs_error e = {0};
    llmfs *lf = llmfs_new(&e);
    ck_assert_ptr_nonnull(lf);
    ck_assert_msg(llmfs_model_load(lf, "v", model_path, opts, 10, &e) == 0, "load: %s", e.msg);
    llmfs_model *m = llmfs_model_get(lf, "v");
    char fit[1024];
    llmfs_model_fit_text(m, fit, sizeof fit);
    fprintf(stderr, "daemon, vision-12gb under vram_limit 2560: %s\n", fit);
    ck_assert_msg(strstr(fit, "projector"), "fit did not count the projector: %s", fit);

    proj_place pp = projector_placement(m);
    llmfs_model_stats ms;
    llmfs_model_stats_get(m, &ms);
    fprintf(stderr, "placement: mmproj %.2f MiB, mmproj_buffers %.2f MiB on the device, device total %.2f MiB; "
            "device memory held after the load %.2f MiB, with one image's buffers %.2f MiB, of %.0f MiB\n",
            pp.gpu_mmproj / 1048576.0, pp.gpu_buffers / 1048576.0, pp.gpu_total / 1048576.0,
            ms.vram_used_load / 1048576.0, (ms.vram_used_load + pp.gpu_buffers) / 1048576.0, limit / 1048576.0);
    ck_assert_uint_gt(ms.weight_bytes_gpu, 0);
    ck_assert_uint_gt(pp.gpu_mmproj, 0);
    ck_assert_uint_gt(pp.gpu_buffers, 0);
    ck_assert_uint_eq(pp.cpu_mmproj + pp.cpu_buffers, 0);
    ck_assert_uint_ge(pp.gpu_total, ms.weight_bytes_gpu + pp.gpu_mmproj + pp.gpu_buffers);
    ck_assert_uint_le(pp.gpu_total, limit);
    /* what the device holds (layers, cache, scratch, the projector's weights) and one
     * image's buffers stay inside the limit less fit_target */
    ck_assert_uint_le(ms.vram_used_load + pp.gpu_buffers, limit - (2048ull << 20));

    char w[4096];
    ck_assert_msg(!has_warning(m, VISION_WARNING, w, sizeof w), "fit_target 2048 warned: %s", w);
    ck_assert_msg(!strstr(w, "runs on the CPU, not the GPU"), "the projector fell back: %s", w);

    /* the image prompt through a session, the tower on the device */
    int k;
    char *want = greedy_text(cdir, model_path, &k);
    ck_assert_int_gt(k, 0);
    size_t len;
    char *img = test_read_file(img_path, &len), prompt_path[1100];
    snprintf(prompt_path, sizeof prompt_path, "%s/prompt.txt", cdir);
    char *prompt = test_read_file(prompt_path, NULL);
    ck_assert(img && prompt);
    llmfs_session *s = llmfs_session_default(m);
    ck_assert_msg(llmfs_session_image(s, img, len, &e) == 0, "image: %s", e.msg);
    /* the prompt drops one trailing newline (as echo adds): prompt.txt's own needs another */
    const size_t plen = strlen(prompt);
    ck_assert_ptr_nonnull(prompt = realloc(prompt, plen + 2));
    memcpy(prompt + plen, "\n", 2);
    ck_assert_msg(llmfs_session_prompt(s, prompt, plen + 1, &e) == 0, "prompt: %s", e.msg);
    llmfs_stream *st = llmfs_session_output(s);
    char *out = test_stream_text(st, NULL);
    llmfs_stream_put(st);
    test_wait_idle(s, 600);
    llmfs_session_stats ss;
    llmfs_session_stats_get(s, &ss);
    ck_assert_str_ne(ss.stop_reason, "error");
    fprintf(stderr, "daemon reply with the projector on the device: %d tokens, the first %d compared\n", ss.n_gen, k);
    ck_assert_int_eq(ss.n_prompt + ss.n_cached, 32); /* the fixture's positions: the image's 4 among them */
    ck_assert_msg(strncmp(out, want, strlen(want)) == 0, "reply\n  '%s'\ndoes not start with llama.cpp's\n  '%s'", out,
                  want);
    free(out), free(want), free(img), free(prompt);
    llmfs_session_put(s);
    llmfs_model_put(m);
    ck_assert_int_eq(llmfs_model_unload(lf, "v", &e), 0);

    /* a fit target under 2048 MiB with the projector on the device warns */
    const char *low[] = {"profile=vision-12gb", mm, "vram_limit=2560", "fit_target=1024", "threads=2", "ctx=512"};
    ck_assert_msg(llmfs_model_load(lf, "v", model_path, low, 6, &e) == 0, "load: %s", e.msg);
    m = llmfs_model_get(lf, "v");
    pp = projector_placement(m);
    ck_assert_uint_gt(pp.gpu_mmproj, 0);
    ck_assert_msg(has_warning(m, VISION_WARNING, w, sizeof w), "fit_target 1024 did not warn: %s", w);
    llmfs_model_put(m);
    ck_assert_int_eq(llmfs_model_unload(lf, "v", &e), 0);
    llmfs_free(lf);
}
END_TEST

/* (6) mmproj_offload off: the layers on the device, the projector and its buffers on
 * the CPU (placement), no fit-target warning for it, and images still work */
START_TEST(daemon_projector_kept_on_the_cpu)
{
    char model_path[1024], proj[1024], img_path[1024], mm[1100];
    test_shared_path("models/gemma3-tiny-q8_0.gguf", model_path, sizeof model_path);
    test_shared_path("models/gemma3-tiny-mmproj-f16.gguf", proj, sizeof proj);
    test_shared_path("images/checker.png", img_path, sizeof img_path);
    snprintf(mm, sizeof mm, "mmproj=%s", proj);
    const char *opts[] = {mm, "mmproj_offload=off", "fit_target=1024", "vram_limit=2560", "threads=2", "ctx=512",
                          "mode=raw", "temp=0", "n_predict=4"};
    llmfs_error e = {0};
    llmfs *lf = llmfs_new(&e);
    ck_assert_ptr_nonnull(lf);
    ck_assert_msg(llmfs_model_load(lf, "v", model_path, opts, 9, &e) == 0, "load: %s", e.msg);
    llmfs_model *m = llmfs_model_get(lf, "v");
    proj_place pp = projector_placement(m);
    llmfs_model_stats ms;
    llmfs_model_stats_get(m, &ms);
    ck_assert_uint_gt(ms.weight_bytes_gpu, 0);
    ck_assert_uint_eq(pp.gpu_mmproj + pp.gpu_buffers, 0);
    ck_assert_uint_gt(pp.cpu_mmproj, 0);
    ck_assert_uint_gt(pp.cpu_buffers, 0);
    char w[4096];
    ck_assert_msg(!has_warning(m, VISION_WARNING, w, sizeof w), "a projector on the CPU warned: %s", w);
    size_t len;
    char *img = test_read_file(img_path, &len);
    ck_assert_ptr_nonnull(img);
    llmfs_session *s = llmfs_session_default(m);
    ck_assert_msg(llmfs_session_image(s, img, len, &e) == 0, "image: %s", e.msg);
    static const char prompt[] = "<__media__>Describe the image.";
    ck_assert_msg(llmfs_session_prompt(s, prompt, strlen(prompt), &e) == 0, "prompt: %s", e.msg);
    llmfs_stream *st = llmfs_session_output(s);
    free(test_stream_text(st, NULL));
    llmfs_stream_put(st);
    test_wait_idle(s, 600);
    llmfs_session_stats ss;
    llmfs_session_stats_get(s, &ss);
    ck_assert_str_ne(ss.stop_reason, "error");
    ck_assert_int_eq(ss.n_gen, 4);
    free(img);
    llmfs_session_put(s);
    llmfs_model_put(m);
    llmfs_free(lf);
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
    /* the daemon tests give the model 512 MiB under vram_limit 2560 with fit_target
     * 2048: the simulated device (1 GiB unless told) needs the room; a real GPU ignores
     * this */
    setenv("CUDASIM_VRAM_MIB", "3072", 0);
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
    tcase_add_test(tc, daemon_projector_on_the_device);
    tcase_add_test(tc, daemon_projector_kept_on_the_cpu);
    suite_add_tcase(s, tc);
    int rc = test_run_suite(s);
    backend_free(gpu);
    return rc;
}
