/* Placement decisions on synthetic tensor tables: ngl, n_cpu_moe, overrides, fit. */
#include "placement.h"
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MiB (1024ull * 1024ull)

/* A Qwen3-30B-A3B-like table: 48 layers, n_embd 2048, 128 experts of ff 768, Q4_K-ish
 * (0.5625 bytes per weight), vocab 151936; optionally a shared expert per layer. */
typedef struct table {
    place_tensor t[48 * 16 + 8];
    char names[48 * 16 + 8][64];
    int n;
} table;

static void add(table *tb, const char *name, uint64_t bytes)
{
    snprintf(tb->names[tb->n], sizeof tb->names[0], "%s", name);
    tb->t[tb->n] = (place_tensor){.name = tb->names[tb->n], .bytes = bytes};
    tb->n++;
}

static void make_moe(table *tb, int n_layer, bool shared)
{
    memset(tb, 0, sizeof *tb);
    const double q4k = 0.5625;
    add(tb, "token_embd.weight", (uint64_t)(151936.0 * 2048 * q4k));
    for (int il = 0; il < n_layer; il++) {
        char n[64];
        const char *attn[] = {"attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "attn_q_norm", "attn_k_norm"};
        const uint64_t attn_b[] = {8192, (uint64_t)(4096.0 * 2048 * q4k), (uint64_t)(512.0 * 2048 * q4k),
                                   (uint64_t)(512.0 * 2048 * q4k), (uint64_t)(2048.0 * 4096 * q4k), 512, 512};
        for (int k = 0; k < 7; k++) {
            snprintf(n, sizeof n, "blk.%d.%s.weight", il, attn[k]);
            add(tb, n, attn_b[k]);
        }
        snprintf(n, sizeof n, "blk.%d.ffn_norm.weight", il);
        add(tb, n, 8192);
        snprintf(n, sizeof n, "blk.%d.ffn_gate_inp.weight", il);
        add(tb, n, 128ull * 2048 * 4);
        const char *ex[] = {"ffn_gate_exps", "ffn_up_exps", "ffn_down_exps"};
        for (int k = 0; k < 3; k++) {
            snprintf(n, sizeof n, "blk.%d.%s.weight", il, ex[k]);
            add(tb, n, (uint64_t)(128.0 * 768 * 2048 * q4k));
        }
        if (shared) {
            const char *sh[] = {"ffn_gate_shexp", "ffn_up_shexp", "ffn_down_shexp"};
            for (int k = 0; k < 3; k++) {
                snprintf(n, sizeof n, "blk.%d.%s.weight", il, sh[k]);
                add(tb, n, (uint64_t)(768.0 * 2048 * q4k));
            }
        }
    }
    add(tb, "output_norm.weight", 8192);
    add(tb, "output.weight", (uint64_t)(151936.0 * 2048 * 0.8203));
}

static place_tensor *find(table *tb, const char *name)
{
    for (int i = 0; i < tb->n; i++)
        if (strcmp(tb->t[i].name, name) == 0)
            return &tb->t[i];
    ck_abort_msg("no tensor %s", name);
    return NULL;
}

START_TEST(classify_names)
{
    place_tensor t = {.name = "blk.12.ffn_up_exps.weight"};
    place_classify(&t);
    ck_assert_int_eq(t.layer, 12);
    ck_assert_int_eq(t.group, PG_EXPS);
    t = (place_tensor){.name = "blk.3.ffn_down_shexp.weight"};
    place_classify(&t);
    ck_assert_int_eq(t.layer, 3);
    ck_assert_int_eq(t.group, PG_FFN);
    t = (place_tensor){.name = "blk.0.attn_q.bias"};
    place_classify(&t);
    ck_assert_int_eq(t.group, PG_ATTN);
    t = (place_tensor){.name = "output.weight"};
    place_classify(&t);
    ck_assert_int_eq(t.layer, -1);
    ck_assert_int_eq(t.group, PG_OUTPUT);
    t = (place_tensor){.name = "token_embd.weight"};
    place_classify(&t);
    ck_assert_int_eq(t.group, PG_EMBD);
    /* gpt-oss: the experts' biases move with the experts (n_cpu_moe, the _exps rule);
     * the router's bias with the feed-forward block, the sinks with attention */
    t = (place_tensor){.name = "blk.1.ffn_down_exps.bias"};
    place_classify(&t);
    ck_assert_int_eq(t.layer, 1);
    ck_assert_int_eq(t.group, PG_EXPS);
    t = (place_tensor){.name = "blk.1.ffn_gate_inp.bias"};
    place_classify(&t);
    ck_assert_int_eq(t.group, PG_FFN);
    t = (place_tensor){.name = "blk.1.attn_sinks.weight"};
    place_classify(&t);
    ck_assert_int_eq(t.group, PG_ATTN);
}
END_TEST

START_TEST(ngl_semantics)
{
    static table tb;
    make_moe(&tb, 48, false);
    place_opts o = {.n_layer = 48, .ngl = 10, .vram_free = 200000 * MiB};
    place_result r;
    ck_assert_int_eq(place_decide(tb.t, tb.n, &o, &r, NULL), 0);
    ck_assert_int_eq(find(&tb, "blk.37.attn_q.weight")->device, PLACE_CPU);
    ck_assert_int_eq(find(&tb, "blk.38.attn_q.weight")->device, PLACE_GPU);
    ck_assert_int_eq(find(&tb, "blk.47.ffn_up_exps.weight")->device, PLACE_GPU);
    ck_assert_int_eq(find(&tb, "output.weight")->device, PLACE_CPU);
    ck_assert_int_eq(find(&tb, "token_embd.weight")->device, PLACE_CPU);
    o.ngl = 49;
    ck_assert_int_eq(place_decide(tb.t, tb.n, &o, &r, NULL), 0);
    ck_assert_int_eq(find(&tb, "output.weight")->device, PLACE_GPU);
    ck_assert_int_eq(find(&tb, "blk.0.attn_q.weight")->device, PLACE_GPU);
    ck_assert_int_eq(find(&tb, "token_embd.weight")->device, PLACE_CPU);
    ck_assert_uint_eq(r.bytes_cpu, find(&tb, "token_embd.weight")->bytes);
    o.ngl = 0;
    ck_assert_int_eq(place_decide(tb.t, tb.n, &o, &r, NULL), 0);
    ck_assert_uint_eq(r.bytes_gpu, 0);
    ck_assert_uint_eq(r.gpu_total, 0);
}
END_TEST

START_TEST(n_cpu_moe_keeps_attention_on_gpu)
{
    static table tb;
    make_moe(&tb, 48, false);
    place_opts o = {.n_layer = 48, .ngl = 99, .n_cpu_moe = 48, .vram_free = 200000 * MiB};
    place_result r;
    ck_assert_int_eq(place_decide(tb.t, tb.n, &o, &r, NULL), 0);
    for (int i = 0; i < tb.n; i++) {
        const place_tensor *p = &tb.t[i];
        if (p->group == PG_EXPS)
            ck_assert_msg(p->device == PLACE_CPU, "%s on GPU", p->name);
        else if (p->group != PG_EMBD)
            ck_assert_msg(p->device == PLACE_GPU, "%s on CPU", p->name);
    }
    o.n_cpu_moe = 5;
    ck_assert_int_eq(place_decide(tb.t, tb.n, &o, &r, NULL), 0);
    ck_assert_int_eq(find(&tb, "blk.4.ffn_down_exps.weight")->device, PLACE_CPU);
    ck_assert_int_eq(find(&tb, "blk.5.ffn_down_exps.weight")->device, PLACE_GPU);
    /* a shared expert (hybrid Qwen, Qwen3-Next) is no routed expert: n_cpu_moe moves the
     * routed ones and keeps it with its layer on the GPU (only the _exps patterns of
     * override_tensor move it too, override_patterns) */
    static table ts;
    make_moe(&ts, 8, true);
    place_opts os = {.n_layer = 8, .ngl = 99, .n_cpu_moe = 8, .vram_free = 200000 * MiB};
    ck_assert_int_eq(place_decide(ts.t, ts.n, &os, &r, NULL), 0);
    ck_assert_int_eq(find(&ts, "blk.7.ffn_up_exps.weight")->device, PLACE_CPU);
    ck_assert_int_eq(find(&ts, "blk.7.ffn_up_shexp.weight")->device, PLACE_GPU);
    ck_assert_int_eq(find(&ts, "blk.0.ffn_down_shexp.weight")->device, PLACE_GPU);
}
END_TEST

START_TEST(override_patterns)
{
    static table tb;
    make_moe(&tb, 4, true);
    place_opts o = {.n_layer = 4, .ngl = 99, .vram_free = 200000 * MiB,
                    .override_tensor = "ffn_(up|down|gate)_(ch|)exps=CPU"};
    place_result r;
    ck_assert_int_eq(place_decide(tb.t, tb.n, &o, &r, NULL), 0);
    ck_assert_int_eq(find(&tb, "blk.2.ffn_up_exps.weight")->device, PLACE_CPU);
    ck_assert_int_eq(find(&tb, "blk.2.ffn_gate_shexp.weight")->device, PLACE_CPU);
    ck_assert_int_eq(find(&tb, "blk.2.ffn_down_shexp.weight")->device, PLACE_CPU);
    ck_assert_int_eq(find(&tb, "blk.2.ffn_gate_inp.weight")->device, PLACE_GPU);
    ck_assert_int_eq(find(&tb, "blk.2.attn_k.weight")->device, PLACE_GPU);

    /* first match wins; devices by any accepted name */
    o.override_tensor = "blk\\.1\\.=CUDA0,blk\\.[0-3]\\.attn=cpu";
    o.ngl = 0;
    ck_assert_int_eq(place_decide(tb.t, tb.n, &o, &r, NULL), 0);
    ck_assert_int_eq(find(&tb, "blk.1.attn_q.weight")->device, PLACE_GPU);
    ck_assert_int_eq(find(&tb, "blk.1.ffn_up_exps.weight")->device, PLACE_GPU);
    ck_assert_int_eq(find(&tb, "blk.2.attn_q.weight")->device, PLACE_CPU);

    llmfs_error e = {0};
    o.override_tensor = "exps=TPU";
    ck_assert_int_eq(place_decide(tb.t, tb.n, &o, &r, &e), -EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "unknown device 'TPU'"));
    o.override_tensor = "ffn_(up=CPU";
    ck_assert_int_eq(place_decide(tb.t, tb.n, &o, &r, &e), -EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "bad pattern"));
    o.override_tensor = "nodevice";
    ck_assert_int_eq(place_parse_overrides(o.override_tensor, &e), -EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "REGEX=DEVICE"));
}
END_TEST

static uint64_t total_bytes(const table *tb)
{
    uint64_t s = 0;
    for (int i = 0; i < tb->n; i++)
        s += tb->t[i].bytes;
    return s;
}

START_TEST(fit_spills_experts_before_layers)
{
    static table tb;
    make_moe(&tb, 48, false);
    place_opts o = {.n_layer = 48, .fit = true, .fit_target = 512 * MiB,
                    .kv_bytes_per_layer = 8192ull * 2 * 512 * 2 /* 8k ctx, K+V, 512 dims, f16 */,
                    .compute_bytes = 300 * MiB};
    place_result r;

    /* plenty of VRAM: everything but the embedding on the GPU */
    o.vram_free = 100000 * MiB;
    ck_assert_int_eq(place_decide(tb.t, tb.n, &o, &r, NULL), 0);
    ck_assert_int_eq(r.ngl, 49);
    ck_assert_int_eq(r.n_cpu_moe, 0);

    /* a 12 GiB card: some experts move, all layers stay, headroom respected and minimal */
    o.vram_free = 12288 * MiB;
    ck_assert_int_eq(place_decide(tb.t, tb.n, &o, &r, NULL), 0);
    ck_assert_int_eq(r.ngl, 49);
    ck_assert_int_gt(r.n_cpu_moe, 0);
    ck_assert_int_lt(r.n_cpu_moe, 48);
    ck_assert_int_ge(r.headroom, (int64_t)(512 * MiB));
    ck_assert_ptr_nonnull(strstr(r.text, "n_cpu_moe"));
    int k = r.n_cpu_moe;
    place_opts manual = o;
    manual.fit = false;
    manual.ngl = 49;
    manual.n_cpu_moe = k - 1;
    place_result r2;
    place_decide(tb.t, tb.n, &manual, &r2, NULL);
    ck_assert_int_lt(r2.headroom, (int64_t)(512 * MiB)); /* one fewer would not fit */
    ck_assert_uint_eq(r.bytes_cpu + r.bytes_gpu, total_bytes(&tb));

    /* a tiny card: every expert on the CPU and then layers drop, output first */
    o.vram_free = 1200 * MiB;
    ck_assert_int_eq(place_decide(tb.t, tb.n, &o, &r, NULL), 0);
    ck_assert_int_eq(r.n_cpu_moe, 48);
    ck_assert_int_lt(r.ngl, 49);
    ck_assert_int_eq(find(&tb, "output.weight")->device, PLACE_CPU);
    ck_assert(r.gpu_total == 0 || r.headroom >= (int64_t)(512 * MiB));

    /* no GPU */
    o.vram_free = 0;
    ck_assert_int_eq(place_decide(tb.t, tb.n, &o, &r, NULL), 0);
    ck_assert_uint_eq(r.bytes_gpu, 0);
    ck_assert_ptr_nonnull(strstr(r.text, "CPU"));
}
END_TEST

/* With streaming on, the GPU keeps room for two layers of host-resident feed-forward
 * weights (and the repacking buffer): fit spills one layer's experts more when needed
 * and still leaves the headroom; nothing is kept when nothing lives in host memory, or
 * nothing is on the GPU. */
START_TEST(fit_keeps_room_for_streaming)
{
    static table tb;
    make_moe(&tb, 48, false);
    place_opts o = {.n_layer = 48, .fit = true, .fit_target = 512 * MiB, .vram_free = 12288 * MiB,
                    .kv_bytes_per_layer = 8192ull * 2 * 512 * 2, .compute_bytes = 300 * MiB};
    place_result off, on;
    ck_assert_int_eq(place_decide(tb.t, tb.n, &o, &off, NULL), 0);
    ck_assert_uint_eq(off.stream_bytes, 0);
    o.stream = true;
    ck_assert_int_eq(place_decide(tb.t, tb.n, &o, &on, NULL), 0);
    /* a layer's experts and router: what one slot holds */
    const uint64_t layer = 3 * find(&tb, "blk.0.ffn_up_exps.weight")->bytes + find(&tb, "blk.0.ffn_norm.weight")->bytes +
                           find(&tb, "blk.0.ffn_gate_inp.weight")->bytes;
    ck_assert_int_gt(on.n_cpu_moe, off.n_cpu_moe);
    ck_assert_int_eq(on.ngl, 49);
    ck_assert_uint_eq(on.stream_bytes, 2 * (3 * find(&tb, "blk.0.ffn_up_exps.weight")->bytes) + (32ull << 20));
    ck_assert_uint_lt(on.stream_bytes, 2 * layer + (32ull << 20));
    ck_assert_int_ge(on.headroom, (int64_t)(512 * MiB));
    ck_assert_ptr_nonnull(strstr(on.text, "stream "));
    /* one expert layer fewer on the CPU would eat into the headroom with the slots */
    place_opts manual = o;
    manual.fit = false;
    manual.ngl = 49;
    manual.n_cpu_moe = on.n_cpu_moe - 1;
    place_result r;
    place_decide(tb.t, tb.n, &manual, &r, NULL);
    ck_assert_int_lt(r.headroom, (int64_t)(512 * MiB));
    /* everything fits: no layer streams, no room kept */
    o.vram_free = 100000 * MiB;
    ck_assert_int_eq(place_decide(tb.t, tb.n, &o, &r, NULL), 0);
    ck_assert_int_eq(r.n_cpu_moe, 0);
    ck_assert_uint_eq(r.stream_bytes, 0);
    /* no GPU: nothing to stream to */
    o.vram_free = 0;
    ck_assert_int_eq(place_decide(tb.t, tb.n, &o, &r, NULL), 0);
    ck_assert_uint_eq(r.stream_bytes, 0);
}
END_TEST

START_TEST(fit_dense_model_drops_layers)
{
    /* 32 dense layers of 200 MiB, output 400 MiB */
    static table tb;
    memset(&tb, 0, sizeof tb);
    add(&tb, "token_embd.weight", 400 * MiB);
    for (int il = 0; il < 32; il++) {
        char n[64];
        snprintf(n, sizeof n, "blk.%d.attn_q.weight", il);
        add(&tb, n, 80 * MiB);
        snprintf(n, sizeof n, "blk.%d.ffn_up.weight", il);
        add(&tb, n, 120 * MiB);
    }
    add(&tb, "output.weight", 400 * MiB);
    place_opts o = {.n_layer = 32, .fit = true, .fit_target = 512 * MiB, .vram_free = 4096 * MiB,
                    .kv_bytes_per_layer = 16 * MiB, .compute_bytes = 100 * MiB};
    place_result r;
    ck_assert_int_eq(place_decide(tb.t, tb.n, &o, &r, NULL), 0);
    /* 4096 - 512 - 100 = 3484 MiB for layers of 216 MiB: 16 layers */
    ck_assert_int_eq(r.ngl, 16);
    ck_assert_int_eq(find(&tb, "blk.15.attn_q.weight")->device, PLACE_CPU);
    ck_assert_int_eq(find(&tb, "blk.16.attn_q.weight")->device, PLACE_GPU);
    ck_assert_int_ge(r.headroom, (int64_t)(512 * MiB));
}
END_TEST

START_TEST(compute_estimate_grows_with_context_without_flash)
{
    uint64_t a = place_compute_bytes(4096, 12288, 32, 128, 151936, 512, 4096, false);
    uint64_t b = place_compute_bytes(4096, 12288, 32, 128, 151936, 512, 8192, false);
    uint64_t c = place_compute_bytes(4096, 12288, 32, 128, 151936, 512, 8192, true);
    ck_assert_uint_gt(b, a);
    ck_assert_uint_lt(c, b);
    ck_assert_uint_eq(place_compute_bytes(4096, 12288, 32, 128, 151936, 512, 4096, true), c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("placement");
    TCase *tc = tcase_create("decide");
    tcase_add_test(tc, classify_names);
    tcase_add_test(tc, ngl_semantics);
    tcase_add_test(tc, n_cpu_moe_keeps_attention_on_gpu);
    tcase_add_test(tc, override_patterns);
    tcase_add_test(tc, fit_spills_experts_before_layers);
    tcase_add_test(tc, fit_keeps_room_for_streaming);
    tcase_add_test(tc, fit_dense_model_drops_layers);
    tcase_add_test(tc, compute_estimate_grows_with_context_without_flash);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
