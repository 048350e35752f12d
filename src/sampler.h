/* sampler.h — choosing the next token from logits.
 *
 * Order, as llama.cpp's default chain: repeat penalty over the last n tokens, top-k,
 * top-p, min-p, temperature, then a draw from the seeded generator. temp <= 0 is greedy
 * (argmax, lowest id on ties). Deterministic for a given seed and logits.
 */
#ifndef LLMFS_SAMPLER_H
#define LLMFS_SAMPLER_H

#include <stdbool.h>
#include <stdint.h>

typedef struct sampler_params {
    float temp;            /* <= 0: greedy */
    int top_k;             /* <= 0: off */
    float top_p;           /* >= 1: off */
    float min_p;           /* <= 0: off */
    float repeat_penalty;  /* 1: off */
    int repeat_last_n;     /* tokens of history the penalty looks at */
    uint64_t seed;
} sampler_params;

/* The family's recommended defaults, by GGUF architecture and model name
 * (Qwen3: 1.0/40/0.95/0.01; Gemma: 1.0/64/0.95/0; gpt-oss: 1.0/100/1.0/0; else 0.8/40/0.95/0.05). */
void sampler_defaults(const char *arch, const char *model_name, sampler_params *p);

typedef struct sampler sampler;
sampler *sampler_new(const sampler_params *p, int n_vocab);
void sampler_free(sampler *s);
void sampler_reseed(sampler *s, uint64_t seed);
/* Picks a token. history: previously seen tokens, oldest first. logits are not modified. */
int32_t sampler_sample(sampler *s, const float *logits, const int32_t *history, int n_history);
/* The distribution sampler_sample draws from, as probabilities [n_vocab] (0 for the
 * tokens the filters drop; greedy: 1 at the argmax). Draws nothing. */
void sampler_probs(sampler *s, const float *logits, const int32_t *history, int n_history, float *probs);
/* One draw in [0, 1) from the sampler's generator (speculative acceptance tests). */
double sampler_uniform(sampler *s);
/* True when sampler_sample is the plain argmax of the logits (greedy, no penalty), so
 * the choice can be made where the logits are, without copying them. */
bool sampler_is_argmax(const sampler *s);
/* Argmax, lowest id on ties. */
int32_t sampler_argmax(const float *logits, int n);

#endif
