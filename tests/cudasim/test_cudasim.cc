/* test_cudasim.cc — the simulated device itself: that kernels compute what CUDA says they
 * compute, and that the faults it exists to find are found. Every fault case runs in a
 * child process (a fault is sticky: it ends the context, as on a GPU). */
#include "cuda_runtime.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures;
#define CHECK(cond, ...)                                             \
    do {                                                             \
        if (!(cond)) {                                               \
            fprintf(stderr, "%s:%d: FAILED %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                            \
            fprintf(stderr, "\n");                                   \
            failures++;                                              \
        }                                                            \
    } while (0)

/* ---- kernels ---- */

__global__ void k_block_sum(const float *x, float *out, int n)
{
    __shared__ float s[256];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    s[threadIdx.x] = i < n ? x[i] : 0.0f;
    __syncthreads();
    for (int h = blockDim.x / 2; h > 0; h /= 2) {
        if ((int)threadIdx.x < h)
            s[threadIdx.x] += s[threadIdx.x + h];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = s[0];
}

/* per warp: xor-sum, inclusive scan (shfl_up), broadcast of lane 5, and down by 3 */
__global__ void k_warp_ops(const int *x, int *sum, int *scan, int *bcast, int *down)
{
    const int i = threadIdx.x, lane = i & 31;
    int v = x[i], s = v, c = v;
    for (int o = 16; o > 0; o >>= 1)
        s += __shfl_xor_sync(0xffffffffu, s, o);
    for (int o = 1; o < 32; o <<= 1) {
        const int a = __shfl_up_sync(0xffffffffu, c, o);
        if (lane >= o)
            c += a;
    }
    sum[i] = s;
    scan[i] = c;
    bcast[i] = __shfl_sync(0xffffffffu, v, 5);
    down[i] = __shfl_down_sync(0xffffffffu, v, 3);
}

/* reads a neighbour's shared slot without a barrier: a race */
__global__ void k_race(float *out)
{
    __shared__ float s[64];
    s[threadIdx.x] = (float)threadIdx.x;
    out[blockIdx.x * 64 + threadIdx.x] = s[(threadIdx.x + 1) % 64];
}

__global__ void k_divergent_barrier(int *out)
{
    int v = (int)threadIdx.x;
    if (threadIdx.x < 40)
        __syncthreads();
    else
        v = __shfl_xor_sync(0xffffffffu, v, 1);
    out[threadIdx.x] = v;
}

__global__ void k_shuffle_after_exit(int *out)
{
    if ((threadIdx.x & 31) >= 16)
        return;
    out[threadIdx.x] = __shfl_xor_sync(0xffffffffu, (int)threadIdx.x, 1);
}

__global__ void k_misaligned(const unsigned char *p)
{
    cusim_check_align(p + 4, 16);
}

__global__ void k_set(int *p, int v) { p[threadIdx.x] = v; }
__global__ void k_poke(int *p, int i) { p[i] = 1; }

__global__ void k_dyn(float *out)
{
    DYN_SHARED(float, s);
    s[threadIdx.x] = 2.0f * (float)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
}

/* ---- helpers ---- */

template <typename T> static T *dev(size_t n)
{
    T *p = NULL;
    CHECK(cudaMalloc(&p, n * sizeof(T)) == cudaSuccess, "cudaMalloc");
    return p;
}

/* Runs fn in a child; returns its exit status, or 128 + the signal that ended it. */
template <typename F> static int in_child(F fn)
{
    fflush(NULL);
    const pid_t pid = fork();
    if (pid == 0) {
        fn();
        _exit(0);
    }
    int st = 0;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---- cases ---- */

static void reductions()
{
    const int n = 700;
    float h[n], sums[3];
    for (int i = 0; i < n; i++)
        h[i] = (float)(i % 13) - 6.0f;
    float *dx = dev<float>(n), *dout = dev<float>(3);
    cudaMemcpy(dx, h, sizeof h, cudaMemcpyHostToDevice);
    LAUNCH(3, 256, 0, NULL, k_block_sum)(dx, dout, n);
    CHECK(cudaGetLastError() == cudaSuccess, "launch");
    CHECK(cudaMemcpy(sums, dout, sizeof sums, cudaMemcpyDeviceToHost) == cudaSuccess, "copy back");
    for (int b = 0; b < 3; b++) {
        float want = 0;
        for (int i = b * 256; i < n && i < (b + 1) * 256; i++)
            want += h[i];
        CHECK(sums[b] == want, "block %d: %g, want %g", b, sums[b], want);
    }
    cudaFree(dx);
    cudaFree(dout);
}

static void warp_ops()
{
    const int n = 64;
    int h[n], sum[n], scan[n], bc[n], dn[n];
    for (int i = 0; i < n; i++)
        h[i] = i * 7 % 11;
    int *dx = dev<int>(n), *ds = dev<int>(n), *dc = dev<int>(n), *db = dev<int>(n), *dd = dev<int>(n);
    cudaMemcpy(dx, h, sizeof h, cudaMemcpyHostToDevice);
    LAUNCH(1, n, 0, NULL, k_warp_ops)(dx, ds, dc, db, dd);
    cudaMemcpy(sum, ds, sizeof sum, cudaMemcpyDeviceToHost);
    cudaMemcpy(scan, dc, sizeof scan, cudaMemcpyDeviceToHost);
    cudaMemcpy(bc, db, sizeof bc, cudaMemcpyDeviceToHost);
    cudaMemcpy(dn, dd, sizeof dn, cudaMemcpyDeviceToHost);
    for (int w = 0; w < 2; w++) {
        int total = 0, run = 0;
        for (int l = 0; l < 32; l++)
            total += h[w * 32 + l];
        for (int l = 0; l < 32; l++) {
            const int i = w * 32 + l;
            run += h[i];
            CHECK(sum[i] == total, "xor sum lane %d: %d, want %d", i, sum[i], total);
            CHECK(scan[i] == run, "scan lane %d: %d, want %d", i, scan[i], run);
            CHECK(bc[i] == h[w * 32 + 5], "broadcast lane %d", i);
            CHECK(dn[i] == (l + 3 < 32 ? h[i + 3] : h[i]), "down lane %d", i);
        }
    }
}

static void race_is_visible()
{
    /* two blocks run in opposite orders: one reads its neighbours' slots before they are
     * written (NaN), the other after; without the barrier neither is guaranteed */
    float *d = dev<float>(128), h[128];
    LAUNCH(2, 64, 0, NULL, k_race)(d);
    cudaMemcpy(h, d, sizeof h, cudaMemcpyDeviceToHost);
    int nan = 0, right = 0;
    for (int i = 0; i < 128; i++) {
        nan += h[i] != h[i];
        right += h[i] == (float)((i % 64 + 1) % 64);
    }
    CHECK(nan > 0 && right > 0, "a missing barrier must change results (%d NaN, %d as if ordered)", nan, right);
    cudaFree(d);
}

static void deferred_copies_and_graphs()
{
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking) == cudaSuccess, "stream");
    int *pin = NULL, *d = dev<int>(4), back[4];
    CHECK(cudaHostAlloc((void **)&pin, 16, cudaHostAllocDefault) == cudaSuccess, "pinned");
    /* a copy from pinned memory reads it when it runs, not when it is queued */
    for (int i = 0; i < 4; i++)
        pin[i] = 1;
    cudaMemcpyAsync(d, pin, 16, cudaMemcpyHostToDevice, s);
    for (int i = 0; i < 4; i++)
        pin[i] = 2;
    cudaStreamSynchronize(s);
    cudaMemcpy(back, d, 16, cudaMemcpyDeviceToHost);
    CHECK(back[0] == 2, "a queued copy from pinned memory read %d before it ran", back[0]);

    /* capture: nothing runs; waits are refused; the replay uses the recorded arguments */
    cudaEvent_t ev;
    cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed) == cudaSuccess, "begin capture");
    int v = 7;
    LAUNCH(1, 4, 0, s, k_set)(d, v);
    v = 9;
    cudaEventRecord(ev, s);
    CHECK(cudaEventSynchronize(ev) == cudaErrorCapturedEvent, "host wait on a captured event");
    cudaGraph_t g = NULL;
    CHECK(cudaStreamEndCapture(s, &g) == cudaSuccess && g, "end capture");
    cudaMemcpy(back, d, 16, cudaMemcpyDeviceToHost);
    CHECK(back[0] == 2, "a captured launch ran at capture (%d)", back[0]);
    cudaGraphExec_t x = NULL;
    CHECK(cudaGraphInstantiate(&x, g, 0) == cudaSuccess, "instantiate");
    CHECK(cudaGraphLaunch(x, s) == cudaSuccess && cudaStreamSynchronize(s) == cudaSuccess, "replay");
    cudaMemcpy(back, d, 16, cudaMemcpyDeviceToHost);
    CHECK(back[3] == 7, "the replay wrote %d, the recorded argument is 7", back[3]);
    cudaGraphExecDestroy(x);
    cudaGraphDestroy(g);

    /* a wait on the capturing stream loses the capture */
    cudaStreamBeginCapture(s, cudaStreamCaptureModeRelaxed);
    CHECK(cudaStreamSynchronize(s) == cudaErrorStreamCaptureUnsupported, "sync while capturing");
    CHECK(cudaStreamEndCapture(s, &g) == cudaErrorStreamCaptureInvalidated && !g, "capture invalidated");
    cudaGetLastError();
    cudaEventDestroy(ev);
    cudaFreeHost(pin);
    cudaFree(d);
    cudaStreamDestroy(s);
}

__global__ void k_copy_int(int *out, const int *in)
{
    out[threadIdx.x] = in[threadIdx.x];
}

/* Streams are ordered only by events: without one, a reader on another stream sees the
 * write done in one drain and not done in the next. */
static void streams_and_events()
{
    cudaStream_t a, b;
    cudaEvent_t ev;
    cudaStreamCreateWithFlags(&a, cudaStreamNonBlocking);
    cudaStreamCreateWithFlags(&b, cudaStreamNonBlocking);
    cudaEventCreateWithFlags(&ev, cudaEventDisableTiming);
    int *d = dev<int>(4), *out = dev<int>(4), h[4];
    int seen[2][3];
    for (int round = 0; round < 2; round++) {
        /* 0: no event; 1: a waits for b's write; 2: b's write waits for a's read */
        for (int mode = 0; mode < 3; mode++) {
            cudaMemset(d, 0, 16);
            if (mode < 2) {
                cudaMemsetAsync(d, 1, 16, b);
                if (mode == 1) {
                    cudaEventRecord(ev, b);
                    cudaStreamWaitEvent(a, ev, 0);
                }
                LAUNCH(1, 4, 0, a, k_copy_int)(out, d);
            } else {
                LAUNCH(1, 4, 0, a, k_copy_int)(out, d);
                cudaEventRecord(ev, a);
                cudaStreamWaitEvent(b, ev, 0);
                cudaMemsetAsync(d, 1, 16, b);
            }
            CHECK(cudaDeviceSynchronize() == cudaSuccess, "sync");
            cudaMemcpy(h, out, 16, cudaMemcpyDeviceToHost);
            seen[round][mode] = h[0];
        }
    }
    CHECK(seen[0][0] != seen[1][0], "without an event both drains gave %#x", seen[0][0]);
    CHECK(seen[0][1] == 0x01010101 && seen[1][1] == 0x01010101, "waiting for the write: %#x %#x", seen[0][1],
          seen[1][1]);
    CHECK(seen[0][2] == 0 && seen[1][2] == 0, "the write waiting for the read: %#x %#x", seen[0][2], seen[1][2]);

    /* registered host memory is read when the copy runs, like pinned memory */
    static int host[1024] __attribute__((aligned(4096)));
    host[0] = 1;
    CHECK(cudaHostRegister(host, sizeof host, cudaHostRegisterReadOnly) == cudaSuccess, "register");
    CHECK(cudaHostRegister(host + 512, 16, cudaHostRegisterReadOnly) == cudaErrorHostMemoryAlreadyRegistered,
          "registering an overlapping range");
    cudaGetLastError();
    cudaMemcpyAsync(d, host, 16, cudaMemcpyHostToDevice, a);
    host[0] = 2;
    cudaStreamSynchronize(a);
    cudaMemcpy(h, d, 16, cudaMemcpyDeviceToHost);
    CHECK(h[0] == 2, "a copy from registered memory read %d before it ran", h[0]);
    CHECK(cudaHostUnregister(host) == cudaSuccess, "unregister");
    CHECK(cudaHostUnregister(host) == cudaErrorHostMemoryNotRegistered, "unregister twice");
    cudaGetLastError();
    cudaEventDestroy(ev);
    cudaStreamDestroy(a);
    cudaStreamDestroy(b);
    cudaFree(d);
    cudaFree(out);
}

static void launch_limits_and_memory()
{
    int *d = dev<int>(4);
    LAUNCH(1, 2048, 0, NULL, k_set)(d, 1);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "2048 threads per block");
    LAUNCH(dim3(1, 70000), 32, 0, NULL, k_set)(d, 1);
    CHECK(cudaGetLastError() == cudaErrorInvalidConfiguration, "grid y of 70000");
    float *f = dev<float>(1024), h[1024];
    LAUNCH(1, 1024, 64 << 10, NULL, k_dyn)(f);
    CHECK(cudaGetLastError() == cudaErrorInvalidValue, "64 KiB of dynamic shared memory without the attribute");
    CHECK(cudaFuncSetAttribute(k_dyn, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 << 10) == cudaSuccess, "attr");
    LAUNCH(1, 1024, 64 << 10, NULL, k_dyn)(f);
    CHECK(cudaGetLastError() == cudaSuccess, "with the attribute");
    cudaMemcpy(h, f, sizeof h, cudaMemcpyDeviceToHost);
    CHECK(h[0] == 2046.0f && h[1023] == 0.0f, "dynamic shared memory: %g %g", h[0], h[1023]);
    /* CUDASIM_VRAM_MIB=64 (set by main) */
    void *big = NULL;
    CHECK(cudaMalloc(&big, 80u << 20) == cudaErrorMemoryAllocation, "80 MiB on a 64 MiB device");
    CHECK(cudaGetLastError() == cudaErrorMemoryAllocation && cudaGetLastError() == cudaSuccess,
          "out of memory is reported once");
    size_t fr = 0, tot = 0;
    cudaMemGetInfo(&fr, &tot);
    CHECK(tot == 64u << 20 && fr < tot, "memory info %zu of %zu", fr, tot);
    cudaFree(d);
    cudaFree(f);
}

static void gemm()
{
    /* C[m][n] = A^T B with A stored k x m and B k x n (what matmul asks of cuBLAS) */
    const int m = 5, n = 3, k = 7;
    float a[k * m], b[k * n], c[m * n];
    for (int i = 0; i < k * m; i++)
        a[i] = (float)(i % 5) - 2;
    for (int i = 0; i < k * n; i++)
        b[i] = (float)(i % 3) + 0.5f;
    float *da = dev<float>(k * m), *db = dev<float>(k * n), *dc = dev<float>(m * n);
    cudaMemcpy(da, a, sizeof a, cudaMemcpyHostToDevice);
    cudaMemcpy(db, b, sizeof b, cudaMemcpyHostToDevice);
    cublasHandle_t hnd;
    cublasCreate(&hnd);
    const float one = 1, zero = 0;
    CHECK(cublasGemmEx(hnd, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &one, da, CUDA_R_32F, k, db, CUDA_R_32F, k, &zero, dc,
                       CUDA_R_32F, m, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT) == CUBLAS_STATUS_SUCCESS,
          "gemm");
    cudaMemcpy(c, dc, sizeof c, cudaMemcpyDeviceToHost);
    for (int j = 0; j < n; j++)
        for (int i = 0; i < m; i++) {
            float w = 0;
            for (int l = 0; l < k; l++)
                w += a[l + i * k] * b[l + j * k];
            CHECK(c[i + j * m] == w, "C[%d][%d] = %g, want %g", i, j, c[i + j * m], w);
        }
    cublasDestroy(hnd);
}

/* Each fault: the launch is accepted, the fault shows at the next wait, and sticks. */
static void faults()
{
    struct {
        const char *what;
        void (*run)(int *);
        cudaError_t want;
    } cases[] = {
        {"divergent barrier", [](int *d) { LAUNCH(1, 64, 0, NULL, k_divergent_barrier)(d); }, cudaErrorLaunchFailure},
        {"shuffle after exit", [](int *d) { LAUNCH(1, 64, 0, NULL, k_shuffle_after_exit)(d); }, cudaErrorLaunchFailure},
        {"misaligned load", [](int *d) { LAUNCH(1, 32, 0, NULL, k_misaligned)((const unsigned char *)d); },
         cudaErrorMisalignedAddress},
    };
    for (auto &c : cases) {
        const int rc = in_child([&]() {
            int *d = dev<int>(64);
            c.run(d);
            if (cudaGetLastError() != cudaSuccess)
                _exit(2); /* refused at launch: not the point */
            const cudaError_t e = cudaDeviceSynchronize();
            if (e != c.want)
                _exit(3);
            int *e2 = NULL;
            _exit(cudaMalloc(&e2, 16) == c.want ? 0 : 4); /* sticky */
        });
        CHECK(rc == 0, "%s: child exited %d", c.what, rc);
    }
    int rc = in_child([]() {
        int *d = dev<int>(4);
        d[0] = 1; /* the host touches device memory */
    });
    CHECK(rc == 128 + SIGSEGV, "host write to device memory: child exited %d, want SIGSEGV", rc);
    rc = in_child([]() {
        int *d = dev<int>(64);
        LAUNCH(1, 1, 0, NULL, k_poke)(d, 63); /* the last element: fine */
        if (cudaDeviceSynchronize() != cudaSuccess)
            _exit(2);
        LAUNCH(1, 1, 0, NULL, k_poke)(d, 64); /* one past the (256-byte) allocation */
        cudaDeviceSynchronize();
    });
    CHECK(rc == 128 + SIGSEGV, "kernel write past an allocation: child exited %d, want SIGSEGV", rc);
}

int main()
{
    setenv("CUDASIM_VRAM_MIB", "64", 1);
    reductions();
    warp_ops();
    race_is_visible();
    deferred_copies_and_graphs();
    streams_and_events();
    launch_limits_and_memory();
    gemm();
    faults();
    if (failures) {
        fprintf(stderr, "test_cudasim: %d failed\n", failures);
        return 1;
    }
    printf("test_cudasim: all passed\n");
    return 0;
}
