/* backend_cuda.h — the CUDA backend as the device registry sees it.
 *
 * Everything here exists only when llmfs is built with CUDA (LLMFS_HAVE_CUDA) and is
 * called from the device registry only (backend_registry.c). None of these calls
 * aborts or prints: without a driver or a GPU they report zero devices.
 */
#ifndef LLMFS_BACKEND_CUDA_H
#define LLMFS_BACKEND_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

struct backend;

/* A backend on CUDA device `device`, or NULL with the reason in err. The registry
 * (backend_registry.c) is its only caller. */
struct backend *backend_cuda_new(int device, char *err, size_t err_cap);

/* Number of usable CUDA devices: 0 without a driver or a GPU. */
int cuda_device_count(void);

/* Name and memory of device dev (bytes). 0, or a negative errno (-ENODEV) with
 * a reason in err (when err is not NULL). Creates the device's context when needed. */
int cuda_device_info(int dev, char *name, size_t name_cap, uint64_t *vram_total,
                     uint64_t *vram_free, char *err, size_t err_cap);

#ifdef __cplusplus
}
#endif
#endif
