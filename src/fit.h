/* fit.h — choosing ngl, n_cpu_moe and the context before a model loads, so that the
 * weights, the KV cache and the scratch buffers fit the GPU with fit_target to spare.
 *
 * Works from the GGUF header and tensor table alone (placement.h decides per tensor).
 * The KV cache is sized for ctx x parallel cells; when that leaves layers on the CPU,
 * the context is halved (not below fit_ctx) while that brings more layers onto the GPU.
 * A draft model for speculative decoding takes its weights and its own KV cache (for the
 * same context and sequences) off the GPU memory first.
 */
#ifndef LLMFS_FIT_H
#define LLMFS_FIT_H

#include "llmfs.h"

typedef struct fit_input {
    const char *path;
    int ctx, parallel, fit_ctx, ubatch;
    int type_k, type_v;           /* enum ggml_type */
    bool flash;
    bool swa_full;                /* sliding-window layers keep the whole context (no rings) */
    int n_cpu_moe;                /* as set (fit may raise it) */
    int offload_batch;            /* as the setting: 0 never streams (no room kept for it) */
    const char *override_tensor;  /* or NULL */
    uint64_t vram_free;           /* bytes the GPU may use */
    uint64_t fit_target;          /* bytes to leave free */
    int n_snap;                   /* speculation on a hybrid model: recurrent states kept per
                                   * sequence beside the live one (kv_snapshots_alloc), 0 none */
    /* A vision projector (an mmproj file, or NULL) to run where the text layers run: its
     * weights and the buffers of one image of image_max_tokens (<= 0: the file's limit)
     * are kept out of vram_free before the layers are placed. */
    const char *mmproj;
    int image_max_tokens;
    /* A draft model bound for the GPU (spec_draft_model with spec_draft_ngl not 0), or
     * NULL: its weights and its KV cache (ctx x parallel cells of draft_type_k/v, as the
     * engine sizes it) come off vram_free before the target is placed. A draft that
     * cannot be opened counts nothing (it will be refused at load; the target serves
     * without it). */
    const char *draft_path;
    int draft_type_k, draft_type_v;
} fit_input;

typedef struct fit_output {
    int ngl, n_cpu_moe, ctx;
    uint64_t projector_bytes;     /* kept for the projector (weights + buffers), 0 without */
    uint64_t gpu_bytes;           /* the GPU memory planned: layers, KV, scratch, projector */
    uint64_t draft_bytes;         /* the draft model's share at ctx: weights and KV cache */
    char text[768];               /* the decision in words */
} fit_output;

/* 0, or a negative errno with err filled (-ENOENT, -EINVAL for the file or overrides). */
int fit_plan(const fit_input *in, fit_output *out, llmfs_error *err);

#endif
