/* rope_theta.cuh — the rotation angle of rotary embeddings, host and device.
 *
 * theta = pos * freq_scale * base^(-2i/n_rot), where llama3 scaling divides the
 * frequencies of long wavelengths by the factor and blends the band between the low-
 * and high-frequency wavelengths (Meta's reference). Computed in double: the angle
 * reaches thousands of radians, and f32 would lose the phase.
 */
#ifndef LLMFS_ROPE_THETA_CUH
#define LLMFS_ROPE_THETA_CUH

#include <math.h>

__host__ __device__ inline double rope_theta(int pos, int i, int n_rot, float base, float freq_scale, float l3_factor,
                                             float l3_low, float l3_high, int l3_orig_ctx)
{
    double freq = pow((double)base, -2.0 * (double)i / (double)n_rot);
    if (l3_factor > 0.0f && l3_orig_ctx > 0) {
        const double wavelen = 2.0 * M_PI / freq;
        const double low_wl = (double)l3_orig_ctx / l3_low, high_wl = (double)l3_orig_ctx / l3_high;
        if (wavelen > low_wl) {
            freq /= l3_factor;
        } else if (wavelen >= high_wl) {
            const double smooth = ((double)l3_orig_ctx / wavelen - l3_low) / (l3_high - l3_low);
            freq = (1.0 - smooth) * freq / l3_factor + smooth * freq;
        }
    }
    return (double)pos * (double)freq_scale * freq;
}

#endif
