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
    return f * p->freq_scale;
}

#endif
