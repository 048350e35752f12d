/* test_mtp_gemma.c — Gemma 4's MTP drafter (gemma4-assistant) against llama.cpp, on the
 * CPU with every instruction set: the teacher-forced rows (f16 and q8_0 caches, both attention paths) and the
 * server flow of each gemma4 mtp-* fixture case (tests/mtp_gemma_check.c), then the refusals: a drafter and
 * a target that do not belong together, a plain load of the drafter, a position the
 * cache does not hold.
 */
#include "mtp_gemma_check.h"

#include "fixture.h"
#include "gguf.h"
#include "kv.h"
#include "model.h"
#include "quant.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static mtp_case cases[16];
static int n_cases;

/* _i: case * 3 + (0: as llama.cpp, 1: the flash attention path, 2: a q8_0 cache) */
START_TEST(teacher_forced_rows)
{
    mtp_gemma_check_rows(&cases[_i / 3], 0, _i % 3 == 2 ? T_Q8_0 : T_F16, _i % 3 == 1, NULL, NULL);
}
END_TEST

/* _i: case * 2 + rings */
START_TEST(server_flow)
{
    mtp_gemma_check_flow(&cases[_i / 2], 0, _i % 2);
}
END_TEST

/* ---------------------------------------------------------------- refusals */

/* A copy of file src with the value of KEY changed: patch(value bytes) edits it in
 * place. Written to a temporary file whose path goes to out. */
static void write_patched(const char *src, const char *key, void (*patch)(uint8_t *value), char *out, size_t cap)
{
    size_t len;
    uint8_t *b = (uint8_t *)test_read_file(src, &len);
    ck_assert(b);
    const size_t kl = strlen(key);
    size_t at = 0;
    for (size_t i = 0; i + 8 + kl < len && !at; i++) {
        uint64_t n;
        memcpy(&n, b + i, 8);
        if (n == kl && !memcmp(b + i + 8, key, kl))
            at = i + 8 + kl; /* the value's type, then the value */
    }
    ck_assert_msg(at, "no key %s in %s", key, src);
    patch(b + at + 4);
    snprintf(out, cap, "/tmp/llmfs-mtp-XXXXXX");
    int fd = mkstemp(out);
    ck_assert(fd >= 0);
    ck_assert(write(fd, b, len) == (ssize_t)len);
    close(fd);
    free(b);
}

static void set_u32(uint8_t *v, uint32_t x) { memcpy(v, &x, 4); }
static void window_16(uint8_t *v) { set_u32(v, 16); }
static void nextn_3(uint8_t *v) { set_u32(v, 3); }
static void out_width_64(uint8_t *v) { set_u32(v, 64); }
static void base_swa_2e4(uint8_t *v)
{
    float f = 20000.0f;
    memcpy(v, &f, 4);
}
/* the array [2, 2, 2, 1] of KV heads: its last entry (after the element type and count) */
static void kv_heads_last_2(uint8_t *v) { set_u32(v + 4 + 8 + 3 * 4, 2); }
/* the rope_freqs tensor's name: a tensor the drafter does not read */
static void no_rope_freqs(uint8_t *v) { (void)v; }

START_TEST(refusals)
{
    char drafter[1024], path[1024];
    test_shared_path("models/gemma4-tiny-mtp-q8_0.gguf", drafter, sizeof drafter);
    llmfs_error err = {0};

    /* a plain load refuses it: it runs only beside a target */
    model_opts o = {.n_threads = 1};
    ck_assert_ptr_null(model_load(drafter, &o, &err));
    ck_assert_int_eq(err.code, EINVAL);
    ck_assert_msg(strstr(err.msg, "draft model"), "%s", err.msg);
    printf("plain load: %s\n", err.msg);

    /* targets it does not fit: another vocabulary; other KV heads in the layers it reads */
    static const struct {
        const char *target, *why;
    } bad[] = {
        {"gemma3-tiny-q8_0.gguf", "gemma4"},
        {"gemma4e-tiny-q8_0.gguf", "KV heads"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char tp[1024], rel[256];
        snprintf(rel, sizeof rel, "models/%s", bad[i].target);
        model *t = mtp_gemma_load_target(test_shared_path(rel, tp, sizeof tp), 0);
        err = (llmfs_error){0};
        ck_assert_ptr_null(gemma4_assistant_load(drafter, t, &o, &err));
        ck_assert_int_eq(err.code, EINVAL);
        ck_assert_msg(strstr(err.msg, bad[i].why) && !strchr(err.msg, '\n'), "%s: %s", bad[i].target, err.msg);
        printf("against %s: %s\n", bad[i].target, err.msg);
        model_free(t);
    }

    /* its own target, and the MoE sibling whose last two layers are the same kinds: both fit */
    static const char *const good[] = {"gemma4-tiny-q8_0.gguf", "gemma4moe-tiny-q8_0.gguf"};
    model *t = NULL;
    for (int i = 1; i >= 0; i--) {
        char tp[1024], rel[256];
        snprintf(rel, sizeof rel, "models/%s", good[i]);
        model_free(t);
        t = mtp_gemma_load_target(test_shared_path(rel, tp, sizeof tp), 0);
        gemma4_assistant *a = mtp_gemma_load_drafter(drafter, t, 0);
        ck_assert_int_eq(gemma4_assistant_model(a)->hp.n_embd_out, t->hp.n_embd);
        /* what placement and kv show: its weights (the file's tensors), where they are,
         * the target layers it reads */
        char line[256];
        gemma4_assistant_describe(a, t, line, sizeof line);
        printf("beside %s: %s\n", good[i], line);
        const uint64_t w = gemma4_assistant_weight_bytes(a);
        ck_assert_msg(w > 800000 && w < 1313344, "%llu bytes of weights", (unsigned long long)w);
        /* what fit counts from the file alone: those weights and a row of scratch */
        uint64_t plan;
        ck_assert_int_eq(gemma4_assistant_plan(drafter, true, &plan, &err), 0);
        ck_assert_msg(plan > w && plan < w + 64 * 1024, "plan %llu, weights %llu", (unsigned long long)plan,
                      (unsigned long long)w);
        ck_assert_int_eq(gemma4_assistant_plan("/nonexistent/drafter.gguf", true, &plan, &err), -ENOENT);
        char want[64];
        snprintf(want, sizeof want, "layers %d (sliding window) and %d (full)", t->hp.n_layer - 2, t->hp.n_layer - 1);
        ck_assert_msg(strstr(line, want) && strstr(line, "on CPU"), "%s", line);
        gemma4_assistant_free(a);
    }

    /* copies of the drafter with one thing changed, against its own target */
    static const struct {
        const char *key;
        void (*patch)(uint8_t *);
        const char *why;
    } mut[] = {
        {"gemma4-assistant.attention.sliding_window", window_16, "window"},
        {"gemma4-assistant.nextn_predict_layers", nextn_3, "nextn_predict_layers"},
        {"gemma4-assistant.embedding_length_out", out_width_64, "embedding_length_out"},
        {"gemma4-assistant.rope.freq_base_swa", base_swa_2e4, "rope"},
        {"gemma4-assistant.attention.head_count_kv", kv_heads_last_2, "KV heads"},
        {"rope_freqs.weight", no_rope_freqs, "rope_freqs"},
    };
    for (size_t i = 0; i < sizeof mut / sizeof mut[0]; i++) {
        write_patched(drafter, mut[i].key, mut[i].patch, path, sizeof path);
        if (mut[i].patch == no_rope_freqs) {
            /* rename the tensor in place: "rope_freqs" -> "rope_freqX" */
            size_t len;
            char *b = test_read_file(path, &len);
            char *at = memmem(b, len, "rope_freqs.weight", 17);
            ck_assert(at);
            at[9] = 'X';
            FILE *f = fopen(path, "wb");
            ck_assert(f && fwrite(b, 1, len, f) == len);
            fclose(f);
            free(b);
        }
        err = (llmfs_error){0};
        ck_assert_ptr_null(gemma4_assistant_load(path, t, &o, &err));
        unlink(path);
        ck_assert_int_eq(err.code, EINVAL);
        ck_assert_msg(strstr(err.msg, mut[i].why) && !strchr(err.msg, '\n'), "%s: %s", mut[i].key, err.msg);
        printf("%s changed: %s\n", mut[i].key, err.msg);
    }

    /* a cache that is not the target's, and a position the cache does not hold */
    gemma4_assistant *a = mtp_gemma_load_drafter(drafter, t, 0);
    kv_cache *kv = test_kv_cache(t, 64, 1, T_F16, T_F16);
    float h[512] = {0}, lg[8192];
    int32_t id;
    ck_assert_int_le(t->hp.n_embd, 512);
    err = (llmfs_error){0};
    ck_assert_int_eq(gemma4_assistant_step(a, t, kv, 0, 1, 5, h, false, lg, &id, NULL, &err), -EINVAL);
    printf("position past the cache: %s\n", err.msg);
    kv_cache_free(kv);
    gemma4_assistant_free(a);
    model_free(t);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("mtp_gemma");
    if (!test_shared_dir())
        return s;
    n_cases = mtp_gemma_cases(cases, 16);
    if (!n_cases)
        printf("no gemma4 mtp-* fixture case names a drafter\n");
    TCase *c = tcase_create("fixtures");
    tcase_set_timeout(c, 600);
    tcase_add_loop_test(c, teacher_forced_rows, 0, 3 * n_cases);
    tcase_add_loop_test(c, server_flow, 0, 2 * n_cases);
    tcase_add_test(c, refusals);
    suite_add_tcase(s, c);
    return s;
}

int main(void)
{
    if (!test_shared_dir())
        test_skip_no_shared("the gemma4 MTP drafter and its fixtures");
    setvbuf(stdout, NULL, _IOLBF, 0);
    return test_run_suite_each_isa(make_suite);
}
