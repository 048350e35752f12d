/* rope_theta.cuh — the frequencies of rotary embeddings, computed on the host.
 *
 * theta = pos * freq_scale * base^(-2i/n_rot) / factor_i, where the factors come from
 * the model (rope_freqs) or llama3 scaling, which divides the frequencies of long
 * wavelengths by its factor and blends the band between the low- and high-frequency
 * wavelengths (Meta's reference). In double, in the CPU backend's order: the angle
 * reaches thousands of radians, and f32 would lose the phase.
 */
#ifndef LLMFS_ROPE_THETA_CUH
#define LLMFS_ROPE_THETA_CUH

#include <math.h>

extern "C" {
#include "backend.h"
}

/* The frequency of pair i for rope_params p (theta = pos times it), computed as the
 * CPU backend does: per-pair divisors from the model when given, else llama3's bands
 * (lo and hi divided in float, as there), then the linear scale. */
static inline double rope_inv_freq(const rope_params *p, int i)
{
    double f = pow((double)p->freq_base, -2.0 * i / p->n_rot);
    if (p->freq_factors) {
        f /= p->freq_factors[i];
    } else if (p->l3_factor > 0) {
        const double wavelen = 2 * M_PI / f;
        const double lo = p->l3_orig_ctx / p->l3_low_freq_factor;
        const double hi = p->l3_orig_ctx / p->l3_high_freq_factor;
        if (wavelen > lo) {
            f /= p->l3_factor;
        } else if (wavelen >= hi) {
            const double smooth =
                (p->l3_orig_ctx / wavelen - p->l3_low_freq_factor) / (p->l3_high_freq_factor - p->l3_low_freq_factor);
            f = (1 - smooth) * f / p->l3_factor + smooth * f;
        }
    }
    if (p->yarn_ext_factor > 0) {
        /* YaRN: between its correction dims the interpolated and the original frequency
         * mix along a linear ramp (ggml's rope_yarn; i is its i0/2) */
        const double l2b = 2 * log((double)p->freq_base);
        const double lo = fmax(0, floor(p->n_rot * log(p->yarn_orig_ctx / (2 * M_PI * p->yarn_beta_fast)) / l2b));
        const double hi = fmin(p->n_rot - 1, ceil(p->n_rot * log(p->yarn_orig_ctx / (2 * M_PI * p->yarn_beta_slow)) / l2b));
        const double ramp = (1 - fmin(1, fmax(0, (i - lo) / fmax(0.001, hi - lo)))) * p->yarn_ext_factor;
        return f * (p->freq_scale * (1 - ramp) + ramp);
    }
    return f * p->freq_scale;
}

/* What YaRN multiplies cos and sin by; 1 without it. */
static inline float rope_mscale(const rope_params *p)
{
    if (!(p->yarn_ext_factor > 0))
        return 1.0f;
    return (float)(p->yarn_attn_factor * (1 + 0.1 * log(1.0 / p->freq_scale)));
}

#endif
