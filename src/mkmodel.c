/* mkmodel.c — random-weight GGUF models with the shapes of real ones.
 *
 * Weight scheme (normal, zero mean, so that a forward pass is neither flat nor saturated):
 * matrices 1/sqrt(fan_in); attn_output and ffn_down 16/sqrt(fan_in), so the blocks rather
 * than the embedding dominate the residual stream; the output projection (or a tied
 * embedding) has rows of equal length L, which makes the logits' standard deviation about
 * L (4.5 for llama, 6.5 for the Qwen families); an untied embedding 1; biases 0.1; the
 * MoE router 3/sqrt(fan_in); norm weights uniform in [0.5, 1.5].
 *
 * Every row draws from its own generator seeded by (seed, tensor, row), so the file is
 * the same whatever the thread count or chunking.
 */
#include "mkmodel.h"

#include "gguf.h"
#include "quant.h"
#include "threadpool.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

/* ---- shapes ---- */

static const mkmodel_shape shapes[] = {
    /* name            arch        embd  lay head kv  hd   ff     exp used ffe  vocab    ctx     rope   eps   tied  l3 */
    {"qwen3-8b",       "qwen3",    4096, 36, 32,  8, 128, 12288,  0,  0,  0,   151936, 40960,  1e6f, 1e-6f, false, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"qwen3-0.6b",     "qwen3",    1024, 28, 16,  8, 128, 3072,   0,  0,  0,   151936, 40960,  1e6f, 1e-6f, true, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"qwen3-30b-a3b",  "qwen3moe", 2048, 48, 32,  4, 128, 6144, 128,  8, 768,  151936, 40960,  1e6f, 1e-6f, false, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"qwen2.5-0.5b",   "qwen2",    896,  24, 14,  2,  64, 4864,   0,  0,  0,   151936, 32768,  1e6f, 1e-6f, true, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"llama-2-7b",     "llama",    4096, 32, 32, 32, 128, 11008,  0,  0,  0,   32000,  4096,   1e4f, 1e-5f, false, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"llama-3.2-1b",   "llama",    2048, 16, 32,  8,  64, 8192,   0,  0,  0,   128256, 131072, 5e5f, 1e-5f, true, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"llama-3.1-8b",   "llama",    4096, 32, 32,  8, 128, 14336,  0,  0,  0,   128256, 131072, 5e5f, 1e-5f, false, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"gpt-oss-20b",    "gpt-oss",  2880, 24, 64,  8,  64, 2880,  32,  4, 2880, 201088, 131072, 1.5e5f, 1e-5f, false, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"gpt-oss-120b",   "gpt-oss",  2880, 36, 64,  8,  64, 2880, 128,  4, 2880, 201088, 131072, 1.5e5f, 1e-5f, false, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    /* the shapes of the test models in ../shared/models */
    /* Gemma: Gemma 3 scales the full layers' rope linearly by 8; the Gemma 4 shapes follow
     * the published configurations (26B-A4B: the dense feed-forward beside 128 experts) */
    {"gemma3-12b",     "gemma3",   3840, 48, 16,  8, 256, 15360,  0,  0,  0,   262144, 131072, 1e6f, 1e-6f, true, 0, 0, 0, 0, 0, 0, 0, 0,
     1024, 6, 0, 0, 1e4f, 0},
    {"gemma3-27b",     "gemma3",   5376, 62, 32, 16, 128, 21504,  0,  0,  0,   262144, 131072, 1e6f, 1e-6f, true, 0, 0, 0, 0, 0, 0, 0, 0,
     1024, 6, 0, 0, 1e4f, 0},
    {"gemma4-31b",     "gemma4",   5376, 60, 32,  4, 512, 21504,  0,  0,  0,   262144, 262144, 1e6f, 1e-6f, true, 0, 0, 0, 0, 0, 0, 0, 0,
     1024, 6, 256, 16, 1e4f, 30},
    {"gemma4-26b-a4b", "gemma4",   2816, 30, 16,  2, 512, 2112, 128,  8, 704,  262144, 262144, 1e6f, 1e-6f, true, 0, 0, 0, 0, 0, 0, 0, 0,
     1024, 6, 256, 8, 1e4f, 30},
    {"llama-tiny",     "llama",    256,   2,  8,  4,  32, 768,    0,  0,  0,   512,    2048,   1e4f, 1e-5f, false, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"qwen2-tiny",     "qwen2",    128,   2,  4,  2,  32, 256,    0,  0,  0,   8224,   4096,   1e6f, 1e-6f, true, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"qwen3-tiny",     "qwen3",    256,   2,  4,  2, 128, 768,    0,  0,  0,   8224,   4096,   1e6f, 1e-6f, true, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"qwen3moe-tiny",  "qwen3moe", 128,   2,  4,  2,  64, 512,    8,  2, 256,  8224,   4096,   1e6f, 1e-6f, true, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    {"gptoss-tiny",    "gpt-oss",  64,    4,  8,  2,  64, 64,     8,  2, 64,   8224, 131072, 1.5e5f, 1e-5f, false, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0},
    /* hybrid: state 128, 16 K heads, 32 V heads, conv 4, attention every 4th layer,
     * shared expert ff, 64 rotary dims of 256 */
    {"qwen3.6-35b-a3b", "qwen35moe", 2048, 40, 16, 2, 256, 0, 256, 8, 512, 248320, 262144, 1e7f, 1e-6f, false, 0,
     128, 16, 32, 4, 4, 512, 64, 0, 0, 0, 0, 0, 0},
    {"qwen3-coder-next", "qwen3next", 2048, 48, 16, 2, 256, 0, 512, 10, 512, 151936, 262144, 5e6f, 1e-6f, false, 0,
     128, 16, 32, 4, 4, 512, 64, 0, 0, 0, 0, 0, 0},
};
#define N_SHAPES ((int)(sizeof shapes / sizeof shapes[0]))

bool mkmodel_shape_find(const char *name, mkmodel_shape *out)
{
    for (int i = 0; i < N_SHAPES; i++)
        if (strcmp(shapes[i].name, name) == 0) {
            *out = shapes[i];
            return true;
        }
    return false;
}

const char *mkmodel_shape_name(int i)
{
    return i >= 0 && i < N_SHAPES ? shapes[i].name : NULL;
}

static bool arch_known(const char *arch)
{
    return strcmp(arch, "llama") == 0 || strcmp(arch, "qwen2") == 0 || strcmp(arch, "qwen3") == 0 ||
           strcmp(arch, "qwen3moe") == 0 || strcmp(arch, "qwen35moe") == 0 || strcmp(arch, "qwen3next") == 0 ||
           strcmp(arch, "gemma3") == 0 || strcmp(arch, "gemma4") == 0 || strcmp(arch, "gpt-oss") == 0;
}

/* gpt-oss: routed experts with biases, sinks, a sliding window on even layers, YaRN */
static bool is_gptoss(const mkmodel_shape *s) { return strcmp(s->arch, "gpt-oss") == 0; }

bool mkmodel_arch_defaults(const char *arch, mkmodel_shape *out)
{
    static const char *base[] = {"llama", "llama-tiny", "qwen2", "qwen2-tiny", "qwen3", "qwen3-tiny",
                                 "qwen3moe", "qwen3moe-tiny", "gpt-oss", "gptoss-tiny"};
    for (int i = 0; i < (int)(sizeof base / sizeof base[0]); i += 2)
        if (strcmp(arch, base[i]) == 0) {
            mkmodel_shape_find(base[i + 1], out);
            snprintf(out->name, sizeof out->name, "%s-custom", arch);
            return true;
        }
    return false;
}

int mkmodel_shape_check(const mkmodel_shape *s, llmfs_error *err)
{
    if (!arch_known(s->arch))
        return llmfs_errorf(err, EINVAL,
                            "unknown architecture '%s' (llama, qwen2, qwen3, qwen3moe, qwen35moe, qwen3next, gemma3, "
                            "gemma4, gpt-oss)",
                            s->arch);
    bool hybrid = strcmp(s->arch, "qwen35moe") == 0 || strcmp(s->arch, "qwen3next") == 0;
    bool moe = strcmp(s->arch, "qwen3moe") == 0 || hybrid || (strcmp(s->arch, "gemma4") == 0 && s->n_expert) ||
               is_gptoss(s);
    if (hybrid && (s->ssm_state <= 0 || s->ssm_state % 32 || s->ssm_groups <= 0 || s->ssm_v_heads % s->ssm_groups ||
                   s->ssm_conv < 2 || s->attn_interval < 1 || s->n_ff_shexp % 32 || s->n_rot % 2 || s->n_rot > s->head_dim))
        return llmfs_errorf(err, EINVAL, "hybrid shape: bad DeltaNet, shared expert or rotary dimensions");
    bool gemma = strncmp(s->arch, "gemma", 5) == 0;
    if (gemma && (s->n_swa <= 0 || s->swa_period < 2 || s->n_ff <= 0))
        return llmfs_errorf(err, EINVAL, "gemma shapes need a window, a layer period of 2 or more and n_ff");
    if (!strcmp(s->arch, "gemma4") && (s->head_dim_swa <= 0 || s->head_dim_swa % 32 || s->n_head_kv_swa <= 0 ||
                                      s->n_head % s->n_head_kv_swa || s->head_dim % 8))
        return llmfs_errorf(err, EINVAL, "gemma4 needs sliding-window head sizes (multiples of 32) and KV heads");
    if (s->n_embd <= 0 || s->n_layer <= 0 || s->n_head <= 0 || s->n_head_kv <= 0 || s->head_dim <= 0 ||
        s->n_vocab <= 0 || s->n_ctx <= 0 || (!moe && s->n_ff <= 0))
        return llmfs_errorf(err, EINVAL, "every dimension must be positive");
    if (s->n_embd > (1 << 20) || s->n_layer > 4096 || s->n_head > 4096 || s->head_dim > 4096 ||
        s->n_ff > (1 << 22) || s->n_vocab > (1 << 24) || s->n_expert > 4096 || s->n_ff_exp > (1 << 22))
        return llmfs_errorf(err, EINVAL, "a dimension is implausibly large");
    if (s->n_head % s->n_head_kv)
        return llmfs_errorf(err, EINVAL, "n_head %d is not a multiple of n_head_kv %d", s->n_head, s->n_head_kv);
    if (s->head_dim % 2)
        return llmfs_errorf(err, EINVAL, "head_dim %d must be even for rope", s->head_dim);
    /* Every weight row must be whole 32-element blocks: n_embd (most rows), n_ff
     * (ffn_down), n_head*head_dim (attn_output). */
    if (s->n_embd % 32 || (!moe && s->n_ff % 32) || (s->n_head * s->head_dim) % 32)
        return llmfs_errorf(err, EINVAL, "n_embd, n_ff and n_head*head_dim must be multiples of 32");
    if (moe) {
        if (s->n_expert < 2 || s->n_expert_used < 1 || s->n_expert_used > s->n_expert)
            return llmfs_errorf(err, EINVAL, "%s needs n_expert >= 2 and 1 <= n_expert_used <= n_expert", s->arch);
        if (s->n_ff_exp <= 0 || s->n_ff_exp % 32)
            return llmfs_errorf(err, EINVAL, "n_ff_exp must be a positive multiple of 32");
    } else if (s->n_expert) {
        return llmfs_errorf(err, EINVAL, "experts need --arch qwen3moe, gemma4 or gpt-oss");
    }
    if (s->rope_l3_factor != 0 && !(s->rope_l3_factor >= 1 && strcmp(s->arch, "llama") == 0))
        return llmfs_errorf(err, EINVAL, "llama3 rope scaling needs --arch llama and a factor >= 1");
    if (!(s->rope_base > 0) || !(s->rms_eps > 0))
        return llmfs_errorf(err, EINVAL, "rope base and rms eps must be positive");
    return 0;
}

/* ---- file types ---- */

/* MXFP4_MOE (38) stores MXFP4 in the expert tensors only and Q8_0 elsewhere; "mxfp4"
 * puts MXFP4 in every weight (llama-quantize MXFP4_MOE --pure, as the llama-tiny-mxfp4
 * test model was made). Both write general.file_type 38; FT_MXFP4_PURE is ours. */
enum { FT_Q4_K_M = 15, FT_MXFP4_MOE = 38, FT_MXFP4_PURE = 1038 };

static const struct {
    const char *name;
    int ftype;  /* llama_ftype */
    int type;   /* the type of the 2D weights */
} ftypes[] = {
    {"f32", 0, T_F32},    {"f16", 1, T_F16},    {"bf16", 32, T_BF16}, {"q4_0", 2, T_Q4_0},
    {"q4_1", 3, T_Q4_1},  {"q5_0", 8, T_Q5_0},  {"q5_1", 9, T_Q5_1},  {"q8_0", 7, T_Q8_0},
    {"q2_k", 10, T_Q2_K}, {"q3_k", 11, T_Q3_K}, {"q4_k", 14, T_Q4_K}, {"q5_k", 16, T_Q5_K},
    {"q6_k", 18, T_Q6_K}, {"q4_k_m", FT_Q4_K_M, T_Q4_K},
    {"iq4_nl", 25, T_IQ4_NL}, {"iq4_xs", 30, T_IQ4_XS}, {"tq1_0", 36, T_TQ1_0}, {"tq2_0", 37, T_TQ2_0},
    {"mxfp4", FT_MXFP4_PURE, T_MXFP4}, {"mxfp4_moe", FT_MXFP4_MOE, T_Q8_0},
    /* grid types: random grid codes (see grid_row), named by tensor type; IQ2_S tensors
     * are what llama.cpp's IQ2_M file type holds */
    {"iq3_xxs", 23, T_IQ3_XXS}, {"iq3_s", 26, T_IQ3_S}, {"iq2_xxs", 19, T_IQ2_XXS},
    {"iq2_xs", 20, T_IQ2_XS},   {"iq2_s", 29, T_IQ2_S},  {"iq1_s", 24, T_IQ1_S}, {"iq1_m", 31, T_IQ1_M},
};
#define N_FTYPES ((int)(sizeof ftypes / sizeof ftypes[0]))

int mkmodel_ftype_from_name(const char *name)
{
    for (int i = 0; i < N_FTYPES; i++)
        if (strcasecmp(ftypes[i].name, name) == 0)
            return ftypes[i].ftype;
    return -1;
}

static int ftype_base_type(int ftype)
{
    for (int i = 0; i < N_FTYPES; i++)
        if (ftypes[i].ftype == ftype)
            return ftypes[i].type;
    return -1;
}

/* llama.cpp's rule for giving some layers more bits: the first and last eighth, and
 * every third layer in between. */
static bool use_more_bits(int il, int n_layer)
{
    return il < n_layer / 8 || il >= 7 * n_layer / 8 || (il - n_layer / 8) % 3 == 2;
}

static bool has(const char *name, const char *part)
{
    return strstr(name, part) != NULL;
}

int mkmodel_tensor_type(int ftype, const char *name, int64_t ne0, int il, const mkmodel_shape *s)
{
    if (has(name, "ffn_gate_inp"))
        return T_F32;
    int t = ftype_base_type(ftype);
    if (t < 0)
        return -1;
    if (ftype == FT_MXFP4_MOE && has(name, "_exps"))
        t = T_MXFP4;
    if (ftype == FT_Q4_K_M) {
        bool is_output = strcmp(name, "output.weight") == 0 ||
                         (s->tied && strcmp(name, "token_embd.weight") == 0);
        if (is_output) {
            t = ne0 % 256 ? T_Q8_0 : T_Q6_K;
        } else if (has(name, "attn_v.weight")) {
            if (use_more_bits(il, s->n_layer))
                t = T_Q6_K;
            if (s->n_expert == 8)
                t = T_Q8_0;
        } else if (has(name, "attn_k.weight")) {
            if (s->n_expert == 8)
                t = T_Q8_0;
        } else if (has(name, "ffn_down")) {
            if (use_more_bits(il, s->n_layer))
                t = T_Q6_K;
        } else if (has(name, "attn_output.weight")) {
            if (s->n_expert == 8)
                t = T_Q5_K;
        }
    }
    const type_traits *tr = type_info(t);
    if (tr && ne0 % tr->block) {
        switch (t) {
        case T_Q2_K: case T_Q3_K: t = T_Q4_0; break;
        case T_Q4_K: t = T_Q5_0; break;
        case T_Q5_K: t = T_Q5_1; break;
        case T_Q6_K: t = T_Q8_0; break;
        case T_IQ4_XS: t = T_IQ4_NL; break;
        case T_TQ1_0: case T_TQ2_0: t = T_Q4_0; break;
        case T_IQ3_XXS: case T_IQ3_S: case T_IQ2_XXS: case T_IQ2_XS: case T_IQ2_S: case T_IQ1_S:
        case T_IQ1_M: t = T_IQ4_NL; break;
        default: break;
        }
        tr = type_info(t);
        if (tr && ne0 % tr->block)
            t = T_F16;
    }
    return t;
}

/* ---- random numbers ---- */

typedef struct rng {
    uint64_t s[4];
} rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static void rng_seed(rng *r, uint64_t seed, uint64_t stream, uint64_t row)
{
    uint64_t x = seed ^ (stream * 0xd1342543de82ef95ull) ^ (row * 0x2545f4914f6cdd1dull);
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

static inline uint64_t rotl64(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256+ */
static inline uint64_t rng_next(rng *r)
{
    uint64_t *s = r->s;
    uint64_t out = s[0] + s[3];
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl64(s[3], 45);
    return out;
}

/* A standard normal, approximately: the sum of four 16-bit uniforms (Irwin-Hall),
 * centred and scaled to unit variance. Tails stop at 3.46 sigma, which random test
 * weights do not miss, and it costs one generator step. */
static inline float approx_normal(uint64_t u)
{
    int32_t sum = (int32_t)(u & 0xffff) + (int32_t)((u >> 16) & 0xffff) + (int32_t)((u >> 32) & 0xffff) +
                  (int32_t)(u >> 48);
    return (float)(sum - 131070) * (1.0f / 37837.227f);
}

static inline float uniform01(uint64_t u)
{
    return (float)(u >> 40) * (1.0f / 16777216.0f);
}

/* ---- tensors ---- */

/* The built-in vocab (put_builtin_vocab): 256 byte tokens, then its special tokens. */
enum { BUILTIN_N_SPECIAL = 5, BUILTIN_MIN_VOCAB = 256 + BUILTIN_N_SPECIAL };

enum init_kind {
    INIT_NORMAL, INIT_ROWLEN, INIT_UNIFORM, INIT_ROPE_L3, INIT_ROPE_PART,
    /* calibrated weights (see "calibrated weights" below) */
    INIT_CAL_EMBD, INIT_CAL_OUT_NORM, INIT_CAL_GATE, INIT_CAL_UP, INIT_CAL_DOWN, INIT_CAL_WRITE,
};

/* The layout and scales of calibrated weights, derived from the shape once. */
typedef struct calib {
    int32_t *succ;       /* succ[t]: the token a calibrated model predicts after t */
    int64_t n_embd;
    int64_t a0, b0, d;   /* the readout subspace [a0, a0+d) and the successor subspace [b0, b0+d) */
    int64_t n_copy;      /* copy neurons per layer: ffn rows [0, n_copy) */
    float c;             /* value of the constant dimensions [0, 32) */
    float eps;           /* length of a token's own code in the readout subspace */
    float g_read;        /* output_norm weight on the readout subspace */
    float gate_c;        /* copy neurons' gate weight on each constant dimension */
    float gate_sd;       /* copy neurons' gate noise */
    float beta;          /* copy neurons' down weight scale */
} calib;

typedef struct tspec {
    char name[64];
    int type;
    int n_dims;
    int64_t ne[3];
    enum init_kind init;
    float a, b;          /* std; row length; [a, b); llama3 factor, rope base */
    uint64_t stream;     /* the tensor's index, part of every row's seed */
    int il;              /* layer, for calibrated weights shared between tensors */
    struct gen *gen;
} tspec;

typedef struct gen {
    const mkmodel_opts *o;
    const calib *cal;    /* calibrated weights, or NULL */
    threadpool *pool;
    int n_threads;
    float **scratch;     /* one row of floats per thread */
    int64_t max_row;
    uint8_t *buf;
    size_t buf_cap;
    int n_done, n_total;
    uint64_t bytes_done, bytes_total;
    double t0, t_shown;
    bool tty;            /* progress goes to a terminal only */
} gen;

typedef struct chunk_job {
    const tspec *ts;
    int64_t row0, n_rows;
    size_t row_bytes;
    uint8_t *out;
} chunk_job;

/* Streams of the calibrated weights' shared parts, apart from the tensors' (1, 2, ...). */
#define CAL_STREAM_CODE ((uint64_t)1 << 40)
#define CAL_STREAM_PERM (((uint64_t)1 << 40) + 1)
#define CAL_STREAM_COPY (((uint64_t)1 << 41))

/* Token j's code: a unit vector of d dimensions, the same in every file of a seed. */
static void cal_code(uint64_t seed, int64_t j, float *x, int64_t d)
{
    rng r;
    rng_seed(&r, seed, CAL_STREAM_CODE, (uint64_t)j);
    double ss = 0;
    for (int64_t i = 0; i < d; i++) {
        x[i] = approx_normal(rng_next(&r));
        ss += (double)x[i] * x[i];
    }
    float k = ss > 0 ? (float)(1.0 / sqrt(ss)) : 0.0f;
    for (int64_t i = 0; i < d; i++)
        x[i] *= k;
}

/* Element (k, m) of layer il's copy matrix, a standard normal: copy neuron k's weight on
 * dimension m of the successor subspace (ffn_up) and on dimension m of the readout
 * subspace (ffn_down). Both tensors need it by element, hence a hash, not a row stream. */
static float cal_copy(uint64_t seed, int il, int64_t k, int64_t m)
{
    uint64_t x = seed ^ ((CAL_STREAM_COPY + (uint64_t)il) * 0xd1342543de82ef95ull) ^
                 ((uint64_t)k * 0x2545f4914f6cdd1dull);
    x = splitmix64(&x) ^ ((uint64_t)m * 0x9e3779b97f4a7c15ull);
    return approx_normal(splitmix64(&x));
}

static void fill_row(const tspec *ts, float *x, int64_t n, uint64_t row, uint64_t seed)
{
    rng r;
    rng_seed(&r, seed, ts->stream, row);
    const calib *c = ts->gen ? ts->gen->cal : NULL;
    /* calibrated rows: is this row (an output dimension) in the readout subspace? */
    bool in_a = c && (int64_t)row >= c->a0 && (int64_t)row < c->a0 + c->d;
    switch (ts->init) {
    case INIT_CAL_EMBD:
        memset(x, 0, sizeof *x * (size_t)n);
        for (int64_t i = 0; i < 32; i++)
            x[i] = c->c;
        cal_code(seed, (int64_t)row, x + c->a0, c->d);
        for (int64_t i = 0; i < c->d; i++)
            x[c->a0 + i] *= c->eps;
        cal_code(seed, c->succ[row], x + c->b0, c->d);
        break;
    case INIT_CAL_OUT_NORM:
        for (int64_t i = 0; i < n; i++)
            x[i] = i >= c->a0 && i < c->a0 + c->d ? c->g_read : i >= c->b0 && i < c->b0 + c->d ? 0.0f : 1.0f;
        break;
    case INIT_CAL_GATE:
        for (int64_t i = 0; i < n; i++) {
            float z = approx_normal(rng_next(&r));
            x[i] = (int64_t)row < c->n_copy ? z * c->gate_sd + (i < 32 ? c->gate_c : 0.0f) : z * ts->a;
        }
        break;
    case INIT_CAL_UP:
        if ((int64_t)row < c->n_copy) {
            memset(x, 0, sizeof *x * (size_t)n);
            float k = 1.0f / sqrtf((float)c->d);
            for (int64_t m = 0; m < c->d; m++)
                x[c->b0 + m] = cal_copy(seed, ts->il, (int64_t)row, m) * k;
        } else {
            for (int64_t i = 0; i < n; i++)
                x[i] = approx_normal(rng_next(&r)) * ts->a;
        }
        break;
    case INIT_CAL_DOWN: {
        float k = c->beta / sqrtf((float)c->d);
        for (int64_t i = 0; i < c->n_copy; i++)
            x[i] = in_a ? cal_copy(seed, ts->il, i, (int64_t)row - c->a0) * k : 0.0f;
        for (int64_t i = c->n_copy; i < n; i++)
            x[i] = in_a ? 0.0f : approx_normal(rng_next(&r)) * ts->a;
        break;
    }
    case INIT_CAL_WRITE:
        for (int64_t i = 0; i < n; i++)
            x[i] = in_a ? 0.0f : approx_normal(rng_next(&r)) * ts->a;
        break;
    case INIT_NORMAL:
        for (int64_t i = 0; i < n; i++)
            x[i] = approx_normal(rng_next(&r)) * ts->a;
        break;
    case INIT_ROWLEN: {
        double ss = 0;
        for (int64_t i = 0; i < n; i++) {
            x[i] = approx_normal(rng_next(&r));
            ss += (double)x[i] * x[i];
        }
        float k = ss > 0 ? (float)(ts->a / sqrt(ss)) : 0.0f;
        for (int64_t i = 0; i < n; i++)
            x[i] *= k;
        break;
    }
    case INIT_UNIFORM:
        for (int64_t i = 0; i < n; i++)
            x[i] = ts->a + (ts->b - ts->a) * uniform01(rng_next(&r));
        break;
    case INIT_ROPE_PART:
        /* Gemma 4's proportional rope: the first fraction a of the pairs rotate, the
         * others get the divisor 1e30 (no rotation), as its converter writes them */
        for (int64_t i = 0; i < n; i++)
            x[i] = (double)i < ts->a * (double)n ? 1.0f : 1e30f;
        break;
    case INIT_ROPE_L3: {
        /* Llama 3's frequency divisors: long wavelengths are stretched by the factor,
         * short ones kept, the band between blended. Original context 8192, low 1, high 4. */
        const double orig = 8192, lo = 1, hi = 4, pi = 3.14159265358979323846;
        for (int64_t i = 0; i < n; i++) {
            double freq = pow((double)ts->b, -2.0 * (double)i / (double)(2 * n));
            double wavelen = 2 * pi / freq;
            if (wavelen < orig / hi) {
                x[i] = 1.0f;
            } else if (wavelen > orig / lo) {
                x[i] = ts->a;
            } else {
                double smooth = (orig / wavelen - lo) / (hi - lo);
                x[i] = (float)(1.0 / ((1 - smooth) / ts->a + smooth));
            }
        }
        break;
    }
    }
}

/* The grid types (IQ3/IQ2/IQ1) have no quantizer here: llama.cpp makes them with an
 * importance-weighted search. The weights are random anyway, so their rows are drawn as
 * random codes (grid indices, signs, sub-block scales), and each block's f16 scale is
 * set so that the block has the root mean square of x's block: the same statistics as
 * the other types' weights, and every code path of the decoder in use. */
#define QK_GRID_BLOCK 256

static void grid_row(int type, const float *x, uint8_t *dst, int64_t n, rng *r)
{
    const type_traits *t = type_info(type);
    size_t bytes = type_row_bytes(type, n);
    for (size_t i = 0; i < bytes; i += 8) {
        uint64_t v = rng_next(r);
        memcpy(dst + i, &v, bytes - i < 8 ? bytes - i : 8);
    }
    float y[QK_GRID_BLOCK];
    for (int64_t b = 0; b < n / t->block; b++) {
        uint8_t *q = dst + (size_t)b * t->block_bytes;
        for (int pass = 0; pass < 2; pass++) {
            /* pass 0 decodes with d = 1, pass 1 stores the d that fits */
            float d = 1.0f;
            if (pass) {
                dequantize_row(type, q, y, t->block);
                double sx = 0, sy = 0;
                for (int i = 0; i < t->block; i++) {
                    sx += (double)x[b * t->block + i] * x[b * t->block + i];
                    sy += (double)y[i] * y[i];
                }
                d = sy > 0 ? (float)sqrt(sx / sy) : 0.0f;
            }
            uint16_t h = f32_to_f16(d);
            if (type == T_IQ1_M) { /* the top nibbles of the four scale words */
                uint16_t sc[4];
                memcpy(sc, q + 48, 8);
                for (int k = 0; k < 4; k++)
                    sc[k] = (uint16_t)((sc[k] & 0x0fff) | ((h >> (4 * k)) & 15) << 12);
                memcpy(q + 48, sc, 8);
            } else {
                memcpy(q, &h, 2);
            }
        }
    }
}

static void chunk_worker(void *ctx, int ith, int nth)
{
    const chunk_job *j = ctx;
    const tspec *ts = j->ts;
    int64_t lo = j->n_rows * ith / nth, hi = j->n_rows * (ith + 1) / nth;
    float *x = ts->gen->scratch[ith];
    int64_t n = ts->ne[0];
    for (int64_t r_ = lo; r_ < hi; r_++) {
        uint8_t *dst = j->out + (size_t)r_ * j->row_bytes;
        fill_row(ts, x, n, (uint64_t)(j->row0 + r_), ts->gen->o->seed);
        if (ts->type == T_F32) {
            memcpy(dst, x, (size_t)n * sizeof(float));
        } else if (!type_info(ts->type)->has_quantize) {
            rng r;
            rng_seed(&r, ts->gen->o->seed, ts->stream ^ 0x9d5c0de5ull, (uint64_t)(j->row0 + r_));
            grid_row(ts->type, x, dst, n, &r);
        } else {
            quantize_row(ts->type, x, dst, n);
        }
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void progress(gen *g, const tspec *ts)
{
    if (g->o->quiet || !g->tty)
        return;
    double dt = now_s() - g->t0;
    if (g->n_done != g->n_total && dt - g->t_shown < 0.2)
        return;
    g->t_shown = dt;
    fprintf(stderr, "\r[%4d/%4d] %5.1f%% %7.1fs %-40s", g->n_done, g->n_total,
            g->bytes_total ? 100.0 * (double)g->bytes_done / (double)g->bytes_total : 100.0, dt, ts->name);
    if (g->n_done == g->n_total)
        fputc('\n', stderr);
}

#define CHUNK_BYTES ((size_t)32 << 20)

static int fill_tensor(void *ctx, const gguf_tensor *t, gguf_emit_fn emit, void *sink)
{
    tspec *ts = ctx;
    gen *g = ts->gen;
    (void)t;
    int64_t rows = ts->ne[1] * ts->ne[2];
    size_t rb = ts->type == T_F32 ? (size_t)ts->ne[0] * sizeof(float) : type_row_bytes(ts->type, ts->ne[0]);
    int64_t per_chunk = (int64_t)(CHUNK_BYTES / rb);
    if (per_chunk < 1)
        per_chunk = 1;
    for (int64_t r0 = 0; r0 < rows; r0 += per_chunk) {
        int64_t n = rows - r0 < per_chunk ? rows - r0 : per_chunk;
        chunk_job j = {ts, r0, n, rb, g->buf};
        /* Small tensors (norms, biases) are not worth waking the pool for. */
        if (n * ts->ne[0] < 16384)
            chunk_worker(&j, 0, 1);
        else
            threadpool_run(g->pool, chunk_worker, &j, g->n_threads);
        int rc = emit(sink, g->buf, (size_t)n * rb);
        if (rc < 0)
            return rc;
        g->bytes_done += (uint64_t)n * rb;
    }
    g->n_done++;
    progress(g, ts);
    return 0;
}

/* ---- the tensor table ---- */

typedef struct tlist {
    tspec *v;
    int n, cap;
} tlist;

static tspec *add(tlist *l, const char *name, int n_dims, int64_t ne0, int64_t ne1, int64_t ne2)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        tspec *v = realloc(l->v, sizeof *v * (size_t)cap);
        if (!v)
            return NULL;
        l->v = v;
        l->cap = cap;
    }
    tspec *t = &l->v[l->n++];
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s", name);
    t->n_dims = n_dims;
    t->ne[0] = ne0;
    t->ne[1] = ne1;
    t->ne[2] = ne2;
    return t;
}

/* Hybrid Qwen layers (qwen35moe: separate beta/alpha, tiled V heads; qwen3next: fused
 * ssm_ba, the split attn_qkv/attn_gate form): Gated DeltaNet, or gated attention every
 * attn_interval-th layer; routed experts plus a shared expert with its gate. */
static int build_hybrid(const mkmodel_shape *s, int ftype, tlist *l)
{
    const bool next = strcmp(s->arch, "qwen3next") == 0;
    const int64_t E = s->n_embd, hd = s->head_dim, d = s->ssm_state;
    const int64_t kd = (int64_t)s->ssm_groups * d, vd = (int64_t)s->ssm_v_heads * d, C = 2 * kd + vd;
    const int64_t nv = s->ssm_v_heads, X = s->n_expert, F = s->n_ff_exp, Fs = s->n_ff_shexp;
    char nm[64];
    tspec *t;
#define N(suffix) (snprintf(nm, sizeof nm, "blk.%d." suffix, il), nm)
#define W2(name_, ne0_, ne1_, a_)                                                        \
    do {                                                                              \
        if (!(t = add(l, name_, 2, ne0_, ne1_, 1)))                                   \
            return -ENOMEM;                                                           \
        t->type = mkmodel_tensor_type(ftype, t->name, ne0_, il, s);                   \
        t->init = INIT_NORMAL;                                                        \
        t->a = a_;                                                                    \
    } while (0)
#define F1(name_, ne0_, kind_, a_, b_)                                                   \
    do {                                                                              \
        if (!(t = add(l, name_, 1, ne0_, 1, 1)))                                      \
            return -ENOMEM;                                                           \
        t->type = T_F32;                                                              \
        t->init = kind_;                                                              \
        t->a = a_;                                                                    \
        t->b = b_;                                                                    \
    } while (0)
    const float se = 1.0f / sqrtf((float)E);
    for (int il = 0; il < s->n_layer; il++) {
        F1(N("attn_norm.weight"), E, INIT_UNIFORM, 0.5f, 1.5f);
        F1(N("post_attention_norm.weight"), E, INIT_UNIFORM, 0.5f, 1.5f);
        if ((il + 1) % s->attn_interval == 0) {
            W2(N("attn_q.weight"), E, 2 * s->n_head * hd, se);
            W2(N("attn_k.weight"), E, s->n_head_kv * hd, se);
            W2(N("attn_v.weight"), E, s->n_head_kv * hd, se);
            W2(N("attn_output.weight"), s->n_head * hd, E, 16.0f / sqrtf((float)(s->n_head * hd)));
            F1(N("attn_q_norm.weight"), hd, INIT_UNIFORM, 1.0f, 2.0f);
            F1(N("attn_k_norm.weight"), hd, INIT_UNIFORM, 1.0f, 2.0f);
        } else {
            W2(N("attn_qkv.weight"), E, C, se);
            W2(N("attn_gate.weight"), E, vd, se);
            if (next) {
                W2(N("ssm_ba.weight"), E, 2 * nv, se);
            } else {
                W2(N("ssm_beta.weight"), E, nv, se);
                W2(N("ssm_alpha.weight"), E, nv, se);
            }
            /* the conv kernel stays F32 (llama.cpp's quantizer leaves it) */
            if (!(t = add(l, N("ssm_conv1d.weight"), 2, s->ssm_conv, C, 1)))
                return -ENOMEM;
            t->type = T_F32;
            t->init = INIT_NORMAL;
            t->a = 0.5f;
            F1(N("ssm_dt.bias"), nv, INIT_UNIFORM, -4.0f, 0.0f);
            F1(N("ssm_a"), nv, INIT_UNIFORM, -8.0f, -1.0f);
            F1(N("ssm_norm.weight"), d, INIT_UNIFORM, 0.5f, 1.5f);
            W2(N("ssm_out.weight"), vd, E, 16.0f / sqrtf((float)vd));
        }
        W2(N("ffn_gate_inp.weight"), E, X, 3.0f * se);
        if (!(t = add(l, N("ffn_gate_exps.weight"), 3, E, F, X)))
            return -ENOMEM;
        t->type = mkmodel_tensor_type(ftype, t->name, E, il, s), t->init = INIT_NORMAL, t->a = se;
        if (!(t = add(l, N("ffn_up_exps.weight"), 3, E, F, X)))
            return -ENOMEM;
        t->type = mkmodel_tensor_type(ftype, t->name, E, il, s), t->init = INIT_NORMAL, t->a = se;
        if (!(t = add(l, N("ffn_down_exps.weight"), 3, F, E, X)))
            return -ENOMEM;
        t->type = mkmodel_tensor_type(ftype, t->name, F, il, s), t->init = INIT_NORMAL, t->a = 6.0f / sqrtf((float)F);
        F1(N("ffn_gate_inp_shexp.weight"), E, INIT_NORMAL, 2.0f * se, 0);
        W2(N("ffn_gate_shexp.weight"), E, Fs, se);
        W2(N("ffn_up_shexp.weight"), E, Fs, se);
        W2(N("ffn_down_shexp.weight"), Fs, E, 16.0f / sqrtf((float)Fs));
    }
#undef N
#undef W2
#undef F1
    return 0;
}

static int build_tensors(const mkmodel_shape *s, int ftype, tlist *l)
{
    bool qwen = strncmp(s->arch, "qwen", 4) == 0;
    bool oss = is_gptoss(s);
    bool moe = strcmp(s->arch, "qwen3moe") == 0 || oss;
    bool qk_norm = strcmp(s->arch, "qwen3") == 0 || strcmp(s->arch, "qwen3moe") == 0;
    bool qkv_bias = strcmp(s->arch, "qwen2") == 0 || oss;
    float out_len = qwen ? 6.5f : 4.5f;
    int64_t E = s->n_embd, V = s->n_vocab, hd = s->head_dim;
    int64_t q_dim = (int64_t)s->n_head * hd, kv_dim = (int64_t)s->n_head_kv * hd;
    char nm[64];
    tspec *t;

#define ADD2(name_, ne0_, ne1_, il_, kind_, a_)                                         \
    do {                                                                              \
        if (!(t = add(l, name_, 2, ne0_, ne1_, 1)))                                   \
            return -ENOMEM;                                                           \
        t->type = mkmodel_tensor_type(ftype, t->name, ne0_, il_, s);                  \
        t->init = kind_;                                                              \
        t->a = a_;                                                                    \
    } while (0)
#define ADD3(name_, ne0_, ne1_, ne2_, il_, a_)                                          \
    do {                                                                              \
        if (!(t = add(l, name_, 3, ne0_, ne1_, ne2_)))                                \
            return -ENOMEM;                                                           \
        t->type = mkmodel_tensor_type(ftype, t->name, ne0_, il_, s);                  \
        t->init = INIT_NORMAL;                                                        \
        t->a = a_;                                                                    \
    } while (0)
#define ADD1(name_, ne0_, kind_, a_, b_)                                                \
    do {                                                                              \
        if (!(t = add(l, name_, 1, ne0_, 1, 1)))                                      \
            return -ENOMEM;                                                           \
        t->type = T_F32;                                                              \
        t->init = kind_;                                                              \
        t->a = a_;                                                                    \
        t->b = b_;                                                                    \
    } while (0)
#define STD(fan_in) (1.0f / sqrtf((float)(fan_in)))

    if (!strncmp(s->arch, "gemma", 5)) {
        /* Gemma: tied embeddings, norms after the blocks, q/k norms; Gemma 4's layer
         * kinds, V = K on full layers, layer output scales and the MoE beside the dense
         * feed-forward */
        const bool g4 = !strcmp(s->arch, "gemma4");
        ADD2("token_embd.weight", E, V, 0, INIT_ROWLEN, out_len);
        ADD1("output_norm.weight", E, INIT_UNIFORM, 0.5f, 1.5f);
        if (g4)
            ADD1("rope_freqs.weight", hd / 2, INIT_ROPE_PART, 0.25f, 0);
        for (int il = 0; il < s->n_layer; il++) {
            const bool swa = il % s->swa_period < s->swa_period - 1;
            const int64_t d = g4 && swa ? s->head_dim_swa : hd;
            const int64_t kvd = (g4 && swa ? s->n_head_kv_swa : s->n_head_kv) * d, qd = (int64_t)s->n_head * d;
#define N(suffix) (snprintf(nm, sizeof nm, "blk.%d." suffix, il), nm)
            ADD1(N("attn_norm.weight"), E, INIT_UNIFORM, 0.5f, 1.5f);
            ADD2(N("attn_q.weight"), E, qd, il, INIT_NORMAL, STD(E));
            ADD2(N("attn_k.weight"), E, kvd, il, INIT_NORMAL, STD(E));
            if (!g4 || swa)
                ADD2(N("attn_v.weight"), E, kvd, il, INIT_NORMAL, STD(E));
            ADD2(N("attn_output.weight"), qd, E, il, INIT_NORMAL, STD(qd));
            ADD1(N("attn_q_norm.weight"), d, INIT_UNIFORM, 0.5f, 1.5f);
            ADD1(N("attn_k_norm.weight"), d, INIT_UNIFORM, 0.5f, 1.5f);
            ADD1(N("post_attention_norm.weight"), E, INIT_UNIFORM, 0.5f, 1.5f);
            ADD1(N("ffn_norm.weight"), E, INIT_UNIFORM, 0.5f, 1.5f);
            ADD2(N("ffn_gate.weight"), E, s->n_ff, il, INIT_NORMAL, STD(E));
            ADD2(N("ffn_up.weight"), E, s->n_ff, il, INIT_NORMAL, STD(E));
            ADD2(N("ffn_down.weight"), s->n_ff, E, il, INIT_NORMAL, STD(s->n_ff));
            ADD1(N("post_ffw_norm.weight"), E, INIT_UNIFORM, 0.5f, 1.5f);
            if (g4)
                ADD1(N("layer_output_scale.weight"), 1, INIT_UNIFORM, 0.3f, 1.0f);
            if (s->n_expert) {
                int64_t X = s->n_expert, F = s->n_ff_exp;
                ADD2(N("ffn_gate_inp.weight"), E, X, il, INIT_NORMAL, 3.0f * STD(E));
                ADD1(N("ffn_gate_inp.scale"), E, INIT_UNIFORM, 0.5f, 1.5f);
                ADD1(N("pre_ffw_norm_2.weight"), E, INIT_UNIFORM, 0.5f, 1.5f);
                ADD1(N("post_ffw_norm_1.weight"), E, INIT_UNIFORM, 0.5f, 1.5f);
                ADD1(N("post_ffw_norm_2.weight"), E, INIT_UNIFORM, 0.5f, 1.5f);
                ADD3(N("ffn_gate_up_exps.weight"), E, 2 * F, X, il, STD(E));
                ADD3(N("ffn_down_exps.weight"), F, E, X, il, STD(F));
                ADD1(N("ffn_down_exps.scale"), X, INIT_UNIFORM, 0.5f, 2.0f);
            }
#undef N
        }
    } else {
    if (s->tied)
        ADD2("token_embd.weight", E, V, 0, INIT_ROWLEN, out_len);
    else
        ADD2("token_embd.weight", E, V, 0, INIT_NORMAL, 1.0f);
    ADD1("output_norm.weight", E, INIT_UNIFORM, 0.5f, 1.5f);
    if (!s->tied)
        ADD2("output.weight", E, V, 0, INIT_ROWLEN, out_len);
    if (s->rope_l3_factor > 0) {
        ADD1("rope_freqs.weight", hd / 2, INIT_ROPE_L3, s->rope_l3_factor, s->rope_base);
    }

    if (s->ssm_state) {
        int rc = build_hybrid(s, ftype, l);
        if (rc)
            return rc;
    }
    for (int il = 0; il < s->n_layer && !s->ssm_state; il++) {
#define N(suffix) (snprintf(nm, sizeof nm, "blk.%d." suffix, il), nm)
        ADD1(N("attn_norm.weight"), E, INIT_UNIFORM, 0.5f, 1.5f);
        ADD2(N("attn_q.weight"), E, q_dim, il, INIT_NORMAL, STD(E));
        ADD2(N("attn_k.weight"), E, kv_dim, il, INIT_NORMAL, STD(E));
        ADD2(N("attn_v.weight"), E, kv_dim, il, INIT_NORMAL, STD(E));
        if (qkv_bias) {
            ADD1(N("attn_q.bias"), q_dim, INIT_NORMAL, 0.1f, 0);
            ADD1(N("attn_k.bias"), kv_dim, INIT_NORMAL, 0.1f, 0);
            ADD1(N("attn_v.bias"), kv_dim, INIT_NORMAL, 0.1f, 0);
        }
        ADD2(N("attn_output.weight"), q_dim, E, il, INIT_NORMAL, 16.0f * STD(q_dim));
        if (oss) {
            ADD1(N("attn_output.bias"), E, INIT_NORMAL, 0.1f, 0);
            ADD1(N("attn_sinks.weight"), s->n_head, INIT_UNIFORM, 0.5f, 4.5f);
        }
        if (qk_norm) {
            ADD1(N("attn_q_norm.weight"), hd, INIT_UNIFORM, 0.5f, 1.5f);
            ADD1(N("attn_k_norm.weight"), hd, INIT_UNIFORM, 0.5f, 1.5f);
        }
        /* gpt-oss calls the pre-MoE norm post_attention_norm */
        ADD1(oss ? N("post_attention_norm.weight") : N("ffn_norm.weight"), E, INIT_UNIFORM, 0.5f, 1.5f);
        if (moe) {
            int64_t X = s->n_expert, F = s->n_ff_exp;
            ADD2(N("ffn_gate_inp.weight"), E, X, il, INIT_NORMAL, 3.0f * STD(E));
            ADD3(N("ffn_gate_exps.weight"), E, F, X, il, STD(E));
            ADD3(N("ffn_up_exps.weight"), E, F, X, il, STD(E));
            ADD3(N("ffn_down_exps.weight"), F, E, X, il, 16.0f * STD(F));
            if (oss) { /* biases: the router's [X], the experts' [X][F] and [X][E], F32 */
                ADD1(N("ffn_gate_inp.bias"), X, INIT_NORMAL, 0.1f, 0);
                const char *const eb[3] = {"ffn_gate_exps.bias", "ffn_up_exps.bias", "ffn_down_exps.bias"};
                for (int b = 0; b < 3; b++) {
                    snprintf(nm, sizeof nm, "blk.%d.%s", il, eb[b]);
                    if (!(t = add(l, nm, 2, b == 2 ? E : F, X, 1)))
                        return -ENOMEM;
                    t->type = T_F32;
                    t->init = INIT_NORMAL;
                    t->a = 0.1f;
                }
            }
        } else {
            int64_t F = s->n_ff;
            ADD2(N("ffn_gate.weight"), E, F, il, INIT_NORMAL, STD(E));
            ADD2(N("ffn_up.weight"), E, F, il, INIT_NORMAL, STD(E));
            ADD2(N("ffn_down.weight"), F, E, il, INIT_NORMAL, 16.0f * STD(F));
        }
#undef N
    }
    }
#undef ADD1
#undef ADD2
#undef ADD3
#undef STD
    for (int i = 0; i < l->n; i++) {
        if (l->v[i].type < 0)
            return -EINVAL;
        l->v[i].stream = (uint64_t)i + 1;
    }
    return 0;
}

/* ---- calibrated weights ----
 *
 * Random normal weights make a network whose next token hangs on differences far smaller
 * than 4-bit rounding: 28 layers of full-size random blocks amplify the rounding of every
 * weight, so a Q4_0 file and an F16 file of the same seed soon predict different tokens
 * (acceptance 0.1 in speculative decoding). Training shapes weights otherwise: a trained
 * model predicts most tokens with a clear margin, its residual stream carries the current
 * token's identity, each block adds a bounded update to it, and so its quantized copies
 * agree with it on most tokens. Calibrated weights are built to have those properties,
 * with a known answer: after token t the model predicts succ(t), a seeded cyclic order
 * of the ordinary tokens (one long cycle: greedy text never repeats itself early, so
 * n-gram lookup finds nothing and a draft model must compute).
 *
 * The residual stream has four parts, each made of whole 32-element blocks so that a
 * quantization block never mixes them: 32 constant dimensions (value c, the bias that
 * trained models keep in a few large dimensions), the readout subspace A and the
 * successor subspace B of d dimensions each, and what is left (0 or 32 dimensions).
 * Every token j has a code x_j, a random unit vector of d dimensions (well spread: two
 * codes' cosine is about 1/sqrt(d)). Token t's embedding is c in the constant
 * dimensions, eps * x_t in A and x_succ(t) in B. The output head (the same matrix, tied
 * or not) reads only A: output_norm weighs A by g_read, B by 0 (so the logits depend on
 * what the blocks put in A, not on the input token's successor code directly).
 *
 * Each layer's feed-forward carries two kinds of neurons. Copy neurons (the first n_copy)
 * gate on the constant dimensions (silu of about 3, so they act almost linearly), read B
 * through a random matrix U and write A through U's transpose: over the layers A gains
 * about gamma * x_succ(t), so logit(succ(t)) ~ eps*gamma against eps*eps for t itself and
 * about eps*(gamma+eps)/sqrt(d) for any other token, times g_read over the residual's RMS
 * (a margin of about 11 logits at the nominal scale; 8.5 to 10 measured on the
 * qwen3-0.6b shape, and Q4_0 picks the same tokens). The other neurons and attention
 * (random q, k, v: content-dependent attention patterns) write random updates of about
 * kappa = 10% of the initial residual's RMS each, everywhere except A: they perturb B
 * (which the copy reads: the layers' arithmetic reaches the logits) and the norms, but
 * cannot swamp the readout. Both files of a seed hold the same float weights; only the
 * rounding differs, and every margin above is large against 4-bit rounding. */

#define CAL_EPS 0.15f    /* a token's own code in A */
#define CAL_GAMMA 0.5f   /* the successor's code the copy neurons add to A, over all layers */
#define CAL_KAPPA 0.1f   /* each block's other updates, relative to the residual's RMS */
#define CAL_CONST 0.1f   /* the constant dimensions' value */
#define CAL_GATE 3.0f    /* copy neurons' gate pre-activation */
#define CAL_LOGIT 16.0f  /* the successor's nominal logit */

static bool cal_supported(const mkmodel_shape *s)
{
    return (!strcmp(s->arch, "llama") || !strcmp(s->arch, "qwen2") || !strcmp(s->arch, "qwen3")) &&
           !s->ssm_state && !s->n_expert;
}

/* The layout and scales for shape s, and the successor of every token: one seeded cycle
 * through the tokens of types normal, unused and byte (token_type NULL: the built-in
 * vocab's types); control and user-defined tokens (end of text, chat markers, think
 * tags) are never predicted, and are followed by a token of the cycle. */
static int cal_init(const mkmodel_shape *s, uint64_t seed, const int32_t *token_type, calib *c, llmfs_error *err)
{
    if (!cal_supported(s))
        return llmfs_errorf(err, EINVAL, "calibrated weights: dense llama, qwen2 and qwen3 only, not %s", s->arch);
    const int64_t E = s->n_embd, L = s->n_layer, F = s->n_ff, V = s->n_vocab;
    memset(c, 0, sizeof *c);
    c->n_embd = E;
    c->d = 32 * ((E / 32 - 1) / 2);
    c->n_copy = (F / 2 < 2 * c->d ? F / 2 : 2 * c->d) / 32 * 32;
    if (c->d < 32 || c->n_copy < 32)
        return llmfs_errorf(err, EINVAL, "calibrated weights need n_embd >= 96 and n_ff >= 64");
    c->a0 = 32;
    c->b0 = 32 + c->d;
    c->c = CAL_CONST;
    c->eps = CAL_EPS;
    double h2 = 32.0 * CAL_CONST * CAL_CONST + (double)CAL_EPS * CAL_EPS + 1.0; /* |embedding|^2 */
    double r0 = sqrt(h2 / (double)E);                                           /* its RMS */
    /* the last layer's residual: the copies' gamma, 2L random updates outside A */
    double rf = sqrt((h2 + (double)CAL_GAMMA * CAL_GAMMA +
                      2.0 * (double)L * CAL_KAPPA * CAL_KAPPA * r0 * r0 * (double)(E - c->d)) /
                     (double)E);
    c->g_read = (float)(CAL_LOGIT * rf / ((double)CAL_EPS * CAL_GAMMA));
    /* the normalized constant dimensions are about c / r0 each */
    c->gate_c = (float)(CAL_GATE * r0 / (32.0 * CAL_CONST));
    c->gate_sd = (float)(0.5 / sqrt((double)E));
    /* per layer A += (gamma / L) * B: silu(g) * (n_copy / d) * B / r0 * beta */
    double silu_g = CAL_GATE / (1.0 + exp(-(double)CAL_GATE));
    c->beta = (float)((double)CAL_GAMMA / (double)L * r0 * (double)c->d / (silu_g * (double)c->n_copy));

    if (!(c->succ = malloc(sizeof *c->succ * (size_t)V)))
        return llmfs_errorf(err, ENOMEM, "out of memory");
    int32_t *cyc = malloc(sizeof *cyc * (size_t)V);
    if (!cyc)
        return llmfs_errorf(err, ENOMEM, "out of memory");
    int64_t n = 0;
    for (int64_t t = 0; t < V; t++) {
        int ty = token_type ? token_type[t] : t >= 256 && t < BUILTIN_MIN_VOCAB ? 3 : 1;
        if (ty == 1 || ty == 5 || ty == 6)
            cyc[n++] = (int32_t)t;
    }
    if (n < 2) {
        free(cyc);
        return llmfs_errorf(err, EINVAL, "calibrated weights need two ordinary tokens");
    }
    rng r;
    rng_seed(&r, seed, CAL_STREAM_PERM, 0);
    for (int64_t i = n - 1; i > 0; i--) { /* Fisher-Yates */
        int64_t j = (int64_t)(rng_next(&r) % (uint64_t)(i + 1));
        int32_t x = cyc[i];
        cyc[i] = cyc[j];
        cyc[j] = x;
    }
    for (int64_t t = 0; t < V; t++)
        c->succ[t] = cyc[rng_next(&r) % (uint64_t)n];
    for (int64_t i = 0; i < n; i++)
        c->succ[cyc[i]] = cyc[(i + 1) % n];
    free(cyc);
    return 0;
}

/* The tensors of a dense llama, qwen2 or qwen3 model with calibrated weights (the names,
 * shapes and types of build_tensors'). */
static int build_calibrated(const mkmodel_shape *s, int ftype, tlist *l, const calib *c)
{
    const bool qk_norm = strcmp(s->arch, "qwen3") == 0, qkv_bias = strcmp(s->arch, "qwen2") == 0;
    const int64_t E = s->n_embd, V = s->n_vocab, hd = s->head_dim, F = s->n_ff;
    const int64_t q_dim = (int64_t)s->n_head * hd, kv_dim = (int64_t)s->n_head_kv * hd;
    const double r0 = sqrt((32.0 * c->c * c->c + (double)c->eps * c->eps + 1.0) / (double)E);
    /* attention: the heads' mixed values have an RMS of 1 at most; the other neurons:
     * silu(z) * u with z, u standard normal has an RMS of 0.6 */
    const float attn_out_sd = (float)(CAL_KAPPA * r0 / sqrt((double)q_dim));
    const float down_sd = (float)(CAL_KAPPA * r0 / sqrt(0.356 * (double)(F - c->n_copy)));
    const float se = 1.0f / sqrtf((float)E);
    char nm[64];
    tspec *t;
#define W2(name_, ne0_, ne1_, il_, kind_, a_)                                            \
    do {                                                                              \
        if (!(t = add(l, name_, 2, ne0_, ne1_, 1)))                                   \
            return -ENOMEM;                                                           \
        t->type = mkmodel_tensor_type(ftype, t->name, ne0_, il_, s);                  \
        t->init = kind_;                                                              \
        t->a = a_;                                                                    \
        t->il = il_;                                                                  \
    } while (0)
#define F1(name_, ne0_, kind_, a_, b_)                                                   \
    do {                                                                              \
        if (!(t = add(l, name_, 1, ne0_, 1, 1)))                                      \
            return -ENOMEM;                                                           \
        t->type = T_F32;                                                              \
        t->init = kind_;                                                              \
        t->a = a_;                                                                    \
        t->b = b_;                                                                    \
    } while (0)
    W2("token_embd.weight", E, V, 0, INIT_CAL_EMBD, 0);
    F1("output_norm.weight", E, INIT_CAL_OUT_NORM, 0, 0);
    if (!s->tied)
        W2("output.weight", E, V, 0, INIT_CAL_EMBD, 0);
    if (s->rope_l3_factor > 0)
        F1("rope_freqs.weight", hd / 2, INIT_ROPE_L3, s->rope_l3_factor, s->rope_base);
    for (int il = 0; il < s->n_layer; il++) {
#define N(suffix) (snprintf(nm, sizeof nm, "blk.%d." suffix, il), nm)
        F1(N("attn_norm.weight"), E, INIT_UNIFORM, 0.8f, 1.2f);
        W2(N("attn_q.weight"), E, q_dim, il, INIT_NORMAL, se);
        W2(N("attn_k.weight"), E, kv_dim, il, INIT_NORMAL, se);
        W2(N("attn_v.weight"), E, kv_dim, il, INIT_NORMAL, se);
        if (qkv_bias) {
            F1(N("attn_q.bias"), q_dim, INIT_NORMAL, 0.1f, 0);
            F1(N("attn_k.bias"), kv_dim, INIT_NORMAL, 0.1f, 0);
            F1(N("attn_v.bias"), kv_dim, INIT_NORMAL, 0.1f, 0);
        }
        W2(N("attn_output.weight"), q_dim, E, il, INIT_CAL_WRITE, attn_out_sd);
        if (qk_norm) {
            F1(N("attn_q_norm.weight"), hd, INIT_UNIFORM, 0.5f, 1.5f);
            F1(N("attn_k_norm.weight"), hd, INIT_UNIFORM, 0.5f, 1.5f);
        }
        F1(N("ffn_norm.weight"), E, INIT_UNIFORM, 0.8f, 1.2f);
        W2(N("ffn_gate.weight"), E, F, il, INIT_CAL_GATE, se);
        W2(N("ffn_up.weight"), E, F, il, INIT_CAL_UP, se);
        W2(N("ffn_down.weight"), F, E, il, INIT_CAL_DOWN, down_sd);
#undef N
    }
#undef W2
#undef F1
    for (int i = 0; i < l->n; i++) {
        if (l->v[i].type < 0)
            return -EINVAL;
        l->v[i].stream = (uint64_t)i + 1;
    }
    return 0;
}

/* ---- metadata ---- */

static void put_arch_kv(gguf_writer *w, const mkmodel_shape *s, int ftype, int n_vocab)
{
    char k[96];
    const char *a = s->arch;
#define KEY(suffix) (snprintf(k, sizeof k, "%s." suffix, a), k)
    gguf_w_str(w, "general.architecture", a);
    gguf_w_str(w, "general.name", s->name);
    gguf_w_u32(w, "general.file_type", (uint32_t)(ftype == FT_MXFP4_PURE ? FT_MXFP4_MOE : ftype));
    gguf_w_u32(w, "general.quantization_version", 2);
    gguf_w_u32(w, KEY("context_length"), (uint32_t)s->n_ctx);
    gguf_w_u32(w, KEY("embedding_length"), (uint32_t)s->n_embd);
    gguf_w_u32(w, KEY("block_count"), (uint32_t)s->n_layer);
    gguf_w_u32(w, KEY("feed_forward_length"), (uint32_t)s->n_ff);
    gguf_w_u32(w, KEY("attention.head_count"), (uint32_t)s->n_head);
    const bool g4 = strcmp(a, "gemma4") == 0;
    if (g4) { /* per layer: the sliding-window layers' KV heads, and which layers they are */
        int32_t *kvh = malloc(sizeof(int32_t) * (size_t)s->n_layer);
        bool *pat = malloc(sizeof(bool) * (size_t)s->n_layer);
        if (kvh && pat) {
            for (int il = 0; il < s->n_layer; il++) {
                pat[il] = il % s->swa_period < s->swa_period - 1;
                kvh[il] = pat[il] ? s->n_head_kv_swa : s->n_head_kv;
            }
            gguf_w_arr_i32(w, KEY("attention.head_count_kv"), kvh, (uint64_t)s->n_layer);
            gguf_w_arr(w, KEY("attention.sliding_window_pattern"), GGUF_T_BOOL, pat, (uint64_t)s->n_layer);
        }
        free(kvh);
        free(pat);
        gguf_w_u32(w, KEY("attention.key_length_swa"), (uint32_t)s->head_dim_swa);
        gguf_w_u32(w, KEY("attention.value_length_swa"), (uint32_t)s->head_dim_swa);
        gguf_w_u32(w, KEY("rope.dimension_count_swa"), (uint32_t)s->head_dim_swa);
        gguf_w_u32(w, KEY("attention.shared_kv_layers"), 0);
        gguf_w_u32(w, KEY("embedding_length_per_layer_input"), 0);
        gguf_w_f32(w, KEY("final_logit_softcapping"), s->softcap);
    } else {
        gguf_w_u32(w, KEY("attention.head_count_kv"), (uint32_t)s->n_head_kv);
    }
    if (strncmp(a, "gemma", 5) == 0) {
        gguf_w_u32(w, KEY("attention.sliding_window"), (uint32_t)s->n_swa);
        gguf_w_f32(w, KEY("rope.freq_base_swa"), s->rope_base_swa);
        if (!g4) { /* Gemma 3 4B and up stretch the full layers' rope by 8 */
            gguf_w_str(w, KEY("rope.scaling.type"), "linear");
            gguf_w_f32(w, KEY("rope.scaling.factor"), 8.0f);
        }
    }
    gguf_w_f32(w, KEY("attention.layer_norm_rms_epsilon"), s->rms_eps);
    gguf_w_f32(w, KEY("rope.freq_base"), s->rope_base);
    bool llama = strcmp(a, "llama") == 0;
    if (!llama || s->head_dim * s->n_head != s->n_embd) {
        gguf_w_u32(w, KEY("attention.key_length"), (uint32_t)s->head_dim);
        gguf_w_u32(w, KEY("attention.value_length"), (uint32_t)s->head_dim);
    }
    if (llama || g4) {
        gguf_w_u32(w, KEY("rope.dimension_count"), (uint32_t)s->head_dim);
    }
    if (llama) {
        gguf_w_u32(w, KEY("vocab_size"), (uint32_t)n_vocab);
    }
    if (is_gptoss(s)) {
        gguf_w_u32(w, KEY("attention.sliding_window"), 128);
        gguf_w_str(w, KEY("rope.scaling.type"), "yarn");
        gguf_w_f32(w, KEY("rope.scaling.factor"), 32.0f);
        gguf_w_u32(w, KEY("rope.scaling.original_context_length"), 4096);
    }
    if (s->n_expert) {
        gguf_w_u32(w, KEY("expert_count"), (uint32_t)s->n_expert);
        gguf_w_u32(w, KEY("expert_used_count"), (uint32_t)s->n_expert_used);
        gguf_w_u32(w, KEY("expert_feed_forward_length"), (uint32_t)s->n_ff_exp);
    }
    if (s->ssm_state) {
        gguf_w_u32(w, KEY("expert_shared_feed_forward_length"), (uint32_t)s->n_ff_shexp);
        gguf_w_u32(w, KEY("ssm.conv_kernel"), (uint32_t)s->ssm_conv);
        gguf_w_u32(w, KEY("ssm.state_size"), (uint32_t)s->ssm_state);
        gguf_w_u32(w, KEY("ssm.group_count"), (uint32_t)s->ssm_groups);
        gguf_w_u32(w, KEY("ssm.time_step_rank"), (uint32_t)s->ssm_v_heads);
        gguf_w_u32(w, KEY("ssm.inner_size"), (uint32_t)(s->ssm_v_heads * s->ssm_state));
        gguf_w_u32(w, KEY("full_attention_interval"), (uint32_t)s->attn_interval);
        gguf_w_u32(w, KEY("rope.dimension_count"), (uint32_t)(s->n_rot ? s->n_rot : s->head_dim));
        if (strcmp(a, "qwen35moe") == 0) {
            /* M-RoPE sections covering every rotary pair (text-only positions) */
            int pairs = (s->n_rot ? s->n_rot : s->head_dim) / 2;
            int32_t sec[4] = {(pairs + 2) / 3, (pairs + 1) / 3, pairs / 3, 0};
            gguf_w_arr_i32(w, KEY("rope.dimension_sections"), sec, 4);
        }
    }
#undef KEY
}

static const char chatml_template[] =
    "{%- for message in messages -%}\n"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "{{- '<|im_start|>assistant\\n' -}}\n"
    "{%- endif -%}\n";

/* GPT-2's byte-to-unicode map: printable bytes stand for themselves, the others are
 * moved to U+0100 onwards in byte order. Writes the UTF-8 of byte b's symbol. */
static void byte_symbol(int b, char out[4])
{
    int cp;
    bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    if (printable) {
        cp = b;
    } else {
        int k = 0;
        for (int x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255)))
                k++;
        cp = 256 + k;
    }
    if (cp < 0x80) {
        out[0] = (char)cp;
        out[1] = 0;
    } else {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        out[2] = 0;
    }
}

/* A byte-level BPE vocab with no merges: the 256 byte tokens, ChatML's specials and
 * Qwen3's think tags, padded with unused tokens up to n_vocab. */

static int put_builtin_vocab(gguf_writer *w, int n_vocab)
{
    static const char *special[BUILTIN_N_SPECIAL] = {"<|endoftext|>", "<|im_start|>", "<|im_end|>",
                                                      "<think>", "</think>"};
    static const int special_type[BUILTIN_N_SPECIAL] = {3, 3, 3, 4, 4};
    char **tok = calloc((size_t)n_vocab, sizeof *tok);
    int32_t *type = calloc((size_t)n_vocab, sizeof *type);
    int rc = 0;
    if (!tok || !type) {
        rc = -ENOMEM;
        goto out;
    }
    for (int i = 0; i < n_vocab; i++) {
        char buf[32];
        if (i < 256) {
            byte_symbol(i, buf);
            type[i] = 1;
        } else if (i < BUILTIN_MIN_VOCAB) {
            snprintf(buf, sizeof buf, "%s", special[i - 256]);
            type[i] = special_type[i - 256];
        } else {
            snprintf(buf, sizeof buf, "[PAD%d]", i);
            type[i] = 5;
        }
        if (!(tok[i] = strdup(buf))) {
            rc = -ENOMEM;
            goto out;
        }
    }
    gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_w_str(w, "tokenizer.ggml.pre", "qwen2");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", (const char *const *)tok, (uint64_t)n_vocab);
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", type, (uint64_t)n_vocab);
    gguf_w_arr_str(w, "tokenizer.ggml.merges", NULL, 0);
    gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 256);
    gguf_w_u32(w, "tokenizer.ggml.eos_token_id", 258);
    gguf_w_u32(w, "tokenizer.ggml.padding_token_id", 256);
    gguf_w_bool(w, "tokenizer.ggml.add_bos_token", false);
    gguf_w_str(w, "tokenizer.chat_template", chatml_template);
out:
    if (tok)
        for (int i = 0; i < n_vocab; i++)
            free(tok[i]);
    free(tok);
    free(type);
    return rc;
}

/* Copies every tokenizer.* key of a vocab file; returns its token count or an errno.
 * A Qwen model whose vocab file carries no chat template gets ChatML, which every Qwen
 * release uses, so that chat mode works on it. */
static int put_vocab_from(gguf_writer *w, const gguf_file *v, const char *arch, llmfs_error *err)
{
    int ik = gguf_find_key(v, "tokenizer.ggml.tokens");
    if (ik < 0 || gguf_kv_type(v, ik) != GGUF_T_ARRAY || gguf_kv_arr_type(v, ik) != GGUF_T_STRING)
        return llmfs_errorf(err, EINVAL, "vocab file has no tokenizer.ggml.tokens string array");
    uint64_t n = gguf_kv_arr_n(v, ik);
    if (n < 1 || n > (1u << 24))
        return llmfs_errorf(err, EINVAL, "vocab file has %llu tokens", (unsigned long long)n);
    for (int i = 0; i < gguf_n_kv(v); i++)
        if (strncmp(gguf_kv_key(v, i), "tokenizer.", 10) == 0)
            gguf_w_copy_kv(w, v, i);
    if (strncmp(arch, "qwen", 4) == 0 && gguf_find_key(v, "tokenizer.chat_template") < 0)
        gguf_w_str(w, "tokenizer.chat_template", chatml_template);
    return (int)n;
}

/* ---- writing ---- */

int mkmodel_write(const mkmodel_shape *shape, int ftype, const mkmodel_opts *o, const char *path,
                  llmfs_error *err)
{
    mkmodel_shape s = *shape;
    gguf_file *vf = NULL;
    gguf_writer *w = NULL;
    tlist l = {0};
    gen g = {0};
    calib cal = {0};
    int rc;

    if (ftype_base_type(ftype) < 0)
        return llmfs_errorf(err, EINVAL, "unknown file type %d", ftype);
    if (o->vocab_path) {
        gguf_open_opts vo = {0};
        if (!(vf = gguf_open(o->vocab_path, &vo, err)))
            return err ? -err->code : -EINVAL;
        int ik = gguf_find_key(vf, "tokenizer.ggml.tokens");
        if (ik >= 0 && gguf_kv_type(vf, ik) == GGUF_T_ARRAY)
            s.n_vocab = (int)gguf_kv_arr_n(vf, ik);
    } else if (s.n_vocab < BUILTIN_MIN_VOCAB) {
        return llmfs_errorf(err, EINVAL, "the built-in vocab needs n_vocab >= %d", BUILTIN_MIN_VOCAB);
    }
    if ((rc = mkmodel_shape_check(&s, err)) < 0)
        goto out;

    if (!(w = gguf_writer_new())) {
        rc = llmfs_errorf(err, ENOMEM, "out of memory");
        goto out;
    }
    put_arch_kv(w, &s, ftype, s.n_vocab);
    if (vf) {
        if ((rc = put_vocab_from(w, vf, s.arch, err)) < 0)
            goto out;
    } else if ((rc = put_builtin_vocab(w, s.n_vocab)) < 0) {
        llmfs_errorf(err, -rc, "out of memory building the vocab");
        goto out;
    }

    if (o->calibrated) {
        const int32_t *types = NULL;
        int32_t *ordinary = NULL; /* a vocab file without token types: every token ordinary */
        if (vf) {
            enum gguf_vtype vt;
            uint64_t nt = 0;
            const void *d = gguf_get_arr_data(vf, "tokenizer.ggml.token_type", &vt, &nt);
            if (d && vt == GGUF_T_I32 && nt == (uint64_t)s.n_vocab) {
                types = d;
            } else if ((ordinary = malloc(sizeof *ordinary * (size_t)s.n_vocab))) {
                for (int i = 0; i < s.n_vocab; i++)
                    ordinary[i] = 1;
                types = ordinary;
            } else {
                rc = llmfs_errorf(err, ENOMEM, "out of memory");
                goto out;
            }
        }
        rc = cal_init(&s, o->seed, types, &cal, err);
        free(ordinary);
        if (rc < 0)
            goto out;
        g.cal = &cal;
        rc = build_calibrated(&s, ftype, &l, &cal);
    } else {
        rc = build_tensors(&s, ftype, &l);
    }
    if (rc < 0) {
        llmfs_errorf(err, -rc, "cannot build the tensor table");
        goto out;
    }

    g.o = o;
    g.n_threads = o->n_threads > 0 ? o->n_threads : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (g.n_threads < 1)
        g.n_threads = 1;
    if (!(g.pool = threadpool_new(g.n_threads))) {
        rc = llmfs_errorf(err, ENOMEM, "cannot start %d threads", g.n_threads);
        goto out;
    }
    g.n_threads = threadpool_size(g.pool);
    for (int i = 0; i < l.n; i++) {
        tspec *t = &l.v[i];
        if (t->ne[0] > g.max_row)
            g.max_row = t->ne[0];
        size_t rb = t->type == T_F32 ? (size_t)t->ne[0] * 4 : type_row_bytes(t->type, t->ne[0]);
        size_t need = rb > CHUNK_BYTES ? rb : CHUNK_BYTES;
        if (need > g.buf_cap)
            g.buf_cap = need;
        g.bytes_total += rb * (uint64_t)(t->ne[1] * t->ne[2]);
        t->gen = &g;
    }
    g.n_total = l.n;
    g.scratch = calloc((size_t)g.n_threads, sizeof *g.scratch);
    g.buf = malloc(g.buf_cap);
    if (!g.scratch || !g.buf) {
        rc = llmfs_errorf(err, ENOMEM, "out of memory");
        goto out;
    }
    for (int i = 0; i < g.n_threads; i++)
        if (!(g.scratch[i] = malloc((size_t)g.max_row * sizeof(float)))) {
            rc = llmfs_errorf(err, ENOMEM, "out of memory");
            goto out;
        }
    for (int i = 0; i < l.n; i++) {
        tspec *t = &l.v[i];
        gguf_w_tensor(w, t->name, t->type, t->n_dims, t->ne, fill_tensor, t);
    }
    g.t0 = now_s();
    g.tty = isatty(STDERR_FILENO);
    rc = gguf_writer_write(w, path, err);

out:
    if (g.scratch)
        for (int i = 0; i < g.n_threads; i++)
            free(g.scratch[i]);
    free(g.scratch);
    free(g.buf);
    if (g.pool)
        threadpool_free(g.pool);
    free(l.v);
    free(cal.succ);
    gguf_writer_free(w);
    if (vf)
        gguf_close(vf);
    return rc;
}
