/* fit before load: ngl and context chosen for a given amount of GPU memory. */
#include "fit.h"
#include "gguf.h"
#include "placement.h"
#include "quant.h"
#include "testutil.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static fit_input input(const char *path, uint64_t vram)
{
    return (fit_input){.path = path, .ctx = 4096, .parallel = 1, .fit_ctx = 512, .ubatch = 512,
                       .type_k = T_F16, .type_v = T_F16, .vram_free = vram, .fit_target = 0};
}

/* llama-tiny: 2 layers, n_embd 256, 4 KV heads of 32, ff 768, vocab 512 */
static uint64_t need(int ctx)
{
    uint64_t kv_layer = (uint64_t)ctx * 2 * type_row_bytes(T_F16, 128);
    return 2 * kv_layer + place_compute_bytes(256, 768, 8, 32, 512, 512, ctx, false);
}

/* Gemma 4 E: the cache per the layers' own sizes, 3 x (1 x 32) + 1 x 64 values per cell
 * for K and for V in f16 (640 bytes; 2.5 MiB at 4096 cells), and none for the two
 * layers that share; one size for all (4 heads of 64 on 6 layers) would be 24 MiB. The
 * three sliding-window layers (window 8) keep rings of 8 + 512 cells: 384 bytes x 520 +
 * 256 x 4096, 1.2 MiB, unless swa_full. */
START_TEST(gemma_kv_per_layer_kind)
{
    char path[4096];
    test_shared_path("models/gemma4e-tiny-q8_0.gguf", path, sizeof path);
    for (int full = 0; full < 2; full++) {
        fit_input in = input(path, 1ull << 34);
        in.swa_full = full;
        fit_output out;
        llmfs_error e = {0};
        ck_assert_int_eq(fit_plan(&in, &out, &e), 0);
        const char *kv = strstr(out.text, "KV ");
        ck_assert_msg(kv, "%s", out.text);
        int mib = atoi(kv + 3);
        if (full)
            ck_assert_msg(mib >= 2 && mib <= 3, "KV %d MiB: %s", mib, out.text);
        else
            ck_assert_msg(mib == 1, "KV %d MiB with rings: %s", mib, out.text);
    }
}
END_TEST

START_TEST(plenty_of_memory_takes_everything)
{
    char path[4096];
    test_shared_path("models/llama-tiny-q8_0.gguf", path, sizeof path);
    fit_input in = input(path, 1ull << 34);
    fit_output out;
    llmfs_error e = {0};
    ck_assert_int_eq(fit_plan(&in, &out, &e), 0);
    ck_assert_int_eq(out.ngl, 3); /* 2 layers and the output */
    ck_assert_int_eq(out.n_cpu_moe, 0);
    ck_assert_int_eq(out.ctx, 4096);
    ck_assert(out.text[0]);
}
END_TEST

START_TEST(the_context_shrinks_to_fit_every_layer)
{
    char path[4096];
    test_shared_path("models/llama-tiny-q8_0.gguf", path, sizeof path);
    /* the weights (1.97 MB file) plus the KV and scratch of 1024 cells, not of 2048 */
    uint64_t vram = 1967552 + need(1024);
    /* 2048 cells need 1 MiB more KV alone, more than token_embd and the header, which
     * stay off the GPU, leave spare */
    ck_assert_uint_gt(need(2048) - need(1024), 1 << 20);
    fit_input in = input(path, vram);
    fit_output out;
    llmfs_error e = {0};
    ck_assert_int_eq(fit_plan(&in, &out, &e), 0);
    ck_assert_int_eq(out.ngl, 3);
    ck_assert_int_eq(out.ctx, 1024);
    ck_assert_ptr_nonnull(strstr(out.text, "shrunk"));
}
END_TEST

START_TEST(no_room_keeps_the_context_and_the_cpu)
{
    char path[4096];
    test_shared_path("models/llama-tiny-q8_0.gguf", path, sizeof path);
    fit_input in = input(path, 1000);
    fit_output out;
    llmfs_error e = {0};
    ck_assert_int_eq(fit_plan(&in, &out, &e), 0);
    ck_assert_int_eq(out.ngl, 0);
    ck_assert_int_eq(out.ctx, 4096); /* a smaller context would not have helped */
}
END_TEST

static uint64_t tensor_bytes(const char *path)
{
    gguf_open_opts oo = {0};
    llmfs_error e = {0};
    gguf_file *f = gguf_open(path, &oo, &e);
    ck_assert_msg(f != NULL, "%s", e.msg);
    uint64_t sum = 0;
    for (int i = 0; i < gguf_n_tensors(f); i++)
        sum += gguf_tensor_at(f, i)->size;
    gguf_close(f);
    return sum;
}

/* A draft model takes its weights and its KV cache (the target's context, f16 K and V:
 * 1 KiB a cell for llama-tiny) off the GPU memory before the target is placed: with the
 * room for 1024 target cells and the draft's weights, the draft's cache of 1024 cells
 * (1 MiB) does not fit beside them, so the context halves to 512 (counting its weights
 * alone would have kept 1024); without the draft the same memory holds 1024 cells; a
 * draft that cannot be read counts nothing. */
START_TEST(the_draft_model_is_counted)
{
    char path[4096], dpath[4096];
    test_shared_path("models/llama-tiny-q8_0.gguf", path, sizeof path);
    test_shared_path("models/llama-tiny-q4_0.gguf", dpath, sizeof dpath);
    uint64_t dw = tensor_bytes(dpath);
    uint64_t vram = 1967552 + need(1024) + dw;
    fit_output out;
    llmfs_error e = {0};
    fit_input in = input(path, vram);
    in.draft_path = dpath;
    in.draft_type_k = in.draft_type_v = T_F16;
    ck_assert_int_eq(fit_plan(&in, &out, &e), 0);
    ck_assert_int_eq(out.ngl, 3);
    ck_assert_int_eq(out.ctx, 512);
    ck_assert_uint_eq(out.draft_bytes, dw + 512 * 1024);
    ck_assert_msg(strstr(out.text, "draft model GPU"), "%s", out.text);
    /* room for the draft's cache of 1024 cells too */
    in.vram_free = vram + 1024 * 1024;
    ck_assert_int_eq(fit_plan(&in, &out, &e), 0);
    ck_assert_int_eq(out.ctx, 1024);
    ck_assert_uint_eq(out.draft_bytes, dw + 1024 * 1024);
    /* two sequences: the draft's cache doubles with the target's */
    in.parallel = 2;
    in.ctx = in.fit_ctx = 256;
    ck_assert_int_eq(fit_plan(&in, &out, &e), 0);
    ck_assert_uint_eq(out.draft_bytes, dw + 2 * 256 * 1024);
    /* no draft, or one that cannot be read: all of it for the target */
    in = input(path, vram);
    ck_assert_int_eq(fit_plan(&in, &out, &e), 0);
    ck_assert_int_eq(out.ctx, 1024);
    ck_assert_uint_eq(out.draft_bytes, 0);
    ck_assert_ptr_null(strstr(out.text, "draft"));
    in.draft_path = "/nonexistent/draft.gguf";
    ck_assert_int_eq(fit_plan(&in, &out, &e), 0);
    ck_assert_int_eq(out.ctx, 1024);
    ck_assert_uint_eq(out.draft_bytes, 0);
}
END_TEST

START_TEST(bad_inputs)
{
    fit_input in = input("/nonexistent.gguf", 1 << 30);
    fit_output out;
    llmfs_error e = {0};
    ck_assert_int_eq(fit_plan(&in, &out, &e), -ENOENT);
    char path[4096];
    in.path = test_shared_path("models/llama-tiny-q8_0.gguf", path, sizeof path);
    in.override_tensor = "([=CPU";
    ck_assert_int_eq(fit_plan(&in, &out, &e), -EINVAL);
}
END_TEST

/* A vision projector takes its room first (vision-12gb's Gemma 3): at the smallest
 * budget that holds every layer and the whole context, the projector pushes the plan
 * down; that budget plus the projector's bytes gives the first plan back, and those
 * bytes cover the file's weights and one image's buffers. */
START_TEST(the_projector_takes_its_room)
{
    char path[4096], proj[4096];
    test_shared_path("models/gemma3-tiny-q8_0.gguf", path, sizeof path);
    test_shared_path("models/gemma3-tiny-mmproj-f16.gguf", proj, sizeof proj);
    fit_output out, with;
    llmfs_error e = {0};
    /* the smallest budget (to 4 KiB) with every layer and the output at the whole context */
    fit_input all = input(path, 1ull << 34);
    ck_assert_int_eq(fit_plan(&all, &out, &e), 0);
    const int every = out.ngl;
    uint64_t lo = 0, hi = 1ull << 30;
    while (hi - lo > 4096) {
        uint64_t mid = lo + (hi - lo) / 2;
        fit_input in = input(path, mid);
        ck_assert_int_eq(fit_plan(&in, &out, &e), 0);
        if (out.ngl == every && out.ctx == in.ctx)
            hi = mid;
        else
            lo = mid;
    }
    fit_input in = input(path, hi);
    ck_assert_int_eq(fit_plan(&in, &out, &e), 0);
    ck_assert_uint_eq(out.projector_bytes, 0);
    in.mmproj = proj;
    ck_assert_int_eq(fit_plan(&in, &with, &e), 0);
    const uint64_t pb = with.projector_bytes;
    ck_assert_uint_gt(pb, 1000000); /* the 1.1 MB file's weights at least */
    ck_assert_msg(with.ngl < out.ngl || with.ctx < out.ctx, "ngl %d ctx %d with the projector: %s", with.ngl,
                  with.ctx, with.text);
    ck_assert_ptr_nonnull(strstr(with.text, "projector"));
    in.vram_free = hi + pb;
    ck_assert_int_eq(fit_plan(&in, &with, &e), 0);
    ck_assert_int_eq(with.ngl, out.ngl);
    ck_assert_int_eq(with.ctx, out.ctx);
    /* a projector that is not one */
    in.mmproj = path;
    ck_assert_int_eq(fit_plan(&in, &with, &e), -EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "mmproj"));
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("fit");
    TCase *tc = tcase_create("fit");
    tcase_add_test(tc, plenty_of_memory_takes_everything);
    tcase_add_test(tc, gemma_kv_per_layer_kind);
    tcase_add_test(tc, the_context_shrinks_to_fit_every_layer);
    tcase_add_test(tc, no_room_keeps_the_context_and_the_cpu);
    tcase_add_test(tc, the_draft_model_is_counted);
    tcase_add_test(tc, bad_inputs);
    tcase_add_test(tc, the_projector_takes_its_room);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (!test_shared_dir())
        test_skip_no_shared("fit tests");
    return test_run_suite(make_suite());
}
