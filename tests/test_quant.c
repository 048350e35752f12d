/* test_quant.c — tensor types: tables, f16/bf16, quantizers, and every fast kernel
 * against the scalar references, on each instruction set this CPU has. */
#include "quant.h"
#include "testutil.h"

#include <immintrin.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const int all_types[] = {T_F32,  T_F16,  T_BF16, T_Q4_0, T_Q4_1, T_Q5_0, T_Q5_1, T_Q8_0,
                                T_Q8_1, T_Q2_K, T_Q3_K, T_Q4_K, T_Q5_K, T_Q6_K, T_Q8_K,
                                T_IQ4_NL, T_MXFP4, T_IQ4_XS, T_TQ1_0, T_TQ2_0, T_IQ3_XXS,
                                T_IQ3_S, T_IQ2_XXS, T_IQ2_XS, T_IQ2_S, T_IQ1_S, T_IQ1_M};
#define N_TYPES ((int)(sizeof all_types / sizeof all_types[0]))
static const char *const isas[] = {"scalar", "avx2", "avx512"};
#define N_ISAS 3

/* ---------------- random data ---------------- */

static void put16(void *p, size_t off, uint16_t v)
{
    memcpy((char *)p + off, &v, 2);
}
static uint16_t rand_scale16(float mag)
{
    return f32_to_f16((test_uniform() * 2 - 1) * mag);
}

/* Weight rows of random bits with sane scale fields (random quants of every value,
 * -128 included, which real files may hold). */
static void random_weights(int type, int64_t n, void *dst)
{
    const type_traits *t = type_info(type);
    size_t nb = (size_t)(n / t->block), bb = t->block_bytes;
    unsigned char *p = dst;
    if (type == T_F32 || type == T_F16 || type == T_BF16) {
        for (int64_t i = 0; i < n; i++) {
            float x = test_normal();
            if (type == T_F32)
                memcpy(p + 4 * i, &x, 4);
            else
                put16(p, 2 * (size_t)i, type == T_F16 ? f32_to_f16(x) : f32_to_bf16(x));
        }
        return;
    }
    for (size_t i = 0; i < nb * bb; i++)
        p[i] = (unsigned char)test_rand();
    for (size_t b = 0; b < nb; b++) {
        unsigned char *q = p + b * bb;
        switch (type) {
        case T_Q4_0: case T_Q5_0: case T_Q8_0:
            put16(q, 0, rand_scale16(0.1f));
            break;
        case T_Q4_1: case T_Q5_1: case T_Q8_1:
            put16(q, 0, rand_scale16(0.1f));
            put16(q, 2, rand_scale16(1.f));
            break;
        case T_Q2_K:
            put16(q, 80, rand_scale16(0.1f));
            put16(q, 82, rand_scale16(0.1f));
            break;
        case T_Q3_K:
            put16(q, 108, rand_scale16(0.1f));
            break;
        case T_Q4_K: case T_Q5_K:
            put16(q, 0, rand_scale16(0.01f));
            put16(q, 2, rand_scale16(0.01f));
            break;
        case T_Q6_K:
            put16(q, 208, rand_scale16(0.01f));
            break;
        case T_Q8_K: {
            float d = (test_uniform() * 2 - 1) * 0.01f;
            memcpy(q, &d, 4);
            break;
        }
        case T_IQ4_NL: case T_IQ4_XS: case T_IQ3_XXS: case T_IQ3_S: case T_IQ2_XXS:
        case T_IQ2_XS: case T_IQ2_S: case T_IQ1_S:
            put16(q, 0, rand_scale16(0.01f));
            break;
        case T_TQ1_0:
            put16(q, 52, rand_scale16(0.1f));
            break;
        case T_TQ2_0:
            put16(q, 64, rand_scale16(0.1f));
            break;
        case T_MXFP4:
            /* exponents around 1, and now and then the denormal scales of e = 0, 1 */
            q[0] = test_rand() % 16 == 0 ? (unsigned char)(test_rand() % 2)
                                         : (unsigned char)(120 + test_rand() % 12);
            break;
        case T_IQ1_M: {
            /* the f16 scale is the top nibble of each of the four scale words */
            uint16_t d = rand_scale16(0.01f), sc[4];
            memcpy(sc, q + 48, 8);
            for (int k = 0; k < 4; k++)
                sc[k] = (uint16_t)((sc[k] & 0x0fff) | ((d >> (4 * k)) & 15) << 12);
            memcpy(q + 48, sc, 8);
            break;
        }
        }
    }
}

/* Activations the way the engine makes them: floats of varying scale per block (some
 * all zero), quantized to the dot type. */
static void random_floats(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i += 32) {
        int kind = (int)(test_rand() % 8);
        float s = kind == 0 ? 0.f : kind == 1 ? 100.f : kind == 2 ? 1e-3f : 1.f;
        for (int64_t j = i; j < i + 32 && j < n; j++)
            x[j] = test_normal() * s;
    }
}

static void *random_acts(int dot_type, int64_t n)
{
    float *x = malloc(sizeof *x * (size_t)n);
    random_floats(x, n);
    void *a = malloc(type_row_bytes(dot_type, n) + 64);
    quant_ref_quantize_row(dot_type, x, a, n);
    free(x);
    return a;
}

/* The scale of a dot product's rounding: sum |w_i a_i| over dequantized values, plus
 * the offset terms of the types with mins (which cancel in w_i but not in the sums). */
static double dot_magnitude(int type, int64_t n, const void *w, const void *a)
{
    const type_traits *t = type_info(type);
    float *wf = malloc(sizeof *wf * (size_t)n), *af = malloc(sizeof *af * (size_t)n);
    quant_ref_dequantize_row(type, w, wf, n);
    quant_ref_dequantize_row(t->dot_type, a, af, n);
    double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += fabs((double)wf[i] * af[i]);
    if (type == T_Q4_1 || type == T_Q5_1 || type == T_Q2_K || type == T_Q4_K || type == T_Q5_K) {
        /* the same blocks with every quant zero dequantize to just the offset */
        size_t bytes = type_row_bytes(type, n);
        unsigned char *z = malloc(bytes);
        memcpy(z, w, bytes);
        for (size_t b = 0; b < bytes / t->block_bytes; b++) {
            unsigned char *q = z + b * t->block_bytes;
            if (type == T_Q4_1) memset(q + 4, 0, 16);
            if (type == T_Q5_1) memset(q + 4, 0, 20);
            if (type == T_Q2_K) memset(q + 16, 0, 64);
            if (type == T_Q4_K) memset(q + 16, 0, 128);
            if (type == T_Q5_K) memset(q + 16, 0, 160);
        }
        quant_ref_dequantize_row(type, z, wf, n);
        for (int64_t i = 0; i < n; i++)
            s += 2 * fabs((double)wf[i] * af[i]);
        free(z);
    }
    free(wf);
    free(af);
    return s;
}

static int64_t test_sizes(int type, int k)
{
    static const int blocks[] = {1, 2, 3, 7, 8, 16, 33};
    static const int elems[] = {1, 7, 16, 33, 64, 100, 1000, 4096};
    if (type_info(type)->block == 1)
        return k < 8 ? elems[k] : -1;
    return k < 7 ? (int64_t)blocks[k] * type_info(type)->block : -1;
}

/* ---------------- (g) tables ---------------- */

START_TEST(test_type_tables)
{
    static const struct { int type; const char *name; int block; size_t bytes; int dot; } want[] = {
        {T_F32, "f32", 1, 4, T_F32},        {T_F16, "f16", 1, 2, T_F16},
        {T_BF16, "bf16", 1, 2, T_BF16},     {T_Q4_0, "q4_0", 32, 18, T_Q8_0},
        {T_Q4_1, "q4_1", 32, 20, T_Q8_1},   {T_Q5_0, "q5_0", 32, 22, T_Q8_0},
        {T_Q5_1, "q5_1", 32, 24, T_Q8_1},   {T_Q8_0, "q8_0", 32, 34, T_Q8_0},
        {T_Q8_1, "q8_1", 32, 36, T_Q8_1},   {T_Q2_K, "q2_K", 256, 84, T_Q8_K},
        {T_Q3_K, "q3_K", 256, 110, T_Q8_K}, {T_Q4_K, "q4_K", 256, 144, T_Q8_K},
        {T_Q5_K, "q5_K", 256, 176, T_Q8_K}, {T_Q6_K, "q6_K", 256, 210, T_Q8_K},
        {T_Q8_K, "q8_K", 256, 292, T_Q8_K},
        {T_IQ4_NL, "iq4_nl", 32, 18, T_Q8_0}, {T_MXFP4, "mxfp4", 32, 17, T_Q8_0},
        {T_IQ4_XS, "iq4_xs", 256, 136, T_Q8_K}, {T_TQ1_0, "tq1_0", 256, 54, T_Q8_K},
        {T_TQ2_0, "tq2_0", 256, 66, T_Q8_K},
    };
    /* the grid types: decoded and multiplied, but not quantized (llama.cpp needs an
     * importance matrix for them) */
    static const struct { int type; const char *name; size_t bytes; } grid[] = {
        {T_IQ3_XXS, "iq3_xxs", 98}, {T_IQ3_S, "iq3_s", 110}, {T_IQ2_XXS, "iq2_xxs", 66},
        {T_IQ2_XS, "iq2_xs", 74},   {T_IQ2_S, "iq2_s", 82},  {T_IQ1_S, "iq1_s", 50},
        {T_IQ1_M, "iq1_m", 56},
    };
    for (size_t i = 0; i < sizeof grid / sizeof grid[0]; i++) {
        const type_traits *t = type_info(grid[i].type);
        ck_assert_ptr_nonnull(t);
        ck_assert_str_eq(t->name, grid[i].name);
        ck_assert_int_eq(t->block, 256);
        ck_assert_uint_eq(t->block_bytes, grid[i].bytes);
        ck_assert_int_eq(t->dot_type, T_Q8_K);
        ck_assert(!t->has_quantize);
        ck_assert_int_eq(type_from_name(grid[i].name), grid[i].type);
    }
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        const type_traits *t = type_info(want[i].type);
        ck_assert_ptr_nonnull(t);
        ck_assert_str_eq(t->name, want[i].name);
        ck_assert_int_eq(t->block, want[i].block);
        ck_assert_uint_eq(t->block_bytes, want[i].bytes);
        ck_assert_int_eq(t->dot_type, want[i].dot);
        ck_assert(t->has_quantize);
        ck_assert_int_eq(type_from_name(want[i].name), want[i].type);
        char up[16];
        size_t k;
        for (k = 0; want[i].name[k]; k++)
            up[k] = (char)(want[i].name[k] >= 'a' && want[i].name[k] <= 'z' ? want[i].name[k] - 32
                                                                             : want[i].name[k]);
        up[k] = 0;
        ck_assert_int_eq(type_from_name(up), want[i].type);
    }
    ck_assert_int_eq(type_from_name("Q4_k"), T_Q4_K);
    ck_assert_int_eq(type_from_name("q4_K_M"), -1);
    ck_assert_int_eq(type_from_name(""), -1);
    ck_assert_int_eq(type_from_name(NULL), -1);
    ck_assert_int_eq(type_from_name("q4_2"), -1);
    ck_assert_ptr_null(type_info(-1));
    ck_assert_ptr_null(type_info(4));  /* the retired Q4_2 */
    ck_assert_ptr_null(type_info(31)); /* the retired Q4_0_4_4 */
    ck_assert_ptr_null(type_info(36)); /* the retired IQ4_NL_4_4 */
    ck_assert_ptr_null(type_info(T_COUNT));
    ck_assert_ptr_null(type_info(1000));
    ck_assert_uint_eq(type_row_bytes(T_Q4_K, 4096), 16 * 144);
    ck_assert_uint_eq(type_row_bytes(T_Q8_0, 4096), 128 * 34);
    ck_assert_uint_eq(type_row_bytes(T_F16, 7), 14);
    ck_assert_uint_eq(type_row_bytes(T_Q6_K, 512), 420);
    ck_assert_uint_eq(type_row_bytes(99, 512), 0);
}
END_TEST

START_TEST(test_isa_selection)
{
    /* LLMFS_ISA picks the starting one; NULL restores the best the CPU has */
    char initial[16];
    snprintf(initial, sizeof initial, "%s", quant_isa());
    const char *env = getenv("LLMFS_ISA");
    if (env && *env && quant_force_isa(env))
        ck_assert_str_eq(initial, quant_isa());
    ck_assert(quant_force_isa("scalar"));
    ck_assert_str_eq(quant_isa(), "scalar");
    ck_assert(!quant_force_isa("sse9"));
    ck_assert_str_eq(quant_isa(), "scalar");
    ck_assert(quant_force_isa(NULL));
    const char *best = quant_isa();
    if (__builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512bf16") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        ck_assert_str_eq(best, "avx512");
    else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        ck_assert_str_eq(best, "avx2");
    else
        ck_assert_str_eq(best, "scalar");
    if (!env || !*env)
        ck_assert_str_eq(initial, best);
}
END_TEST

/* ---------------- (f) f16 / bf16 ---------------- */

static uint32_t fbits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

START_TEST(test_f16_round_trip)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = f16_to_f32((uint16_t)h);
        bool nan = (h & 0x7c00) == 0x7c00 && (h & 0x3ff);
        if (nan) {
            ck_assert(isnan(f));
            uint16_t back = f32_to_f16(f);
            ck_assert((back & 0x7c00) == 0x7c00 && (back & 0x3ff));
            ck_assert_uint_eq(back & 0x8000, h & 0x8000);
        } else {
            ck_assert_msg(f32_to_f16(f) == h, "f16 %04x -> %g -> %04x", h, f, f32_to_f16(f));
        }
    }
    ck_assert(f16_to_f32(0x3c00) == 1.0f);
    ck_assert(f16_to_f32(0xc000) == -2.0f);
    ck_assert(f16_to_f32(0x7bff) == 65504.0f);
    ck_assert(f16_to_f32(0x0001) == 0x1p-24f);
    ck_assert(f16_to_f32(0x0400) == 0x1p-14f);
    ck_assert(isinf(f16_to_f32(0x7c00)) && f16_to_f32(0x7c00) > 0);
    ck_assert(isinf(f16_to_f32(0xfc00)) && f16_to_f32(0xfc00) < 0);
    ck_assert(signbit(f16_to_f32(0x8000)) && f16_to_f32(0x8000) == 0);
}
END_TEST

START_TEST(test_f16_rounding)
{
    /* every tie between neighbours goes to the even one; just off the tie, to the nearer */
    for (uint32_t h = 0; h < 0x7bff; h++) {
        double lo = f16_to_f32((uint16_t)h), hi = f16_to_f32((uint16_t)(h + 1));
        float mid = (float)((lo + hi) / 2); /* exact: 12 significant bits */
        ck_assert((double)mid == (lo + hi) / 2);
        uint16_t even = (h & 1) ? (uint16_t)(h + 1) : (uint16_t)h;
        ck_assert_msg(f32_to_f16(mid) == even, "tie above %04x", h);
        ck_assert_uint_eq(f32_to_f16(-mid), even | 0x8000);
        ck_assert_uint_eq(f32_to_f16(nextafterf(mid, 0)), h);
        ck_assert_uint_eq(f32_to_f16(nextafterf(mid, INFINITY)), h + 1);
    }
    ck_assert_uint_eq(f32_to_f16(65504.f), 0x7bff);
    ck_assert_uint_eq(f32_to_f16(65519.99f), 0x7bff);
    ck_assert_uint_eq(f32_to_f16(65520.f), 0x7c00);
    ck_assert_uint_eq(f32_to_f16(1e10f), 0x7c00);
    ck_assert_uint_eq(f32_to_f16(-1e10f), 0xfc00);
    ck_assert_uint_eq(f32_to_f16(INFINITY), 0x7c00);
    ck_assert_uint_eq(f32_to_f16(-INFINITY), 0xfc00);
    ck_assert_uint_eq(f32_to_f16(0x1p-25f), 0);                 /* tie with 0 */
    ck_assert_uint_eq(f32_to_f16(nextafterf(0x1p-25f, 1)), 1);
    ck_assert_uint_eq(f32_to_f16(3 * 0x1p-25f), 2);             /* tie 1|2 -> even */
    ck_assert_uint_eq(f32_to_f16(1e-30f), 0);
    ck_assert_uint_eq(f32_to_f16(-1e-30f), 0x8000);
    uint16_t n = f32_to_f16(NAN);
    ck_assert((n & 0x7c00) == 0x7c00 && (n & 0x3ff));
}
END_TEST

__attribute__((target("f16c"))) static uint16_t hw_f16(float f)
{
    return (uint16_t)_cvtss_sh(f, 0);
}

START_TEST(test_f16_matches_hardware)
{
    if (!__builtin_cpu_supports("f16c"))
        return;
    test_rand_seed(7);
    for (int i = 0; i < 2000000; i++) {
        uint32_t u = (uint32_t)test_rand();
        /* concentrate on the exponents f16 can represent, with some of everything else */
        if (i % 4)
            u = (u & 0x807fffff) | ((uint32_t)(100 + test_rand() % 45) << 23);
        float f;
        memcpy(&f, &u, 4);
        if (isnan(f))
            continue;
        ck_assert_msg(f32_to_f16(f) == hw_f16(f), "%08x: %04x vs %04x", u, f32_to_f16(f), hw_f16(f));
    }
}
END_TEST

START_TEST(test_bf16)
{
    for (uint32_t h = 0; h < 65536; h++) {
        float f = bf16_to_f32((uint16_t)h);
        ck_assert_uint_eq(fbits(f), h << 16);
        if (isnan(f))
            ck_assert(isnan(bf16_to_f32(f32_to_bf16(f))));
        else
            ck_assert_uint_eq(f32_to_bf16(f), h);
    }
    /* ties to even, just off the tie to nearest */
    for (uint32_t h = 0x0080; h < 0x7f7f; h += 37) {
        uint32_t mid = (h << 16) | 0x8000;
        float f;
        memcpy(&f, &mid, 4);
        ck_assert_uint_eq(f32_to_bf16(f), (h & 1) ? h + 1 : h);
        mid += 1;
        memcpy(&f, &mid, 4);
        ck_assert_uint_eq(f32_to_bf16(f), h + 1);
        mid -= 2;
        memcpy(&f, &mid, 4);
        ck_assert_uint_eq(f32_to_bf16(f), h);
    }
    ck_assert_uint_eq(f32_to_bf16(1.0f), 0x3f80);
    ck_assert_uint_eq(f32_to_bf16(INFINITY), 0x7f80);
    ck_assert_uint_eq(f32_to_bf16(-INFINITY), 0xff80);
    ck_assert_uint_eq(f32_to_bf16(3.4e38f), 0x7f80); /* rounds past the largest finite */
    uint16_t n = f32_to_bf16(NAN);
    ck_assert((n & 0x7f80) == 0x7f80 && (n & 0x7f));
    uint32_t snan = 0x7f800001; /* a nan whose payload sits below bf16's bits */
    float fs;
    memcpy(&fs, &snan, 4);
    ck_assert(isnan(bf16_to_f32(f32_to_bf16(fs))));
}
END_TEST

/* ---------------- (a) fast vec_dot vs reference ---------------- */

static int have_isa(const char *isa)
{
    return quant_force_isa(isa);
}

START_TEST(test_vec_dot_vs_ref)
{
    int type = all_types[_i];
    const type_traits *t = type_info(type);
    test_rand_seed(1000 + (uint64_t)type);
    int64_t n;
    for (int s = 0; (n = test_sizes(type, s)) > 0; s++) {
        void *w = malloc(type_row_bytes(type, n) + 64);
        random_weights(type, n, w);
        void *a = random_acts(t->dot_type, n);
        float ref = quant_ref_vec_dot(type, n, w, a);
        double tol = 1e-5 * dot_magnitude(type, n, w, a) + 1e-30;
        ck_assert(isfinite(ref));
        for (int i = 0; i < N_ISAS; i++) {
            if (!have_isa(isas[i]))
                continue;
            float got = vec_dot(type, n, w, a);
            ck_assert_msg(fabs((double)got - ref) <= tol, "%s %s n=%lld: %.9g vs ref %.9g (tol %g)",
                          t->name, isas[i], (long long)n, got, ref, tol);
        }
        quant_force_isa(NULL);
        free(w);
        free(a);
    }
}
END_TEST

/* ---------------- (b) tiles, rows and gemm vs vec_dot ---------------- */

START_TEST(test_tiles_vs_vec_dot)
{
    int type = all_types[_i];
    const type_traits *t = type_info(type);
    test_rand_seed(2000 + (uint64_t)type);
    int64_t n = t->block == 1 ? 200 : 5 * t->block;
    const int R = 11, C = 7;
    size_t ws = type_row_bytes(type, n) + 6, as = type_row_bytes(t->dot_type, n) + 4;
    /* odd strides keep the kernels honest about alignment of whole rows (blocks keep
     * their natural 2-byte alignment, 4 for Q8_K) */
    if (t->dot_type == T_Q8_K || type == T_F32 || type == T_Q8_K)
        ws += 2, as += 4;
    unsigned char *w = malloc(ws * R), *a = malloc(as * C);
    for (int r = 0; r < R; r++)
        random_weights(type, n, w + ws * (size_t)r);
    for (int c = 0; c < C; c++) {
        void *row = random_acts(t->dot_type, n);
        memcpy(a + as * (size_t)c, row, type_row_bytes(t->dot_type, n));
        free(row);
    }
    /* Quantized types: every tile shape gives exactly vec_dot's result (integer sums are
     * exact and the float steps are the same lane for lane), so decode (4x1 tiles) and
     * prefill (4x4) agree on every row, as the model tests require. */
    const double rel = t->block > 1 ? 0 : 1e-5;
    double mag[11][7];
    for (int r = 0; r < R; r++)
        for (int c = 0; c < C; c++)
            mag[r][c] = rel * dot_magnitude(type, n, w + ws * (size_t)r, a + as * (size_t)c);
    for (int i = 0; i < N_ISAS; i++) {
        if (!have_isa(isas[i]))
            continue;
        float want[11][7];
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C; c++)
                want[r][c] = vec_dot(type, n, w + ws * (size_t)r, a + as * (size_t)c);
        for (int nr = 1; nr <= QUANT_TILE_R; nr++)
            for (int nc = 1; nc <= QUANT_TILE_C; nc++) {
                float out[QUANT_TILE_C][QUANT_TILE_R + 3];
                for (int c = 0; c < QUANT_TILE_C; c++)
                    for (int r = 0; r < QUANT_TILE_R + 3; r++)
                        out[c][r] = -12345.f;
                /* rows 1.. and columns 2.. so tiles start away from the buffer start */
                gemm_tile(type, n, nr, nc, w + ws, ws, a + 2 * as, as, &out[0][0], QUANT_TILE_R + 3);
                for (int c = 0; c < QUANT_TILE_C; c++)
                    for (int r = 0; r < QUANT_TILE_R + 3; r++) {
                        if (c >= nc || r >= nr) {
                            ck_assert_msg(out[c][r] == -12345.f, "%s %s tile %dx%d wrote outside",
                                          t->name, isas[i], nr, nc);
                            continue;
                        }
                        double tol = mag[r + 1][c + 2];
                        ck_assert_msg(fabs((double)out[c][r] - want[r + 1][c + 2]) <= tol,
                                      "%s %s tile %dx%d [%d][%d]: %.9g vs %.9g", t->name, isas[i],
                                      nr, nc, r, c, out[c][r], want[r + 1][c + 2]);
                    }
            }
        float rows[11];
        vec_dot_rows(type, n, R, w, ws, a + as, rows);
        for (int r = 0; r < R; r++)
            ck_assert_msg(fabs((double)rows[r] - want[r][1]) <= mag[r][1],
                          "%s %s rows[%d]", t->name, isas[i], r);
        float g[7][13];
        quant_gemm(type, n, R, C, w, ws, a, as, &g[0][0], 13);
        for (int r = 0; r < R; r++)
            for (int c = 0; c < C; c++)
                ck_assert_msg(fabs((double)g[c][r] - want[r][c]) <= mag[r][c],
                              "%s %s gemm[%d][%d]: %.9g vs %.9g", t->name, isas[i], r, c, g[c][r],
                              want[r][c]);
    }
    quant_force_isa(NULL);
    free(w);
    free(a);
}
END_TEST

/* ---------------- (c) dequantize fast == reference ---------------- */

START_TEST(test_dequantize_vs_ref)
{
    int type = all_types[_i];
    test_rand_seed(3000 + (uint64_t)type);
    int64_t n;
    for (int s = 0; (n = test_sizes(type, s)) > 0; s++) {
        void *w = malloc(type_row_bytes(type, n) + 64);
        random_weights(type, n, w);
        float *ref = malloc(sizeof *ref * (size_t)n), *got = malloc(sizeof *got * (size_t)(n + 1));
        quant_ref_dequantize_row(type, w, ref, n);
        for (int i = 0; i < N_ISAS; i++) {
            if (!have_isa(isas[i]))
                continue;
            got[n] = 777.f;
            dequantize_row(type, w, got, n);
            ck_assert_msg(memcmp(got, ref, sizeof *ref * (size_t)n) == 0, "%s %s n=%lld",
                          type_info(type)->name, isas[i], (long long)n);
            ck_assert(got[n] == 777.f);
        }
        quant_force_isa(NULL);
        free(w);
        free(ref);
        free(got);
    }
}
END_TEST

/* ---------------- (d) quantize: error bounds, fast == reference ---------------- */

static double quant_rel_rms(int type, const float *x, int64_t n)
{
    void *q = malloc(type_row_bytes(type, n));
    float *y = malloc(sizeof *y * (size_t)n);
    quantize_row(type, x, q, n);
    dequantize_row(type, q, y, n);
    double e = 0, s = 0;
    for (int64_t i = 0; i < n; i++) {
        e += ((double)x[i] - y[i]) * ((double)x[i] - y[i]);
        s += (double)x[i] * x[i];
    }
    free(q);
    free(y);
    return sqrt(e / s);
}

START_TEST(test_quantize_error)
{
    /* relative RMS error on normal data; the bounds sit ~25% above what the quantizers
     * reach, far below what a wrong packing would give (~1) */
    static const struct { int type; double bound; } b[] = {
        {T_F32, 0},      {T_F16, 4e-4},   {T_BF16, 3e-3},  {T_Q8_0, 6.5e-3},  {T_Q8_1, 6.5e-3},
        {T_Q8_K, 8.5e-3},  {T_Q6_K, 0.022}, {T_Q5_K, 0.045}, {T_Q5_1, 0.048},  {T_Q5_0, 0.05},
        {T_Q4_K, 0.09},  {T_Q4_1, 0.10},  {T_Q4_0, 0.10},  {T_Q3_K, 0.18},  {T_Q2_K, 0.34},
        {T_IQ4_NL, 0.093}, {T_IQ4_XS, 0.094}, {T_MXFP4, 0.14},
        /* ternary with d = the block's largest magnitude, as llama.cpp makes them: most
         * of a normal block rounds to 0, so the error is large by design */
        {T_TQ1_0, 0.85},  {T_TQ2_0, 0.85},
    };
    const int64_t n = 8192;
    float *x = malloc(sizeof *x * n);
    test_rand_seed(4000);
    for (int64_t i = 0; i < n; i++)
        x[i] = test_normal() * 0.05f;
    for (size_t k = 0; k < sizeof b / sizeof b[0]; k++) {
        double e = quant_rel_rms(b[k].type, x, n);
        fprintf(stderr, "quantize %-5s rel rms %.4f (bound %.4f)\n", type_info(b[k].type)->name, e,
                b[k].bound);
        ck_assert_msg(e <= b[k].bound, "%s: rel rms %g > %g", type_info(b[k].type)->name, e,
                      b[k].bound);
        if (b[k].type != T_F32)
            ck_assert_msg(e > b[k].bound / 20, "%s: error %g suspiciously small",
                          type_info(b[k].type)->name, e);
    }
    /* TQ1_0 and TQ2_0 encode the same ternary values, two ways */
    void *t1 = malloc(type_row_bytes(T_TQ1_0, n)), *t2 = malloc(type_row_bytes(T_TQ2_0, n));
    float *y1 = malloc(sizeof *y1 * n), *y2 = malloc(sizeof *y2 * n);
    quantize_row(T_TQ1_0, x, t1, n);
    quantize_row(T_TQ2_0, x, t2, n);
    dequantize_row(T_TQ1_0, t1, y1, n);
    dequantize_row(T_TQ2_0, t2, y2, n);
    ck_assert(memcmp(y1, y2, sizeof *y1 * n) == 0);
    free(t1);
    free(t2);
    free(y1);
    free(y2);
    free(x);
}
END_TEST

START_TEST(test_quantize_edge_blocks)
{
    /* a one-hot block, an all-zero block, and two constant blocks (negative, positive):
     * every type represents these nearly exactly */
    const int64_t n = 1024;
    float *x = calloc(n, sizeof *x);
    x[100] = 6.f; /* a value MXFP4 holds exactly too (1.5 x 2^2) */
    for (int i = 512; i < 768; i++)
        x[i] = -0.25f;
    for (int i = 768; i < 1024; i++)
        x[i] = 3.f;
    for (int k = 0; k < N_TYPES; k++) {
        int type = all_types[k];
        if (!type_info(type)->has_quantize)
            continue;
        void *q = malloc(type_row_bytes(type, n));
        float *y = malloc(sizeof *y * n);
        quantize_row(type, x, q, n);
        dequantize_row(type, q, y, n);
        /* IQ4's table has no zero: beside the 6 its 32-block's zeros become d * 1 */
        float slack = type == T_IQ4_NL || type == T_IQ4_XS ? 6.f / 127 * 1.01f : 0;
        for (int64_t i = 0; i < n; i++)
            ck_assert_msg(fabsf(y[i] - x[i]) <= 0.01f * fabsf(x[i]) + 1e-6f + (i / 32 == 100 / 32 ? slack : 0),
                          "%s [%lld] %g -> %g", type_info(type)->name, (long long)i, x[i], y[i]);
        for (int64_t i = 256; i < 512; i++)
            ck_assert_msg(y[i] == 0, "%s: zero block gave %g", type_info(type)->name, y[i]);
        free(q);
        free(y);
    }
    free(x);
}
END_TEST

START_TEST(test_quantize_fast_vs_ref)
{
    /* the activation conversions must be bit-identical on every instruction set */
    static const int types[] = {T_Q8_0, T_Q8_1, T_Q8_K, T_F16, T_BF16, T_F32, T_Q4_0};
    test_rand_seed(5000);
    for (size_t k = 0; k < sizeof types / sizeof types[0]; k++) {
        int type = types[k];
        for (int64_t n = 256; n <= 256 * 9; n += 256 * 4) {
            float *x = malloc(sizeof *x * (size_t)n);
            random_floats(x, n);
            x[3] = 1e-40f; /* a subnormal, and exact ties for the f16 conversion */
            x[5] = 1.0f + 0x1p-11f;
            size_t bytes = type_row_bytes(type, n);
            unsigned char *ref = malloc(bytes), *got = malloc(bytes + 1);
            quant_ref_quantize_row(type, x, ref, n);
            for (int i = 0; i < N_ISAS; i++) {
                if (!have_isa(isas[i]))
                    continue;
                got[bytes] = 0x5a;
                quantize_row(type, x, got, n);
                ck_assert_msg(memcmp(got, ref, bytes) == 0, "%s %s n=%lld", type_info(type)->name,
                              isas[i], (long long)n);
                ck_assert(got[bytes] == 0x5a);
            }
            quant_force_isa(NULL);
            free(x);
            free(ref);
            free(got);
        }
    }
}
END_TEST

START_TEST(test_activation_rounding)
{
    /* llama.cpp's conventions, worked by hand */
    float x[256] = {0};
    x[0] = 1.0f;
    x[1] = -0.5f;
    x[2] = 0.25f / 127.f * 3; /* 0.75 quant steps... */
    x[31] = 2.54f;            /* amax: d = 0.02, q = 127 */
    x[4] = 0.01f;             /* exactly half a step: ties to even -> 0 */
    x[5] = 0.03f;             /* 1.5 steps -> 2 */
    unsigned char q[36];
    quantize_row(T_Q8_0, x, q, 32);
    uint16_t d;
    memcpy(&d, q, 2);
    ck_assert_uint_eq(d, f32_to_f16(2.54f / 127.f));
    const int8_t *qs = (const int8_t *)q + 2;
    ck_assert_int_eq(qs[31], 127);
    ck_assert_int_eq(qs[0], (int)lrintf(1.0f * (127.f / 2.54f)));
    ck_assert_int_eq(qs[1], (int)lrintf(-0.5f * (127.f / 2.54f)));
    ck_assert_int_eq(qs[3], 0);
    ck_assert_int_eq(qs[4], (int)nearbyintf(0.01f * (127.f / 2.54f)));
    ck_assert_int_eq(qs[5], (int)nearbyintf(0.03f * (127.f / 2.54f)));

    quantize_row(T_Q8_1, x, q, 32);
    int sum = 0;
    for (int j = 0; j < 32; j++)
        sum += ((const int8_t *)q + 4)[j];
    uint16_t s;
    memcpy(&s, q + 2, 2);
    ck_assert_uint_eq(s, f32_to_f16((2.54f / 127.f) * (float)sum));

    /* Q8_K: the signed extreme sets the scale, and its quant is -127 */
    for (int i = 0; i < 256; i++)
        x[i] = (float)(i % 17) - 8.f;
    x[100] = 20.f;
    unsigned char k[292];
    quantize_row(T_Q8_K, x, k, 256);
    float kd;
    memcpy(&kd, k, 4);
    ck_assert(kd == 1.f / (-127.f / 20.f));
    const int8_t *kq = (const int8_t *)k + 4;
    ck_assert_int_eq(kq[100], -127);
    for (int i = 0; i < 256; i++)
        ck_assert_int_eq(kq[i], (int)nearbyintf(x[i] * (-127.f / 20.f)));
    int16_t bs[16];
    memcpy(bs, k + 260, sizeof bs);
    for (int j = 0; j < 16; j++) {
        int t = 0;
        for (int l = 0; l < 16; l++)
            t += kq[16 * j + l];
        ck_assert_int_eq(bs[j], t);
    }
}
END_TEST

/* ---------------- (e) reference dot == dot of the dequantized rows ---------------- */

START_TEST(test_ref_dot_vs_dequantized)
{
    int type = all_types[_i];
    const type_traits *t = type_info(type);
    test_rand_seed(6000 + (uint64_t)type);
    int64_t n;
    for (int s = 0; (n = test_sizes(type, s)) > 0; s++) {
        void *w = malloc(type_row_bytes(type, n) + 64);
        random_weights(type, n, w);
        void *a = random_acts(t->dot_type, n);
        float *wf = malloc(sizeof *wf * (size_t)n), *af = malloc(sizeof *af * (size_t)n);
        quant_ref_dequantize_row(type, w, wf, n);
        quant_ref_dequantize_row(t->dot_type, a, af, n);
        double exact = 0;
        for (int64_t i = 0; i < n; i++)
            exact += (double)wf[i] * af[i];
        float ref = quant_ref_vec_dot(type, n, w, a);
        double tol = 1e-5 * dot_magnitude(type, n, w, a) + 1e-30;
        if (t->dot_type == T_Q8_1) {
            /* Q8_1 carries d*sum(q) rounded to f16: the offset term m*s is off by up to
             * half an f16 step of s, as in llama.cpp */
            for (int64_t b = 0; b < n / 32; b++) {
                uint16_t m, sh;
                memcpy(&m, (const char *)w + b * t->block_bytes + 2, 2);
                memcpy(&sh, (const char *)a + b * 36 + 2, 2);
                tol += fabs((double)f16_to_f32(m) * f16_to_f32(sh)) * 0x1p-11;
            }
        }
        ck_assert_msg(fabs(ref - exact) <= tol, "%s n=%lld: ref %.9g vs exact %.9g", t->name,
                      (long long)n, ref, exact);
        free(w);
        free(a);
        free(wf);
        free(af);
    }
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("quant");
    TCase *tc = tcase_create("tables");
    tcase_add_test(tc, test_type_tables);
    tcase_add_test(tc, test_isa_selection);
    suite_add_tcase(s, tc);

    tc = tcase_create("halves");
    tcase_add_test(tc, test_f16_round_trip);
    tcase_add_test(tc, test_f16_rounding);
    tcase_add_test(tc, test_f16_matches_hardware);
    tcase_add_test(tc, test_bf16);
    suite_add_tcase(s, tc);

    tc = tcase_create("kernels");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_vec_dot_vs_ref, 0, N_TYPES);
    tcase_add_loop_test(tc, test_tiles_vs_vec_dot, 0, N_TYPES);
    tcase_add_loop_test(tc, test_dequantize_vs_ref, 0, N_TYPES);
    tcase_add_loop_test(tc, test_ref_dot_vs_dequantized, 0, N_TYPES);
    suite_add_tcase(s, tc);

    tc = tcase_create("quantize");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_quantize_error);
    tcase_add_test(tc, test_quantize_edge_blocks);
    tcase_add_test(tc, test_quantize_fast_vs_ref);
    tcase_add_test(tc, test_activation_rounding);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(make_suite());
}
