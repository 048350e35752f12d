/* sampler.c — repeat penalty, top-k, top-p, min-p, temperature and a seeded draw.
 *
 * Cost per token is O(n_vocab) plus O(k log k): top-k selects with a k-sized heap rather
 * than sorting the vocabulary, and without top-k, min-p prunes before anything is
 * sorted (min-p and top-p both keep a prefix of the sorted order, so the min-p cut can
 * be taken first without changing the result). Only top-p alone sorts everything.
 */
#include "sampler.h"

#include <ctype.h>
#include <stdbool.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct cand {
    float logit;
    int32_t id;
} cand;

struct sampler {
    sampler_params p;
    int n_vocab;
    uint64_t rng[4];
    float *work;      /* penalised copy of the logits */
    cand *cands;      /* [n_vocab] */
    uint8_t *seen;    /* [n_vocab] marks for the penalty's distinct tokens */
};

/* ---- generator: xoshiro256** seeded through splitmix64 ---- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t r = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform in [0, 1). */
static double rng_uniform(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

void sampler_reseed(sampler *s, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        s->rng[i] = splitmix64(&x);
    s->p.seed = seed;
}

/* ---- defaults ---- */

static bool has_prefix_ci(const char *s, const char *prefix)
{
    for (; *prefix; s++, prefix++)
        if (tolower((unsigned char)*s) != *prefix)
            return false;
    return true;
}

static bool contains_ci(const char *s, const char *needle)
{
    for (; s && *s; s++)
        if (has_prefix_ci(s, needle))
            return true;
    return false;
}

void sampler_defaults(const char *arch, const char *model_name, sampler_params *p)
{
    if (!arch)
        arch = "";
    *p = (sampler_params){.temp = 0.8f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                          .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 0};
    if (has_prefix_ci(arch, "qwen3") || contains_ci(model_name, "qwen3")) {
        p->temp = 1.0f, p->top_k = 40, p->top_p = 0.95f, p->min_p = 0.01f;
    } else if (has_prefix_ci(arch, "gemma") || contains_ci(model_name, "gemma")) {
        p->temp = 1.0f, p->top_k = 64, p->top_p = 0.95f, p->min_p = 0.0f;
    } else if (has_prefix_ci(arch, "gpt-oss") || has_prefix_ci(arch, "gptoss") ||
               contains_ci(model_name, "gpt-oss")) {
        p->temp = 1.0f, p->top_k = 100, p->top_p = 1.0f, p->min_p = 0.0f;
    }
}

/* ---- lifetime ---- */

sampler *sampler_new(const sampler_params *p, int n_vocab)
{
    if (n_vocab <= 0)
        return NULL;
    sampler *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->work = malloc(sizeof *s->work * (size_t)n_vocab);
    s->cands = malloc(sizeof *s->cands * (size_t)n_vocab);
    s->seen = calloc((size_t)n_vocab, 1);
    if (!s->work || !s->cands || !s->seen) {
        sampler_free(s);
        return NULL;
    }
    sampler_reseed(s, p->seed);
    return s;
}

void sampler_free(sampler *s)
{
    if (!s)
        return;
    free(s->work);
    free(s->cands);
    free(s->seen);
    free(s);
}

int32_t sampler_argmax(const float *logits, int n)
{
    int32_t best = 0;
    float bv = n > 0 ? logits[0] : 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > bv || (bv != bv && logits[i] == logits[i])) {
            bv = logits[i];
            best = i;
        }
    return best;
}

/* ---- candidate selection ---- */

/* a ranks before b: higher logit, then lower id. */
static bool ranks_before(const cand *a, const cand *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->id < b->id);
}

static int cand_cmp(const void *pa, const void *pb)
{
    const cand *a = pa, *b = pb;
    if (ranks_before(a, b))
        return -1;
    if (ranks_before(b, a))
        return 1;
    return 0;
}

/* Min-heap by rank: the root is the worst of the k kept. */
static void heap_sift_down(cand *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && ranks_before(&h[w], &h[l]))
            w = l;
        if (r < n && ranks_before(&h[w], &h[r]))
            w = r;
        if (w == i)
            return;
        cand t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static void heap_sift_up(cand *h, int i)
{
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!ranks_before(&h[parent], &h[i]))
            return;
        cand t = h[i];
        h[i] = h[parent];
        h[parent] = t;
        i = parent;
    }
}

/* The k best of l into c, sorted best first; returns k. */
static int select_top_k(const float *l, int n, int k, cand *c)
{
    int m = 0;
    for (int i = 0; i < n; i++) {
        cand x = {l[i], i};
        if (x.logit != x.logit)
            continue;
        if (m < k) {
            c[m] = x;
            heap_sift_up(c, m++);
        } else if (ranks_before(&x, &c[0])) {
            c[0] = x;
            heap_sift_down(c, m, 0);
        }
    }
    qsort(c, (size_t)m, sizeof *c, cand_cmp);
    return m;
}

static void apply_repeat_penalty(sampler *s, const float *logits, const int32_t *hist, int n_hist,
                                 float **out)
{
    int from = n_hist - s->p.repeat_last_n;
    if (from < 0)
        from = 0;
    memcpy(s->work, logits, sizeof *s->work * (size_t)s->n_vocab);
    for (int i = from; i < n_hist; i++) {
        int32_t t = hist[i];
        if (t < 0 || t >= s->n_vocab || s->seen[t])
            continue;
        s->seen[t] = 1;
        float *v = &s->work[t];
        /* dividing a negative score would raise it, so those are multiplied instead */
        *v = *v > 0 ? *v / s->p.repeat_penalty : *v * s->p.repeat_penalty;
    }
    for (int i = from; i < n_hist; i++)
        if (hist[i] >= 0 && hist[i] < s->n_vocab)
            s->seen[hist[i]] = 0;
    *out = s->work;
}

static bool penalty_on(const sampler_params *p)
{
    return p->repeat_penalty != 1.0f && p->repeat_penalty > 0 && p->repeat_last_n > 0;
}

bool sampler_is_argmax(const sampler *s)
{
    return s->p.temp <= 0 && !penalty_on(&s->p);
}

/* The candidates a draw chooses from: c[0..n) of s->cands with their weights (already
 * divided by the temperature and exponentiated) in s->work[0..n), *total their sum.
 * Returns n, or -1 with the plain argmax (of the penalised logits) in *argmax where no
 * draw is needed: greedy, or nothing left to draw from. */
static int candidates(sampler *s, const float *logits, const int32_t *history, int n_history,
                      double *total_out, int32_t *argmax)
{
    const sampler_params *p = &s->p;
    const int nv = s->n_vocab;
    float *l = (float *)logits;
    if (penalty_on(p) && n_history > 0)
        apply_repeat_penalty(s, logits, history, n_history, &l);
    if (p->temp <= 0) {
        *argmax = sampler_argmax(l, nv);
        return -1;
    }

    cand *c = s->cands;
    int n;
    bool sorted = true;
    float lmax;
    double z; /* sum of exp(logit - lmax) over the candidates top-p normalises by */
    bool want_top_p = p->top_p < 1.0f;
    if (p->top_k > 0 && p->top_k < nv) {
        n = select_top_k(l, nv, p->top_k, c);
        if (n == 0) {
            *argmax = sampler_argmax(l, nv);
            return -1;
        }
        lmax = c[0].logit;
        z = 0;
        for (int i = 0; i < n; i++)
            z += exp((double)c[i].logit - lmax);
    } else {
        lmax = -INFINITY;
        for (int i = 0; i < nv; i++)
            if (l[i] > lmax)
                lmax = l[i];
        if (lmax == -INFINITY || lmax != lmax) {
            *argmax = sampler_argmax(l, nv);
            return -1;
        }
        z = 0;
        if (want_top_p)
            for (int i = 0; i < nv; i++)
                z += exp((double)l[i] - lmax);
        float floor_logit = p->min_p > 0 ? lmax + logf(p->min_p) : -INFINITY;
        n = 0;
        for (int i = 0; i < nv; i++)
            if (l[i] >= floor_logit && l[i] > -INFINITY)
                c[n++] = (cand){l[i], i};
        sorted = false;
        if (want_top_p) {
            qsort(c, (size_t)n, sizeof *c, cand_cmp);
            sorted = true;
        }
    }

    if (want_top_p && sorted) {
        double cum = 0;
        for (int i = 0; i < n; i++) {
            cum += exp((double)c[i].logit - lmax) / z;
            if (cum >= p->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0) {
        float floor_logit = lmax + logf(p->min_p);
        int m = 0;
        for (int i = 0; i < n; i++)
            if (c[i].logit >= floor_logit)
                c[m++] = c[i];
        n = m > 0 ? m : 1;
    }

    /* temperature and the draw */
    double total = 0;
    float cmax = -INFINITY;
    for (int i = 0; i < n; i++)
        if (c[i].logit > cmax)
            cmax = c[i].logit;
    for (int i = 0; i < n; i++) {
        /* the penalised logits are no longer needed: work holds the weights now */
        s->work[i] = (float)exp(((double)c[i].logit - cmax) / p->temp);
        total += s->work[i];
    }
    *total_out = total;
    return n;
}

int32_t sampler_sample(sampler *s, const float *logits, const int32_t *history, int n_history)
{
    double total;
    int32_t best;
    int n = candidates(s, logits, history, n_history, &total, &best);
    if (n < 0)
        return best;
    const cand *c = s->cands;
    double u = rng_uniform(s->rng) * total;
    double acc = 0;
    for (int i = 0; i < n; i++) {
        acc += s->work[i];
        if (u < acc)
            return c[i].id;
    }
    return c[n - 1].id;
}

void sampler_probs(sampler *s, const float *logits, const int32_t *history, int n_history, float *probs)
{
    double total;
    int32_t best;
    int n = candidates(s, logits, history, n_history, &total, &best);
    memset(probs, 0, sizeof *probs * (size_t)s->n_vocab);
    if (n < 0) {
        probs[best] = 1;
        return;
    }
    for (int i = 0; i < n; i++)
        probs[s->cands[i].id] = (float)(s->work[i] / total);
}

double sampler_uniform(sampler *s)
{
    return rng_uniform(s->rng);
}
