/* fault.h — making the Nth allocation or file read of a test program fail.
 *
 * Test builds only: a program that includes this is linked with the --wrap options of
 * tests/CMakeLists.txt (FAULT_WRAPS), so that every call the core (a static library)
 * makes to malloc, calloc, realloc, strdup, strndup, posix_memalign, aligned_alloc,
 * read, pread and mmap goes through tests/fault.c first. The production code has no
 * hook of its own: it cannot tell an injected failure from a real one.
 *
 * Counting runs only while armed, on every thread (the scheduler's allocations are
 * part of a step); the Nth call fails once, as the real call would (NULL with ENOMEM,
 * -1 with EIO, MAP_FAILED with ENOMEM).
 */
#ifndef LLMFS_TEST_FAULT_H
#define LLMFS_TEST_FAULT_H

#include <stdbool.h>

/* Starts counting from zero; the nth_alloc-th allocation and the nth_read-th file read
 * from now fail (0: none fails, only count). */
void fault_arm(long nth_alloc, long nth_read);
/* Stops counting and failing; the counts stay readable. */
void fault_disarm(void);
/* Calls counted since fault_arm. */
long fault_allocs(void);
long fault_reads(void);
/* Whether the armed failure happened. */
bool fault_fired(void);

/* The same for the CUDA backend's device and pinned allocations (cudaMalloc,
 * cudaHostAlloc), on the simulated device only (tests/fault_cuda.c, LLMFS_FAULT_CUDA):
 * the nth from now fails with cudaErrorMemoryAllocation. */
void fault_arm_device(long nth_alloc);
void fault_disarm_device(void);
long fault_device_allocs(void);
bool fault_device_fired(void);

#endif
