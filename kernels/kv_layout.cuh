/* kv_layout.cuh — a KV cache row as the CUDA backend stores it.
 *
 * A row holds d = n_head_kv * head_dim elements in the bytes kv.h gives it (GGUF's row
 * size for the type), but ordered for aligned loads: f16 as is; q8_0 as the d quants
 * then the d/32 f16 scales; q4_0 as d/2 quant bytes (block b's 16 bytes at 16b, byte j
 * holding element 32b+j in its low nibble and 32b+j+16 in its high nibble) then the
 * scales; f32 as is. Quantization rounds as GGUF's reference does. Host and device.
 */
#ifndef LLMFS_KV_LAYOUT_CUH
#define LLMFS_KV_LAYOUT_CUH

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "quant_layout.cuh"

HD int64_t kvl_row_bytes(int type, int d)
{
    switch (type) {
    case T_F32: return (int64_t)d * 4;
    case T_F16: return (int64_t)d * 2;
    case T_Q8_0: return d % 32 ? -1 : (int64_t)d + d / 32 * 2;
    case T_Q4_0: return d % 32 ? -1 : (int64_t)d / 2 + d / 32 * 2;
    default: return -1;
    }
}

HD uint16_t kvl_f2h(float f)
{
#ifdef __CUDA_ARCH__
    return __half_as_ushort(__float2half_rn(f));
#else
    const __half h = __float2half_rn(f);
    uint16_t u;
    memcpy(&u, &h, 2);
    return u;
#endif
}

/* Arithmetic that rounds as the CPU's does (no fused multiply-adds, correctly rounded
 * division, round half to even), so both backends pick the same q4_0 scales. */
HD float kvl_div(float a, float b)
{
#ifdef __CUDA_ARCH__
    return __fdiv_rn(a, b);
#else
    return a / b;
#endif
}
HD int kvl_rint(float x)
{
#ifdef __CUDA_ARCH__
    return __float2int_rn(x);
#else
    return (int)rintf(x);
#endif
}
HD float kvl_add_sq_err(float acc, float x, float d, int v)
{
#ifdef __CUDA_ARCH__
    const float e = __fsub_rn(x, __fmul_rn(d, (float)v));
    return __fadd_rn(acc, __fmul_rn(e, e));
#else
    const float e = x - d * (float)v;
    return acc + e * e;
#endif
}
HD int kvl_clamp(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

/* Stores block b (32 elements at x) of a row of d elements: the bytes the CPU backend's
 * quantize_row stores (the unit tests demand equality). */
HD void kvl_store_block(int type, uint8_t *row, int d, int b, const float *x)
{
    if (type == T_F32) {
        memcpy(row + b * 128, x, 128);
    } else if (type == T_F16) {
        for (int i = 0; i < 32; i++) {
            uint16_t h = kvl_f2h(x[i]);
            memcpy(row + (b * 32 + i) * 2, &h, 2);
        }
    } else if (type == T_Q8_0) {
        float amax = 0.0f;
        for (int i = 0; i < 32; i++)
            amax = fmaxf(amax, fabsf(x[i]));
        /* as the CPU's quantizer: 127 / amax, products rounded half to even */
        const float dd = kvl_div(amax, 127.0f), id = amax != 0.0f ? kvl_div(127.0f, amax) : 0.0f;
        for (int i = 0; i < 32; i++)
            row[b * 32 + i] = (uint8_t)(int8_t)kvl_clamp(kvl_rint(x[i] * id), -127, 127);
        uint16_t h = kvl_f2h(dd);
        memcpy(row + d + b * 2, &h, 2);
    } else { /* T_Q4_0, as the CPU quantizes it (quant_ref_quantize.c): of 17 scales
              * around extreme / -8 the one with the least squared error, then the quants
              * again with the scale as stored (f16) */
        float amax = 0.0f, mx = 0.0f;
        for (int i = 0; i < 32; i++) {
            if (amax < fabsf(x[i])) {
                amax = fabsf(x[i]);
                mx = x[i];
            }
        }
        float best = 0.0f;
        if (amax >= 1e-30f) {
            float best_err = 3.4e38f;
            for (int k = -8; k <= 8; k++) {
                const float s = kvl_div(mx, -8.0f + 0.125f * (float)k);
                float err = 0.0f;
                for (int i = 0; i < 32; i++)
                    err = kvl_add_sq_err(err, x[i], s, kvl_clamp(kvl_rint(kvl_div(x[i], s)), -8, 7));
                if (err < best_err) {
                    best_err = err;
                    best = s;
                }
            }
        }
        const uint16_t h = kvl_f2h(best);
        const float d0 = cq_h2f(h);
        for (int j = 0; j < 16; j++) {
            const int a = d0 != 0.0f ? kvl_clamp(kvl_rint(kvl_div(x[j], d0)), -8, 7) + 8 : 8;
            const int c = d0 != 0.0f ? kvl_clamp(kvl_rint(kvl_div(x[j + 16], d0)), -8, 7) + 8 : 8;
            row[b * 16 + j] = (uint8_t)(a | c << 4);
        }
        memcpy(row + d / 2 + b * 2, &h, 2);
    }
}

/* Elements [e, e+8) of a row, e a multiple of 8. al8: the row starts 8-byte aligned. */
HD void kvl_load8(int type, const uint8_t *row, int d, int e, bool al8, float *out)
{
    if (type == T_F32) { /* rows of d % 8 == 0 floats are 32-byte multiples */
        const int4 a = ld16(row + (int64_t)e * 4), c = ld16(row + (int64_t)e * 4 + 16);
        const int w[8] = {a.x, a.y, a.z, a.w, c.x, c.y, c.z, c.w};
        for (int i = 0; i < 8; i++)
            memcpy(&out[i], &w[i], 4);
        return;
    }
    if (type == T_F16) {
        const int4 v = ld16(row + (int64_t)e * 2); /* f16 rows are 16-byte multiples */
        const int w[4] = {v.x, v.y, v.z, v.w};
        for (int i = 0; i < 4; i++) {
            out[2 * i] = cq_h2f((uint16_t)(w[i] & 0xffff));
            out[2 * i + 1] = cq_h2f((uint16_t)((uint32_t)w[i] >> 16));
        }
        return;
    }
    const int b = e / 32, jj = e % 32;
    uint32_t lo, hi;
    const uint8_t *p;
    float s;
    if (type == T_Q8_0) {
        p = row + e;
        s = cq_h2f(ld2(row + d + b * 2));
    } else {
        p = row + b * 16 + (jj & 15);
        s = cq_h2f(ld2(row + d / 2 + b * 2));
    }
    if (al8) {
        lo = (uint32_t)ld4(p);
        hi = (uint32_t)ld4(p + 4);
    } else {
        lo = (uint32_t)ld2(p) | (uint32_t)ld2(p + 2) << 16;
        hi = (uint32_t)ld2(p + 4) | (uint32_t)ld2(p + 6) << 16;
    }
    for (int i = 0; i < 8; i++) {
        const uint32_t byte = (i < 4 ? lo : hi) >> 8 * (i & 3) & 0xff;
        if (type == T_Q8_0)
            out[i] = s * (float)(int8_t)byte;
        else
            out[i] = s * (float)((int)(jj < 16 ? byte & 15 : byte >> 4) - 8);
    }
}

#endif
