/* fixture.h — the ../shared/fixtures cases (llama.cpp reference tokens, logits and
 * greedy continuations), loaded once for the model tests on every backend. */
#ifndef LLMFS_TEST_FIXTURE_H
#define LLMFS_TEST_FIXTURE_H

#include "kv.h"
#include "model.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct fixture {
    char name[320];       /* "model/case" */
    char model[1024];     /* path of the GGUF */
    char arch[32];        /* meta.txt's arch */
    char wtype[16];       /* the model file's weight type: "q8_0", "iq4_xs", "f32" for stories260K */
    char kind[16];        /* "logits", or the case's kind prefix: "mtp", "vision" */
    int ctk, ctv;
    bool flash;
    int n_vocab, n_tok, n_greedy;
    int32_t *tok, *greedy;
    float *margin;        /* [n_greedy] */
    float *ref;           /* [n_tok][n_vocab] */
    double tol;
} fixture;

/* Every case under <shared>/fixtures that llmfs runs, sorted by model then case, into
 * *cases (malloc'd); returns the count. Cases that tests/unsupported.c names are left
 * out, each said loudly with its reason; vision-* cases too (tests/test_vision.c runs
 * them: they need an image and a projector), and mtp-* cases (tests/test_mtp.c). Exits with a message if a case is incomplete.
 * $LLMFS_FIXTURES, an extended regular expression, keeps only the cases whose
 * "model/case" name matches (said loudly). */
int fixtures_load(fixture **cases);

/* Architecture, weight type and kind of the case in directory dir (name "model/case"),
 * from its meta.txt; -1 when it has none. */
int fixture_describe(const char *dir, const char *name, char arch[32], char wtype[16], char kind[16]);
/* The relative RMS tolerance of a model file (its name: "llama-tiny-q8_0.gguf") with K
 * cache type ctk ("f16", "q8_0"), from ../shared/README.md's tables. */
double fixture_tolerance(const char *model_file, const char *ctk);

/* tests/unsupported.c: why a case (its arch, weight type, kind) or a tokenizer vector set
 * (its file name) is not run yet, or NULL when it is; and the loud line saying so. */
const char *fixture_unsupported(const char *arch, const char *wtype, const char *kind);
const char *vocab_unsupported(const char *vectors);
void test_say_skip(const char *what, const char *why);

/* Helpers the model tests share, on any backend; each fails the running Check test. */

kv_cache *test_kv_cache(model *m, int n_ctx, int n_seq, int tk, int tv);
/* Evaluates tok[0..n) of sequence seq from position pos0 in calls of `step` tokens,
 * all logits requested, into out [n][V]. */
void fixture_eval(model *m, kv_cache *kv, const int32_t *tok, int n, int seq, int pos0, int step,
                  bool flash, float *out);
/* Relative RMS error of a row of logits against a reference row. */
double logits_rel_rms(const float *a, const float *ref, int n);
/* The gap between the largest and the second largest logit. */
float logits_top2_margin(const float *x, int n);
/* Prompt positions of out [n_tok][V] against the reference: returns the largest
 * relative RMS error, failing beyond tol or on an argmax change where the margin is
 * clear. */
double fixture_check_prompt(const fixture *f, const float *out, double tol, const char *what);
/* Greedy steps of out [n_tok + n_greedy - 1][V]: argmax at position n_tok - 1 + j must be
 * greedy[j] where the reference's margin exceeds 0.5, or more when out carries a relative
 * RMS noise against llama.cpp (what fixture_check_prompt measured; 0: none) that could
 * flip a smaller margin. Returns how many steps were checked. */
int fixture_check_greedy(const fixture *f, const float *out, double noise, const char *what);
/* tokens + greedy[:-1], malloc'd; *n its length. */
int32_t *fixture_full_sequence(const fixture *f, int *n);
/* Room for n rows of logits. */
float *fixture_logits_buf(const fixture *f, int n);

#endif
