/* fault.c — the wrappers behind fault.h (linked with -Wl,--wrap=...). */
#include "fault.h"

#include <errno.h>
#include <execinfo.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/types.h>

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
int __real_posix_memalign(void **p, size_t align, size_t n);
void *__real_aligned_alloc(size_t align, size_t n);
ssize_t __real_read(int fd, void *buf, size_t n);
ssize_t __real_pread(int fd, void *buf, size_t n, off_t off);
void *__real_mmap(void *addr, size_t n, int prot, int flags, int fd, off_t off);

static atomic_bool armed;
static atomic_long n_alloc, n_read, fail_alloc, fail_read;
static atomic_bool fired;

void fault_arm(long nth_alloc, long nth_read)
{
    atomic_store(&armed, false);
    atomic_store(&n_alloc, 0);
    atomic_store(&n_read, 0);
    atomic_store(&fail_alloc, nth_alloc);
    atomic_store(&fail_read, nth_read);
    atomic_store(&fired, false);
    atomic_store(&armed, true);
}

void fault_disarm(void)
{
    atomic_store(&armed, false);
}

long fault_allocs(void)
{
    return atomic_load(&n_alloc);
}

long fault_reads(void)
{
    return atomic_load(&n_read);
}

bool fault_fired(void)
{
    return atomic_load(&fired);
}

/* True when this call is the one to fail. */
static bool hit(atomic_long *count, atomic_long *nth)
{
    if (!atomic_load(&armed))
        return false;
    long k = atomic_fetch_add(count, 1) + 1;
    if (k != atomic_load(nth))
        return false;
    atomic_store(&fired, true);
    /* LLMFS_FAULT_TRACE=1: the stack of each injected failure (addr2line -e PROGRAM) */
    if (getenv("LLMFS_FAULT_TRACE")) {
        void *frames[16];
        int n = backtrace(frames, 16);
        backtrace_symbols_fd(frames, n, 2);
    }
    return true;
}

#define ALLOC_FAILS() hit(&n_alloc, &fail_alloc)
#define READ_FAILS() hit(&n_read, &fail_read)

void *__wrap_malloc(size_t n)
{
    if (ALLOC_FAILS()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    if (ALLOC_FAILS()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    if (ALLOC_FAILS()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
    if (ALLOC_FAILS()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
    if (ALLOC_FAILS()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_strndup(s, n);
}

int __wrap_posix_memalign(void **p, size_t align, size_t n)
{
    if (ALLOC_FAILS())
        return ENOMEM;
    return __real_posix_memalign(p, align, n);
}

void *__wrap_aligned_alloc(size_t align, size_t n)
{
    if (ALLOC_FAILS()) {
        errno = ENOMEM;
        return NULL;
    }
    return __real_aligned_alloc(align, n);
}

ssize_t __wrap_read(int fd, void *buf, size_t n)
{
    if (READ_FAILS()) {
        errno = EIO;
        return -1;
    }
    return __real_read(fd, buf, n);
}

ssize_t __wrap_pread(int fd, void *buf, size_t n, off_t off)
{
    if (READ_FAILS()) {
        errno = EIO;
        return -1;
    }
    return __real_pread(fd, buf, n, off);
}

void *__wrap_mmap(void *addr, size_t n, int prot, int flags, int fd, off_t off)
{
    /* only a file's mapping is a read; anonymous maps are left to the allocator count */
    if (fd >= 0 && !(flags & MAP_ANONYMOUS) && READ_FAILS()) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    return __real_mmap(addr, n, prot, flags, fd, off);
}
