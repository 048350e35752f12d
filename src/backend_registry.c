/* backend_registry.c — the accelerators this build can compute on.
 *
 * The one place that knows which device backends were compiled in: the model asks here
 * for a GPU, the daemon for the GPUs' names and memory. A new kind of device is its own
 * backend (kernels/ for CUDA) plus one entry in the table below. Tests may put a second
 * CPU backend in the GPU's place (backend_test.h) to exercise the multi-device paths on
 * any machine.
 */
#include "backend.h"
#include "backend_test.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#ifdef LLMFS_HAVE_CUDA
#include "backend_cuda.h"
#endif

typedef struct device_kind {
    const char *name;
    int (*count)(void);
    int (*info)(int dev, backend_gpu_info *out, char *why, size_t why_cap);
    backend *(*open)(int dev, char *why, size_t why_cap);
} device_kind;

#ifdef LLMFS_HAVE_CUDA
static int cuda_info(int dev, backend_gpu_info *out, char *why, size_t why_cap)
{
    return cuda_device_info(dev, out->name, sizeof out->name, &out->vram_total, &out->vram_free, why, why_cap);
}
#endif

static const device_kind kinds[] = {
#ifdef LLMFS_HAVE_CUDA
    {"CUDA", cuda_device_count, cuda_info, backend_cuda_new},
#endif
    {NULL, NULL, NULL, NULL},
};

static int test_cpu_threads; /* backend_test.h: > 0 puts a CPU backend in the GPU's place */

void backend_test_second_cpu(int n_threads)
{
    test_cpu_threads = n_threads;
}

int backend_gpu_count(void)
{
    return kinds[0].count ? kinds[0].count() : 0;
}

int backend_gpu_info_of(int dev, backend_gpu_info *out, char *why, size_t why_cap)
{
    memset(out, 0, sizeof *out);
    if (!kinds[0].info) {
        if (why)
            snprintf(why, why_cap, "llmfs was built without GPU support");
        return -ENODEV;
    }
    return kinds[0].info(dev, out, why, why_cap);
}

backend *backend_gpu_new(int dev, char *why, size_t why_cap)
{
    backend *be = NULL;
    if (kinds[0].open)
        be = kinds[0].open(dev, why, why_cap);
    else if (why)
        snprintf(why, why_cap, "llmfs was built without CUDA");
    if (!be && test_cpu_threads > 0)
        be = backend_cpu_new(test_cpu_threads, test_cpu_threads);
    return be;
}
