/* host_check.h — the CUDA kernels' host-side halves, compiled for the host
 * (kernels/host_check.cu), for the unit tests on machines without a GPU. Test-only. */
#ifndef LLMFS_HOST_CHECK_H
#define LLMFS_HOST_CHECK_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- self-checks of the host-side halves of the kernels (no GPU needed) ----
 * Each runs the very decode, repacking and dot-product code the kernels use, compiled
 * for the host, against the caller's reference, and returns 0 or the index of the
 * first mismatch + 1 (details in msg). Used by the unit tests. */

/* Repacks n_rows rows of ne0 elements of type (GGUF bytes at src) into the device
 * layout and decodes them back to floats (dst[n_rows][ne0]). 0 on success, -EINVAL
 * for a type the backend does not handle, -EFAULT when a load the kernels would make
 * is off its alignment (a fault on the device). The same for cuda_host_dot. */
int cuda_host_repack_dequant(int type, const void *src, int64_t ne0, int64_t n_rows, float *dst,
                             char *msg, size_t msg_cap);
/* Dot products of n_rows rows of type (GGUF bytes) with x[ne0] as the matrix-vector
 * kernel computes them (x quantized to the kernel's 8-bit activation blocks for
 * quantized types): out[n_rows]. */
int cuda_host_dot(int type, const void *src, int64_t ne0, int64_t n_rows, const float *x, float *out,
                  char *msg, size_t msg_cap);
/* Stores x[d] (one KV row of d elements) as type_kv in the backend's cache row layout,
 * as the second cell of a cache, and reads it back (out[d]) as the attention kernels
 * do. Returns the row's byte count, or -EINVAL (row not handled), -EIO (the aligned and
 * unaligned loads disagree), -EFAULT (a load off its alignment). */
int cuda_host_kv_roundtrip(int type_kv, const float *x, int d, float *out);
/* Rotation angle the rope kernel uses for position pos, pair index i of n_rot. */
double cuda_host_rope_theta(int pos, int i, int n_rot, float freq_base, float freq_scale,
                            float l3_factor, float l3_low, float l3_high, int l3_orig_ctx);

#ifdef __cplusplus
}
#endif
#endif
