/* kv.h — the key/value cache: n_seq sequences (slots) of n_ctx cells each.
 *
 * Cell (seq, pos) is row seq*n_ctx + pos of each layer's K and V matrices, so a
 * sequence's cache is contiguous and attention over it is one strided scan. Rows are
 * the layer's n_head_kv*head_dim elements of type_k / type_v (f16, q8_0 or q4_0): layers
 * of different kinds (Gemma's sliding-window and full layers) have their own sizes, and a
 * layer that reuses an earlier layer's cache (shared KV) has none. Each layer's storage
 * lives on the backend that computes that layer.
 */
#ifndef LLMFS_KV_H
#define LLMFS_KV_H

#include "backend.h"
#include "llmfs.h"

typedef struct model model;

struct kv_layer {
    void *k, *v;       /* [n_seq*n_ctx][n_embd_kv] of type_k / type_v, in be's memory */
    backend *be;
    size_t k_row, v_row; /* bytes per row */
    int n_embd_kv, head_dim; /* elements per row, per head; 0 (and k, v NULL): shared KV layer */
};

struct kv_cache {
    int n_layer, n_ctx, n_seq;
    int n_embd_kv, head_dim; /* the largest over the layers */
    int type_k, type_v;
    /* Block sizes of the Hadamard rotation applied to K (V) before a quantized cache
     * (backend op hadamard), 0 for none. As llama.cpp: for a quantized type when head_dim
     * is a multiple of 64; K by the largest power of two dividing head_dim, V by 64. The
     * forward pass rotates q and k (v, and the attention output back); backends store
     * and attend as usual. */
    int rot_k, rot_v;
    struct kv_layer *layer;
    int *seq_len;      /* [n_seq] cells holding valid entries, host bookkeeping */
};

/* -ENOMEM with the size that failed; -EINVAL for an unsupported type or a row length
 * that is not a multiple of the type's block. */
kv_cache *kv_cache_alloc(const model *m, int n_ctx, int n_seq, int type_k, int type_v,
                         llmfs_error *err);
void kv_cache_free(kv_cache *kv);
size_t kv_cache_bytes(const kv_cache *kv);
/* Bytes of layer il's keys and values (0 for a layer that shares another's cache). */
size_t kv_layer_bytes(const kv_cache *kv, int il);
/* Forgets cells >= n of sequence seq (0 clears it). */
void kv_seq_keep(kv_cache *kv, int seq, int n);

#endif
