/* gemma4assistant.h — Gemma 4's MTP drafter ("assistant", arch gemma4-assistant): a
 * small model that proposes the next tokens of a gemma4 target from the target's own
 * state, for speculative decoding.
 *
 * A draft step reads the target's token embedding of its input token, the target's final
 * hidden state (after output_norm, model_forward_hidden) or its own previous output row,
 * and attends with its own queries to the target's KV cache (the target's layers
 * n_layer-2 for its sliding-window layers, n_layer-1 for its full one). It writes no
 * cache: drafting needs no rollback. Every step of one chain runs at the same rope
 * position n_past, against the target cells 0..n_past-1.
 *
 * The server flow this serves (llama.cpp's draft-mtp with a shared cache):
 *   prompt:  model_forward_hidden over the prompt -> gemma4_mtp_process(rows); the first
 *            token is sampled from the last row.
 *   step:    gemma4_assistant_draft(.., id_last, n_past, rows.pending, n_max, drafts);
 *            the target decodes [id_last, drafts] at n_past.. (model_forward_hidden) ->
 *            gemma4_mtp_process(rows); greedy verification accepts n drafts plus one target
 *            token; gemma4_mtp_accept(rows, n); kv_seq_keep(kv, seq, n_past + n + 1).
 */
#ifndef LLMFS_GEMMA4ASSISTANT_H
#define LLMFS_GEMMA4ASSISTANT_H

#include "model.h"

typedef struct gemma4_assistant gemma4_assistant;

/* Loads the drafter at path for target and checks that they belong together. opts: its
 * threads; ngl > 0 places the whole drafter on the GPU, 0 keeps it on the CPU (its
 * attention runs where the target's cache of the layers it reads lives, so it must be
 * placed like those layers); the rest of opts is ignored. NULL with -ENOENT, -ENOMEM, or
 * -EINVAL and a one-line reason in err (a malformed file or a mismatched pair). */
gemma4_assistant *gemma4_assistant_load(const char *path, const model *target, const model_opts *opts,
                                        llmfs_error *err);
void gemma4_assistant_free(gemma4_assistant *a);
/* The drafter as a model (its hyperparameters, weights and placement). */
const model *gemma4_assistant_model(const gemma4_assistant *a);

/* Bytes of the drafter's weights (it keeps no cache of its own: it reads the target's). */
uint64_t gemma4_assistant_weight_bytes(const gemma4_assistant *a);
/* One line for placement and kv listings: the drafter's layers, weight bytes and device,
 * and the target layers whose cache it reads. Returns the length snprintf would write. */
int gemma4_assistant_describe(const gemma4_assistant *a, const model *target, char *buf, size_t cap);

/* For fit, before loading: the bytes the drafter at path takes on the GPU (gpu) or in
 * host memory (its weights, the tied output head included, and its scratch), from the
 * file's tensor table. It keeps no cache. 0, or a negative errno with the reason. */
int gemma4_assistant_plan(const char *path, bool gpu, uint64_t *bytes, llmfs_error *err);

/* Whether drafter d (loaded as gemma4-assistant) fits target t: the vocabulary,
 * embedding_length_out = t's n_embd, and the head size, KV heads, rope and window of each
 * drafter layer equal to those of the target layer it reads. 0, or -EINVAL with the
 * reason. */
int gemma4_assistant_check(const model *d, const model *t, llmfs_error *err);

/* One drafter row: input token `token` at rope position pos with input hidden row h
 * [n_embd_out] (host), attending to target cells 0..pos-1 of sequence seq of kv (the
 * target's cache, which must hold them: pos <= kv->seq_len[seq], pos >= 1). Writes the
 * row's logits [n_vocab] (when logits is not NULL), its argmax (lowest id on ties) to
 * *id, and its output hidden row h_next [n_embd_out] (the next step's input; NULL:
 * not wanted), all host memory. 0 or a negative errno with the reason. */
int gemma4_assistant_step(gemma4_assistant *a, const model *target, const kv_cache *kv, int seq, int32_t token,
                          int pos, const float *h, bool flash_attn, float *logits, int32_t *id, float *h_next,
                          llmfs_error *err);

/* A chain of n_max greedy drafts at position n_past: step 0 reads (id_last, h_prev), the
 * target's hidden row of position n_past-1; step k reads (draft k-1, step k-1's output
 * row). Writes the drafts to out [n_max]; logits [n_max][n_vocab] and h_next
 * [n_max][n_embd_out] when not NULL. Returns n_max or a negative errno with the reason. */
int gemma4_assistant_draft(gemma4_assistant *a, const model *target, const kv_cache *kv, int seq, int32_t id_last,
                           int n_past, const float *h_prev, int n_max, bool flash_attn, int32_t *out, float *logits,
                           float *h_next, llmfs_error *err);

/* The target's hidden rows of one sequence between its decodes (llama.cpp's
 * process/accept): the rows of the last target batch, and the pending row a draft chain
 * starts from. */
typedef struct gemma4_mtp_rows {
    int width;        /* floats per row: the target's n_embd */
    int n, cap;       /* rows held */
    float *h;         /* [cap][width] the last batch's rows */
    float *pending;   /* [width] the hidden state of the last accepted position */
    bool has_pending;
} gemma4_mtp_rows;

/* After every target decode of the sequence: keeps its n rows h [n][width] and makes the
 * last one pending. 0 or -ENOMEM. */
int gemma4_mtp_process(gemma4_mtp_rows *r, const float *h, int n);
/* After verification with n_accepted drafts accepted: the pending row becomes row
 * n_accepted of the verification batch (the state that predicted the next id_last). */
void gemma4_mtp_accept(gemma4_mtp_rows *r, int n_accepted);
void gemma4_mtp_rows_free(gemma4_mtp_rows *r);

#endif
