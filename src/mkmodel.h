/* mkmodel.h — random-weight GGUF models with the shapes of real ones.
 *
 * The files are valid models in every respect except the weights: the metadata, the
 * tensor table, the tokenizer and the per-tensor quantization types are what llama.cpp's
 * converter and quantizer would produce for that shape, so loading, benchmarking and
 * memory planning behave as with the real model. Weights are drawn so that activations
 * and next-token distributions stay non-degenerate (see mkmodel.c for the scheme).
 *
 * Tensors are generated and quantized on the fly, a chunk of rows at a time on all
 * threads, and streamed to the file: a model never has to fit in memory.
 */
#ifndef LLMFS_MKMODEL_H
#define LLMFS_MKMODEL_H

#include "llmfs.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct mkmodel_shape {
    char name[64];           /* general.name */
    char arch[16];           /* "llama", "qwen2", "qwen3", "qwen3moe", "gemma3", "gemma4", "gpt-oss" */
    int n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff;
    int n_expert, n_expert_used, n_ff_exp; /* 0 for dense models */
    int n_vocab;             /* ignored when a vocab file is given (its size wins) */
    int n_ctx;               /* context_length */
    float rope_base, rms_eps;
    bool tied;               /* no output.weight: the output projection is token_embd */
    float rope_l3_factor;    /* Llama 3.1+ rope scaling (rope_freqs.weight, as llama.cpp's
                              * converter writes it; low 1, high 4, original context 8192); 0 none */
    /* hybrid Qwen (qwen35moe, qwen3next): Gated DeltaNet layers, every interval-th layer
     * full attention; 0 for other architectures */
    int ssm_state, ssm_groups, ssm_v_heads, ssm_conv, attn_interval;
    int n_ff_shexp;          /* shared expert's ff (MoE) */
    int n_rot;               /* rotary dims per head (partial rotary), 0: head_dim */
    /* Gemma ("gemma3", "gemma4"): every swa_period-th layer is full, the others see a
     * window of n_swa with rope base rope_base_swa; Gemma 4's sliding-window layers have
     * their own head size and KV heads (head_dim, n_head_kv are the full layers'), its
     * full layers use V = K and rotate a quarter of their pairs; logits capped at softcap */
    int n_swa, swa_period, head_dim_swa, n_head_kv_swa;
    float rope_base_swa, softcap;
} mkmodel_shape;

/* The built-in shapes: real models (qwen3-8b, qwen3-0.6b, qwen3-30b-a3b, llama-2-7b,
 * llama-3.2-1b, llama-3.1-8b, qwen2.5-0.5b) and the tiny test shapes (llama-tiny, qwen2-tiny,
 * qwen3-tiny, qwen3moe-tiny). Returns false for an unknown name. */
bool mkmodel_shape_find(const char *name, mkmodel_shape *out);
/* Name of shape i (NULL past the end), for listings. */
const char *mkmodel_shape_name(int i);
/* Defaults for a custom shape of an architecture (a small model); false if unknown. */
bool mkmodel_arch_defaults(const char *arch, mkmodel_shape *out);
/* Checks the dimensions are consistent and supported; -EINVAL with the reason. */
int mkmodel_shape_check(const mkmodel_shape *s, llmfs_error *err);

/* File types mkmodel can write: "f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1",
 * "q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl", "iq4_xs", "tq1_0", "tq2_0",
 * "mxfp4" (every 2D weight of that type), "q4_k_m" (llama.cpp's Q4_K_M mix) and
 * "mxfp4_moe" (MXFP4 experts, Q8_0 elsewhere). Returns the llama_ftype number for
 * general.file_type (1038 for "mxfp4", written as 38 like "mxfp4_moe"), or -1 if
 * unknown. The IQ3/IQ2/IQ1 grid types ("iq3_xxs", "iq3_s", "iq2_xxs", "iq2_xs", "iq2_s",
 * "iq1_s", "iq1_m") have no quantizer (llama.cpp needs an importance matrix): their
 * weights are random grid codes scaled to the other types' statistics. */
int mkmodel_ftype_from_name(const char *name);

/* The type llama.cpp's quantizer gives the 2D/3D weight `name` (of layer il, row length
 * ne0) of a model of shape s for file type ftype; the MoE router stays F32. Rows that
 * are not a whole number of blocks fall back as llama.cpp does (Q4_K -> Q5_0, Q5_K ->
 * Q5_1, Q6_K -> Q8_0, IQ4_XS -> IQ4_NL, TQ1_0/TQ2_0 -> Q4_0; Q2_K and Q3_K -> Q4_0 where
 * llama.cpp would use IQ4_NL; F16 when
 * even that does not divide). 1D tensors are always F32 and not asked about. */
int mkmodel_tensor_type(int ftype, const char *name, int64_t ne0, int il, const mkmodel_shape *s);

typedef struct mkmodel_opts {
    const char *vocab_path;  /* vocab-only GGUF whose tokenizer.* keys are copied, or NULL */
    uint64_t seed;
    int n_threads;           /* <= 0: every online CPU */
    bool quiet;              /* no progress on stderr */
    /* Weights built like a trained model's instead of random ones (dense llama, qwen2 and
     * qwen3): after token t the model predicts a seeded successor of t with a margin of
     * several logits that 4-bit rounding keeps, so the files of one seed at any precision
     * agree on most greedy tokens (a meaningful draft model). See mkmodel.c. */
    bool calibrated;
} mkmodel_opts;

/* Writes the model to path. 0 or a negative errno with the reason in err. */
int mkmodel_write(const mkmodel_shape *s, int ftype, const mkmodel_opts *o, const char *path,
                  llmfs_error *err);

#endif
