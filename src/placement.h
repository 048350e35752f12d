/* placement.h — which device holds each weight, chosen before anything is loaded.
 *
 * The inputs are the tensor table (name, bytes) and the controls a user sets: ngl,
 * override_tensor, n_cpu_moe, and fit with its budget. The output is a device per
 * tensor plus totals and, for fit, the reasoning as text. Nothing here touches a GPU:
 * the free VRAM is an input, so fit decisions are testable on any machine.
 *
 * Precedence, lowest to highest: ngl (the last N repeating layers on the GPU; more than
 * the layer count also places the output), n_cpu_moe (experts of the first N layers
 * back to the CPU), override_tensor (first matching pattern wins). fit, when on, chooses
 * ngl and n_cpu_moe itself and then applies override_tensor like the rest.
 */
#ifndef LLMFS_PLACEMENT_H
#define LLMFS_PLACEMENT_H

#include "llmfs.h"

enum place_device { PLACE_CPU = 0, PLACE_GPU = 1 };

/* What a tensor is for, derived from its name; fit spills groups in this order's reverse. */
enum place_group {
    PG_EMBD,        /* token_embd: always on the CPU (a lookup, not a matmul) */
    PG_OUTPUT,      /* output, output_norm */
    PG_ATTN,        /* attention weights, norms, biases of a layer */
    PG_FFN,         /* dense feed-forward of a layer, MoE router, shared experts */
    PG_EXPS,        /* routed experts of a layer (ffn_*_exps) */
};

typedef struct place_tensor {
    const char *name;
    uint64_t bytes;
    int layer;              /* -1 outside the repeating layers */
    enum place_group group; /* from the name (place_classify) */
    enum place_device device; /* the decision */
} place_tensor;

typedef struct place_opts {
    int n_layer;
    int ngl;                 /* -1: all layers and the output */
    int n_cpu_moe;
    const char *override_tensor; /* "REGEX=DEVICE[,REGEX=DEVICE...]" or NULL */
    bool fit;
    uint64_t vram_free;      /* bytes the GPU can give; 0: no GPU */
    uint64_t fit_target;     /* headroom to leave, bytes */
    /* Memory the GPU needs besides weights, per GPU layer and in total. */
    uint64_t kv_bytes_per_layer;   /* for fit_ctx tokens */
    uint64_t compute_bytes;        /* scratch and output buffers */
    /* Large prompt batches stream host-resident feed-forward weights to the GPU (offload_batch
     * not 0): two layers of them in flight, plus a repacking buffer. */
    bool stream;
} place_opts;

typedef struct place_result {
    int ngl, n_cpu_moe;          /* effective (as chosen by fit, or as given) */
    uint64_t bytes_cpu, bytes_gpu;   /* weights */
    uint64_t stream_bytes;       /* the streaming slots, 0 when nothing streams */
    uint64_t gpu_total;          /* weights + KV + compute + stream on the GPU */
    int64_t headroom;            /* vram_free - gpu_total (bytes, may be negative) */
    char text[512];              /* the decision in words, "" without fit */
    char flags[256];             /* the equivalent explicit settings */
} place_result;

/* Layer and group of a GGUF tensor name ("blk.12.ffn_up_exps.weight" -> 12, PG_EXPS). */
void place_classify(place_tensor *t);

/* Checks the override list without applying it: -EINVAL with the bad item named. */
int place_parse_overrides(const char *spec, llmfs_error *err);

/* Decides t[i].device for every tensor. -EINVAL for a bad override list; -ENOMEM when
 * fit finds no placement that fits (err says by how much). */
int place_decide(place_tensor *t, int n, const place_opts *o, place_result *res, llmfs_error *err);

/* Device scratch the forward pass needs for a micro-batch of n_ubatch tokens (bytes):
 * activations, logits, attention scores without flash attention, and the backend's
 * dequantization slab. fit's compute_bytes estimate. */
uint64_t place_compute_bytes(int n_embd, int n_ff, int n_head, int head_dim, int n_vocab,
                             int n_ubatch, int n_ctx, bool flash);

#endif
