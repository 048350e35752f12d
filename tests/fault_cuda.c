/* fault_cuda.c — the device allocations of the CUDA backend on the simulated device
 * (tests/cudasim), wrapped as fault.c wraps the host's (see fault.h). The simulated
 * runtime is C++, so its functions are wrapped by their mangled names:
 * cudaMalloc(void **, size_t) and cudaHostAlloc(void **, size_t, unsigned). */
#include "fault.h"

#include <stdatomic.h>
#include <stddef.h>

enum { CUDA_SUCCESS = 0, CUDA_ERROR_MEMORY_ALLOCATION = 2 }; /* as cudasim.h numbers them */

int __real__Z10cudaMallocPPvm(void **p, size_t n);
int __real__Z13cudaHostAllocPPvmj(void **p, size_t n, unsigned flags);
int __wrap__Z10cudaMallocPPvm(void **p, size_t n);
int __wrap__Z13cudaHostAllocPPvmj(void **p, size_t n, unsigned flags);

static atomic_bool armed;
static atomic_long count, nth;
static atomic_bool fired;

void fault_arm_device(long nth_alloc)
{
    atomic_store(&armed, false);
    atomic_store(&count, 0);
    atomic_store(&nth, nth_alloc);
    atomic_store(&fired, false);
    atomic_store(&armed, true);
}

void fault_disarm_device(void)
{
    atomic_store(&armed, false);
}

long fault_device_allocs(void)
{
    return atomic_load(&count);
}

bool fault_device_fired(void)
{
    return atomic_load(&fired);
}

static bool hit(void)
{
    if (!atomic_load(&armed))
        return false;
    if (atomic_fetch_add(&count, 1) + 1 != atomic_load(&nth))
        return false;
    atomic_store(&fired, true);
    return true;
}

int __wrap__Z10cudaMallocPPvm(void **p, size_t n)
{
    if (hit()) {
        *p = NULL;
        return CUDA_ERROR_MEMORY_ALLOCATION;
    }
    return __real__Z10cudaMallocPPvm(p, n);
}

int __wrap__Z13cudaHostAllocPPvmj(void **p, size_t n, unsigned flags)
{
    if (hit()) {
        *p = NULL;
        return CUDA_ERROR_MEMORY_ALLOCATION;
    }
    return __real__Z13cudaHostAllocPPvmj(p, n, flags);
}
