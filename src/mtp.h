/* mtp.h — MTP (multi-token prediction) drafters for speculative decoding.
 *
 * An MTP drafter is a small model that reads the target model's final hidden states
 * instead of re-reading the text: after each target forward pass it is given the batch's
 * hidden rows (process), it drafts a short chain from the last token, its position and
 * the hidden state of the position before (draft), and it learns how many drafts the
 * target kept (accept). The loop around it (scheduler.c, and llama.cpp's draft-mtp):
 *
 *   target decodes [T, D1..Dk] at n_past..n_past+k, hidden rows h[0..k]
 *   process(seq, [T, D1..Dk], n_past, h)   the MTP cache gets those positions
 *   the target accepts A drafts; the next token X sits at n_past + A + 1
 *   accept(seq, n_past, A)                  positions past n_past + A are forgotten
 *   draft(seq, X, n_past + A + 1)           chain from (X, h of position n_past + A)
 *
 * Each implementation keeps its own per-sequence state (cache, hidden rows); a rejected
 * draft leaves none of it behind. One implementation so far: the nextn block of the
 * hybrid Qwen files (qwen35, qwen35moe, qwen3next), in the same file as the target or in
 * a separate MTP file; another kind plugs in behind the same calls.
 */
#ifndef LLMFS_MTP_H
#define LLMFS_MTP_H

#include "kv.h"
#include "llmfs.h"
#include "model.h"
#include "spec.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct mtp_drafter mtp_drafter;

/* What every kind of MTP drafter does (mtp_* below call these). */
typedef struct mtp_ops {
    const char *kind;
    void (*free)(mtp_drafter *d);
    int (*resize)(mtp_drafter *d, int n_ctx, int n_seq, llmfs_error *err);
    int (*process)(mtp_drafter *d, int seq, const int32_t *tok, int pos0, int n, const float *hidden,
                   bool flash, llmfs_error *err);
    int (*draft)(mtp_drafter *d, int seq, int32_t last, int pos, int n_max, float p_min, int32_t *out,
                 float *margin, bool flash, llmfs_error *err);
    void (*accept)(mtp_drafter *d, int seq, int pos0, int n_accepted);
    void (*keep)(mtp_drafter *d, int seq, int n);
    void (*pin)(mtp_drafter *d, int seq, int pos); /* NULL: nothing to keep */
    const model *(*model)(const mtp_drafter *d);
    const kv_cache *(*kv)(const mtp_drafter *d);
} mtp_ops;

struct mtp_drafter {
    const mtp_ops *ops;
};

/* The nextn head of the target (loaded from target_path, the target's own file, when
 * path is NULL or empty; else from the MTP file at path). -EINVAL with a one-line reason
 * when the file has no MTP head, or the MTP file does not match the target (architecture,
 * hidden size, vocabulary); -ENOENT, -ENOMEM as model_load. */
mtp_drafter *mtp_load(const char *path, const char *target_path, const model *target, const spec_drafter_opts *o,
                      llmfs_error *err);
/* Gemma 4's assistant model at path (spec_draft_model) as the drafter of target (src/mtp_gemma.c):
 * it reads the target's cache, *target_kv (the engine's pointer to it, which a resize
 * replaces). -EINVAL with a one-line reason when path is empty or the pair does not
 * match; -ENOENT, -ENOMEM. */
mtp_drafter *mtp_assistant_load(const char *path, const model *target, kv_cache *const *target_kv,
                                const spec_drafter_opts *o, llmfs_error *err);
void mtp_free(mtp_drafter *d);
/* A new cache for n_ctx x n_seq; every sequence is forgotten. On failure the old one stays. */
int mtp_resize(mtp_drafter *d, int n_ctx, int n_seq, llmfs_error *err);

/* After a target forward pass: tokens tok[0..n) of sequence seq at positions pos0.. and
 * the target's final hidden rows hidden [n][n_embd] of them (host memory). Whatever the
 * sequence held at pos0 and after is replaced. A sequence whose earlier positions are
 * missing (a gap) is left alone: it drafts nothing until it is filled again from 0. */
int mtp_process(mtp_drafter *d, int seq, const int32_t *tok, int pos0, int n, const float *hidden, bool flash,
                llmfs_error *err);
/* Up to n_max drafts for the positions after `last` (the token at pos, not yet given to
 * process) into out, and the top-1 minus top-2 logit of each into margin (NULL: not
 * wanted). The chain stops before a draft whose probability is below p_min (0: never;
 * llama.cpp's draft-mtp rule, the probability among the head's 10 best candidates, its
 * top-k 10 sampler; kinds without a probability ignore it). The chain leaves no trace.
 * Returns the drafts made (0 when the sequence does not hold positions 0..pos-1), or a
 * negative errno. */
int mtp_draft(mtp_drafter *d, int seq, int32_t last, int pos, int n_max, float p_min, int32_t *out, float *margin,
              bool flash, llmfs_error *err);
/* The target kept n_accepted drafts of the batch processed from pos0: positions after
 * pos0 + n_accepted are forgotten, and the next draft reads the hidden state of that one. */
void mtp_accept(mtp_drafter *d, int seq, int pos0, int n_accepted);
/* Keeps positions 0..n-1 of sequence seq (0 forgets it): the target's slot was cut back. */
void mtp_keep(mtp_drafter *d, int seq, int n);
/* The target can resume sequence seq after position pos (a checkpoint of its state at
 * pos + 1 cells): the drafter keeps what it needs of that position (the hidden row) even
 * when a long reply follows, so the next prompt from there drafts again. */
void mtp_pin(mtp_drafter *d, int seq, int pos);
/* The drafter's model and cache (placement, kv and stats). */
const model *mtp_model(const mtp_drafter *d);
const kv_cache *mtp_kv(const mtp_drafter *d);
const char *mtp_kind(const mtp_drafter *d);

#endif
