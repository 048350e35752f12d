/* cudasim.h — a simulated CUDA device that runs kernels/ on the CPU.
 *
 * Built with -DLLMFS_CUDA=SIM, the kernel files compile as plain C++ against this
 * header (reached through the names cuda_runtime.h, cuda_fp16.h, cuda_bf16.h and
 * cublas_v2.h, which come first on the include path) and the gpu tests run on any
 * machine. It is a test instrument, not a backend: slow, and exact where the GPU is not.
 *
 * What it models, because that is where kernels and their host code go wrong:
 * - every thread of a block is a fiber; __syncthreads and the warp shuffles are real
 *   barriers, so a barrier some threads never reach, a shuffle in a divergent branch or
 *   over lanes that have exited is reported (a deadlock on the GPU, or garbage);
 * - threads run between barriers in an order that alternates per block and per phase,
 *   so a read of shared memory that a missing barrier leaves unordered differs by run;
 * - shared memory (every block's) and fresh device memory start as NaN bytes (0xff);
 * - work on a stream runs when the host waits for it (stream or event synchronize, a
 *   synchronous copy), not when it is queued: kernel arguments are taken at launch and
 *   copies from pinned host memory read it when they run, as on the device;
 * - stream capture records instead of running; a recorded graph replays its launches
 *   with the arguments of the recording; waiting on a capturing stream invalidates it;
 * - launch limits (threads per block, grid sizes, dynamic shared memory above 48 KiB
 *   without the attribute), sticky errors after a fault, device memory of a settable
 *   size (CUDASIM_VRAM_MIB) so out-of-memory paths run;
 * - cuBLAS GemmEx in f32 over f16, bf16 and f32 inputs.
 * Loads that are off their natural alignment are faults when UBSan's alignment check
 * is on (the build turns it on for the kernels).
 */
#ifndef CUDASIM_H
#define CUDASIM_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>
#include <tuple>
#include <utility>

#define CUDASIM 1

/* ---- the language ---- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __launch_bounds__(...)
/* One block runs at a time, so static storage is the block's shared memory; kept in one
 * section so that each block starts with it poisoned. */
#define __shared__ static __attribute__((section("cusim_shared")))
#define __align__(n) __attribute__((aligned(n)))

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
    constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};
struct __attribute__((aligned(8))) float2 {
    float x, y;
};
struct __attribute__((aligned(16))) float4 {
    float x, y, z, w;
};
struct __attribute__((aligned(16))) int4 {
    int x, y, z, w;
};
static inline float2 make_float2(float x, float y) { return float2{x, y}; }
static inline float4 make_float4(float x, float y, float z, float w) { return float4{x, y, z, w}; }
static inline int4 make_int4(int x, int y, int z, int w) { return int4{x, y, z, w}; }

extern uint3 cusim_thread, cusim_block;
extern dim3 cusim_block_dim, cusim_grid_dim;
#define threadIdx cusim_thread
#define blockIdx cusim_block
#define blockDim cusim_block_dim
#define gridDim cusim_grid_dim

/* ---- f16 and bf16 ---- */
struct __half {
    unsigned short x;
};
struct __attribute__((aligned(4))) __half2 {
    __half x, y;
};
struct __nv_bfloat16 {
    unsigned short x;
};
float cusim_f16_to_f32(unsigned short h);
unsigned short cusim_f32_to_f16(float f);
unsigned short cusim_f32_to_bf16(float f);
static inline __half __float2half_rn(float f) { return __half{cusim_f32_to_f16(f)}; }
static inline float __half2float(__half h) { return cusim_f16_to_f32(h.x); }
static inline unsigned short __half_as_ushort(__half h) { return h.x; }
static inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
static inline float2 __half22float2(__half2 h) { return float2{__half2float(h.x), __half2float(h.y)}; }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16{cusim_f32_to_bf16(f)}; }

/* ---- intrinsics ---- */
#define __expf(x) expf(x) /* glibc declares __expf but does not export it */
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline float __uint_as_float(unsigned u) { float f; memcpy(&f, &u, 4); return f; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
template <typename T> static inline T __ldg(const T *p) { return *p; }
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline long min(long a, long b) { return a < b ? a : b; }
static inline long max(long a, long b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
/* one thread runs at a time: read-modify-write is atomic */
template <typename T> static inline T atomicAdd(T *p, T v) { T old = *p; *p = old + v; return old; }

/* ---- barriers: the calling thread waits for its block or its warp ---- */
void cusim_syncthreads(void);
void cusim_syncwarp(unsigned mask);
#define __syncthreads() cusim_syncthreads()
static inline void __syncwarp(unsigned mask = 0xffffffffu) { cusim_syncwarp(mask); }
enum cusim_shfl_kind { CUSIM_SHFL_IDX, CUSIM_SHFL_UP, CUSIM_SHFL_DOWN, CUSIM_SHFL_XOR };
uint64_t cusim_shfl(unsigned mask, uint64_t v, enum cusim_shfl_kind kind, int arg, int width);
template <typename T> static inline T cusim_shfl_t(unsigned mask, T v, cusim_shfl_kind k, int arg, int width)
{
    static_assert(sizeof(T) <= 8, "shuffles move 8 bytes at most");
    uint64_t u = 0;
    memcpy(&u, &v, sizeof(T));
    u = cusim_shfl(mask, u, k, arg, width);
    T r;
    memcpy(&r, &u, sizeof(T));
    return r;
}
template <typename T> static inline T __shfl_sync(unsigned m, T v, int src, int w = 32) { return cusim_shfl_t(m, v, CUSIM_SHFL_IDX, src, w); }
template <typename T> static inline T __shfl_up_sync(unsigned m, T v, unsigned d, int w = 32) { return cusim_shfl_t(m, v, CUSIM_SHFL_UP, (int)d, w); }
template <typename T> static inline T __shfl_down_sync(unsigned m, T v, unsigned d, int w = 32) { return cusim_shfl_t(m, v, CUSIM_SHFL_DOWN, (int)d, w); }
template <typename T> static inline T __shfl_xor_sync(unsigned m, T v, int l, int w = 32) { return cusim_shfl_t(m, v, CUSIM_SHFL_XOR, l, w); }

/* the block's dynamic shared memory */
void *cusim_dyn_smem(void);
#define DYN_SHARED(type, name) type *name = (type *)cusim_dyn_smem()

/* ---- the runtime API (the part kernels/ uses) ---- */
enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorInvalidResourceHandle = 400,
    cudaErrorIllegalAddress = 700,
    cudaErrorMisalignedAddress = 716,
    cudaErrorLaunchFailure = 719,
    cudaErrorStreamCaptureUnsupported = 900,
    cudaErrorStreamCaptureInvalidated = 901,
    cudaErrorStreamCaptureImplicit = 906,
    cudaErrorCapturedEvent = 907,
    cudaErrorHostMemoryAlreadyRegistered = 712,
    cudaErrorHostMemoryNotRegistered = 713,
};
typedef enum cudaError cudaError_t;
enum cudaMemcpyKind { cudaMemcpyHostToHost, cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice, cudaMemcpyDefault };
enum cudaStreamCaptureMode { cudaStreamCaptureModeGlobal, cudaStreamCaptureModeThreadLocal, cudaStreamCaptureModeRelaxed };
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
#define cudaStreamNonBlocking 0x01u
#define cudaEventDisableTiming 0x02u
#define cudaHostAllocDefault 0x00u
#define cudaHostRegisterPortable 0x01u
#define cudaHostRegisterReadOnly 0x08u

typedef struct cusim_stream *cudaStream_t;
typedef struct cusim_event *cudaEvent_t;
typedef struct cusim_graph *cudaGraph_t;
typedef struct cusim_graph *cudaGraphExec_t;

struct cudaDeviceProp {
    char name[256];
    size_t totalGlobalMem;
    size_t sharedMemPerBlock;
    size_t sharedMemPerBlockOptin;
    int multiProcessorCount;
    int major, minor;
    int warpSize;
    int maxThreadsPerBlock;
};
struct cudaFuncAttributes {
    size_t sharedSizeBytes;
    int maxThreadsPerBlock;
    int maxDynamicSharedSizeBytes;
};

cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetDevice(int *dev);
cudaError_t cudaSetDevice(int dev);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int dev);
cudaError_t cudaMemGetInfo(size_t *free_bytes, size_t *total_bytes);
cudaError_t cudaGetLastError(void);
const char *cudaGetErrorString(cudaError_t e);
cudaError_t cudaMalloc(void **p, size_t n);
template <typename T> static inline cudaError_t cudaMalloc(T **p, size_t n) { return cudaMalloc((void **)p, n); }
cudaError_t cudaFree(void *p);
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned flags);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t n, cudaMemcpyKind kind, cudaStream_t s);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t n, cudaMemcpyKind kind);
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s);
cudaError_t cudaMemset(void *p, int v, size_t n);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaStreamWaitEvent(cudaStream_t s, cudaEvent_t e, unsigned flags);
cudaError_t cudaHostRegister(void *p, size_t n, unsigned flags);
cudaError_t cudaHostUnregister(void *p);
cudaError_t cudaStreamBeginCapture(cudaStream_t s, cudaStreamCaptureMode mode);
cudaError_t cudaStreamEndCapture(cudaStream_t s, cudaGraph_t *g);
cudaError_t cudaGraphInstantiate(cudaGraphExec_t *exec, cudaGraph_t g, unsigned long long flags);
cudaError_t cudaGraphLaunch(cudaGraphExec_t exec, cudaStream_t s);
cudaError_t cudaGraphDestroy(cudaGraph_t g);
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t exec);
cudaError_t cusim_func_get_attributes(cudaFuncAttributes *a, const void *f);
cudaError_t cusim_func_set_attribute(const void *f, cudaFuncAttribute attr, int value);
template <typename F> static inline cudaError_t cudaFuncGetAttributes(cudaFuncAttributes *a, F *f)
{
    return cusim_func_get_attributes(a, (const void *)f);
}
template <typename F> static inline cudaError_t cudaFuncSetAttribute(F *f, cudaFuncAttribute attr, int value)
{
    return cusim_func_set_attribute((const void *)f, attr, value);
}

/* Queues grid x block threads of body on s (launch errors go to cudaGetLastError). */
void cusim_launch(const char *name, const void *kernel, dim3 grid, dim3 block, size_t smem, cudaStream_t s,
                  std::function<void()> body);

/* LAUNCH(grid, block, smem, stream, kernel)(args...): the arguments are converted to the
 * kernel's parameter types and copied, as a launch does. */
template <typename... P> struct cusim_launcher {
    const char *name;
    void (*k)(P...);
    dim3 grid, block;
    size_t smem;
    cudaStream_t s;
    template <typename... A> void operator()(A &&...a) const
    {
        void (*kf)(P...) = k;
        std::tuple<P...> args(std::forward<A>(a)...);
        cusim_launch(name, (const void *)kf, grid, block, smem, s, [kf, args]() { std::apply(kf, args); });
    }
};
template <typename... P>
static inline cusim_launcher<P...> cusim_make_launcher(const char *name, dim3 g, dim3 b, size_t smem, cudaStream_t s,
                                                      void (*k)(P...))
{
    return cusim_launcher<P...>{name, k, g, b, smem, s};
}
#define LAUNCH(grid, block, smem, stream, ...) \
    cusim_make_launcher(#__VA_ARGS__, (grid), (block), (smem), (stream), __VA_ARGS__)

/* ---- cuBLAS (GemmEx in f32) ---- */
typedef struct cusim_blas *cublasHandle_t;
typedef enum {
    CUBLAS_STATUS_SUCCESS = 0,
    CUBLAS_STATUS_NOT_INITIALIZED = 1,
    CUBLAS_STATUS_ALLOC_FAILED = 3,
    CUBLAS_STATUS_INVALID_VALUE = 7,
    CUBLAS_STATUS_ARCH_MISMATCH = 8,
    CUBLAS_STATUS_EXECUTION_FAILED = 13,
    CUBLAS_STATUS_INTERNAL_ERROR = 14,
    CUBLAS_STATUS_NOT_SUPPORTED = 15,
} cublasStatus_t;
typedef enum { CUBLAS_OP_N = 0, CUBLAS_OP_T = 1 } cublasOperation_t;
typedef enum { CUDA_R_32F = 0, CUDA_R_16F = 2, CUDA_R_16BF = 14 } cudaDataType;
typedef enum { CUBLAS_COMPUTE_32F = 68 } cublasComputeType_t;
typedef enum { CUBLAS_GEMM_DEFAULT = -1 } cublasGemmAlgo_t;
cublasStatus_t cublasCreate(cublasHandle_t *h);
cublasStatus_t cublasDestroy(cublasHandle_t h);
cublasStatus_t cublasSetStream(cublasHandle_t h, cudaStream_t s);
cublasStatus_t cublasSetWorkspace(cublasHandle_t h, void *ws, size_t bytes);
cublasStatus_t cublasGemmEx(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int m, int n, int k,
                            const void *alpha, const void *a, cudaDataType at, int lda, const void *b,
                            cudaDataType bt, int ldb, const void *beta, void *c, cudaDataType ct, int ldc,
                            cublasComputeType_t compute, cublasGemmAlgo_t algo);

/* A load of n bytes at p from a kernel: a fault (sticky error) when p is off an n-byte
 * boundary, as the device's vector loads are. Outside kernels it does nothing. */
void cusim_check_align(const void *p, size_t n);

#endif
