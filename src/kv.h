/* kv.h — the key/value cache: n_seq sequences (slots) of n_ctx cells each.
 *
 * Cell (seq, pos) is row seq*n_cells + pos % n_cells of each layer's K and V matrices,
 * so a sequence's cache is contiguous and attention over it one strided scan (two where
 * a ring wraps). A full-attention layer has n_cells = n_ctx; a sliding-window layer that
 * sees only its last n_swa positions keeps a ring of n_swa + swa_slack cells (when that
 * is less than n_ctx), so a long context costs what the full layers need: a micro-batch
 * may then hold at most swa_slack tokens, and a sequence can be cut back by at most
 * swa_slack cells below the furthest position it reached (model.c and kv_seq_can_keep
 * keep to that). Rows are
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
    int n_cells;       /* rows per sequence: n_ctx, or a sliding-window layer's ring */
};

/* A recurrent (Gated DeltaNet) layer's per-sequence state, in be's memory: no K/V. */
struct kv_state_layer {
    float *conv;       /* [n_seq][d_conv-1][conv_dim] the last inputs of the conv, oldest first */
    float *ssm;        /* [n_seq][n_v][d][d] delta state, S_j stored transposed (row = value dim) */
    backend *be;       /* NULL for an attention layer */
    /* per-token snapshots (kv_snapshots_alloc): [n_seq][n_snap] states as above, NULL none */
    float *conv_snap, *ssm_snap;
    const int32_t *snap_from_be; /* [n_seq] the cache's snap_from in be's memory (a device's ops read it there) */
};

/* A copy of one sequence's recurrent state (every recurrent layer) in host memory, taken
 * after its first n_tokens cells: a recurrent state cannot be cut back to an earlier
 * length, so a prefix is resumed from a checkpoint at or below it. */
typedef struct kv_checkpoint {
    int seq, n_tokens;
    float *data;       /* conv then ssm of each recurrent layer in order */
    uint64_t used;     /* for replacing the least recently used */
} kv_checkpoint;

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
    /* Rings of sliding-window layers: 0 when every layer keeps n_ctx cells, else the
     * cells a ring holds beyond its window (the most tokens of a micro-batch, and the
     * furthest a sequence can be cut back); seq_top [n_seq]: the furthest position + 1
     * each sequence reached since it was last cleared (a ring holds the cells below it). */
    int swa_slack;
    int *seq_top;
    /* recurrent layers (hybrid models): state[il].be set for those; NULL without any */
    struct kv_state_layer *state;
    int n_recurrent;
    size_t conv_floats, ssm_floats;   /* per sequence, per recurrent layer */
    kv_checkpoint *ckpt;              /* [max_ckpt] host copies; n_tokens 0 = free */
    int max_ckpt;
    uint64_t ckpt_clock;
    /* Per-token snapshots of the recurrent state, for speculative verification: n_snap
     * states per sequence and recurrent layer (0: none). A sequence armed at position
     * snap_from[seq] (-1: not armed) has ssm_conv and gated_delta write the state after
     * each of its tokens at positions snap_from .. snap_from + n_snap - 1 to slot
     * pos - snap_from; snap_top[seq] is one past the last position written. kv_seq_keep
     * can then cut the sequence back to any of those positions exactly, and disarms it. */
    int n_snap;
    int32_t *snap_from, *snap_top;
    struct {
        backend *be;
        int32_t *p;    /* [n_seq] snap_from, in be's memory */
    } snap_dev[4];     /* one copy per backend holding recurrent layers */
    int n_snap_dev;
};

/* -ENOMEM with the size that failed; -EINVAL for an unsupported type or a row length
 * that is not a multiple of the type's block. Every layer keeps n_ctx cells. */
kv_cache *kv_cache_alloc(const model *m, int n_ctx, int n_seq, int type_k, int type_v,
                         llmfs_error *err);
/* The same with rings for the sliding-window layers, swa_slack cells beyond the window
 * (the largest micro-batch the forward pass will then make); 0: full layers everywhere. */
kv_cache *kv_cache_alloc_swa(const model *m, int n_ctx, int n_seq, int type_k, int type_v, int swa_slack,
                             llmfs_error *err);
/* The slack of a model's sliding-window rings for a micro-batch of ubatch tokens: the
 * micro-batch, at least 64 so a speculative step's drafts can always be taken back; 0
 * (no rings) with swa_full. The engine allocates by it and fit counts by it. */
static inline int kv_swa_slack(int ubatch, bool swa_full)
{
    return swa_full ? 0 : ubatch > 64 ? ubatch : 64;
}
/* The row of cell (seq, pos) in layer il's K and V matrices. */
static inline size_t kv_row(const kv_cache *kv, int il, int seq, int pos)
{
    int nc = kv->layer[il].n_cells;
    return (size_t)seq * (size_t)nc + (size_t)(pos % nc);
}
/* Records that the forward pass wrote cells up to position pos of sequence seq. */
void kv_seq_wrote(kv_cache *kv, int seq, int pos);
void kv_cache_free(kv_cache *kv);
size_t kv_cache_bytes(const kv_cache *kv);
/* Bytes of layer il's keys and values (0 for a layer that shares another's cache or a
 * recurrent layer). */
size_t kv_layer_bytes(const kv_cache *kv, int il);
/* Forgets cells >= n of sequence seq (0 clears it). With recurrent layers the state
 * cannot be cut back: keeping n below the sequence's length (and above 0) restores the
 * newest checkpoint of seq at or below n and keeps that many cells instead; without one
 * the sequence is cleared. With rings, n more than swa_slack below the furthest position
 * the sequence reached clears it (the window before n is overwritten). Returns the cells
 * kept. */
int kv_seq_keep(kv_cache *kv, int seq, int n);
/* The cells kv_seq_keep(kv, seq, n) would keep, without changing anything. */
int kv_seq_can_keep(const kv_cache *kv, int seq, int n);

/* ---- recurrent state (hybrid models) ---- */

/* Bytes of recurrent state per sequence (0 without recurrent layers). */
size_t kv_state_bytes(const kv_cache *kv);
/* Bytes of per-token snapshots of it per sequence (kv_snapshots_alloc; 0 none). */
size_t kv_snap_bytes(const kv_cache *kv);
/* Saves sequence seq's recurrent state as it is now (at seq_len[seq] cells) as a
 * checkpoint, replacing one at the same length or the least recently used. 0, or
 * -ENOMEM; nothing to do without recurrent layers. */
int kv_checkpoint_save(kv_cache *kv, int seq);
/* Checkpoints held for sequence seq (-1: all). */
int kv_checkpoint_count(const kv_cache *kv, int seq);
/* Forgets sequence seq's checkpoints (-1: all). */
void kv_checkpoint_drop(kv_cache *kv, int seq);

/* Room for n_snap per-token snapshots per sequence on every recurrent layer (replacing
 * any earlier ones). 0; -ENOTSUP when a recurrent layer's backend cannot write them;
 * -ENOMEM. Nothing to do without recurrent layers. */
int kv_snapshots_alloc(kv_cache *kv, int n_snap, llmfs_error *err);
/* Arms sequence seq: its next tokens at positions pos .. pos + n_snap - 1 keep their
 * states, so that kv_seq_keep can return to any of them. false without snapshots. */
bool kv_snap_arm(kv_cache *kv, int seq, int pos);
/* The snapshot slot of a token of seq at pos, -1 none (what the ops write). */
static inline int kv_snap_slot(const kv_cache *kv, int seq, int pos)
{
    if (!kv->n_snap || kv->snap_from[seq] < 0)
        return -1;
    int s = pos - kv->snap_from[seq];
    return s >= 0 && s < kv->n_snap ? s : -1;
}

#endif
