/* spec.h — speculative decoding: cheap drafts of the next tokens, checked by the target
 * model in one batch.
 *
 * A step of a speculating session evaluates [last token, d1..dk] in the target's batched
 * forward pass and gets k+1 rows of logits: row j is what the target predicts after d_j
 * (row 0 after the last token). Drafts are taken while the target agrees with them; the
 * first row that disagrees (or row k when all agree) gives one more token of the
 * target's own, so every step yields between 1 and k+1 tokens and the output is exactly
 * what decoding one token at a time would give. The scheduler (scheduler.c) owns the
 * batch and the rollback of rejected positions; this module drafts and decides.
 *
 * Drafters: n-gram (prompt lookup: the tokens that followed the last n tokens' most
 * recent earlier occurrence in the sequence) and a draft model (a smaller GGUF with the
 * same vocabulary, decoded greedily with its own KV cache, one sequence per target slot).
 *
 * Acceptance. Greedy: a draft is accepted when it is the target's argmax. Sampling: the
 * drafts are deterministic (greedy or copied), i.e. a proposal distribution q that is
 * one-hot at the draft x, so the speculative-sampling rule "accept with min(1, p(x)/q(x)),
 * else draw from the residual max(0, p - q) renormalised" becomes "accept with p(x), else
 * draw from p with x removed": the token's distribution is exactly p, the target's.
 */
#ifndef LLMFS_SPEC_H
#define LLMFS_SPEC_H

#include "kv.h"
#include "llmfs.h"
#include "model.h"
#include "tokenizer.h"

#include <stdbool.h>
#include <stdint.h>

/* spec_type: which drafters a model uses (bit mask; both: n-gram first, the draft model
 * when the n-gram finds nothing). SPEC_MTP: the model's MTP head (mtp.h), alone. */
enum { SPEC_NGRAM = 1, SPEC_DRAFT = 2, SPEC_MTP = 4 };

/* ---- n-gram drafting ---- */

/* Looks the last ngram_n tokens of toks[0..n) up earlier in toks; when they occur at
 * least min_hits times, copies up to n_max tokens that followed the most recent
 * occurrence into out (a continuation running into the end of toks goes on with the
 * drafts themselves, so a repeating cycle is drafted whole). Returns the drafts made. */
int spec_ngram_draft(const int32_t *toks, int n, int ngram_n, int min_hits, int n_max, int32_t *out);

/* ---- acceptance ---- */

/* Greedy: the drafts accepted, i.e. the length of the prefix of drafts[0..k) that equals
 * the target's choices target_ids[0..k) (target_ids[j]: argmax of row j). */
int spec_accept_greedy(const int32_t *drafts, int k, const int32_t *target_ids);

/* Sampling, one row: p [n_vocab] is the target's distribution (sampler_probs), x the
 * draft, u and v two uniform draws in [0, 1). Returns x when accepted (u < p(x)), else a
 * token drawn with v from p with x removed; p is changed (x's entry zeroed). */
int32_t spec_accept_sampled(float *p, int n_vocab, int32_t x, double u, double v);

/* A token drawn with u in [0, 1) from weights w [n] (need not sum to 1); the last
 * positive one when rounding leaves u past the end. */
int32_t spec_draw(const float *w, int n, double u);

/* ---- the draft model ---- */

typedef struct spec_drafter_opts {
    int ngl;          /* layers on the GPU, as the ngl setting */
    int n_threads;    /* <= 0: the physical cores */
    int type_k, type_v; /* cache tensor types (T_F16, T_Q8_0, T_Q4_0) */
    int n_ctx, n_seq; /* as the target's KV cache */
    int n_ubatch;
} spec_drafter_opts;

typedef struct spec_drafter spec_drafter;

/* Loads the draft model at path for a target using tokenizer target_tok. -EINVAL with a
 * one-line reason when its vocabulary differs from the target's (the text of an id both
 * have differs), -ENOENT, -ENOMEM (also: its KV cache does not fit), as model_load. */
spec_drafter *spec_drafter_load(const char *path, const tokenizer *target_tok, int target_n_vocab,
                                const spec_drafter_opts *o, llmfs_error *err);
void spec_drafter_free(spec_drafter *d);
/* A new KV cache for n_ctx x n_seq (the target's changed); every sequence is forgotten.
 * On failure the old one stays. */
int spec_drafter_resize(spec_drafter *d, int n_ctx, int n_seq, llmfs_error *err);
/* The draft model and its cache (for placement, kv and stats). */
const model *spec_drafter_model(const spec_drafter *d);
const kv_cache *spec_drafter_kv(const spec_drafter *d);

/* model_vram_bytes of a model that may be absent (NULL: 0). */
static inline uint64_t model_vram_bytes_or0(const model *m)
{
    return m ? model_vram_bytes(m) : 0;
}

/* The same text for every id both tokenizers have: 0, or -EINVAL with the first
 * difference in err. */
int spec_vocab_check(const tokenizer *target, const tokenizer *draft, llmfs_error *err);

/* One sequence to draft for. */
typedef struct spec_draft_req {
    int seq;               /* the target's KV slot, the draft's sequence too */
    const int32_t *toks;   /* the session's tokens so far: [n_toks] */
    int n_toks;
    int n_max;             /* drafts wanted: n_toks + n_max - 1 <= the cache's n_ctx */
    int32_t *out;          /* [n_max] */
    int n_out;             /* drafts made */
} spec_draft_req;

/* Drafts for every request, batching the sequences together: brings each sequence of
 * the draft's cache up to toks (keeping the prefix it already holds), then decodes
 * greedily up to n_max tokens, stopping a sequence early where its top probability is
 * below p_min (0: never) or it draws an id the target does not have. Not thread-safe;
 * one call at a time. 0 or a negative errno (err says why; no drafts then). */
int spec_drafter_run(spec_drafter *d, spec_draft_req *reqs, int n, float p_min, bool flash_attn,
                     llmfs_error *err);

#endif
