/* cudasim.cc — the simulated device: memory, the work queue, streams, capture and
 * graphs, the block scheduler (threads as fibers), cuBLAS GemmEx. See cudasim.h. */
#include "cudasim.h"

#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <vector>

#if !defined(__x86_64__)
#error "cudasim switches fibers with x86-64 code"
#endif

uint3 cusim_thread, cusim_block;

/* the static __shared__ variables of every kernel (the linker names the section's ends);
 * one is defined here so that the section exists even without kernels */
extern "C" char __start_cusim_shared[], __stop_cusim_shared[];
__attribute__((section("cusim_shared"), used)) static char shared_anchor[16];
dim3 cusim_block_dim, cusim_grid_dim;

namespace {

/* ------------------------------------------------------------------ errors */

cudaError_t g_last = cudaSuccess;   /* for cudaGetLastError */
cudaError_t g_sticky = cudaSuccess; /* a fault: the context is lost, every call fails */
std::recursive_mutex g_lock;        /* the simulator is one device: one caller at a time */
#define LOCKED std::lock_guard<std::recursive_mutex> guard_(g_lock)

cudaError_t fail(cudaError_t e)
{
    if (e != cudaSuccess && g_last == cudaSuccess)
        g_last = e;
    return e;
}

void fault(cudaError_t e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void fault(cudaError_t e, const char *fmt, ...)
{
    if (g_sticky == cudaSuccess) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "cudasim: ");
        vfprintf(stderr, fmt, ap);
        fprintf(stderr, "\n");
        va_end(ap);
        g_sticky = e;
    }
}

/* ------------------------------------------------------------------ memory */

/* Device memory is one arena that host code cannot touch: it is readable and writable
 * only while queued work runs, so a host dereference of a device pointer faults here
 * as it would on a real machine. Each allocation (rounded to 256 bytes, as the device
 * rounds) ends where a page ends and is followed by a page that is never accessible,
 * so a kernel reading or writing past the end faults too. */
const size_t GRAN = 256, PAGE = 4096;
struct dev_alloc {
    size_t block, body; /* its pages: [block, block + body), then a guard page */
    size_t size;        /* bytes the caller may use, from its offset */
};
char *g_arena;
size_t g_arena_size, g_used;
std::map<size_t, size_t> g_free_blocks; /* offset -> size */
std::map<size_t, dev_alloc> g_allocs;   /* offset handed out -> allocation */
std::map<uintptr_t, size_t> g_pinned;   /* host address -> size */
std::set<uintptr_t> g_registered;       /* the part of it cudaHostRegister made */
int g_open_depth;                       /* > 0 while the arena is accessible */
const char *g_kernel = "";
bool g_in_kernel;

/* A fault in the arena: says what was touched, then lets the signal end the process. */
void on_segv(int sig, siginfo_t *si, void *ctx)
{
    (void)ctx;
    const char *a = (const char *)si->si_addr;
    if (g_arena && a >= g_arena && a < g_arena + g_arena_size) {
        char msg[256];
        const size_t off = (size_t)(a - g_arena);
        auto it = g_allocs.upper_bound(off);
        long long past = -1, size = 0;
        if (it != g_allocs.begin()) {
            --it;
            past = (long long)(off - it->first) - (long long)it->second.size;
            size = (long long)it->second.size;
        }
        const int n = g_in_kernel
                          ? snprintf(msg, sizeof msg,
                                     "cudasim: %s: access at %p, %lld bytes past the end of a %lld-byte allocation\n",
                                     g_kernel, (const void *)a, past, size)
                          : snprintf(msg, sizeof msg, "cudasim: host code touched device memory at %p\n", (const void *)a);
        if (n > 0 && write(2, msg, (size_t)n) < 0)
            abort();
    }
    signal(sig, SIG_DFL); /* the access repeats and ends the process */
}

void arena_init()
{
    if (g_arena)
        return;
    size_t mib = 1024;
    if (const char *v = getenv("CUDASIM_VRAM_MIB"))
        mib = strtoull(v, NULL, 10);
    g_arena_size = mib << 20;
    g_arena = (char *)mmap(NULL, g_arena_size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (g_arena == MAP_FAILED) {
        perror("cudasim: device arena");
        abort();
    }
    g_free_blocks[0] = g_arena_size;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO;
    sigaction(SIGSEGV, &sa, NULL);
}

void protect(const dev_alloc &a, int prot) { mprotect(g_arena + a.block, a.body, prot); }

/* Device memory is open to the calling code until the matching arena_close. */
void arena_open()
{
    if (g_open_depth++ == 0)
        for (const auto &a : g_allocs)
            protect(a.second, PROT_READ | PROT_WRITE);
}
void arena_close()
{
    if (--g_open_depth == 0)
        for (const auto &a : g_allocs)
            protect(a.second, PROT_NONE);
}

bool in_device(const void *p, size_t n)
{
    const char *c = (const char *)p;
    if (!g_arena || c < g_arena || c >= g_arena + g_arena_size)
        return false;
    const size_t off = (size_t)(c - g_arena);
    auto it = g_allocs.upper_bound(off);
    if (it == g_allocs.begin())
        return false;
    --it;
    return off + n <= it->first + it->second.size;
}

bool in_pinned(const void *p, size_t n)
{
    const uintptr_t a = (uintptr_t)p;
    auto it = g_pinned.upper_bound(a);
    if (it == g_pinned.begin())
        return false;
    --it;
    return a + n <= it->first + it->second;
}

/* ------------------------------------------------------------------ the queues */

/* Work runs when the host waits, stream by stream: each stream is a FIFO, and across
 * streams nothing is ordered except by events (cudaStreamWaitEvent). Which runnable
 * stream goes first alternates between drains that find several streams busy — the
 * oldest stream first, then the newest — so work that depends on another stream without
 * an event sees it unfinished in one and finished in the next, with different results. */
struct cusim_event_mark {
    struct cusim_stream *stream; /* NULL: never recorded (complete) */
    uint64_t seq;                /* complete once the stream has no op below it */
};
struct op {
    uint64_t id;                 /* order of submission, over all streams */
    std::function<void()> run;   /* empty for a wait */
    cusim_event_mark wait;       /* a wait: runs once this is complete */
};
uint64_t g_queued;               /* ops ever queued */
bool g_newest_first;             /* this drain's order across streams */

struct capture {
    std::vector<std::function<void()>> ops;
    bool invalid;
};

} /* namespace */

struct cusim_stream {
    bool capturing;
    cudaStreamCaptureMode mode;
    capture cap;
    uint64_t created;      /* order of creation */
    std::deque<op> q;      /* not yet run */
};
struct cusim_event {
    cusim_event_mark mark;
    bool captured; /* last recorded while its stream was capturing */
};
struct cusim_graph {
    std::vector<std::function<void()>> ops;
};
struct cusim_blas {
    cudaStream_t stream;
};

namespace {

std::set<cusim_stream *> g_streams;
std::set<cusim_event *> g_events;
std::set<cusim_graph *> g_graphs;
std::set<cusim_blas *> g_blas;
cusim_stream g_legacy; /* the NULL stream */
uint64_t g_streams_created;

cusim_stream *stream_of(cudaStream_t s) { return s ? s : &g_legacy; }

bool mark_done(const cusim_event_mark &m)
{
    return !m.stream || m.stream->q.empty() || m.stream->q.front().id >= m.seq;
}

/* Every stream with queued work, in this drain's order. */
std::vector<cusim_stream *> busy_streams()
{
    std::vector<cusim_stream *> v;
    if (!g_legacy.q.empty())
        v.push_back(&g_legacy);
    for (cusim_stream *s : g_streams)
        if (!s->q.empty())
            v.push_back(s);
    std::sort(v.begin(), v.end(), [](const cusim_stream *a, const cusim_stream *b) {
        return g_newest_first ? a->created > b->created : a->created < b->created;
    });
    return v;
}

/* Runs queued work, in the order above, until done() holds or nothing is left. */
template <typename F> void drain_until(F done)
{
    if (done())
        return;
    /* the order changes only between drains where it matters, so that each order gets
     * its turn however many single-stream drains come in between */
    const bool several = busy_streams().size() > 1;
    arena_open();
    for (;;) {
        if (done())
            break;
        bool ran = false;
        for (cusim_stream *s : busy_streams()) {
            /* as far as this stream can go before it waits on another */
            while (!s->q.empty() && !done()) {
                op &o = s->q.front();
                if (!o.run && !mark_done(o.wait))
                    break;
                std::function<void()> fn = std::move(o.run);
                s->q.pop_front();
                if (fn && g_sticky == cudaSuccess)
                    fn();
                ran = true;
            }
            if (ran)
                break; /* the order starts again from the first stream */
        }
        if (!ran)
            break;
    }
    arena_close();
    if (several)
        g_newest_first = !g_newest_first;
}
void drain()
{
    drain_until([] { return busy_streams().empty(); });
}

bool stream_ok(cudaStream_t s) { return s == NULL || g_streams.count(s); }

/* Queues fn on s, or records it when s is capturing. */
void submit(cudaStream_t s, std::function<void()> fn)
{
    if (s && s->capturing) {
        s->cap.ops.push_back(std::move(fn));
        return;
    }
    stream_of(s)->q.push_back(op{g_queued++, std::move(fn), cusim_event_mark{NULL, 0}});
}

/* A wait on a capturing stream is not allowed: the capture is lost. */
bool refuse_in_capture(cudaStream_t s)
{
    if (s && s->capturing) {
        s->cap.invalid = true;
        return true;
    }
    return false;
}
bool any_capturing()
{
    for (cusim_stream *s : g_streams)
        if (s->capturing)
            return true;
    return false;
}
/* Calls that are unsafe during a capture (allocation, freeing) are refused while any
 * stream captures in global mode, and that capture is lost; relaxed mode allows them. */
bool refuse_unsafe()
{
    bool refused = false;
    for (cusim_stream *s : g_streams)
        if (s->capturing && s->mode != cudaStreamCaptureModeRelaxed) {
            s->cap.invalid = true;
            refused = true;
        }
    return refused;
}

/* ------------------------------------------------------------------ f16 / bf16 */

} /* namespace */

float cusim_f16_to_f32(unsigned short h)
{
    const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    int exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff, bits;
    if (exp == 0 && man == 0) {
        bits = sign;
    } else if (exp == 0) {
        int e = 1;
        while (!(man & 0x400)) {
            man <<= 1;
            e--;
        }
        bits = sign | (uint32_t)(e + 127 - 15) << 23 | (man & 0x3ff) << 13;
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | man << 13;
    } else {
        bits = sign | (uint32_t)(exp + 127 - 15) << 23 | man << 13;
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

unsigned short cusim_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    const unsigned short sign = (unsigned short)((x >> 16) & 0x8000);
    const uint32_t ax = x & 0x7fffffffu;
    if (ax > 0x7f800000u)
        return (unsigned short)(sign | 0x7e00); /* NaN */
    if (ax >= 0x477ff000u)
        return (unsigned short)(sign | 0x7c00); /* rounds to infinity */
    if (ax < 0x38800000u) {                     /* subnormal or zero in f16 */
        const float a = fabsf(f) * 16777216.0f; /* units of 2^-24 */
        return (unsigned short)(sign | (unsigned short)nearbyintf(a));
    }
    uint32_t r = ax - 0x38000000u; /* rebias 127 -> 15 */
    r += 0xfffu + ((r >> 13) & 1); /* round to nearest even */
    return (unsigned short)(sign | (r >> 13));
}

unsigned short cusim_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u)
        return (unsigned short)((x >> 16) | 0x40);
    x += 0x7fffu + ((x >> 16) & 1);
    return (unsigned short)(x >> 16);
}

/* ------------------------------------------------------------------ fibers */

extern "C" void cusim_switch(void **save_sp, void *new_sp);
__asm__(".text\n"
        ".globl cusim_switch\n"
        ".type cusim_switch,@function\n"
        "cusim_switch:\n"
        "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
        "  movq %rsp, (%rdi)\n"
        "  movq %rsi, %rsp\n"
        "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n"
        "  ret\n"
        ".size cusim_switch, .-cusim_switch\n");

namespace {

enum { F_READY, F_BLOCK_BAR, F_WARP_BAR, F_DONE };
struct fiber {
    void *sp;
    int state;
    unsigned mask; /* at a warp barrier: the lanes it waits for */
    unsigned shuffles; /* shuffles done: their slots alternate between two sets */
    uint3 tid;
};

const size_t STACK = 256 << 10;
const int MAX_THREADS = 1024;
char *g_stacks;
fiber g_fibers[MAX_THREADS];
int g_nthreads;
fiber *g_cur;
void *g_sched_sp;
const std::function<void()> *g_body;
bool g_block_failed;
uint64_t g_xchg[2][MAX_THREADS / 32][32]; /* shuffle slots, per warp and lane */
std::vector<unsigned char> g_smem;

void fiber_entry()
{
    (*g_body)();
    g_cur->state = F_DONE;
    cusim_switch(&g_cur->sp, g_sched_sp);
    abort(); /* a finished fiber is never resumed */
}

void stacks_init()
{
    if (g_stacks)
        return;
    g_stacks = (char *)mmap(NULL, STACK * MAX_THREADS, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (g_stacks == MAP_FAILED) {
        perror("cudasim: thread stacks");
        abort();
    }
    for (int i = 0; i < MAX_THREADS; i++) /* a guard page under each stack */
        mprotect(g_stacks + STACK * (size_t)i, 4096, PROT_NONE);
}

void fiber_start(fiber *f, int i)
{
    /* stack tops 256 KiB apart would share cache sets: shift each by a few lines */
    void **sp = (void **)(g_stacks + STACK * (size_t)(i + 1) - (size_t)(i & 63) * 192);
    *--sp = NULL;                    /* fiber_entry's return address: never used */
    *--sp = (void *)&fiber_entry;    /* where cusim_switch's ret goes */
    for (int r = 0; r < 6; r++)      /* rbp rbx r12 r13 r14 r15 */
        *--sp = NULL;
    f->sp = sp;
    f->state = F_READY;
    f->mask = 0;
    f->shuffles = 0;
}

/* back to the scheduler; returns when the scheduler resumes this thread */
void yield_to_scheduler() { cusim_switch(&g_cur->sp, g_sched_sp); }

int linear_tid(const uint3 &t) { return (int)(t.x + t.y * cusim_block_dim.x + t.z * cusim_block_dim.x * cusim_block_dim.y); }

void block_fault(cudaError_t e, const char *what)
{
    fault(e, "%s: block (%u,%u,%u) of (%u,%u,%u), %u threads: %s", g_kernel, cusim_block.x, cusim_block.y,
          cusim_block.z, cusim_grid_dim.x, cusim_grid_dim.y, cusim_grid_dim.z,
          cusim_block_dim.x * cusim_block_dim.y * cusim_block_dim.z, what);
    g_block_failed = true;
}

/* Runs the lanes of warp w until none can go on: each stops at a barrier or its end;
 * a warp barrier whose lanes have all arrived opens at once. False after a fault. */
bool run_warp(int w, bool reverse)
{
    const int n = g_nthreads, l0 = w * 32, nl = n - l0 < 32 ? n - l0 : 32;
    for (;;) {
        for (int k = 0; k < nl; k++) {
            fiber *f = &g_fibers[l0 + (reverse ? nl - 1 - k : k)];
            if (f->state != F_READY)
                continue;
            g_cur = f;
            cusim_thread = f->tid;
            cusim_switch(&g_sched_sp, f->sp);
            if (g_block_failed)
                return false;
        }
        unsigned mask = 0;
        for (int l = 0; l < nl; l++)
            if (g_fibers[l0 + l].state == F_WARP_BAR)
                mask = g_fibers[l0 + l].mask;
        if (!mask)
            return true; /* every lane is at __syncthreads or done */
        for (int l = 0; l < 32; l++) {
            if (!(mask >> l & 1))
                continue;
            if (l >= nl) {
                block_fault(cudaErrorLaunchFailure, "a shuffle or __syncwarp names lanes the block does not have");
                return false;
            }
            const fiber *f = &g_fibers[l0 + l];
            if (f->state == F_DONE) {
                block_fault(cudaErrorLaunchFailure, "a shuffle or __syncwarp waits for lanes that have exited");
                return false;
            }
            if (f->state == F_BLOCK_BAR) {
                block_fault(cudaErrorLaunchFailure,
                            "deadlock: lanes wait at __syncthreads while others of their warp wait at a shuffle "
                            "or __syncwarp (a barrier in divergent code)");
                return false;
            }
            if (f->mask != mask) {
                block_fault(cudaErrorLaunchFailure, "lanes of a warp wait with different masks");
                return false;
            }
        }
        for (int l = 0; l < nl; l++)
            if (mask >> l & 1)
                g_fibers[l0 + l].state = F_READY;
    }
}

/* Runs one block to its end, a warp at a time between __syncthreads, in an order that
 * alternates with the block and the phase. */
void run_block(unsigned block_linear)
{
    const int n = g_nthreads, nw = (n + 31) / 32;
    for (int i = 0; i < n; i++) {
        fiber *f = &g_fibers[i];
        fiber_start(f, i);
        f->tid = uint3{(unsigned)i % cusim_block_dim.x, (unsigned)i / cusim_block_dim.x % cusim_block_dim.y,
                       (unsigned)i / (cusim_block_dim.x * cusim_block_dim.y)};
    }
    memset(g_smem.data(), 0xff, g_smem.size());
    memset(__start_cusim_shared, 0xff, (size_t)(__stop_cusim_shared - __start_cusim_shared));
    for (unsigned round = 0;; round++) {
        const bool reverse = (block_linear + round) & 1;
        for (int k = 0; k < nw; k++)
            if (!run_warp(reverse ? nw - 1 - k : k, reverse))
                return;
        int live = 0;
        for (int i = 0; i < n; i++)
            if (g_fibers[i].state != F_DONE) {
                live++;
                g_fibers[i].state = F_READY; /* all were at __syncthreads */
            }
        if (live == 0)
            return;
    }
}

struct func_attr {
    int max_dyn_smem;
};
std::map<const void *, func_attr> g_func_attrs;

const size_t SMEM_DEFAULT = 48 << 10, SMEM_OPTIN = 227 << 10;

/* ------------------------------------------------------------------ GEMM */

float elem(const void *p, cudaDataType t, size_t i)
{
    switch (t) {
    case CUDA_R_32F: return ((const float *)p)[i];
    case CUDA_R_16F: return cusim_f16_to_f32(((const unsigned short *)p)[i]);
    case CUDA_R_16BF: {
        uint32_t b = (uint32_t)((const unsigned short *)p)[i] << 16;
        float f;
        memcpy(&f, &b, 4);
        return f;
    }
    }
    return NAN;
}

} /* namespace */

/* ------------------------------------------------------------------ kernels */

void cusim_syncthreads(void)
{
    g_cur->state = F_BLOCK_BAR;
    yield_to_scheduler();
}

void cusim_syncwarp(unsigned mask)
{
    const int lane = linear_tid(g_cur->tid) & 31;
    if (!(mask >> lane & 1)) {
        block_fault(cudaErrorLaunchFailure, "a lane takes part in a warp operation whose mask leaves it out");
        /* the block is abandoned: hand control back for good */
    }
    g_cur->state = F_WARP_BAR;
    g_cur->mask = mask;
    yield_to_scheduler();
}

/* One barrier per shuffle: lanes write their slot, wait for the warp, read their source.
 * The next shuffle writes the other set of slots, and the one after can only begin
 * once every lane has passed the next barrier, that is, has read this one. */
uint64_t cusim_shfl(unsigned mask, uint64_t v, enum cusim_shfl_kind kind, int arg, int width)
{
    const int t = linear_tid(g_cur->tid), lane = t & 31, warp = t >> 5;
    const unsigned set = g_cur->shuffles++ & 1;
    if (width <= 0 || width > 32 || (width & (width - 1)))
        width = 32;
    g_xchg[set][warp][lane] = v;
    cusim_syncwarp(mask);
    const int seg = lane & ~(width - 1);
    int src = lane;
    switch (kind) {
    case CUSIM_SHFL_IDX: src = seg + (arg & (width - 1)); break;
    case CUSIM_SHFL_UP: src = lane - arg >= seg ? lane - arg : lane; break;
    case CUSIM_SHFL_DOWN: src = lane + arg < seg + width ? lane + arg : lane; break;
    case CUSIM_SHFL_XOR: src = (lane ^ arg) < seg + width ? lane ^ arg : lane; break;
    }
    if (!(mask >> src & 1))
        block_fault(cudaErrorLaunchFailure, "a shuffle reads a lane outside its mask");
    return g_xchg[set][warp][src];
}

void *cusim_dyn_smem(void) { return g_smem.data(); }

void cusim_check_align(const void *p, size_t n)
{
    if (g_in_kernel && ((uintptr_t)p & (n - 1)) != 0 && !g_block_failed) {
        char what[96];
        snprintf(what, sizeof what, "a %zu-byte load at an address off its alignment (%p)", n, p);
        block_fault(cudaErrorMisalignedAddress, what);
    }
}

void cusim_launch(const char *name, const void *kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                  std::function<void()> body)
{
    LOCKED;
    if (g_sticky != cudaSuccess) {
        fail(g_sticky);
        return;
    }
    const unsigned long long threads = (unsigned long long)block.x * block.y * block.z;
    if (!stream_ok(s)) {
        fail(cudaErrorInvalidResourceHandle);
        return;
    }
    if (threads == 0 || threads > MAX_THREADS || block.z > 64 || grid.x == 0 || grid.y == 0 || grid.z == 0 ||
        grid.x > 0x7fffffffu || grid.y > 65535 || grid.z > 65535) {
        fprintf(stderr, "cudasim: %s: launch of (%u,%u,%u) x (%u,%u,%u) refused\n", name, grid.x, grid.y, grid.z,
                block.x, block.y, block.z);
        fail(cudaErrorInvalidConfiguration);
        return;
    }
    if (smem > SMEM_DEFAULT) {
        auto it = g_func_attrs.find(kernel);
        if (it == g_func_attrs.end() || (size_t)it->second.max_dyn_smem < smem) {
            fprintf(stderr, "cudasim: %s: %zu bytes of dynamic shared memory without the attribute\n", name, smem);
            fail(cudaErrorInvalidValue);
            return;
        }
    }
    submit(s, [name, grid, block, smem, body = std::move(body)]() {
        stacks_init();
        g_kernel = name;
        g_body = &body;
        g_nthreads = (int)(block.x * block.y * block.z);
        g_smem.assign(smem ? smem : 16, 0xff);
        cusim_grid_dim = grid;
        cusim_block_dim = block;
        g_in_kernel = true;
        g_block_failed = false;
        unsigned linear = 0;
        for (unsigned z = 0; z < grid.z && !g_block_failed; z++)
            for (unsigned y = 0; y < grid.y && !g_block_failed; y++)
                for (unsigned x = 0; x < grid.x && !g_block_failed; x++) {
                    cusim_block = uint3{x, y, z};
                    run_block(linear++);
                }
        g_in_kernel = false;
    });
}

/* ------------------------------------------------------------------ the runtime API */

#define CHECK_STICKY()              \
    do {                            \
        if (g_sticky != cudaSuccess) \
            return fail(g_sticky);  \
    } while (0)

namespace {

/* Runs everything queued; the sticky error, if any. */
cudaError_t wait_all()
{
    drain();
    return g_sticky != cudaSuccess ? fail(g_sticky) : cudaSuccess;
}

template <typename T> cudaError_t handle_new(std::set<T *> &all, T **out)
{
    LOCKED;
    CHECK_STICKY();
    *out = new T();
    all.insert(*out);
    return cudaSuccess;
}

template <typename T> cudaError_t handle_delete(std::set<T *> &all, T *h)
{
    LOCKED;
    if (!all.count(h))
        return fail(cudaErrorInvalidResourceHandle);
    all.erase(h);
    delete h;
    return cudaSuccess;
}

} /* namespace */

cudaError_t cudaGetDeviceCount(int *n)
{
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *dev)
{
    *dev = 0;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int dev)
{
    LOCKED;
    arena_init();
    return dev == 0 ? cudaSuccess : fail(cudaErrorInvalidDevice);
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev)
{
    LOCKED;
    if (dev != 0)
        return fail(cudaErrorInvalidDevice);
    arena_init();
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "cudasim (CPU)");
    p->totalGlobalMem = g_arena_size;
    p->sharedMemPerBlock = SMEM_DEFAULT;
    p->sharedMemPerBlockOptin = SMEM_OPTIN;
    p->multiProcessorCount = 132;
    p->major = 9;
    p->minor = 0;
    p->warpSize = 32;
    p->maxThreadsPerBlock = MAX_THREADS;
    return cudaSuccess;
}
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes)
{
    LOCKED;
    CHECK_STICKY();
    arena_init();
    *free_bytes = g_arena_size - g_used;
    *total_bytes = g_arena_size;
    return cudaSuccess;
}
cudaError_t cudaGetLastError(void)
{
    LOCKED;
    const cudaError_t e = g_sticky != cudaSuccess ? g_sticky : g_last;
    g_last = cudaSuccess;
    return e;
}
const char *cudaGetErrorString(cudaError_t e)
{
    switch (e) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return "invalid argument";
    case cudaErrorMemoryAllocation: return "out of memory";
    case cudaErrorInvalidConfiguration: return "invalid configuration argument";
    case cudaErrorInvalidDevicePointer: return "invalid device pointer";
    case cudaErrorNoDevice: return "no CUDA-capable device is detected";
    case cudaErrorInvalidDevice: return "invalid device ordinal";
    case cudaErrorInvalidResourceHandle: return "invalid resource handle";
    case cudaErrorIllegalAddress: return "an illegal memory access was encountered";
    case cudaErrorMisalignedAddress: return "misaligned address";
    case cudaErrorLaunchFailure: return "unspecified launch failure";
    case cudaErrorStreamCaptureUnsupported: return "operation not permitted when stream is capturing";
    case cudaErrorStreamCaptureInvalidated: return "operation failed due to a previous error during capture";
    case cudaErrorStreamCaptureImplicit: return "operation would make the legacy stream depend on a capturing blocking stream";
    case cudaErrorCapturedEvent: return "operation not permitted on an event last recorded in a capturing stream";
    case cudaErrorHostMemoryAlreadyRegistered: return "part or all of the requested memory range is already mapped";
    case cudaErrorHostMemoryNotRegistered: return "pointer does not correspond to a registered memory region";
    }
    return "unknown error";
}

cudaError_t cudaMalloc(void **p, size_t n)
{
    LOCKED;
    CHECK_STICKY();
    arena_init();
    *p = NULL;
    if (refuse_unsafe())
        return fail(cudaErrorStreamCaptureUnsupported);
    const size_t size = ((n ? n : 1) + GRAN - 1) / GRAN * GRAN, body = (size + PAGE - 1) / PAGE * PAGE;
    const size_t need = body + PAGE;
    for (auto it = g_free_blocks.begin(); it != g_free_blocks.end(); ++it) {
        if (it->second < need)
            continue;
        const size_t block = it->first, rest = it->second - need;
        g_free_blocks.erase(it);
        if (rest)
            g_free_blocks[block + need] = rest;
        const dev_alloc a = {block, body, size};
        const size_t off = block + body - size;
        g_allocs[off] = a;
        g_used += need;
        /* fresh device memory holds whatever was there: NaN bytes here */
        protect(a, PROT_READ | PROT_WRITE);
        memset(g_arena + off, 0xff, size);
        if (!g_open_depth)
            protect(a, PROT_NONE);
        *p = g_arena + off;
        return cudaSuccess;
    }
    return fail(cudaErrorMemoryAllocation);
}

cudaError_t cudaFree(void *p)
{
    LOCKED;
    CHECK_STICKY();
    if (!p)
        return cudaSuccess;
    if (refuse_unsafe())
        return fail(cudaErrorStreamCaptureUnsupported);
    drain();
    const char *c = (const char *)p;
    if (!g_arena || c < g_arena || c >= g_arena + g_arena_size || !g_allocs.count((size_t)(c - g_arena)))
        return fail(cudaErrorInvalidValue);
    const dev_alloc a = g_allocs[(size_t)(c - g_arena)];
    g_allocs.erase((size_t)(c - g_arena));
    protect(a, PROT_NONE);
    madvise(g_arena + a.block, a.body, MADV_DONTNEED); /* give the pages back */
    const size_t off = a.block, size = a.body + PAGE;
    g_used -= size;
    size_t start = off, len = size;
    auto next = g_free_blocks.find(off + size);
    if (next != g_free_blocks.end()) {
        len += next->second;
        g_free_blocks.erase(next);
    }
    auto prev = g_free_blocks.lower_bound(off);
    if (prev != g_free_blocks.begin()) {
        --prev;
        if (prev->first + prev->second == off) {
            start = prev->first;
            len += prev->second;
            g_free_blocks.erase(prev);
        }
    }
    g_free_blocks[start] = len;
    return cudaSuccess;
}

cudaError_t cudaHostAlloc(void **p, size_t n, unsigned flags)
{
    LOCKED;
    CHECK_STICKY();
    (void)flags;
    *p = aligned_alloc(4096, (n + 4095) / 4096 * 4096);
    if (!*p)
        return fail(cudaErrorMemoryAllocation);
    memset(*p, 0xff, n);
    g_pinned[(uintptr_t)*p] = n;
    return cudaSuccess;
}

cudaError_t cudaFreeHost(void *p)
{
    LOCKED;
    CHECK_STICKY();
    if (!p)
        return cudaSuccess;
    if (!g_pinned.count((uintptr_t)p) || g_registered.count((uintptr_t)p))
        return fail(cudaErrorInvalidValue);
    drain(); /* queued copies may still read or write it */
    g_pinned.erase((uintptr_t)p);
    free(p);
    return cudaSuccess;
}

cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s)
{
    LOCKED;
    CHECK_STICKY();
    if (!stream_ok(s))
        return fail(cudaErrorInvalidResourceHandle);
    if (n == 0)
        return cudaSuccess;
    switch (kind) {
    case cudaMemcpyHostToDevice:
        if (!in_device(dst, n))
            return fail(cudaErrorInvalidValue);
        if (in_pinned(src, n)) { /* read when the copy runs */
            submit(s, [dst, src, n]() { memcpy(dst, src, n); });
        } else {
            /* pageable memory is staged before the call returns */
            if (s && s->capturing) {
                s->cap.invalid = true;
                return fail(cudaErrorStreamCaptureUnsupported);
            }
            auto copy = std::make_shared<std::vector<char>>((const char *)src, (const char *)src + n);
            submit(s, [dst, copy]() { memcpy(dst, copy->data(), copy->size()); });
        }
        return cudaSuccess;
    case cudaMemcpyDeviceToHost:
        if (!in_device(src, n))
            return fail(cudaErrorInvalidValue);
        if (in_pinned(dst, n)) {
            submit(s, [dst, src, n]() { memcpy(dst, src, n); });
            return cudaSuccess;
        }
        /* into pageable memory the copy is synchronous */
        if (refuse_in_capture(s))
            return fail(cudaErrorStreamCaptureUnsupported);
        submit(s, [dst, src, n]() { memcpy(dst, src, n); });
        drain();
        return g_sticky != cudaSuccess ? fail(g_sticky) : cudaSuccess;
    case cudaMemcpyDeviceToDevice:
        if (!in_device(src, n) || !in_device(dst, n))
            return fail(cudaErrorInvalidValue);
        submit(s, [dst, src, n]() { memmove(dst, src, n); });
        return cudaSuccess;
    default:
        return fail(cudaErrorInvalidValue);
    }
}

cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind)
{
    LOCKED;
    if (any_capturing())
        return fail(cudaErrorStreamCaptureImplicit);
    const cudaError_t e = cudaMemcpyAsync(dst, src, n, kind, NULL);
    if (e != cudaSuccess)
        return e;
    return wait_all();
}

cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s)
{
    LOCKED;
    CHECK_STICKY();
    if (!stream_ok(s))
        return fail(cudaErrorInvalidResourceHandle);
    if (n == 0)
        return cudaSuccess;
    if (!in_device(p, n))
        return fail(cudaErrorInvalidValue);
    submit(s, [p, v, n]() { memset(p, v, n); });
    return cudaSuccess;
}

cudaError_t cudaMemset(void *p, int v, size_t n)
{
    LOCKED;
    if (any_capturing())
        return fail(cudaErrorStreamCaptureImplicit);
    const cudaError_t e = cudaMemsetAsync(p, v, n, NULL);
    if (e != cudaSuccess)
        return e;
    return wait_all();
}

cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags)
{
    (void)flags;
    const cudaError_t e = handle_new(g_streams, s);
    if (e == cudaSuccess)
        (*s)->created = ++g_streams_created;
    return e;
}
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    LOCKED;
    if (!s || !g_streams.count(s))
        return fail(cudaErrorInvalidResourceHandle);
    drain_until([s] { return s->q.empty(); }); /* its work still runs */
    return handle_delete(g_streams, s);
}
cudaError_t cudaStreamSynchronize(cudaStream_t s)
{
    LOCKED;
    if (!stream_ok(s))
        return fail(cudaErrorInvalidResourceHandle);
    if (refuse_in_capture(s))
        return fail(cudaErrorStreamCaptureUnsupported);
    /* this stream only: work on other streams may still be pending */
    cusim_stream *q = stream_of(s);
    drain_until([q] { return q->q.empty(); });
    return g_sticky != cudaSuccess ? fail(g_sticky) : cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void)
{
    LOCKED;
    if (any_capturing())
        return fail(cudaErrorStreamCaptureUnsupported);
    return wait_all();
}

cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags)
{
    (void)flags;
    return handle_new(g_events, e);
}
cudaError_t cudaEventDestroy(cudaEvent_t e) { return handle_delete(g_events, e); }
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s)
{
    LOCKED;
    CHECK_STICKY();
    if (!g_events.count(e) || !stream_ok(s))
        return fail(cudaErrorInvalidResourceHandle);
    e->captured = s && s->capturing; /* a node of the graph: the host cannot wait for it */
    if (!e->captured)
        e->mark = cusim_event_mark{stream_of(s), g_queued};
    return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t e)
{
    LOCKED;
    if (!g_events.count(e))
        return fail(cudaErrorInvalidResourceHandle);
    if (e->captured)
        return fail(cudaErrorCapturedEvent);
    const cusim_event_mark m = e->mark;
    drain_until([m] { return mark_done(m); });
    return g_sticky != cudaSuccess ? fail(g_sticky) : cudaSuccess;
}
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags)
{
    LOCKED;
    CHECK_STICKY();
    if (!g_events.count(e) || !stream_ok(s) || flags != 0)
        return fail(cudaErrorInvalidResourceHandle);
    if (e->captured || (s && s->capturing)) { /* not modelled: no capture here crosses streams */
        if (s && s->capturing)
            s->cap.invalid = true;
        return fail(cudaErrorStreamCaptureUnsupported);
    }
    /* the event as recorded now; a later record does not move this wait */
    stream_of(s)->q.push_back(op{g_queued++, std::function<void()>(), e->mark});
    return cudaSuccess;
}

cudaError_t cudaHostRegister(void *p, size_t n, unsigned flags)
{
    LOCKED;
    CHECK_STICKY();
    (void)flags;
    if (!p || n == 0)
        return fail(cudaErrorInvalidValue);
    const uintptr_t a = (uintptr_t)p;
    auto it = g_pinned.upper_bound(a + n - 1); /* any range overlapping [a, a + n) */
    if (it != g_pinned.begin() && (--it)->first + it->second > a)
        return fail(cudaErrorHostMemoryAlreadyRegistered);
    g_pinned[a] = n;
    g_registered.insert(a);
    return cudaSuccess;
}
cudaError_t cudaHostUnregister(void *p)
{
    LOCKED;
    if (!g_registered.count((uintptr_t)p))
        return fail(cudaErrorHostMemoryNotRegistered);
    drain(); /* queued copies may still read it */
    g_registered.erase((uintptr_t)p);
    g_pinned.erase((uintptr_t)p);
    return cudaSuccess;
}

cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode)
{
    LOCKED;
    CHECK_STICKY();
    if (!s || !g_streams.count(s) || s->capturing)
        return fail(s && s->capturing ? cudaErrorStreamCaptureUnsupported : cudaErrorInvalidResourceHandle);
    s->capturing = true;
    s->mode = mode;
    s->cap = capture();
    return cudaSuccess;
}
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g)
{
    LOCKED;
    *g = NULL;
    if (!s || !g_streams.count(s) || !s->capturing)
        return fail(cudaErrorInvalidValue);
    s->capturing = false;
    if (s->cap.invalid)
        return fail(cudaErrorStreamCaptureInvalidated);
    cusim_graph *graph = new cusim_graph();
    graph->ops = std::move(s->cap.ops);
    g_graphs.insert(graph);
    *g = graph;
    return cudaSuccess;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t g, unsigned long long flags)
{
    LOCKED;
    CHECK_STICKY();
    (void)flags;
    if (!g_graphs.count(g))
        return fail(cudaErrorInvalidValue);
    cusim_graph *x = new cusim_graph();
    x->ops = g->ops;
    g_graphs.insert(x);
    *exec = x;
    return cudaSuccess;
}
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s)
{
    LOCKED;
    CHECK_STICKY();
    if (!g_graphs.count(exec) || !stream_ok(s))
        return fail(cudaErrorInvalidResourceHandle);
    for (const auto &fn : exec->ops)
        submit(s, fn);
    return cudaSuccess;
}
cudaError_t cudaGraphDestroy(cudaGraph_t g) { return handle_delete(g_graphs, g); }
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec) { return handle_delete(g_graphs, exec); }

cudaError_t cusim_func_get_attributes(cudaFuncAttributes *a, const void *f)
{
    LOCKED;
    CHECK_STICKY();
    memset(a, 0, sizeof *a);
    a->maxThreadsPerBlock = MAX_THREADS;
    auto it = g_func_attrs.find(f);
    a->maxDynamicSharedSizeBytes = it == g_func_attrs.end() ? (int)SMEM_DEFAULT : it->second.max_dyn_smem;
    return cudaSuccess;
}
cudaError_t cusim_func_set_attribute(const void *f, cudaFuncAttribute attr, int value)
{
    LOCKED;
    CHECK_STICKY();
    if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 || (size_t)value > SMEM_OPTIN)
        return fail(cudaErrorInvalidValue);
    g_func_attrs[f].max_dyn_smem = value;
    return cudaSuccess;
}

/* ------------------------------------------------------------------ cuBLAS */

cublasStatus_t cublasCreate(cublasHandle_t *h)
{
    return handle_new(g_blas, h) == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}
cublasStatus_t cublasDestroy(cublasHandle_t h)
{
    return handle_delete(g_blas, h) == cudaSuccess ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_NOT_INITIALIZED;
}
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s)
{
    LOCKED;
    if (!g_blas.count(h))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    h->stream = s;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t bytes)
{
    LOCKED;
    if (!g_blas.count(h))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    return in_device(ws, bytes) ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_INVALID_VALUE;
}

/* C[m][n] (column-major, ldc) = alpha op(A) op(B) + beta C, op(A) m x k, op(B) k x n */
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *a, cudaDataType at, int lda, const void *b,
                            cudaDataType bt, int ldb, const void *beta, void *c, cudaDataType ct, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo)
{
    LOCKED;
    (void)algo;
    if (!g_blas.count(h))
        return CUBLAS_STATUS_NOT_INITIALIZED;
    if (g_sticky != cudaSuccess)
        return CUBLAS_STATUS_EXECUTION_FAILED;
    if (m < 0 || n < 0 || k < 0 || lda < (ta == CUBLAS_OP_N ? m : k) || ldb < (tb == CUBLAS_OP_N ? k : n) ||
        ldc < m || lda < 1 || ldb < 1 || ldc < 1)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (compute != CUBLAS_COMPUTE_32F || (ct != CUDA_R_32F && ct != CUDA_R_16F))
        return CUBLAS_STATUS_NOT_SUPPORTED;
    const size_t asz = at == CUDA_R_32F ? 4 : 2, bsz = bt == CUDA_R_32F ? 4 : 2, csz = ct == CUDA_R_32F ? 4 : 2;
    const size_t a_elems = (size_t)lda * (size_t)(ta == CUBLAS_OP_N ? k : m);
    const size_t b_elems = (size_t)ldb * (size_t)(tb == CUBLAS_OP_N ? n : k);
    if (m == 0 || n == 0)
        return CUBLAS_STATUS_SUCCESS;
    if ((k && (!in_device(a, a_elems * asz) || !in_device(b, b_elems * bsz))) ||
        !in_device(c, ((size_t)ldc * (size_t)(n - 1) + (size_t)m) * csz))
        return CUBLAS_STATUS_INVALID_VALUE;
    const float al = *(const float *)alpha, be = *(const float *)beta;
    submit(h->stream, [=]() {
        std::vector<float> A((size_t)m * k), B((size_t)n * k); /* A[i][l], B[j][l] */
        for (int i = 0; i < m; i++)
            for (int l = 0; l < k; l++)
                A[(size_t)i * k + l] =
                    elem(a, at, ta == CUBLAS_OP_N ? (size_t)i + (size_t)l * lda : (size_t)l + (size_t)i * lda);
        for (int j = 0; j < n; j++)
            for (int l = 0; l < k; l++)
                B[(size_t)j * k + l] =
                    elem(b, bt, tb == CUBLAS_OP_N ? (size_t)l + (size_t)j * ldb : (size_t)j + (size_t)l * ldb);
        for (int j = 0; j < n; j++)
            for (int i = 0; i < m; i++) {
                double s = 0.0;
                const float *x = &A[(size_t)i * k], *y = &B[(size_t)j * k];
                for (int l = 0; l < k; l++)
                    s += (double)x[l] * y[l];
                const size_t ci = (size_t)i + (size_t)j * ldc;
                float v = al * (float)s;
                if (be != 0.0f) /* C is not read when beta is 0: it may hold anything */
                    v += be * (ct == CUDA_R_32F ? ((float *)c)[ci] : cusim_f16_to_f32(((unsigned short *)c)[ci]));
                if (ct == CUDA_R_32F)
                    ((float *)c)[ci] = v;
                else
                    ((unsigned short *)c)[ci] = cusim_f32_to_f16(v);
            }
    });
    return CUBLAS_STATUS_SUCCESS;
}
