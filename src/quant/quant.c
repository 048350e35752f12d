/* quant.c — type traits and names, and the run-time choice of kernels.
 *
 * Three kernel tables are built once: scalar, AVX2 (scalar entries overlaid with the
 * AVX2 ones) and AVX-512 (AVX2 overlaid with AVX-512). The best the CPU supports is
 * used unless LLMFS_ISA=scalar|avx2|avx512 or quant_force_isa says otherwise. The
 * AVX-512 table needs F, BW, VL, DQ, VNNI, BF16 and VBMI: Sapphire Rapids and later,
 * AMD Zen 4 and later (Cooper Lake, which lacks VBMI, runs the AVX2 table).
 */
#include "quant_impl.h"

#include <cpuid.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

static const type_traits traits[T_COUNT] = {
    [T_F32] = {"f32", 1, 4, T_F32, true},
    [T_F16] = {"f16", 1, 2, T_F16, true},
    [T_BF16] = {"bf16", 1, 2, T_BF16, true},
    [T_Q4_0] = {"q4_0", QK4_0, sizeof(block_q4_0), T_Q8_0, true},
    [T_Q4_1] = {"q4_1", QK4_1, sizeof(block_q4_1), T_Q8_1, true},
    [T_Q5_0] = {"q5_0", QK5_0, sizeof(block_q5_0), T_Q8_0, true},
    [T_Q5_1] = {"q5_1", QK5_1, sizeof(block_q5_1), T_Q8_1, true},
    [T_Q8_0] = {"q8_0", QK8_0, sizeof(block_q8_0), T_Q8_0, true},
    [T_Q8_1] = {"q8_1", QK8_1, sizeof(block_q8_1), T_Q8_1, true},
    [T_Q2_K] = {"q2_K", QK_K, sizeof(block_q2_K), T_Q8_K, true},
    [T_Q3_K] = {"q3_K", QK_K, sizeof(block_q3_K), T_Q8_K, true},
    [T_Q4_K] = {"q4_K", QK_K, sizeof(block_q4_K), T_Q8_K, true},
    [T_Q5_K] = {"q5_K", QK_K, sizeof(block_q5_K), T_Q8_K, true},
    [T_Q6_K] = {"q6_K", QK_K, sizeof(block_q6_K), T_Q8_K, true},
    [T_Q8_K] = {"q8_K", QK_K, sizeof(block_q8_K), T_Q8_K, true},
    [T_IQ4_NL] = {"iq4_nl", 32, sizeof(block_iq4_nl), T_Q8_0, true},
    [T_MXFP4] = {"mxfp4", 32, sizeof(block_mxfp4), T_Q8_0, true},
    [T_IQ4_XS] = {"iq4_xs", QK_K, sizeof(block_iq4_xs), T_Q8_K, true},
    [T_TQ1_0] = {"tq1_0", QK_K, sizeof(block_tq1_0), T_Q8_K, true},
    [T_TQ2_0] = {"tq2_0", QK_K, sizeof(block_tq2_0), T_Q8_K, true},
    /* the grid types: llama.cpp quantizes these only with an importance matrix */
    [T_IQ3_XXS] = {"iq3_xxs", QK_K, sizeof(block_iq3_xxs), T_Q8_K, false},
    [T_IQ3_S] = {"iq3_s", QK_K, sizeof(block_iq3_s), T_Q8_K, false},
    [T_IQ2_XXS] = {"iq2_xxs", QK_K, sizeof(block_iq2_xxs), T_Q8_K, false},
    [T_IQ2_XS] = {"iq2_xs", QK_K, sizeof(block_iq2_xs), T_Q8_K, false},
    [T_IQ2_S] = {"iq2_s", QK_K, sizeof(block_iq2_s), T_Q8_K, false},
    [T_IQ1_S] = {"iq1_s", QK_K, sizeof(block_iq1_s), T_Q8_K, false},
    [T_IQ1_M] = {"iq1_m", QK_K, sizeof(block_iq1_m), T_Q8_K, false},
};

const type_traits *type_info(int type)
{
    if (type < 0 || type >= T_COUNT || !traits[type].name)
        return NULL;
    return &traits[type];
}

int type_from_name(const char *name)
{
    if (!name)
        return -1;
    for (int t = 0; t < T_COUNT; t++)
        if (traits[t].name && strcasecmp(traits[t].name, name) == 0)
            return t;
    return -1;
}

size_t type_row_bytes(int type, int64_t n)
{
    const type_traits *t = type_info(type);
    if (!t || n < 0)
        return 0;
    return (size_t)(n / t->block) * t->block_bytes;
}

/* ---------------- dispatch ---------------- */

enum { ISA_SCALAR, ISA_AVX2, ISA_AVX512, ISA_N };
static const char *const isa_names[ISA_N] = {"scalar", "avx2", "avx512"};

static quant_kernels tables[ISA_N];
static bool isa_ok[ISA_N];
static const quant_kernels *active;
static int active_isa;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void overlay(quant_kernels *dst, const quant_kernels *base, void (*fill)(quant_kernels *))
{
    quant_kernels k;
    memset(&k, 0, sizeof k);
    fill(&k);
    *dst = *base;
    for (int t = 0; t < T_COUNT; t++) {
        if (k.dequantize[t])
            dst->dequantize[t] = k.dequantize[t];
        if (k.quantize[t])
            dst->quantize[t] = k.quantize[t];
        if (k.vec_dot[t])
            dst->vec_dot[t] = k.vec_dot[t];
        if (k.tile[t])
            dst->tile[t] = k.tile[t];
    }
}

/* clang's __builtin_cpu_supports does not know "f16c"; cpuid leaf 1 tells. */
static bool cpu_has_f16c(void)
{
    unsigned a, b, c, d;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C);
}

static void quant_init(void)
{
    quant_grids_init();
    quant_ref_fill(&tables[ISA_SCALAR]);
    overlay(&tables[ISA_AVX2], &tables[ISA_SCALAR], quant_avx2_fill);
    overlay(&tables[ISA_AVX512], &tables[ISA_AVX2], quant_avx512_fill);

    __builtin_cpu_init();
    isa_ok[ISA_SCALAR] = true;
    isa_ok[ISA_AVX2] = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                       cpu_has_f16c();
    isa_ok[ISA_AVX512] = isa_ok[ISA_AVX2] && __builtin_cpu_supports("avx512f") &&
                         __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
                         __builtin_cpu_supports("avx512dq") &&
                         __builtin_cpu_supports("avx512vnni") &&
                         __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512vbmi");
    active_isa = isa_ok[ISA_AVX512] ? ISA_AVX512 : isa_ok[ISA_AVX2] ? ISA_AVX2 : ISA_SCALAR;

    const char *env = getenv("LLMFS_ISA");
    if (env && *env) {
        int want = -1;
        for (int i = 0; i < ISA_N; i++)
            if (strcasecmp(env, isa_names[i]) == 0)
                want = i;
        if (want < 0)
            fprintf(stderr, "llmfs: LLMFS_ISA=%s is not scalar, avx2 or avx512; using %s\n", env,
                    isa_names[active_isa]);
        else if (!isa_ok[want])
            fprintf(stderr, "llmfs: LLMFS_ISA=%s: this CPU lacks it; using %s\n", env,
                    isa_names[active_isa]);
        else
            active_isa = want;
    }
    __atomic_store_n(&active, &tables[active_isa], __ATOMIC_RELEASE);
}

static inline const quant_kernels *K(void)
{
    const quant_kernels *k = __atomic_load_n(&active, __ATOMIC_ACQUIRE);
    if (__builtin_expect(k == NULL, 0)) {
        pthread_once(&init_once, quant_init);
        k = __atomic_load_n(&active, __ATOMIC_ACQUIRE);
    }
    return k;
}

const char *quant_isa(void)
{
    K();
    return isa_names[active_isa];
}

bool quant_force_isa(const char *name)
{
    K();
    int want = -1;
    if (!name || strcasecmp(name, "auto") == 0)
        want = isa_ok[ISA_AVX512] ? ISA_AVX512 : isa_ok[ISA_AVX2] ? ISA_AVX2 : ISA_SCALAR;
    else
        for (int i = 0; i < ISA_N; i++)
            if (strcasecmp(name, isa_names[i]) == 0)
                want = i;
    if (want < 0 || !isa_ok[want])
        return false;
    active_isa = want;
    __atomic_store_n(&active, &tables[want], __ATOMIC_RELEASE);
    return true;
}

/* ---------------- entry points ---------------- */

static inline bool known(int type)
{
    return type >= 0 && type < T_COUNT && traits[type].name;
}

void dequantize_row(int type, const void *src, float *dst, int64_t n)
{
    if (!known(type)) {
        memset(dst, 0, (size_t)(n > 0 ? n : 0) * sizeof *dst);
        return;
    }
    K()->dequantize[type](src, dst, n);
}

void quantize_row(int type, const float *src, void *dst, int64_t n)
{
    if (known(type) && traits[type].has_quantize)
        K()->quantize[type](src, dst, n);
}

float vec_dot(int type, int64_t n, const void *w, const void *a)
{
    if (!known(type))
        return 0;
    return K()->vec_dot[type](n, w, a);
}

void gemm_tile(int type, int64_t n, int nr, int nc, const void *w, size_t w_stride,
               const void *a, size_t a_stride, float *out, size_t out_stride)
{
    if (!known(type) || nr <= 0 || nc <= 0 || nr > QUANT_TILE_R || nc > QUANT_TILE_C)
        return;
    K()->tile[type](n, nr, nc, w, w_stride, a, a_stride, out, out_stride);
}

void vec_dot_rows(int type, int64_t n, int nr, const void *w, size_t w_stride, const void *a,
                  float *out)
{
    if (!known(type))
        return;
    quant_tile_fn tile = K()->tile[type];
    for (int r = 0; r < nr; r += QUANT_TILE_R) {
        int m = nr - r < QUANT_TILE_R ? nr - r : QUANT_TILE_R;
        tile(n, m, 1, (const char *)w + (size_t)r * w_stride, w_stride, a, 0, out + r, 0);
    }
}

void quant_gemm(int type, int64_t n, int nr, int nc, const void *w, size_t w_stride,
                const void *a, size_t a_stride, float *out, size_t out_stride)
{
    if (!known(type))
        return;
    quant_tile_fn tile = K()->tile[type];
    /* a tile's weight rows stay in L1 while every activation row streams past them */
    for (int r = 0; r < nr; r += QUANT_TILE_R) {
        int mr = nr - r < QUANT_TILE_R ? nr - r : QUANT_TILE_R;
        const char *wr = (const char *)w + (size_t)r * w_stride;
        for (int c = 0; c < nc; c += QUANT_TILE_C) {
            int mc = nc - c < QUANT_TILE_C ? nc - c : QUANT_TILE_C;
            tile(n, mr, mc, wr, w_stride, (const char *)a + (size_t)c * a_stride, a_stride,
                 out + (size_t)c * out_stride + r, out_stride);
        }
    }
}

/* ---------------- references ---------------- */

float quant_ref_vec_dot(int type, int64_t n, const void *w, const void *a)
{
    if (!known(type))
        return 0;
    K();
    return tables[ISA_SCALAR].vec_dot[type](n, w, a);
}

void quant_ref_quantize_row(int type, const float *src, void *dst, int64_t n)
{
    if (!known(type) || !traits[type].has_quantize)
        return;
    K();
    tables[ISA_SCALAR].quantize[type](src, dst, n);
}

void quant_ref_dequantize_row(int type, const void *src, float *dst, int64_t n)
{
    if (!known(type))
        return;
    K();
    tables[ISA_SCALAR].dequantize[type](src, dst, n);
}
