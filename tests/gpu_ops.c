/* gpu_ops.c — every CUDA backend op against the CPU backend on the same random data:
 * every weight type through both matmul paths (matrix-vector and dequantize + cuBLAS),
 * odd shapes, 1..512 tokens; get_rows; norms, adds, rope, Hadamard; the KV cache in
 * every type with both attention kernels, several sequences, GQA ratios, stale and
 * poisoned cells, non-causal batches (images); the vision tower's LayerNorm, GELUs,
 * clamp and pooling; MoE routing and experts; the recurrent (Gated DeltaNet) ops with their
 * state and checkpoints on the device; argmax/top-k; recorded decode steps; error
 * reporting. Exits 77 (skip) when no GPU is usable.
 */
#include "testutil.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LLMFS_HAVE_CUDA
#include "backend.h"
#include "kv.h"
#include "quant.h"

static backend *cpu, *gpu;

/* ---------------------------------------------------------------- helpers */

static float *randn(int64_t n, float scale)
{
    float *x = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    for (int64_t i = 0; i < n; i++)
        x[i] = test_normal() * scale;
    return x;
}

static void gpu_ok(const char *what)
{
    struct llmfs_error e = {0};
    int rc = gpu->ops->check(gpu, &e);
    ck_assert_msg(rc == 0, "%s: CUDA backend failed: %s", what, e.msg);
}

static void *dev_alloc(size_t n)
{
    void *p = gpu->ops->alloc(gpu, n);
    ck_assert_msg(p != NULL, "device allocation of %zu bytes", n);
    return p;
}
static void *dev_from(const void *h, size_t n)
{
    void *p = dev_alloc(n);
    gpu->ops->upload(gpu, p, h, n);
    return p;
}
static float *host_from(const void *d, size_t n)
{
    float *h = malloc(n ? n : 1);
    gpu->ops->download(gpu, h, d, n);
    return h;
}
static void dev_free(void *p) { gpu->ops->free(gpu, p); }

static double rel_rms(const float *a, const float *r, int64_t n)
{
    double d = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        d += ((double)a[i] - r[i]) * ((double)a[i] - r[i]);
        s += (double)r[i] * r[i];
    }
    return s > 0 ? sqrt(d / s) : sqrt(d / (double)n);
}

/* worst relative RMS over the rows of [rows][d] */
static double worst_row(const float *a, const float *r, int rows, int64_t d, int *which)
{
    double w = 0;
    for (int i = 0; i < rows; i++) {
        double e = rel_rms(a + i * d, r + i * d, d);
        if (e > w || e != e) {
            w = e;
            if (which)
                *which = i;
        }
    }
    return w;
}

static void begin_both(int n, const int32_t *tok, const int32_t *pos, const int32_t *seq)
{
    fwd_batch b = {n, tok, pos, seq, NULL};
    ck_assert_int_eq(cpu->ops->begin(cpu, &b), 0);
    ck_assert_int_eq(gpu->ops->begin(gpu, &b), 0);
}

/* a batch of n tokens of sequence 0 at positions 0..n-1 */
static void begin_plain(int n)
{
    int32_t *t = malloc(sizeof(int32_t) * (size_t)n), *p = malloc(sizeof(int32_t) * (size_t)n),
            *s = calloc((size_t)n, sizeof(int32_t));
    for (int i = 0; i < n; i++) {
        t[i] = i;
        p[i] = i;
    }
    begin_both(n, t, p, s);
    free(t);
    free(p);
    free(s);
}

typedef struct wpair {
    tensor c, g; /* the same weight on the CPU and on the GPU */
    void *host;
} wpair;

static const int all_types[] = {T_F32,  T_F16,  T_BF16, T_Q4_0, T_Q4_1, T_Q5_0, T_Q5_1,
                                T_Q8_0, T_Q2_K, T_Q3_K, T_Q4_K, T_Q5_K, T_Q6_K,
                                T_IQ4_NL, T_MXFP4, T_IQ4_XS, T_TQ1_0, T_TQ2_0, T_IQ3_XXS,
                                T_IQ3_S, T_IQ2_XXS, T_IQ2_XS, T_IQ2_S, T_IQ1_S, T_IQ1_M};
#define N_TYPES ((int)(sizeof all_types / sizeof all_types[0]))

static bool is_float(int t) { return t == T_F32 || t == T_F16 || t == T_BF16; }

/* The grid types have no quantizer (llama.cpp needs an importance matrix for them):
 * rows of random grid indices, signs and scales, with the f16 super-scale set so that
 * values come out near s. */
static void random_grid_row(int type, int64_t ne0, unsigned char *row, float s)
{
    const type_traits *t = type_info(type);
    for (size_t i = 0; i < type_row_bytes(type, ne0); i++)
        row[i] = (unsigned char)test_rand();
    for (int64_t b = 0; b < ne0 / t->block; b++) {
        unsigned char *q = row + (size_t)b * t->block_bytes;
        uint16_t d = f32_to_f16(s * (test_uniform() + 0.5f) / (type == T_IQ3_S ? 60 : 8));
        if (type == T_IQ1_M) { /* the top nibbles of the four scale words */
            uint16_t sc[4];
            memcpy(sc, q + 48, 8);
            for (int k = 0; k < 4; k++)
                sc[k] = (uint16_t)((sc[k] & 0x0fff) | ((d >> (4 * k)) & 15) << 12);
            memcpy(q + 48, sc, 8);
        } else {
            memcpy(q, &d, 2);
        }
    }
}

/* rows of normals (scale s) stored as type, ne2 experts of ne1 x ne0 */
static void make_weight(wpair *w, const char *name, int type, int64_t ne0, int64_t ne1, int64_t ne2, float s)
{
    memset(w, 0, sizeof *w);
    const size_t rb = type_row_bytes(type, ne0);
    const int64_t rows = ne1 * ne2;
    w->host = malloc(rb * (size_t)rows);
    float *x = randn(ne0, 1);
    for (int64_t r = 0; r < rows; r++) {
        if (!type_info(type)->has_quantize) {
            random_grid_row(type, ne0, (unsigned char *)w->host + rb * (size_t)r, s);
            continue;
        }
        for (int64_t i = 0; i < ne0; i++)
            x[i] = test_normal() * s;
        quantize_row(type, x, (char *)w->host + rb * (size_t)r, ne0);
    }
    free(x);
    snprintf(w->c.name, sizeof w->c.name, "%s", name);
    w->c.type = type;
    w->c.ne[0] = ne0;
    w->c.ne[1] = ne1;
    w->c.ne[2] = ne2;
    w->c.nb1 = rb;
    w->c.nb2 = rb * (size_t)ne1;
    w->c.data = w->host;
    w->c.be = cpu;
    w->g = w->c;
    w->g.data = NULL;
    struct llmfs_error err = {0};
    int rc = gpu->ops->load_weight(gpu, &w->g, w->host, &err);
    ck_assert_msg(rc == 0, "load_weight %s: %s", name, err.msg);
    ck_assert_ptr_eq(w->g.be, gpu);
}
static void free_weight(wpair *w)
{
    dev_free(w->g.data);
    free(w->host);
}

/* ---------------------------------------------------------------- memory */

START_TEST(upload_download_round_trip)
{
    const size_t sizes[] = {1, 3, 4096, 4097, (16u << 20) + 3, 40u << 20};
    for (int i = 0; i < 6; i++) {
        size_t n = sizes[i];
        unsigned char *h = malloc(n), *back;
        for (size_t j = 0; j < n; j++)
            h[j] = (unsigned char)(j * 131 + i);
        void *d = dev_from(h, n);
        back = (unsigned char *)host_from(d, n);
        ck_assert_msg(memcmp(h, back, n) == 0, "round trip of %zu bytes", n);
        dev_free(d);
        free(h);
        free(back);
    }
    /* a refused allocation is an answer, not a failure of the backend */
    ck_assert_ptr_null(gpu->ops->alloc(gpu, (size_t)1 << 52));
    gpu_ok("after a refused allocation");
    /* fresh memory reads as zeros (KV cells never written must not be NaN) */
    float *d = dev_alloc(1 << 20), *h = host_from(d, 1 << 20);
    for (int i = 0; i < (1 << 18); i++)
        ck_assert(h[i] == 0.0f);
    dev_free(d);
    free(h);
    gpu_ok("memory");
}
END_TEST

/* ---------------------------------------------------------------- matmul, get_rows */

static double matmul_tol(int type)
{
    if (type == T_F32)
        return 1e-5;
    if (type == T_F16)
        return 3e-3; /* the CPU rounds activations to f16 */
    if (type == T_BF16)
        return 1.5e-2; /* ... and to bf16 */
    return 4e-2; /* both round activations to 8 bits, in different blocks */
}

static void check_matmul(int type, int64_t ne0, int64_t ne1, int n)
{
    wpair w;
    make_weight(&w, "w", type, ne0, ne1, 1, 1.0f / sqrtf((float)ne0));
    float *x = randn((int64_t)n * ne0, 1);
    for (int64_t i = 0; i < (int64_t)n * ne0; i += 37)
        x[i] *= 4; /* outliers: block scales matter */
    float *ref = malloc(sizeof(float) * (size_t)n * (size_t)ne1);
    begin_plain(n);
    cpu->ops->matmul(cpu, ref, &w.c, x, n);
    float *dx = dev_from(x, sizeof(float) * (size_t)n * (size_t)ne0);
    float *dout = dev_alloc(sizeof(float) * (size_t)n * (size_t)ne1);
    gpu->ops->matmul(gpu, dout, &w.g, dx, n);
    float *got = host_from(dout, sizeof(float) * (size_t)n * (size_t)ne1);
    gpu_ok("matmul");
    int wr = 0;
    const double tol = matmul_tol(type), e_tok = worst_row(got, ref, n, ne1, &wr);
    ck_assert_msg(e_tok < tol, "matmul %s %lldx%lld n=%d: token %d off by %.3g (tolerance %.3g)",
                  type_info(type)->name, (long long)ne1, (long long)ne0, n, wr, e_tok, tol);
    if (n >= 8) {
        /* every output row across the tokens too, against the scale of the whole output:
         * a row computed from the wrong weights or tokens is off by about that scale,
         * while a row of small values is legitimately off by more than its own size */
        double all = 0, worst = 0;
        int64_t wc = 0;
        for (int64_t i = 0; i < (int64_t)n * ne1; i++)
            all += (double)ref[i] * ref[i];
        all = sqrt(all / (double)(n * ne1));
        for (int64_t r = 0; r < ne1; r++) {
            double e = 0;
            for (int t = 0; t < n; t++) {
                const double dlt = (double)got[(size_t)t * ne1 + r] - ref[(size_t)t * ne1 + r];
                e += dlt * dlt;
            }
            e = sqrt(e / n) / (all > 0 ? all : 1);
            if (e > worst || e != e) {
                worst = e;
                wc = r;
            }
        }
        ck_assert_msg(worst < tol * 1.5, "matmul %s n=%d: output row %lld off by %.3g of the output's scale",
                      type_info(type)->name, n, (long long)wc, worst);
    }
    dev_free(dx);
    dev_free(dout);
    free(got);
    free(ref);
    free(x);
    free_weight(&w);
}

/* Every weight type, through the matrix-vector kernels (n <= 16, 8 tokens a pass) and
 * the dequantize + cuBLAS path (n > 16), with row counts that leave partial thread
 * blocks and row lengths of odd block counts. */
START_TEST(matmul_every_type)
{
    const int type = all_types[_i];
    const int ns[] = {1, 2, 3, 5, 8, 9, 16, 17, 64, 512};
    const int qk = type_info(type)->block;
    const int64_t lens[2] = {qk == 256 ? 256 : qk == 32 ? 96 : 100, qk == 256 ? 768 : qk == 32 ? 160 : 64};
    const int64_t rows[2] = {37, 301};
    for (int li = 0; li < 2; li++)
        for (int ri = 0; ri < 2; ri++)
            for (int ni = 0; ni < (int)(sizeof ns / sizeof ns[0]); ni++)
                check_matmul(type, lens[li], rows[ri], ns[ni]);
    /* a big one: several 64 MB dequantization slabs, rows not a multiple of the slab */
    if (!is_float(type))
        check_matmul(type, 4096, 9000, 17);
}
END_TEST

START_TEST(get_rows_every_type)
{
    const int type = all_types[_i];
    const int qk = type_info(type)->block;
    const int64_t ne0 = qk == 256 ? 512 : qk == 32 ? 96 : 100, ne1 = 50;
    wpair w;
    make_weight(&w, "tok_embd", type, ne0, ne1, 1, 1.0f);
    const int n = 7;
    int32_t tok[7] = {0, 49, 3, 3, 17, 48, 1}, pos[7] = {0, 1, 2, 3, 4, 5, 6}, seq[7] = {0};
    begin_both(n, tok, pos, seq);
    float *ref = malloc(sizeof(float) * n * ne0);
    cpu->ops->get_rows(cpu, ref, &w.c, n);
    float *d = dev_alloc(sizeof(float) * n * ne0);
    gpu->ops->get_rows(gpu, d, &w.g, n);
    float *got = host_from(d, sizeof(float) * n * ne0);
    gpu_ok("get_rows");
    for (int64_t i = 0; i < n * ne0; i++)
        ck_assert_msg(fabsf(got[i] - ref[i]) <= 1e-6f * (1 + fabsf(ref[i])), "get_rows %s element %lld: %g vs %g",
                      type_info(type)->name, (long long)i, got[i], ref[i]);
    dev_free(d);
    free(got);
    free(ref);
    free_weight(&w);
}
END_TEST

/* Weights sharing one input in one call (q, k, v of mixed types; gate and up), through
 * both paths: each output as matmul alone gives it on the CPU. */
START_TEST(matmul_multi_mixed)
{
    const int ns[] = {1, 5, 8, 33, 300};
    const int types[3] = {T_Q4_K, T_Q8_0, T_Q6_K};
    const int64_t rows[3] = {512, 128, 128}, ne0 = 512;
    for (int ni = 0; ni < 5; ni++) {
        const int n = ns[ni];
        wpair w[3];
        for (int i = 0; i < 3; i++)
            make_weight(&w[i], "w", i == 2 && ni % 2 ? T_BF16 : types[i], ne0, rows[i], 1, 1.0f / 22);
        float *x = randn((int64_t)n * ne0, 1), *dx = dev_from(x, sizeof(float) * n * ne0);
        float *dout[3], *ref[3];
        const tensor *wg[3] = {&w[0].g, &w[1].g, &w[2].g};
        for (int i = 0; i < 3; i++) {
            dout[i] = dev_alloc(sizeof(float) * n * rows[i]);
            ref[i] = malloc(sizeof(float) * n * rows[i]);
        }
        begin_plain(n);
        for (int i = 0; i < 3; i++)
            cpu->ops->matmul(cpu, ref[i], &w[i].c, x, n);
        gpu->ops->matmul_multi(gpu, dout, wg, 3, dx, n);
        for (int i = 0; i < 3; i++) {
            float *got = host_from(dout[i], sizeof(float) * n * rows[i]);
            gpu_ok("matmul_multi");
            int wr = 0;
            double e = worst_row(got, ref[i], n, rows[i], &wr);
            ck_assert_msg(e < 4e-2, "matmul_multi n %d output %d (%s): token %d off by %.3g", n, i,
                          type_info(w[i].c.type)->name, wr, e);
            free(got);
            free(ref[i]);
            dev_free(dout[i]);
            free_weight(&w[i]);
        }
        dev_free(dx);
        free(x);
    }
}
END_TEST

/* Types and shapes the backend cannot hold are refused at load, with a reason. */
START_TEST(load_weight_refusals)
{
    tensor t = {0};
    snprintf(t.name, sizeof t.name, "bad");
    t.type = T_Q8_K;
    t.ne[0] = 256;
    t.ne[1] = 4;
    t.ne[2] = 1;
    char buf[2048] = {0};
    struct llmfs_error err = {0};
    ck_assert_int_eq(gpu->ops->load_weight(gpu, &t, buf, &err), -EINVAL);
    ck_assert(strlen(err.msg) > 0);
    t.type = T_Q4_0;
    t.ne[0] = 48; /* not whole blocks */
    ck_assert_int_eq(gpu->ops->load_weight(gpu, &t, buf, &err), -EINVAL);
    gpu_ok("refusals leave the backend usable");
}
END_TEST

/* ---------------------------------------------------------------- element-wise */

START_TEST(norm_add_swiglu)
{
    const int shapes[][2] = {{1, 64}, {3, 100}, {17, 4096}, {5, 7}, {64, 256}};
    for (int s = 0; s < 5; s++) {
        const int rows = shapes[s][0], d = shapes[s][1];
        const int64_t n = (int64_t)rows * d;
        begin_plain(rows);
        float *x = randn(n, 3), *y = randn(n, 1), *w = randn(d, 1), *b = randn(d, 1);
        float *ref = malloc(sizeof(float) * n), *ref2 = malloc(sizeof(float) * n);
        float *dx = dev_from(x, sizeof(float) * n), *dy = dev_from(y, sizeof(float) * n);
        float *dw = dev_from(w, sizeof(float) * d), *db = dev_from(b, sizeof(float) * d);
        float *dout = dev_alloc(sizeof(float) * n), *got;

        for (int with_w = 0; with_w < 2; with_w++) {
            cpu->ops->rmsnorm(cpu, ref, x, with_w ? w : NULL, rows, d, 1e-5f);
            gpu->ops->rmsnorm(gpu, dout, dx, with_w ? dw : NULL, rows, d, 1e-5f);
            got = host_from(dout, sizeof(float) * n);
            ck_assert_msg(rel_rms(got, ref, n) < 1e-5, "rmsnorm %dx%d", rows, d);
            free(got);
        }
        /* in place, as q/k norms run */
        memcpy(ref2, x, sizeof(float) * n);
        cpu->ops->rmsnorm(cpu, ref2, ref2, w, rows, d, 1e-6f);
        float *dx2 = dev_from(x, sizeof(float) * n);
        gpu->ops->rmsnorm(gpu, dx2, dx2, dw, rows, d, 1e-6f);
        got = host_from(dx2, sizeof(float) * n);
        ck_assert(rel_rms(got, ref2, n) < 1e-5);
        free(got);

        memcpy(ref, x, sizeof(float) * n);
        cpu->ops->add(cpu, ref, y, n);
        gpu->ops->upload(gpu, dx2, x, sizeof(float) * n); /* dx2 held the normed x */
        gpu->ops->add(gpu, dx2, dy, n);
        got = host_from(dx2, sizeof(float) * n);
        ck_assert(rel_rms(got, ref, n) < 1e-7);
        free(got);

        memcpy(ref, x, sizeof(float) * n);
        cpu->ops->add_bias(cpu, ref, b, rows, d);
        gpu->ops->upload(gpu, dx2, x, sizeof(float) * n);
        gpu->ops->add_bias(gpu, dx2, db, rows, d);
        got = host_from(dx2, sizeof(float) * n);
        ck_assert(rel_rms(got, ref, n) < 1e-7);
        free(got);

        cpu->ops->swiglu(cpu, ref, x, y, n);
        gpu->ops->swiglu(gpu, dout, dx, dy, n);
        got = host_from(dout, sizeof(float) * n);
        ck_assert_msg(rel_rms(got, ref, n) < 1e-5, "swiglu %lld", (long long)n);
        free(got);
        /* out aliasing gate, as the model calls it */
        gpu->ops->swiglu(gpu, dx, dx, dy, n);
        got = host_from(dx, sizeof(float) * n);
        ck_assert(rel_rms(got, ref, n) < 1e-5);
        free(got);
        /* GeGLU: the CPU rounds GELU through f16 as llama.cpp does, the GPU does not */
        gpu->ops->upload(gpu, dx, x, sizeof(float) * n);
        cpu->ops->geglu(cpu, ref, x, y, n);
        gpu->ops->geglu(gpu, dout, dx, dy, n);
        got = host_from(dout, sizeof(float) * n);
        ck_assert_msg(rel_rms(got, ref, n) < 2e-3, "geglu %lld: %g", (long long)n, rel_rms(got, ref, n));
        free(got);
        /* scale, then soft-capping at 30 of values up to ~100 */
        memcpy(ref, x, sizeof(float) * n);
        cpu->ops->scale(cpu, ref, 10.0f, n);
        cpu->ops->softcap(cpu, ref, 30.0f, n);
        gpu->ops->scale(gpu, dx, 10.0f, n);
        gpu->ops->softcap(gpu, dx, 30.0f, n);
        got = host_from(dx, sizeof(float) * n);
        ck_assert_msg(rel_rms(got, ref, n) < 1e-6, "scale/softcap %lld", (long long)n);
        free(got);
        /* a column block of rows: copy2d of the first d/2 columns */
        if (d >= 2) {
            cpu->ops->copy2d(cpu, ref, d / 2, x, d, rows, d / 2);
            gpu->ops->upload(gpu, dx, x, sizeof(float) * n);
            gpu->ops->copy2d(gpu, dout, d / 2, dx, d, rows, d / 2);
            got = host_from(dout, sizeof(float) * (size_t)rows * (d / 2));
            ck_assert(memcmp(got, ref, sizeof(float) * (size_t)rows * (d / 2)) == 0);
            free(got);
        }
        /* per-expert scales by id */
        {
            int32_t ids[8] = {0, 3, 1, 2, 3, 3, 0, 1};
            float s4[4] = {0.5f, 2.0f, 0.25f, 4.0f}, w8[8] = {1, 2, 3, 4, 5, 6, 7, 8}, r8[8];
            memcpy(r8, w8, sizeof r8);
            cpu->ops->scale_ids(cpu, r8, ids, s4, 8);
            int32_t *di = dev_from(ids, sizeof ids);
            float *ds4 = dev_from(s4, sizeof s4), *dw8 = dev_from(w8, sizeof w8);
            gpu->ops->scale_ids(gpu, dw8, di, ds4, 8);
            got = host_from(dw8, sizeof w8);
            ck_assert(memcmp(got, r8, sizeof r8) == 0);
            free(got);
            dev_free(di);
            dev_free(ds4);
            dev_free(dw8);
        }
        gpu_ok("element-wise");
        float *ds[] = {dx, dy, dw, db, dout, dx2};
        for (int i = 0; i < 6; i++)
            dev_free(ds[i]);
        free(x);
        free(y);
        free(w);
        free(b);
        free(ref);
        free(ref2);
    }
}
END_TEST

START_TEST(hadamard)
{
    const int blocks[] = {64, 128, 256, 2, 1024};
    for (int bi = 0; bi < 5; bi++) {
        const int block = blocks[bi];
        const int64_t n = (int64_t)block * 37;
        float *x = randn(n, 1), *ref = malloc(sizeof(float) * n);
        memcpy(ref, x, sizeof(float) * n);
        begin_plain(1);
        cpu->ops->hadamard(cpu, ref, n, block);
        float *d = dev_from(x, sizeof(float) * n);
        gpu->ops->hadamard(gpu, d, n, block);
        float *got = host_from(d, sizeof(float) * n);
        ck_assert_msg(rel_rms(got, ref, n) < 1e-6, "hadamard block %d: %g", block, rel_rms(got, ref, n));
        /* its own inverse */
        gpu->ops->hadamard(gpu, d, n, block);
        free(got);
        got = host_from(d, sizeof(float) * n);
        ck_assert(rel_rms(got, x, n) < 1e-5);
        gpu_ok("hadamard");
        dev_free(d);
        free(got);
        free(x);
        free(ref);
    }
}
END_TEST

START_TEST(rope_variants)
{
    /* normal and NEOX pairs, partial rotation, linear scaling, llama3 factors, far
     * positions, two sequences */
    static float factors[64], proportional[32];
    for (int i = 0; i < 64; i++)
        factors[i] = 1.0f + (float)i / 8;
    /* Gemma 4's full layers: the first pairs rotate, 1e30 leaves the others in place */
    for (int i = 0; i < 32; i++)
        proportional[i] = i < 4 ? 1.0f : 1e30f;
    const struct {
        int hd, n_rot;
        bool neox;
        float base, scale;
        const float *ff;
    } cfg[] = {
        {64, 64, false, 10000.f, 1.f, NULL}, {128, 128, true, 1e6f, 1.f, NULL},  {128, 64, true, 10000.f, 1.f, NULL},
        {32, 32, false, 10000.f, 0.25f, NULL}, {128, 128, false, 500000.f, 1.f, factors}, {8, 8, false, 10000.f, 1.f, NULL},
        {64, 64, true, 1e6f, 1.f, proportional},
        {64, 64, true, 150000.f, 1.f / 32, NULL}, /* YaRN as gpt-oss (below) */
    };
    for (int c = 0; c < 7; c++) {
        const int n = 19, H = 3, hd = cfg[c].hd;
        int32_t tok[19], pos[19], seq[19];
        for (int i = 0; i < n; i++) {
            tok[i] = i;
            seq[i] = i % 2;
            pos[i] = i < 10 ? i : 4000 + 3 * i;
        }
        begin_both(n, tok, pos, seq);
        rope_params p = {0};
        p.n_rot = cfg[c].n_rot;
        p.neox = cfg[c].neox;
        p.freq_base = cfg[c].base;
        p.freq_scale = cfg[c].scale;
        p.freq_factors = cfg[c].ff;
        if (c == 6) {
            p.yarn_ext_factor = 1;
            p.yarn_attn_factor = 1;
            p.yarn_beta_fast = 32;
            p.yarn_beta_slow = 1;
            p.yarn_orig_ctx = 4096;
        }
        const int64_t sz = (int64_t)n * H * hd;
        float *x = randn(sz, 1), *ref = malloc(sizeof(float) * sz);
        memcpy(ref, x, sizeof(float) * sz);
        cpu->ops->rope(cpu, ref, n, H, hd, &p);
        float *d = dev_from(x, sizeof(float) * sz);
        gpu->ops->rope(gpu, d, n, H, hd, &p);
        float *got = host_from(d, sizeof(float) * sz);
        gpu_ok("rope");
        int wr = 0;
        double e = worst_row(got, ref, n, H * hd, &wr);
        ck_assert_msg(e < 2e-5, "rope config %d: token %d off by %g", c, wr, e);
        dev_free(d);
        free(got);
        free(x);
        free(ref);
    }
}
END_TEST

/* ---------------------------------------------------------------- KV cache, attention */

typedef struct kvpair {
    kv_cache c, g;
    struct kv_layer lc, lg;
    int seq_len_c[16], seq_len_g[16], seq_top_c[16], seq_top_g[16];
} kvpair;

/* Cells per sequence of the caches kv_make builds: 0 for n_ctx, else a sliding-window
 * ring of that many (attention_ring). */
static int kv_ring_cells;

static void kv_make(kvpair *k, int n_ctx, int n_seq, int n_head_kv, int hd, int tk, int tv)
{
    memset(k, 0, sizeof *k);
    kv_cache *cs[2] = {&k->c, &k->g};
    struct kv_layer *ls[2] = {&k->lc, &k->lg};
    backend *bs[2] = {cpu, gpu};
    for (int i = 0; i < 2; i++) {
        kv_cache *c = cs[i];
        c->n_layer = 1;
        c->n_ctx = n_ctx;
        c->n_seq = n_seq;
        c->n_embd_kv = n_head_kv * hd;
        c->head_dim = hd;
        c->type_k = tk;
        c->type_v = tv;
        c->layer = ls[i];
        c->seq_len = i ? k->seq_len_g : k->seq_len_c;
        c->seq_top = i ? k->seq_top_g : k->seq_top_c;
        struct kv_layer *L = ls[i];
        L->be = bs[i];
        L->n_cells = kv_ring_cells ? kv_ring_cells : n_ctx;
        L->n_embd_kv = c->n_embd_kv;
        L->head_dim = hd;
        L->k_row = type_row_bytes(tk, c->n_embd_kv);
        L->v_row = type_row_bytes(tv, c->n_embd_kv);
        const size_t cells = (size_t)L->n_cells * n_seq;
        L->k = bs[i]->ops->alloc(bs[i], L->k_row * cells);
        L->v = bs[i]->ops->alloc(bs[i], L->v_row * cells);
        ck_assert(L->k && L->v);
        if (i == 0) { /* the CPU's memory is not zeroed; make unwritten cells equal */
            memset(L->k, 0, L->k_row * cells);
            memset(L->v, 0, L->v_row * cells);
        }
    }
}
static void kv_drop(kvpair *k)
{
    cpu->ops->free(cpu, k->lc.k);
    cpu->ops->free(cpu, k->lc.v);
    dev_free(k->lg.k);
    dev_free(k->lg.v);
}

typedef struct attn_cfg {
    int hd, H, Hk, tk, tv;
} attn_cfg;

/* The sliding window and sinks (host memory, [H]) the attention tests use; 0 and NULL
 * but in attention_window_sinks. */
static int attn_swa;
static const float *attn_sinks;
/* store_attend's batches are non-causal (an image's tokens see each other) */
static bool attn_nc;

/* Stores k, v (and attends with q) for the batch on both backends; returns the worst
 * per-token relative error of the GPU's output. */
static double store_attend(kvpair *kv, const attn_cfg *a, int n, const int32_t *pos, const int32_t *seq,
                           const float *q, const float *k, const float *v, bool flash, float **out_gpu)
{
    int32_t *tok = calloc((size_t)n, sizeof(int32_t));
    begin_both(n, tok, pos, seq);
    free(tok);
    if (attn_nc) {
        cpu->ops->non_causal(cpu);
        ck_assert_ptr_nonnull(gpu->ops->non_causal);
        gpu->ops->non_causal(gpu);
    }
    const int64_t nq = (int64_t)n * a->H * a->hd, nk = (int64_t)n * a->Hk * a->hd;
    cpu->ops->kv_store(cpu, &kv->c, 0, k, v, n);
    float *dk = dev_from(k, sizeof(float) * nk), *dv = dev_from(v, sizeof(float) * nk);
    float *dq = dev_from(q, sizeof(float) * nq), *dout = dev_alloc(sizeof(float) * nq);
    gpu->ops->kv_store(gpu, &kv->g, 0, dk, dv, n);
    attn_params p = {a->H, a->Hk, a->hd, 1.0f / sqrtf((float)a->hd), flash, attn_swa, attn_sinks};
    attn_params pg = p;
    float *dsinks = attn_sinks ? dev_from(attn_sinks, sizeof(float) * a->H) : NULL;
    pg.sinks = dsinks;
    float *ref = malloc(sizeof(float) * nq);
    cpu->ops->attention(cpu, ref, q, &kv->c, 0, n, &p);
    gpu->ops->attention(gpu, dout, dq, &kv->g, 0, n, &pg);
    if (dsinks)
        dev_free(dsinks);
    float *got = host_from(dout, sizeof(float) * nq);
    gpu_ok("attention");
    int wr = 0;
    double e = worst_row(got, ref, n, (int64_t)a->H * a->hd, &wr);
    if (out_gpu)
        *out_gpu = got;
    else
        free(got);
    free(ref);
    dev_free(dk);
    dev_free(dv);
    dev_free(dq);
    dev_free(dout);
    return e;
}

static double attn_tol(const attn_cfg *a)
{
    /* the CPU rounds q to K's dot type (f16, or 8-bit blocks for a quantized K) */
    return a->tk == T_F32 && a->tv == T_F32 ? 1e-4 : (a->tk == T_F16 || a->tk == T_F32) ? 6e-3 : 4e-2;
}

/* One configuration through a prompt batch of several sequences, a decode step of
 * one token per sequence, and a rewind over poisoned cells. */
static void attention_case(const attn_cfg *a, const int *lens, int n_seq, bool flash)
{
    const int n_ctx = 1024;
    kvpair kv;
    kv_make(&kv, n_ctx, n_seq, a->Hk, a->hd, a->tk, a->tv);
    const double tol = attn_tol(a);
    char what[160];
    snprintf(what, sizeof what, "hd %d heads %d/%d K %s V %s flash %d", a->hd, a->H, a->Hk,
             type_info(a->tk)->name, type_info(a->tv)->name, flash);

    /* 1. prompts: sequence s holds lens[s] tokens, positions 0.. */
    int n = 0;
    for (int s = 0; s < n_seq; s++)
        n += lens[s];
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)(n + n_seq + 64)), *seq = malloc(sizeof(int32_t) * (size_t)(n + n_seq + 64));
    for (int s = 0, i = 0; s < n_seq; s++)
        for (int j = 0; j < lens[s]; j++, i++) {
            pos[i] = j;
            seq[i] = s;
        }
    const int64_t qd = (int64_t)a->H * a->hd, kd = (int64_t)a->Hk * a->hd;
    float *q = randn(n * qd, 1.5f), *k = randn(n * kd, 1), *v = randn(n * kd, 1);
    double e = store_attend(&kv, a, n, pos, seq, q, k, v, flash, NULL);
    ck_assert_msg(e < tol, "%s: prompt batch of %d: %.3g", what, n, e);
    free(q);
    free(k);
    free(v);

    /* 2. decode: one token per sequence */
    for (int s = 0; s < n_seq; s++) {
        pos[s] = lens[s];
        seq[s] = s;
    }
    q = randn(n_seq * qd, 1.5f);
    k = randn(n_seq * kd, 1);
    v = randn(n_seq * kd, 1);
    e = store_attend(&kv, a, n_seq, pos, seq, q, k, v, flash, NULL);
    ck_assert_msg(e < tol, "%s: decode step: %.3g", what, e);
    free(q);
    free(k);
    free(v);

    /* 3. sequence 0 rewound to position 3: its cells past the new tokens hold poison
     * (keys along the queries, huge values) that no token may see */
    const int m = lens[0] > 8 ? 8 : lens[0];
    const int poison_from = 3 + m, poison_to = lens[0] + 1 + 6;
    q = randn(m * qd, 1.5f);
    if (poison_to > poison_from) {
        const int np = poison_to - poison_from;
        float *pk = malloc(sizeof(float) * np * kd), *pv = malloc(sizeof(float) * np * kd);
        for (int i = 0; i < np; i++) {
            pos[i] = poison_from + i;
            seq[i] = 0;
            for (int h = 0; h < a->Hk; h++)
                for (int d = 0; d < a->hd; d++) {
                    float s = 0; /* sum of the queries of this KV head's group */
                    for (int t = 0; t < m; t++)
                        for (int g = 0; g < a->H / a->Hk; g++)
                            s += q[t * qd + (h * (a->H / a->Hk) + g) * a->hd + d];
                    pk[i * kd + h * a->hd + d] = s;
                    pv[i * kd + h * a->hd + d] = 50.0f;
                }
        }
        float *pq = randn(np * qd, 1);
        store_attend(&kv, a, np, pos, seq, pq, pk, pv, flash, NULL);
        free(pk);
        free(pv);
        free(pq);
    }
    for (int i = 0; i < m; i++) {
        pos[i] = 3 + i;
        seq[i] = 0;
    }
    k = randn(m * kd, 1);
    v = randn(m * kd, 1);
    float *got = NULL;
    e = store_attend(&kv, a, m, pos, seq, q, k, v, flash, &got);
    ck_assert_msg(e < tol, "%s: rewound batch: %.3g", what, e);
    for (int64_t i = 0; i < m * qd; i++)
        ck_assert_msg(fabsf(got[i]) < 20.0f, "%s: a rewound token saw a stale cell (%g)", what, got[i]);
    free(got);
    free(q);
    free(k);
    free(v);
    free(pos);
    free(seq);
    kv_drop(&kv);
}

static const attn_cfg attn_cfgs[] = {
    {64, 4, 2, T_F16, T_F16},    {128, 8, 2, T_F16, T_F16},   {128, 8, 2, T_Q8_0, T_Q8_0}, {128, 8, 2, T_Q4_0, T_Q4_0},
    {32, 8, 4, T_Q8_0, T_F16},   {32, 8, 4, T_F16, T_Q4_0},   {256, 4, 1, T_F16, T_F16},   {256, 4, 1, T_Q8_0, T_Q8_0},
    {128, 16, 1, T_F16, T_F16},  {64, 32, 2, T_Q4_0, T_F16},  {8, 8, 4, T_F16, T_F16},     {96, 6, 3, T_Q8_0, T_Q8_0},
    {80, 4, 4, T_F16, T_F16},    {64, 4, 4, T_F32, T_F32},
    /* cache rows of fewer than 32 elements or not a multiple of 32 (the float store) */
    {8, 4, 1, T_F16, T_F16},     {40, 6, 3, T_F32, T_F32},
};
#define N_ATTN ((int)(sizeof attn_cfgs / sizeof attn_cfgs[0]))

/* Prompt lengths 1, 3, 17, 64, 512 in one sequence, and several sequences of mixed
 * lengths (one crossing the 256-cell bucket) in one batch; flash on and off. */
START_TEST(attention_every_config)
{
    const attn_cfg *a = &attn_cfgs[_i];
    const int single[] = {1, 3, 17, 64, 512};
    for (int flash = 0; flash < 2; flash++) {
        for (int i = 0; i < 5; i++)
            attention_case(a, &single[i], 1, flash);
        const int multi[] = {5, 17, 300, 1, 40};
        attention_case(a, multi, 5, flash);
        /* many sequences with one token each: the one-token kernel, in a batch > 8 */
        const int ones[12] = {1, 2, 1, 3, 1, 1, 2, 1, 1, 1, 4, 1};
        attention_case(a, ones, 12, flash);
    }
}
END_TEST

/* gpt-oss's attention: sliding windows of 8 and 100 cells, with and without sinks, in
 * the one-token and the flash kernels, against the CPU's */
START_TEST(attention_window_sinks)
{
    static float sinks[8];
    for (int h = 0; h < 8; h++)
        sinks[h] = 0.5f + 0.5f * (float)h;
    const attn_cfg cfgs[] = {{64, 8, 2, T_F16, T_F16}, {64, 8, 2, T_Q8_0, T_Q8_0}};
    const int swas[] = {0, 8, 100};
    for (int c = 0; c < 2; c++)
        for (int w = 0; w < 3; w++)
            for (int sk = 0; sk < 2; sk++) {
                if (!swas[w] && !sk)
                    continue;
                attn_swa = swas[w];
                attn_sinks = sk ? sinks : NULL;
                for (int flash = 0; flash < 2; flash++) {
                    const int single[] = {3, 64, 512};
                    for (int i = 0; i < 3; i++)
                        attention_case(&cfgs[c], &single[i], 1, flash);
                    const int multi[] = {5, 17, 300, 1, 40};
                    attention_case(&cfgs[c], multi, 5, flash);
                }
            }
    attn_swa = 0;
    attn_sinks = NULL;
}
END_TEST

/* Sliding-window rings (kv.h): window 8 in a ring of 8 + 16 cells, two sequences fed in
 * micro-batches of up to 16 tokens each and then token by token, so the rings wrap many
 * times; the GPU reads each cell where the CPU does, on both kernels. */
START_TEST(attention_ring)
{
    const attn_cfg cfgs[] = {{64, 8, 2, T_F16, T_F16}, {128, 4, 1, T_Q8_0, T_Q8_0}, {32, 8, 4, T_F32, T_F32}};
    attn_swa = 8;
    kv_ring_cells = 8 + 16;
    for (int c = 0; c < 3; c++)
        for (int flash = 0; flash < 2; flash++) {
            const attn_cfg *a = &cfgs[c];
            kvpair kv;
            kv_make(&kv, 1024, 2, a->Hk, a->hd, a->tk, a->tv);
            const int64_t qd = (int64_t)a->H * a->hd, kd = (int64_t)a->Hk * a->hd;
            int32_t pos[32], seq[32];
            int len[2] = {0, 0};
            for (int step = 0; step < 40; step++) {
                /* prompt-sized steps first, then decode steps; the sequences out of step */
                int take[2] = {step < 12 ? 16 - step % 5 : 1, step < 12 ? 1 + step % 16 : 1}, n = 0;
                for (int s = 0; s < 2; s++)
                    for (int j = 0; j < take[s]; j++, n++) {
                        pos[n] = len[s] + j;
                        seq[n] = s;
                    }
                float *q = randn(n * qd, 1.5f), *k = randn(n * kd, 1), *v = randn(n * kd, 1);
                double e = store_attend(&kv, a, n, pos, seq, q, k, v, flash, NULL);
                ck_assert_msg(e < attn_tol(a), "hd %d K %s flash %d step %d (lengths %d, %d): %.3g", a->hd,
                              type_info(a->tk)->name, flash, step, len[0], len[1], e);
                len[0] += take[0];
                len[1] += take[1];
                free(q);
                free(k);
                free(v);
            }
            ck_assert_int_gt(len[0], 5 * kv_ring_cells);
            kv_drop(&kv);
        }
    attn_swa = 0;
    kv_ring_cells = 0;
}
END_TEST

/* Images in prompts: each sequence's text (causal), then a non-causal batch holding an
 * image span of every sequence (odd lengths, spans in the middle of their sequences),
 * then text after the images that sees them, then a rewind over poisoned cells that
 * the next image span must not see. Short batches take the one-token kernel, long ones
 * the flash kernel; full caches, windows and rings. Where the GPU ignored the op, the
 * image tokens would miss their later neighbours the CPU's see. */
START_TEST(attention_non_causal)
{
    const attn_cfg cfgs[] = {{64, 8, 2, T_F16, T_F16}, {128, 4, 1, T_Q8_0, T_Q8_0}, {40, 6, 3, T_F32, T_F32},
                             {256, 4, 2, T_F16, T_F16}};
    /* text before, image, text after, per sequence; three layouts */
    const int layouts[3][3][3] = {
        {{5, 3, 2}, {17, 5, 1}, {2, 7, 3}},       /* 15 image tokens: the one-token kernel */
        {{5, 33, 2}, {17, 71, 1}, {40, 9, 6}},    /* 113: flash tiles */
        {{1, 1, 1}, {3, 2, 1}, {0, 13, 1}},       /* a one-token image, an image first */
    };
    const int swas[][2] = {{0, 0}, {8, 0}, {100, 0}, {8, 8 + 128}}; /* window, ring cells */
    int cases = 0;
    for (int c = 0; c < 4; c++)
        for (int w = 0; w < 4; w++)
            for (int l = 0; l < 3; l++) {
                if (c == 3 && w) /* head_dim 256: full caches only */
                    continue;
                const attn_cfg *a = &cfgs[c];
                attn_swa = swas[w][0];
                kv_ring_cells = swas[w][1];
                kvpair kv;
                kv_make(&kv, 512, 3, a->Hk, a->hd, a->tk, a->tv);
                const int64_t qd = (int64_t)a->H * a->hd, kd = (int64_t)a->Hk * a->hd;
                int32_t pos[256], seq[256];
                int len[3] = {0, 0, 0};
                for (int part = 0; part < 4; part++) {
                    /* 0 text, 1 image (non-causal), 2 text, 3 poison then an image over it */
                    const int pi = part == 3 ? 1 : part;
                    int n = 0;
                    if (part == 3) {
                        /* sequence 1 rewound by 4: cells past its image-to-be hold keys along
                         * the queries and huge values */
                        len[1] -= 4;
                        for (int j = 0; j < 12; j++, n++) {
                            pos[n] = len[1] + layouts[l][1][1] + j;
                            seq[n] = 1;
                        }
                        float *pq = randn(n * qd, 1), *pk = randn(n * kd, 3), *pv = malloc(sizeof(float) * n * kd);
                        for (int64_t i = 0; i < n * kd; i++)
                            pv[i] = 50.0f;
                        attn_nc = false;
                        store_attend(&kv, a, n, pos, seq, pq, pk, pv, false, NULL);
                        free(pq);
                        free(pk);
                        free(pv);
                        n = 0;
                    }
                    for (int s = 0; s < 3; s++)
                        for (int j = 0; j < layouts[l][s][pi]; j++, n++) {
                            pos[n] = len[s] + j;
                            seq[n] = s;
                        }
                    if (!n)
                        continue;
                    attn_nc = pi == 1;
                    float *q = randn(n * qd, 1.5f), *k = randn(n * kd, 1), *v = randn(n * kd, 1), *got = NULL;
                    double e = store_attend(&kv, a, n, pos, seq, q, k, v, false, &got);
                    ck_assert_msg(e < attn_tol(a), "hd %d K %s window %d ring %d layout %d part %d (%d tokens): %.3g",
                                  a->hd, type_info(a->tk)->name, attn_swa, kv_ring_cells, l, part, n, e);
                    for (int64_t i = 0; i < n * qd; i++)
                        ck_assert_msg(fabsf(got[i]) < 20.0f, "layout %d part %d: a stale cell was seen (%g)", l, part,
                                      got[i]);
                    free(got);
                    free(q);
                    free(k);
                    free(v);
                    for (int s = 0; s < 3; s++)
                        len[s] += layouts[l][s][pi];
                    cases++;
                }
                attn_nc = false;
                kv_drop(&kv);
            }
    ck_assert_int_gt(cases, 100);
    attn_swa = 0;
    kv_ring_cells = 0;
}
END_TEST

/* The vision tower's ops against the CPU's plain loops: LayerNorm (with and without a
 * bias, rows far from zero mean), the three GELUs alone and gated, the clamp, average
 * pooling of odd grids and widths. */
START_TEST(vision_ops)
{
    const int shapes[][2] = {{1, 64}, {7, 37}, {5, 1152}, {33, 200}};
    for (int s = 0; s < 4; s++) {
        const int rows = shapes[s][0], d = shapes[s][1];
        const int64_t n = (int64_t)rows * d;
        float *x = randn(n, 2), *w = randn(d, 1), *b = randn(d, 1), *ref = malloc(sizeof(float) * n);
        for (int64_t i = 0; i < n; i++)
            x[i] += 5.0f; /* a mean the norm must take out */
        float *dx = dev_from(x, sizeof(float) * n), *dw = dev_from(w, sizeof(float) * d);
        float *db = dev_from(b, sizeof(float) * d), *dout = dev_alloc(sizeof(float) * n);
        for (int with_b = 0; with_b < 2; with_b++) {
            cpu->ops->layer_norm(cpu, ref, x, w, with_b ? b : NULL, rows, d, 1e-6f);
            gpu->ops->layer_norm(gpu, dout, dx, dw, with_b ? db : NULL, rows, d, 1e-6f);
            float *got = host_from(dout, sizeof(float) * n);
            gpu_ok("layer_norm");
            int wr = 0;
            double e = worst_row(got, ref, rows, d, &wr);
            ck_assert_msg(e < 1e-5, "layer_norm %dx%d bias %d: row %d off by %g", rows, d, with_b, wr, e);
            free(got);
        }
        /* in place */
        cpu->ops->layer_norm(cpu, ref, x, w, b, rows, d, 1e-5f);
        gpu->ops->layer_norm(gpu, dx, dx, dw, db, rows, d, 1e-5f);
        float *got = host_from(dx, sizeof(float) * n);
        ck_assert(rel_rms(got, ref, n) < 1e-5);
        free(got);
        free(x), free(w), free(b), free(ref);
        dev_free(dx), dev_free(dw), dev_free(db), dev_free(dout);
    }

    const int64_t n = 1001;
    float *x = randn(n, 4), *up = randn(n, 1), *ref = malloc(sizeof(float) * n);
    x[0] = -12.0f, x[1] = 12.0f, x[2] = 0.0f; /* the tails and zero */
    float *dx = dev_from(x, sizeof(float) * n), *dup = dev_from(up, sizeof(float) * n), *dout = dev_alloc(sizeof(float) * n);
    for (int kind = GELU_TANH; kind <= GELU_QUICK; kind++)
        for (int gated = 0; gated < 2; gated++) {
            cpu->ops->gelu(cpu, ref, x, gated ? up : NULL, n, kind);
            gpu->ops->gelu(gpu, dout, dx, gated ? dup : NULL, n, kind);
            float *got = host_from(dout, sizeof(float) * n);
            gpu_ok("gelu");
            for (int64_t i = 0; i < n; i++)
                ck_assert_msg(fabsf(got[i] - ref[i]) <= 1e-5f * (1.0f + fabsf(ref[i])), "gelu kind %d gated %d: x %g: %g, CPU %g",
                              kind, gated, x[i], got[i], ref[i]);
            free(got);
        }
    /* the kinds differ: a kernel computing one for all would fail above */
    float a[3], xs[1] = {1.0f};
    for (int kind = 0; kind < 3; kind++)
        cpu->ops->gelu(cpu, &a[kind], xs, NULL, 1, kind);
    ck_assert(fabsf(a[0] - a[1]) > 1e-4f && fabsf(a[1] - a[2]) > 1e-4f);
    /* in place */
    cpu->ops->gelu(cpu, ref, x, up, n, GELU_QUICK);
    gpu->ops->gelu(gpu, dx, dx, dup, n, GELU_QUICK);
    float *got = host_from(dx, sizeof(float) * n);
    ck_assert(rel_rms(got, ref, n) < 1e-6);
    free(got);
    /* clamp */
    gpu->ops->upload(gpu, dx, x, sizeof(float) * n);
    memcpy(ref, x, sizeof(float) * n);
    cpu->ops->clamp(cpu, ref, n, -1.5f, 2.25f);
    gpu->ops->clamp(gpu, dx, n, -1.5f, 2.25f);
    got = host_from(dx, sizeof(float) * n);
    gpu_ok("clamp");
    int clamped = 0;
    for (int64_t i = 0; i < n; i++) {
        ck_assert_float_eq(got[i], ref[i]);
        clamped += ref[i] == -1.5f || ref[i] == 2.25f;
    }
    ck_assert_int_gt(clamped, 100);
    free(got), free(x), free(up), free(ref);
    dev_free(dx), dev_free(dup), dev_free(dout);

    /* average pooling: cols, rows, k, width */
    const int pools[][4] = {{8, 8, 4, 64}, {12, 8, 4, 19}, {9, 6, 3, 37}, {3, 3, 3, 5}, {64, 64, 4, 33}};
    for (int p = 0; p < 5; p++) {
        const int cols = pools[p][0], rows = pools[p][1], k = pools[p][2], d = pools[p][3];
        const int64_t nin = (int64_t)cols * rows * d, nout = (int64_t)(cols / k) * (rows / k) * d;
        float *px = randn(nin, 1), *pref = malloc(sizeof(float) * nout);
        float *dpx = dev_from(px, sizeof(float) * nin), *dpo = dev_alloc(sizeof(float) * nout);
        cpu->ops->avg_pool(cpu, pref, px, cols, rows, k, d);
        gpu->ops->avg_pool(gpu, dpo, dpx, cols, rows, k, d);
        float *pg = host_from(dpo, sizeof(float) * nout);
        gpu_ok("avg_pool");
        ck_assert_msg(rel_rms(pg, pref, nout) < 1e-6, "avg_pool %dx%d by %d, width %d: %g", cols, rows, k, d,
                      rel_rms(pg, pref, nout));
        /* the plain reference itself: the first token's first column by hand */
        double s0 = 0;
        for (int dy = 0; dy < k; dy++)
            for (int dx0 = 0; dx0 < k; dx0++)
                s0 += px[((int64_t)dy * cols + dx0) * d];
        ck_assert(fabs(pref[0] - s0 / (k * k)) < 1e-5);
        free(px), free(pref), free(pg);
        dev_free(dpx), dev_free(dpo);
    }
}
END_TEST

/* ---------------------------------------------------------------- MoE */

START_TEST(topk_softmax_routes)
{
    const int shapes[][3] = {{1, 8, 2}, {3, 60, 4}, {17, 128, 8}, {512, 128, 8}, {5, 256, 8}, {2, 512, 1}};
    for (int s = 0; s < 6; s++) {
        const int n = shapes[s][0], E = shapes[s][1], K = shapes[s][2];
        for (int norm = 0; norm < 2; norm++) {
            float *l = randn((int64_t)n * E, 2);
            int32_t *ids_c = malloc(sizeof(int32_t) * n * K);
            float *w_c = malloc(sizeof(float) * n * K);
            begin_plain(n);
            cpu->ops->topk_softmax(cpu, ids_c, w_c, l, n, E, K, norm);
            float *dl = dev_from(l, sizeof(float) * n * E);
            int32_t *dids = dev_alloc(sizeof(int32_t) * n * K);
            float *dw = dev_alloc(sizeof(float) * n * K);
            gpu->ops->topk_softmax(gpu, dids, dw, dl, n, E, K, norm);
            int32_t *ids_g = (int32_t *)host_from(dids, sizeof(int32_t) * n * K);
            float *w_g = host_from(dw, sizeof(float) * n * K);
            gpu_ok("topk_softmax");
            for (int i = 0; i < n * K; i++) {
                ck_assert_msg(ids_g[i] == ids_c[i], "n %d E %d k %d: slot %d expert %d vs %d", n, E, K, i, ids_g[i],
                              ids_c[i]);
                ck_assert_msg(fabsf(w_g[i] - w_c[i]) < 1e-5f, "weight %d: %g vs %g", i, w_g[i], w_c[i]);
            }
            dev_free(dl);
            dev_free(dids);
            dev_free(dw);
            free(ids_g);
            free(w_g);
            free(ids_c);
            free(w_c);
            free(l);
        }
    }
}
END_TEST

/* act: enum ffn_act; fused: gate and up in one tensor (gate rows first per expert);
 * extra: gpt-oss's expert biases and clamped SwiGLU */
static void moe_case_full(int type, int type_down, int n, int E, int K, int d, int ff, int act, bool fused,
                          bool extra)
{
    wpair gate, up, down;
    /* with the clamped activation, gate and up of std ~4: the clamp at 7 bites */
    const float gs = (extra ? 4.0f : 1.0f) / sqrtf((float)d);
    make_weight(&gate, "gate_exps", type, d, fused ? 2 * ff : ff, E, gs);
    make_weight(&up, "up_exps", type, d, ff, E, gs);
    make_weight(&down, "down_exps", type_down, ff, d, E, 1.0f / sqrtf((float)ff));
    float *x = randn((int64_t)n * d, 1), *l = randn((int64_t)n * E, 2);
    int32_t *ids = malloc(sizeof(int32_t) * n * K);
    float *w = malloc(sizeof(float) * n * K), *ref = malloc(sizeof(float) * n * d);
    begin_plain(n);
    cpu->ops->topk_softmax(cpu, ids, w, l, n, E, K, true);
    float *bg = randn((int64_t)E * ff, 1), *bu = randn((int64_t)E * ff, 1), *bd = randn((int64_t)E * d, 1);
    float *dbg = dev_from(bg, sizeof(float) * E * ff), *dbu = dev_from(bu, sizeof(float) * E * ff),
          *dbd = dev_from(bd, sizeof(float) * E * d);
    tensor tb[2][3] = {{{.type = T_F32, .ne = {ff, E, 1}, .data = bg}, {.type = T_F32, .ne = {ff, E, 1}, .data = bu},
                        {.type = T_F32, .ne = {d, E, 1}, .data = bd}},
                       {{.type = T_F32, .ne = {ff, E, 1}, .data = dbg}, {.type = T_F32, .ne = {ff, E, 1}, .data = dbu},
                        {.type = T_F32, .ne = {d, E, 1}, .data = dbd}}};
    const moe_extra exc = {&tb[0][0], &tb[0][1], &tb[0][2], 1.702f, 7.0f};
    const moe_extra exg = {&tb[1][0], &tb[1][1], &tb[1][2], 1.702f, 7.0f};
    cpu->ops->moe_ffn(cpu, ref, x, &gate.c, fused ? NULL : &up.c, &down.c, ids, w, n, K, act, extra ? &exc : NULL);
    float *dx = dev_from(x, sizeof(float) * n * d), *dw = dev_from(w, sizeof(float) * n * K);
    int32_t *dids = dev_from(ids, sizeof(int32_t) * n * K);
    float *dout = dev_alloc(sizeof(float) * n * d);
    gpu->ops->moe_ffn(gpu, dout, dx, &gate.g, fused ? NULL : &up.g, &down.g, dids, dw, n, K, act, extra ? &exg : NULL);
    float *got = host_from(dout, sizeof(float) * n * d);
    gpu_ok("moe_ffn");
    int wr = 0;
    const double tol = is_float(type) && is_float(type_down) ? 1.5e-2 : 5e-2;
    double e = worst_row(got, ref, n, d, &wr);
    ck_assert_msg(e < tol, "moe %s/%s n %d E %d k %d act %d fused %d extra %d: token %d off by %.3g",
                  type_info(type)->name, type_info(type_down)->name, n, E, K, act, fused, extra, wr, e);
    dev_free(dbg);
    dev_free(dbu);
    dev_free(dbd);
    free(bg);
    free(bu);
    free(bd);
    dev_free(dx);
    dev_free(dw);
    dev_free(dids);
    dev_free(dout);
    free(got);
    free(x);
    free(l);
    free(ids);
    free(w);
    free(ref);
    free_weight(&gate);
    free_weight(&up);
    free_weight(&down);
}

static void moe_case(int type, int type_down, int n, int E, int K, int d, int ff)
{
    moe_case_full(type, type_down, n, E, K, d, ff, FFN_SILU, false, false);
}

/* Experts of each type; one token (direct) and batches (grouped), more pairs of an
 * expert than a group holds, experts nobody chose. */
START_TEST(moe_experts)
{
    const int ns[] = {1, 3, 17, 64, 200};
    const int types[][2] = {{T_Q8_0, T_Q8_0}, {T_Q4_K, T_Q6_K}, {T_F16, T_F16}, {T_F32, T_F32},
                            {T_Q4_0, T_Q5_1}, {T_Q2_K, T_Q3_K}, {T_BF16, T_Q5_K},
                            {T_MXFP4, T_MXFP4}, {T_IQ4_XS, T_IQ2_XXS}};
    for (int t = 0; t < 9; t++)
        for (int i = 0; i < 5; i++)
            moe_case(types[t][0], types[t][1], ns[i], 8, 2, 256, 512);
    moe_case(T_Q4_K, T_Q6_K, 1, 128, 8, 512, 256);
    moe_case(T_Q4_K, T_Q6_K, 130, 128, 8, 512, 256);
    /* Gemma 4: GELU, separate and fused gate/up */
    const int gi[] = {1, 17};
    for (int i = 0; i < 2; i++)
        for (int fused = 0; fused < 2; fused++) {
            moe_case_full(T_Q8_0, T_Q8_0, gi[i], 8, 2, 128, 64, FFN_GELU, fused, false);
            moe_case_full(T_Q4_K, T_Q6_K, gi[i], 8, 2, 256, 256, FFN_GELU, fused, false);
        }
}
END_TEST

/* gpt-oss's experts: per-expert biases and the clamped SwiGLU, Q8_0 and F16 */
START_TEST(moe_experts_extra)
{
    const int ns[] = {1, 3, 64};
    for (int i = 0; i < 3; i++) {
        moe_case_full(T_Q8_0, T_Q8_0, ns[i], 8, 2, 64, 64, FFN_SILU, false, true);
        moe_case_full(T_F16, T_F16, ns[i], 8, 2, 64, 64, FFN_SILU, false, true);
    }
}
END_TEST

/* ---------------------------------------------------------------- sampling */

START_TEST(argmax_and_topk)
{
    const int ds[] = {1, 7, 1000, 151936};
    for (int di = 0; di < 4; di++) {
        const int d = ds[di], rows = 3;
        float *x = randn((int64_t)rows * d, 1);
        if (d > 10) {
            x[5] = 9;
            x[d - 2] = 9;           /* row 0: a tie, the lower index wins */
            x[d + 3] = NAN;         /* row 1: NaN ranks last */
            x[d + 4] = 8;
            x[2 * d + d - 1] = 12;  /* row 2: the last element */
        }
        int32_t ids[3], ref_ids[3];
        for (int r = 0; r < rows; r++) {
            int b = 0;
            for (int i = 1; i < d; i++) {
                float v = x[(int64_t)r * d + i], bv = x[(int64_t)r * d + b];
                if (bv != bv || v > bv)
                    b = i;
            }
            ref_ids[r] = b;
        }
        float *dx = dev_from(x, sizeof(float) * rows * d);
        gpu->ops->argmax(gpu, ids, dx, rows, d);
        gpu_ok("argmax");
        for (int r = 0; r < rows; r++)
            ck_assert_msg(ids[r] == ref_ids[r], "argmax d %d row %d: %d vs %d", d, r, ids[r], ref_ids[r]);
        if (d > 10) {
            ck_assert_int_eq(ids[0], 5);
            ck_assert_int_eq(ids[1], 4);
            ck_assert_int_eq(ids[2], d - 1);
        }
        const int k = d < 40 ? d : 40;
        int32_t *tid = malloc(sizeof(int32_t) * rows * k);
        float *tv = malloc(sizeof(float) * rows * k);
        gpu->ops->topk(gpu, tid, tv, dx, rows, d, k);
        gpu_ok("topk");
        for (int r = 0; r < rows; r++) {
            ck_assert_int_eq(tid[r * k], ref_ids[r]);
            for (int j = 0; j < k; j++) {
                const float v = x[(int64_t)r * d + tid[r * k + j]];
                ck_assert(v == tv[r * k + j] || (v != v && tv[r * k + j] == -INFINITY));
                if (j) { /* strictly ordered: value down, index up on ties */
                    const float pv = tv[r * k + j - 1];
                    ck_assert(pv > tv[r * k + j] || (pv == tv[r * k + j] && tid[r * k + j - 1] < tid[r * k + j]));
                }
                /* nothing left out ranks above the last one kept */
            }
            int above = 0;
            for (int i = 0; i < d; i++) {
                const float v = x[(int64_t)r * d + i];
                if (v == v && v > tv[r * k + k - 1])
                    above++;
            }
            ck_assert_int_le(above, k);
        }
        free(tid);
        free(tv);
        dev_free(dx);
        free(x);
    }
}
END_TEST

/* ---------------------------------------------------------------- recorded decode steps */

/* One decode step of a small attention block, the ops the model brackets. */
typedef struct step_bufs {
    float *x, *xb, *q, *k, *v, *att, *y;
} step_bufs;

static void decode_step(backend *be, step_bufs *B, const wpair *wq, const wpair *wk, const wpair *wv, const wpair *wo,
                        const float *norm, kv_cache *kv, const attn_params *ap, const rope_params *rp)
{
    const bool g = be == gpu;
    const struct backend_ops *o = be->ops;
    o->rmsnorm(be, B->xb, B->x, norm, 1, (int)wq->c.ne[0], 1e-6f);
    o->matmul(be, B->q, g ? &wq->g : &wq->c, B->xb, 1);
    o->matmul(be, B->k, g ? &wk->g : &wk->c, B->xb, 1);
    o->matmul(be, B->v, g ? &wv->g : &wv->c, B->xb, 1);
    o->rope(be, B->q, 1, ap->n_head, ap->head_dim, rp);
    o->rope(be, B->k, 1, ap->n_head_kv, ap->head_dim, rp);
    o->kv_store(be, kv, 0, B->k, B->v, 1);
    o->attention(be, B->att, B->q, kv, 0, 1, ap);
    o->matmul(be, B->y, g ? &wo->g : &wo->c, B->att, 1);
    o->add(be, B->y, B->x, wo->c.ne[1]);
}

/* Steps recorded once and replayed reproduce step-by-step execution (the CPU's) at
 * every position, across a KV bucket boundary, and after graph_reset. */
START_TEST(graph_replay)
{
    const int E = 256, H = 8, Hk = 2, hd = 64, n_ctx = 600;
    wpair wq, wk, wv, wo;
    make_weight(&wq, "wq", T_Q4_K, E, H * hd, 1, 1.0f / 16);
    make_weight(&wk, "wk", T_Q8_0, E, Hk * hd, 1, 1.0f / 16);
    make_weight(&wv, "wv", T_Q6_K, E, Hk * hd, 1, 1.0f / 16);
    make_weight(&wo, "wo", T_Q4_0, H * hd, E, 1, 1.0f / 16);
    float *norm = randn(E, 1);
    float *dnorm = dev_from(norm, sizeof(float) * E);
    kvpair kv;
    kv_make(&kv, n_ctx, 2, Hk, hd, T_F16, T_F16);
    attn_params ap = {H, Hk, hd, 0.125f, true, 0, NULL};
    rope_params rp = {0};
    rp.n_rot = hd;
    rp.neox = true;
    rp.freq_base = 1e6f;
    rp.freq_scale = 1;
    const size_t szs[7] = {E, E, H * hd, Hk * hd, Hk * hd, H * hd, E};
    step_bufs C, G;
    float **cs = (float **)&C, **gs = (float **)&G;
    for (int i = 0; i < 7; i++) {
        cs[i] = calloc(szs[i], sizeof(float));
        gs[i] = dev_alloc(szs[i] * sizeof(float));
    }
    /* fill sequence 1 up to 250 cells with a prompt so decoding crosses 256 */
    {
        const int n = 250;
        int32_t *pos = malloc(sizeof(int32_t) * n), *seq = malloc(sizeof(int32_t) * n);
        for (int i = 0; i < n; i++) {
            pos[i] = i;
            seq[i] = 1;
        }
        float *q = randn((int64_t)n * H * hd, 1), *k = randn((int64_t)n * Hk * hd, 1), *v = randn((int64_t)n * Hk * hd, 1);
        attn_cfg a = {hd, H, Hk, T_F16, T_F16};
        store_attend(&kv, &a, n, pos, seq, q, k, v, true, NULL);
        free(q);
        free(k);
        free(v);
        free(pos);
        free(seq);
    }
    int replays = 0;
    for (int step = 0; step < 14; step++) {
        if (step == 9)
            gpu->ops->graph_reset(gpu);
        const int32_t tok = 0, pos = 250 + step, seq = 1;
        begin_both(1, &tok, &pos, &seq);
        float *x = randn(E, 1);
        memcpy(C.x, x, sizeof(float) * E);
        gpu->ops->upload(gpu, G.x, x, sizeof(float) * E);
        decode_step(cpu, &C, &wq, &wk, &wv, &wo, norm, &kv.c, &ap, &rp);
        const int r = gpu->ops->graph_begin(gpu, 42);
        if (r == 1) {
            replays++;
        } else {
            decode_step(gpu, &G, &wq, &wk, &wv, &wo, dnorm, &kv.g, &ap, &rp);
            if (gpu->ops->graph_end(gpu) < 0) /* the recording failed: run them again */
                decode_step(gpu, &G, &wq, &wk, &wv, &wo, dnorm, &kv.g, &ap, &rp);
        }
        float *got = host_from(G.y, sizeof(float) * E);
        gpu_ok("decode step");
        const double e = rel_rms(got, C.y, E);
        ck_assert_msg(e < 5e-2, "step %d (position %d, replayed %d): %.3g", step, pos, r == 1, e);
        free(got);
        free(x);
    }
    /* 250..255 in one bucket, 256.. in the next, reset at 9: each key is run once,
     * recorded once, then replayed */
    ck_assert_int_ge(replays, 8);
    for (int i = 0; i < 7; i++) {
        free(cs[i]);
        dev_free(gs[i]);
    }
    kv_drop(&kv);
    dev_free(dnorm);
    free(norm);
    free_weight(&wq);
    free_weight(&wk);
    free_weight(&wv);
    free_weight(&wo);
}
END_TEST

/* ---------------------------------------------------------------- errors */

/* A failing op is reported once with a reason; the backend then works again. */
START_TEST(errors_are_reported)
{
    kvpair kv;
    kv_make(&kv, 16, 1, 1, 64, T_F16, T_F16);
    begin_plain(2);
    float *d = dev_alloc(sizeof(float) * 2 * 64 * 4);
    attn_params bad = {4, 3, 64, 0.125f, false, 0, NULL}; /* 4 heads over 3 KV heads */
    gpu->ops->attention(gpu, d, d, &kv.g, 0, 2, &bad);
    struct llmfs_error e = {0};
    ck_assert_int_lt(gpu->ops->check(gpu, &e), 0);
    ck_assert_msg(strstr(e.msg, "attention") != NULL, "reason: %s", e.msg);
    ck_assert_int_eq(gpu->ops->check(gpu, &e), 0);
    /* positions outside the cache are refused before anything is written */
    const int32_t tok = 0, pos = 16, seq = 0;
    begin_both(1, &tok, &pos, &seq);
    gpu->ops->kv_store(gpu, &kv.g, 0, d, d, 1);
    ck_assert_int_eq(gpu->ops->check(gpu, &e), -ENOSPC);
    ck_assert_int_eq(gpu->ops->check(gpu, &e), 0);
    begin_plain(2);
    gpu->ops->add(gpu, d, d, 128);
    gpu_ok("after errors");
    dev_free(d);
    kv_drop(&kv);
}
END_TEST

/* ---------------------------------------------------------------- recurrent layers */

/* The ops of a Gated DeltaNet layer without state: column regrouping, the per-head L2
 * norm over strided rows, the gates, the gated RMS norm and both sigmoid gates. */
START_TEST(recurrent_elementwise)
{
    const int shapes[][3] = {{1, 4, 64}, {7, 6, 128}, {33, 3, 48}, {2, 8, 16}}; /* rows, groups, d */
    for (int s = 0; s < 4; s++) {
        const int rows = shapes[s][0], G = shapes[s][1], d = shapes[s][2];
        const int64_t stride = (int64_t)G * d + 5, n = (int64_t)rows * stride;
        begin_plain(rows);
        float *x = randn(n, 2), *ref = malloc(sizeof(float) * n), *got;
        float *dx = dev_from(x, sizeof(float) * n), *dy = dev_alloc(sizeof(float) * n);

        /* copy_rows: the middle groups of each row into a packed block */
        const int w = (G - 1) * d;
        cpu->ops->copy_rows(cpu, ref, w, x + d / 2, stride, rows, w);
        gpu->ops->copy_rows(gpu, dy, w, dx + d / 2, stride, rows, w);
        got = host_from(dy, sizeof(float) * (size_t)rows * w);
        ck_assert(memcmp(got, ref, sizeof(float) * (size_t)rows * w) == 0);
        free(got);

        /* l2norm of the first G-1 groups of each row, in place; the rest untouched.
         * One slice is near zero so that eps decides its scale. */
        memcpy(ref, x, sizeof(float) * n);
        for (int i = 0; i < d; i++)
            ref[i] = x[i] = 1e-9f * (float)(i % 3);
        gpu->ops->upload(gpu, dx, x, sizeof(float) * n);
        cpu->ops->l2norm(cpu, ref, rows, G - 1, d, stride, 1e-6f);
        gpu->ops->l2norm(gpu, dx, rows, G - 1, d, stride, 1e-6f);
        got = host_from(dx, sizeof(float) * n);
        ck_assert_msg(rel_rms(got, ref, n) < 1e-6, "l2norm %dx%dx%d: %g", rows, G, d, rel_rms(got, ref, n));
        free(got);

        /* the gates over [rows][G] (G value heads), arguments past softplus's switch */
        const int64_t ng = (int64_t)rows * G;
        float *g = randn(ng, 8), *bt = randn(ng, 4), *dt = randn(G, 1), *A = randn(G, 1);
        for (int j = 0; j < G; j++)
            A[j] = -expf(A[j]);
        g[0] = 30;
        float *rg = malloc(sizeof(float) * ng), *rb = malloc(sizeof(float) * ng);
        memcpy(rg, g, sizeof(float) * ng);
        memcpy(rb, bt, sizeof(float) * ng);
        float *dg = dev_from(g, sizeof(float) * ng), *dbt = dev_from(bt, sizeof(float) * ng),
              *ddt = dev_from(dt, sizeof(float) * G), *dA = dev_from(A, sizeof(float) * G);
        cpu->ops->delta_gates(cpu, rg, rb, dt, A, rows, G);
        gpu->ops->delta_gates(gpu, dg, dbt, ddt, dA, rows, G);
        got = host_from(dg, sizeof(float) * ng);
        ck_assert_msg(rel_rms(got, rg, ng) < 1e-6, "delta_gates decay: %g", rel_rms(got, rg, ng));
        free(got);
        got = host_from(dbt, sizeof(float) * ng);
        ck_assert_msg(rel_rms(got, rb, ng) < 1e-6, "delta_gates beta: %g", rel_rms(got, rb, ng));
        free(got);

        /* gated RMS norm over rows*G rows of d, and in place (as the model runs it) */
        const int64_t m = (int64_t)rows * G * d;
        float *z = randn(m, 2), *nw = randn(d, 1);
        float *dz = dev_from(z, sizeof(float) * m), *dnw = dev_from(nw, sizeof(float) * d);
        gpu->ops->upload(gpu, dx, x, sizeof(float) * m);
        cpu->ops->gated_rmsnorm(cpu, ref, x, nw, z, rows * G, d, 1e-6f);
        gpu->ops->gated_rmsnorm(gpu, dx, dx, dnw, dz, rows * G, d, 1e-6f);
        got = host_from(dx, sizeof(float) * m);
        ck_assert_msg(rel_rms(got, ref, m) < 1e-5, "gated_rmsnorm %dx%d: %g", rows * G, d, rel_rms(got, ref, m));
        free(got);

        /* sigmoid gates: per element, and one logit per row */
        for (int per_row = 0; per_row < 2; per_row++) {
            memcpy(ref, x, sizeof(float) * m);
            gpu->ops->upload(gpu, dx, x, sizeof(float) * m);
            cpu->ops->sigmoid_mul(cpu, ref, z, rows, G * d, per_row);
            gpu->ops->sigmoid_mul(gpu, dx, dz, rows, G * d, per_row);
            got = host_from(dx, sizeof(float) * m);
            ck_assert_msg(rel_rms(got, ref, m) < 1e-6, "sigmoid_mul (per row %d): %g", per_row, rel_rms(got, ref, m));
            free(got);
        }
        gpu_ok("recurrent element-wise");
        float *ds[] = {dx, dy, dg, dbt, ddt, dA, dz, dnw};
        for (int i = 0; i < 8; i++)
            dev_free(ds[i]);
        float *hs[] = {x, ref, g, bt, dt, A, rg, rb, z, nw};
        for (int i = 0; i < 10; i++)
            free(hs[i]);
    }
}
END_TEST

/* A cache of one recurrent layer (layer 0) with its state on be, n_seq sequences:
 * conv state of (K-1) x C floats and n_v heads of d x d. */
static kv_cache *rec_cache(backend *be, int n_seq, int K, int C, int n_v, int d)
{
    kv_cache *kv = calloc(1, sizeof *kv);
    kv->n_layer = 1;
    kv->n_seq = n_seq;
    kv->n_ctx = 4096;
    kv->layer = calloc(1, sizeof *kv->layer);
    kv->seq_len = calloc((size_t)n_seq, sizeof(int));
    kv->state = calloc(1, sizeof *kv->state);
    kv->n_recurrent = 1;
    kv->conv_floats = (size_t)(K - 1) * C;
    kv->ssm_floats = (size_t)n_v * d * d;
    kv->state[0].be = be;
    kv->state[0].conv = be->ops->alloc(be, sizeof(float) * kv->conv_floats * n_seq);
    kv->state[0].ssm = be->ops->alloc(be, sizeof(float) * kv->ssm_floats * n_seq);
    ck_assert(kv->state[0].conv && kv->state[0].ssm);
    kv->max_ckpt = 4;
    kv->ckpt = calloc(4, sizeof *kv->ckpt);
    return kv;
}

typedef struct rec_cfg {
    int n_k, n_v, d, K;
    bool tiled;
} rec_cfg;

/* The layer's ops from the projections to the delta rule's output, on be with inputs
 * in be's memory: gates, conv, L2 norm, gated delta. out [n][n_v*d]. */
static void rec_ops(backend *be, kv_cache *kv, const rec_cfg *c, int n, float *qkv, float *g, float *beta,
                    const float *dt, const float *A, const float *w, float *conv, float *out)
{
    const int C = 2 * c->n_k * c->d + c->n_v * c->d;
    const struct backend_ops *o = be->ops;
    o->delta_gates(be, g, beta, dt, A, n, c->n_v);
    o->ssm_conv(be, conv, qkv, C + 3, w, kv, 0, n, C, c->K); /* rows with 3 floats of padding */
    o->l2norm(be, conv, n, 2 * c->n_k, c->d, C, 1e-6f);
    const delta_params p = {.n_k = c->n_k, .n_v = c->n_v, .d = c->d, .tiled = c->tiled, .chunk = 0};
    o->gated_delta(be, out, conv, C, g, beta, kv, 0, n, &p);
}

static const rec_cfg rec_cfgs[] = {
    {2, 4, 64, 4, true},   /* the fixtures' qwen35 shape: registers, V heads tiled over K heads */
    {2, 4, 64, 4, false},  /* qwen3next's grouped V heads */
    {1, 2, 128, 4, true},  /* the real models' head size */
    {3, 6, 48, 3, false},  /* a head size without a register kernel; 3 taps */
    {2, 2, 16, 2, true},   /* one tap of history, V heads = K heads */
};
#define N_REC ((int)(sizeof rec_cfgs / sizeof rec_cfgs[0]))

/* Three batches over three sequences, as a server runs them: prompts interleaved token by
 * token, a long prompt of one sequence next to a short one, then one token each with a
 * sequence restarting at position 0 (its old state must not leak in). After each batch
 * the outputs and both states of every sequence match the CPU's. */
START_TEST(recurrent_layer)
{
    const rec_cfg *c = &rec_cfgs[_i];
    const int NS = 3, d = c->d, C = 2 * c->n_k * d + c->n_v * d, VD = c->n_v * d;
    kv_cache *kc = rec_cache(cpu, NS, c->K, C, c->n_v, d), *kg = rec_cache(gpu, NS, c->K, C, c->n_v, d);
    float *dt = randn(c->n_v, 1), *A = randn(c->n_v, 1), *w = randn((int64_t)C * c->K, 0.5f);
    for (int j = 0; j < c->n_v; j++)
        A[j] = -expf(A[j]);
    float *ddt = dev_from(dt, sizeof(float) * c->n_v), *dA = dev_from(A, sizeof(float) * c->n_v),
          *dw = dev_from(w, sizeof(float) * C * c->K);
    int next[3] = {0, 0, 0};
    enum { NB = 3 };
    int lens[NB] = {24, 80, 3};
    for (int b = 0; b < NB; b++) {
        const int n = lens[b];
        int32_t tok[80], pos[80], seq[80];
        for (int t = 0; t < n; t++) {
            seq[t] = b == 0 ? t % 3 : b == 1 ? (t < 70 ? 1 : 2) : t;
            if (b == 2 && t == 0)
                next[0] = 0; /* sequence 0 starts over */
            tok[t] = t;
            pos[t] = next[seq[t]]++;
        }
        begin_both(n, tok, pos, seq);
        const int64_t nq = (int64_t)n * (C + 3), ng = (int64_t)n * c->n_v;
        float *qkv = randn(nq, 1), *g = randn(ng, 1), *beta = randn(ng, 1);
        float *rg = malloc(sizeof(float) * ng), *rb = malloc(sizeof(float) * ng);
        memcpy(rg, g, sizeof(float) * ng);
        memcpy(rb, beta, sizeof(float) * ng);
        float *conv = malloc(sizeof(float) * (size_t)n * C), *ref = malloc(sizeof(float) * (size_t)n * VD);
        float *dq = dev_from(qkv, sizeof(float) * nq), *dg = dev_from(g, sizeof(float) * ng),
              *db = dev_from(beta, sizeof(float) * ng), *dconv = dev_alloc(sizeof(float) * (size_t)n * C),
              *dout = dev_alloc(sizeof(float) * (size_t)n * VD);
        rec_ops(cpu, kc, c, n, qkv, rg, rb, dt, A, w, conv, ref);
        rec_ops(gpu, kg, c, n, dq, dg, db, ddt, dA, dw, dconv, dout);
        gpu_ok("recurrent layer");
        struct llmfs_error e = {0};
        ck_assert_int_eq(cpu->ops->check(cpu, &e), 0);
        float *got = host_from(dconv, sizeof(float) * (size_t)n * C);
        int wr = 0;
        double err = worst_row(got, conv, n, C, &wr);
        ck_assert_msg(err < 1e-5, "config %d batch %d: conv of token %d off by %g", _i, b, wr, err);
        free(got);
        got = host_from(dout, sizeof(float) * (size_t)n * VD);
        err = worst_row(got, ref, n, VD, &wr);
        ck_assert_msg(err < 1e-4, "config %d batch %d: delta rule of token %d off by %g", _i, b, wr, err);
        free(got);
        /* the states every sequence holds now */
        got = host_from(kg->state[0].conv, sizeof(float) * kg->conv_floats * NS);
        ck_assert_msg(rel_rms(got, kc->state[0].conv, (int64_t)kc->conv_floats * NS) < 1e-6,
                      "config %d batch %d: conv state", _i, b);
        free(got);
        got = host_from(kg->state[0].ssm, sizeof(float) * kg->ssm_floats * NS);
        for (int s = 0; s < NS; s++) {
            err = rel_rms(got + kg->ssm_floats * s, kc->state[0].ssm + kc->ssm_floats * s, (int64_t)kc->ssm_floats);
            ck_assert_msg(err < 1e-4, "config %d batch %d: delta state of sequence %d off by %g", _i, b, s, err);
        }
        free(got);
        float *ds[] = {dq, dg, db, dconv, dout};
        for (int i = 0; i < 5; i++)
            dev_free(ds[i]);
        float *hs[] = {qkv, g, beta, rg, rb, conv, ref};
        for (int i = 0; i < 7; i++)
            free(hs[i]);
    }
    dev_free(ddt);
    dev_free(dA);
    dev_free(dw);
    free(dt);
    free(A);
    free(w);
    kv_cache_free(kc);
    kv_cache_free(kg);
}
END_TEST

/* A checkpoint of a state on the device: saved after 10 tokens, the sequence goes on for
 * 6 more, is cut back to 12 cells (the checkpoint at 10 is what can be kept), and the
 * same 6 tokens again give the same outputs bit for bit. Without the restore the state
 * would have seen 16 tokens and the outputs would differ. */
START_TEST(recurrent_checkpoint)
{
    const rec_cfg *c = &rec_cfgs[0];
    const int d = c->d, C = 2 * c->n_k * d + c->n_v * d, VD = c->n_v * d;
    kv_cache *kg = rec_cache(gpu, 2, c->K, C, c->n_v, d);
    float *dt = randn(c->n_v, 1), *A = randn(c->n_v, 1), *w = randn((int64_t)C * c->K, 0.5f);
    for (int j = 0; j < c->n_v; j++)
        A[j] = -expf(A[j]);
    float *ddt = dev_from(dt, sizeof(float) * c->n_v), *dA = dev_from(A, sizeof(float) * c->n_v),
          *dw = dev_from(w, sizeof(float) * C * c->K);
    float *runs[2] = {NULL, NULL};
    const int n0 = 10, n1 = 6;
    float *qkv = randn((int64_t)(n0 + n1) * (C + 3), 1), *gb = randn((int64_t)(n0 + n1) * 2 * c->n_v, 1);
    float *dq = dev_alloc(sizeof(float) * (size_t)(n0 + n1) * (C + 3)),
          *dg = dev_alloc(sizeof(float) * (size_t)(n0 + n1) * c->n_v),
          *db = dev_alloc(sizeof(float) * (size_t)(n0 + n1) * c->n_v),
          *dconv = dev_alloc(sizeof(float) * (size_t)(n0 + n1) * C),
          *dout = dev_alloc(sizeof(float) * (size_t)(n0 + n1) * VD);
    /* one batch of tokens first..first+n-1 of sequence 1 */
#define REC_RUN(first, n)                                                                                  \
    do {                                                                                                   \
        int32_t tok[16], pos[16], seq[16];                                                                 \
        for (int t = 0; t < (n); t++)                                                                      \
            tok[t] = t, pos[t] = (first) + t, seq[t] = 1;                                                  \
        fwd_batch fb = {(n), tok, pos, seq, NULL};                                                         \
        ck_assert_int_eq(gpu->ops->begin(gpu, &fb), 0);                                                    \
        gpu->ops->upload(gpu, dq, qkv + (size_t)(first) * (C + 3), sizeof(float) * (size_t)(n) * (C + 3)); \
        gpu->ops->upload(gpu, dg, gb + (size_t)(first) * c->n_v, sizeof(float) * (size_t)(n) * c->n_v);    \
        gpu->ops->upload(gpu, db, gb + (size_t)(n0 + n1 + (first)) * c->n_v,                               \
                         sizeof(float) * (size_t)(n) * c->n_v);                                            \
        rec_ops(gpu, kg, c, (n), dq, dg, db, ddt, dA, dw, dconv, dout);                                    \
        kg->seq_len[1] = (first) + (n);                                                                    \
    } while (0)
    REC_RUN(0, n0);
    ck_assert_int_eq(kv_checkpoint_save(kg, 1), 0);
    ck_assert_int_eq(kv_checkpoint_count(kg, 1), 1);
    for (int r = 0; r < 2; r++) {
        REC_RUN(n0, n1);
        runs[r] = host_from(dout, sizeof(float) * (size_t)n1 * VD);
        gpu_ok("checkpoint run");
        if (r == 0) {
            /* a restore that did nothing: the next run differs */
            REC_RUN(n0, n1);
            float *stale = host_from(dout, sizeof(float) * (size_t)n1 * VD);
            ck_assert(memcmp(stale, runs[0], sizeof(float) * (size_t)n1 * VD) != 0);
            free(stale);
            ck_assert_int_eq(kv_seq_can_keep(kg, 1, 12), n0);
            ck_assert_int_eq(kv_seq_keep(kg, 1, 12), n0);
            ck_assert_int_eq(kg->seq_len[1], n0);
        }
    }
#undef REC_RUN
    ck_assert_msg(memcmp(runs[0], runs[1], sizeof(float) * (size_t)n1 * VD) == 0,
                  "the state restored from the checkpoint gives other outputs");
    float *ds[] = {dq, dg, db, dconv, dout, ddt, dA, dw};
    for (int i = 0; i < 8; i++)
        dev_free(ds[i]);
    float *hs[] = {qkv, gb, dt, A, w, runs[0], runs[1]};
    for (int i = 0; i < 7; i++)
        free(hs[i]);
    kv_cache_free(kg);
}
END_TEST

/* Batch and state mistakes are reported, not run: a state of another shape, a layer
 * without state, more tokens than the batch. */
START_TEST(recurrent_refusals)
{
    const rec_cfg *c = &rec_cfgs[0];
    const int d = c->d, C = 2 * c->n_k * d + c->n_v * d;
    kv_cache *kg = rec_cache(gpu, 1, c->K, C, c->n_v, d);
    begin_plain(2);
    float *buf = dev_alloc(sizeof(float) * 2 * (C + c->n_v * d));
    struct llmfs_error e = {0};
    const delta_params bad = {.n_k = c->n_k, .n_v = c->n_v, .d = d / 2, .tiled = true};
    gpu->ops->gated_delta(gpu, buf, buf, C, buf, buf, kg, 0, 2, &bad);
    ck_assert_int_eq(gpu->ops->check(gpu, &e), -EINVAL);
    ck_assert_msg(strstr(e.msg, "gated_delta"), "%s", e.msg);
    gpu->ops->ssm_conv(gpu, buf, buf, C, buf, kg, 0, 2, C, c->K + 1);
    ck_assert_int_eq(gpu->ops->check(gpu, &e), -EINVAL);
    ck_assert_msg(strstr(e.msg, "ssm_conv"), "%s", e.msg);
    const delta_params ok = {.n_k = c->n_k, .n_v = c->n_v, .d = d, .tiled = true};
    gpu->ops->gated_delta(gpu, buf, buf, C, buf, buf, kg, 0, 3, &ok);
    ck_assert_int_eq(gpu->ops->check(gpu, &e), -EINVAL);
    gpu_ok("after the refusals");
    dev_free(buf);
    kv_cache_free(kg);
}
END_TEST

/* One case per area, so that a failing run can be repeated area by area
 * (CK_RUN_CASE=attention): a kernel fault poisons every later call in the process. */
static TCase *area(Suite *s, const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_set_timeout(tc, 900);
    suite_add_tcase(s, tc);
    return tc;
}

static Suite *make_suite(void)
{
    Suite *s = suite_create("gpu_ops");
    TCase *tc = area(s, "memory");
    tcase_add_test(tc, upload_download_round_trip);
    tcase_add_test(tc, load_weight_refusals);
    tc = area(s, "matmul");
    tcase_add_loop_test(tc, matmul_every_type, 0, N_TYPES);
    tcase_add_loop_test(tc, get_rows_every_type, 0, N_TYPES);
    tcase_add_test(tc, matmul_multi_mixed);
    tc = area(s, "elementwise");
    tcase_add_test(tc, norm_add_swiglu);
    tcase_add_test(tc, hadamard);
    tcase_add_test(tc, rope_variants);
    tc = area(s, "attention");
    tcase_add_loop_test(tc, attention_every_config, 0, N_ATTN);
    tc = area(s, "moe");
    tcase_add_test(tc, topk_softmax_routes);
    tcase_add_test(tc, moe_experts);
    tc = area(s, "gptoss"); /* sliding window, sinks, the experts' biases and clamp */
    tcase_add_test(tc, attention_window_sinks);
    tcase_add_test(tc, attention_ring);
    tcase_add_test(tc, moe_experts_extra);
    tc = area(s, "vision"); /* images: non-causal attention, the tower's ops */
    tcase_add_test(tc, attention_non_causal);
    tcase_add_test(tc, vision_ops);
    tc = area(s, "recurrent"); /* Gated DeltaNet layers (hybrid Qwen) */
    tcase_add_test(tc, recurrent_elementwise);
    tcase_add_loop_test(tc, recurrent_layer, 0, N_REC);
    tcase_add_test(tc, recurrent_checkpoint);
    tcase_add_test(tc, recurrent_refusals);
    tc = area(s, "sampling");
    tcase_add_test(tc, argmax_and_topk);
    tc = area(s, "graphs");
    tcase_add_test(tc, graph_replay);
    tc = area(s, "errors");
    tcase_add_test(tc, errors_are_reported);
    return s;
}

int main(void)
{
    test_rand_seed(777);
    char err[256] = "";
    gpu = backend_gpu_new(0, err, sizeof err);
    if (!gpu) {
        /* a device that is there but unusable (no kernel image for it, a driver too old
         * for the toolkit) is a failure, not a skip */
        if (backend_gpu_count() > 0) {
            fprintf(stderr, "\n*** FAILED gpu_ops: %d CUDA device(s) present, but: %s ***\n\n", backend_gpu_count(),
                    err);
            return 1;
        }
        fprintf(stderr, "\n*** SKIPPED gpu_ops: no usable GPU (%s) ***\n\n", err);
        return test_skip_code();
    }
    cpu = backend_cpu_new(2, 2);
    /* CUDA state does not survive fork: run the tests in this process */
    setenv("CK_FORK", "no", 1);
    int rc = test_run_suite(make_suite());
    backend_free(gpu);
    backend_free(cpu);
    return rc;
}

#else
int main(void)
{
    fprintf(stderr, "\n*** SKIPPED gpu_ops: llmfs was built without CUDA ***\n\n");
    return test_skip_code();
}
#endif
