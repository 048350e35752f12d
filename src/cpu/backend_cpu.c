/* backend_cpu.c — the CPU backend: weights read in place from the file mapping,
 * activations in RAM, every op split across a thread pool.
 *
 * Matmuls convert the activations once to the weight's dot type (quant.h), then split
 * the weight's rows across threads: one row at a time with vec_dot for a single token,
 * QUANT_TILE_R x QUANT_TILE_C tiles with gemm_tile for several. Scratch grows to the
 * largest batch seen and then stays, so steady-state decoding never allocates. Ops
 * cannot return errors; a failed allocation turns the op into a no-op and is reported
 * by check().
 */
#include "backend.h"
#include "backend_cpu_impl.h"
#include "kv.h"
#include "llmfs.h"
#include "quant.h"
#include "threadpool.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- scratch */

typedef struct buf {
    void *p;
    size_t cap;
} buf;

/* Grows b to at least n bytes (contents are not kept). */
static bool buf_reserve(buf *b, size_t n)
{
    if (n <= b->cap)
        return true;
    size_t cap = n + n / 4 + 64;
    void *p = NULL;
    if (posix_memalign(&p, 64, cap))
        return false;
    free(b->p);
    b->p = p;
    b->cap = cap;
    return true;
}

/* Attention workspace of one thread. */
typedef struct attn_tls {
    buf scores; /* [group][cells] */
    buf acc;    /* [group][head_dim] running output */
    buf qdot;   /* [group] query rows in K's dot type */
    buf qf;     /* [group][head_dim] query rows rounded to f16, as floats */
    buf vrow;   /* [FLASH_TILE][head_dim] value rows as floats */
} attn_tls;

#define MM_MAX_TASKS_ 4

typedef struct cpu_be {
    int n_threads;        /* threads for single-token steps */
    int n_threads_batch;  /* threads for prompt batches */
    threadpool *pool;
    int nth;              /* threads for the current batch */
    int err;              /* sticky errno, see check() */

    /* the current batch */
    int n;
    buf tok, pos, seq;
    buf last;             /* [n] the last cell each token sees (its position unless non-causal) */

    buf act[MM_MAX_TASKS_]; /* activations in weights' dot types */

    /* rope cos/sin table [n][n_rot/2][2] of the current batch and parameters */
    buf rope_cs;
    bool rope_valid;
    rope_params rope_key;

    attn_tls *tls;        /* one per pool thread */
    int n_tls;

    /* MoE */
    buf moe_cnt, moe_off, moe_slot, moe_xq, moe_g, moe_u, moe_hq, moe_y, moe_items;

    buf stage[2];         /* streamed weights (a second CPU backend in tests) */
} cpu_be;

static cpu_be *impl(backend *be) { return be->impl; }

static void fail(cpu_be *c, int e)
{
    if (!c->err)
        c->err = e;
}

/* Runs fn on nth threads (inline when one suffices). */
static void par(cpu_be *c, int nth, threadpool_fn fn, void *ctx)
{
    if (nth <= 1)
        fn(ctx, 0, 1);
    else
        threadpool_run(c->pool, fn, ctx, nth);
}

/* Threads for an op of `work` elementary steps: small ops run inline because waking the
 * pool costs more than they do. */
static int nth_for(const cpu_be *c, double work)
{
    if (work < 32768.0)
        return 1;
    return c->nth;
}

static void split(int64_t n, int ith, int nth, int64_t *a, int64_t *b)
{
    int64_t per = (n + nth - 1) / nth;
    *a = per * ith;
    *b = *a + per;
    if (*a > n)
        *a = n;
    if (*b > n)
        *b = n;
}

/* ---------------------------------------------------------------- kernels */

static void scores_f16_scalar(const uint8_t *k, size_t k_stride, int n, const float *q, int g, int hd,
                              float scale, float *out, size_t out_stride)
{
    for (int j = 0; j < n; j++) {
        const uint16_t *kr = (const uint16_t *)(k + (size_t)j * k_stride);
        for (int h = 0; h < g; h++) {
            float s = 0;
            for (int d = 0; d < hd; d++)
                s += q[(size_t)h * hd + d] * f16_to_f32(kr[d]);
            out[(size_t)h * out_stride + j] = s * scale;
        }
    }
}

static void accum_f16_scalar(float *acc, const uint8_t *v, size_t v_stride, int n, const float *p,
                             size_t p_stride, int g, int hd)
{
    for (int j = 0; j < n; j++) {
        const uint16_t *vr = (const uint16_t *)(v + (size_t)j * v_stride);
        for (int h = 0; h < g; h++) {
            float pj = p[(size_t)h * p_stride + j];
            for (int d = 0; d < hd; d++)
                acc[(size_t)h * hd + d] += pj * f16_to_f32(vr[d]);
        }
    }
}

static void accum_f32_scalar(float *acc, const float *v, size_t v_stride, int n, const float *p,
                             size_t p_stride, int g, int hd)
{
    for (int j = 0; j < n; j++) {
        const float *vr = (const float *)((const uint8_t *)v + (size_t)j * v_stride);
        for (int h = 0; h < g; h++) {
            float pj = p[(size_t)h * p_stride + j];
            for (int d = 0; d < hd; d++)
                acc[(size_t)h * hd + d] += pj * vr[d];
        }
    }
}

static void round_f16_scalar(float *x, int n)
{
    for (int i = 0; i < n; i++)
        x[i] = f16_to_f32(f32_to_f16(x[i]));
}

static void swiglu_scalar(float *out, const float *gate, const float *up, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = gate[i] / (1.0f + expf(-gate[i])) * up[i];
}

static float delta_row_scalar(float *s, const float *k, const float *q, int d, float decay, float beta,
                              float v)
{
    float u = 0, acc = 0;
    for (int x = 0; x < d; x++) {
        s[x] *= decay;
        u += s[x] * k[x];
    }
    float delta = beta * (v - u);
    for (int x = 0; x < d; x++) {
        s[x] += k[x] * delta;
        acc += s[x] * q[x];
    }
    return acc;
}

/* gpt-oss's clamped SwiGLU: the gate is clamped from above only, up on both sides, and
 * up enters as (u + 1) (llama.cpp's swiglu_oai). */
static void swiglu_oai(float *out, const float *gate, const float *up, int64_t n, float alpha,
                       float limit)
{
    for (int64_t i = 0; i < n; i++) {
        float g = gate[i] < limit ? gate[i] : limit;
        float u = up[i] < -limit ? -limit : up[i] > limit ? limit : up[i];
        out[i] = g / (1.0f + expf(-alpha * g)) * (u + 1.0f);
    }
}

static const cpu_kernels kernels_scalar = {scores_f16_scalar, accum_f16_scalar, accum_f32_scalar,
                                           round_f16_scalar, swiglu_scalar, delta_row_scalar};
static cpu_kernels kernels_avx2;
static int have_avx2 = -1;

/* The AVX2 loops unless the quant kernels are pinned to scalar (tests run both). */
static const cpu_kernels *kern(void)
{
    int h = __atomic_load_n(&have_avx2, __ATOMIC_ACQUIRE);
    if (h < 0) {
        cpu_kernels k;
        h = cpu_kernels_avx2(&k);
        if (h)
            kernels_avx2 = k;
        __atomic_store_n(&have_avx2, h, __ATOMIC_RELEASE);
    }
    if (!h || !strcmp(quant_isa(), "scalar"))
        return &kernels_scalar;
    return &kernels_avx2;
}

/* ---------------------------------------------------------------- memory */

static void *cpu_alloc(backend *be, size_t bytes)
{
    (void)be;
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 1))
        return NULL;
    return p;
}

static void cpu_free(backend *be, void *p)
{
    (void)be;
    free(p);
}

static void cpu_copy(backend *be, void *dst, const void *src, size_t n)
{
    (void)be;
    if (dst != src)
        memcpy(dst, src, n);
}

static void cpu_sync(backend *be) { (void)be; }

static int cpu_check(backend *be, llmfs_error *err)
{
    cpu_be *c = impl(be);
    int e = c->err;
    c->err = 0;
    if (e)
        return llmfs_errorf(err, e, "CPU backend: %s", e == ENOMEM ? "out of memory for scratch" : "bad operand");
    return 0;
}

static int cpu_begin(backend *be, const fwd_batch *b)
{
    cpu_be *c = impl(be);
    size_t bytes = sizeof(int32_t) * (size_t)(b->n > 0 ? b->n : 1);
    if (!buf_reserve(&c->tok, bytes) || !buf_reserve(&c->pos, bytes) || !buf_reserve(&c->seq, bytes))
        return -ENOMEM;
    memcpy(c->tok.p, b->token, sizeof(int32_t) * (size_t)b->n);
    memcpy(c->pos.p, b->pos, sizeof(int32_t) * (size_t)b->n);
    memcpy(c->seq.p, b->seq, sizeof(int32_t) * (size_t)b->n);
    if (!buf_reserve(&c->last, bytes))
        return -ENOMEM;
    memcpy(c->last.p, b->pos, sizeof(int32_t) * (size_t)b->n);
    c->n = b->n;
    c->nth = b->n == 1 ? c->n_threads : c->n_threads_batch;
    c->rope_valid = false;
    c->err = 0;
    return 0;
}

/* Each token then sees up to the last position of its sequence in the batch. */
static void cpu_non_causal(backend *be)
{
    cpu_be *c = impl(be);
    const int32_t *pos = c->pos.p, *seq = c->seq.p;
    int32_t *last = c->last.p;
    for (int i = 0; i < c->n; i++)
        for (int j = 0; j < c->n; j++)
            if (seq[j] == seq[i] && pos[j] > last[i])
                last[i] = pos[j];
}

/* ---------------------------------------------------------------- get_rows */

typedef struct rows_ctx {
    cpu_be *c;
    float *out;
    const tensor *w;
} rows_ctx;

static void get_rows_fn(void *p, int ith, int nth)
{
    rows_ctx *r = p;
    const int32_t *tok = r->c->tok.p;
    int64_t a, b, d = r->w->ne[0];
    split(r->c->n, ith, nth, &a, &b);
    for (int64_t i = a; i < b; i++)
        dequantize_row(r->w->type, (const uint8_t *)r->w->data + (size_t)tok[i] * r->w->nb1,
                       r->out + i * d, d);
}

static void cpu_get_rows(backend *be, float *out, const tensor *w, int n)
{
    cpu_be *c = impl(be);
    (void)n; /* always the batch's tokens */
    rows_ctx r = {c, out, w};
    par(c, nth_for(c, (double)c->n * (double)w->ne[0]), get_rows_fn, &r);
}

/* ---------------------------------------------------------------- rmsnorm */

typedef struct norm_ctx {
    float *out;
    const float *x, *w;
    int rows, d;
    float eps;
} norm_ctx;

static void rmsnorm_fn(void *p, int ith, int nth)
{
    norm_ctx *k = p;
    int64_t a, b;
    split(k->rows, ith, nth, &a, &b);
    for (int64_t r = a; r < b; r++) {
        const float *x = k->x + r * k->d;
        float *o = k->out + r * k->d;
        double ss = 0;
        for (int i = 0; i < k->d; i++)
            ss += (double)x[i] * x[i];
        float s = (float)(1.0 / sqrt(ss / k->d + k->eps));
        if (k->w)
            for (int i = 0; i < k->d; i++)
                o[i] = x[i] * s * k->w[i];
        else
            for (int i = 0; i < k->d; i++)
                o[i] = x[i] * s;
    }
}

static void cpu_rmsnorm(backend *be, float *out, const float *x, const float *w, int rows, int d,
                        float eps)
{
    cpu_be *c = impl(be);
    norm_ctx k = {out, x, w, rows, d, eps};
    par(c, nth_for(c, (double)rows * d), rmsnorm_fn, &k);
}

/* ---------------------------------------------------------------- matmul */

/* One weight matrix times n activation rows already in its dot type. */
typedef struct mm_task {
    int type;
    int64_t k, m;           /* row length, rows */
    const uint8_t *w;
    size_t w_stride;
    const uint8_t *a;
    size_t a_stride;
    int n;
    float *out;             /* out[c * out_stride + r] */
    size_t out_stride;
} mm_task;

/* Rows [r0, r1) of task t: a matrix-vector product for one activation row, tiles for
 * several (each group of weight rows loaded once for all activation rows). */
static void mm_rows(const mm_task *t, int64_t r0, int64_t r1)
{
    if (t->n == 1)
        vec_dot_rows(t->type, t->k, (int)(r1 - r0), t->w + (size_t)r0 * t->w_stride, t->w_stride,
                     t->a, t->out + r0);
    else
        quant_gemm(t->type, t->k, (int)(r1 - r0), t->n, t->w + (size_t)r0 * t->w_stride, t->w_stride,
                   t->a, t->a_stride, t->out + r0, t->out_stride);
}

#define MM_MAX_TASKS MM_MAX_TASKS_

/* Several tasks in one dispatch, handed out in row chunks from a shared counter so a
 * thread that finishes early takes more. */
typedef struct mm_job {
    mm_task t[MM_MAX_TASKS];
    int n_task;
    int64_t chunk;
    int64_t first[MM_MAX_TASKS + 1]; /* chunk index where each task starts */
    atomic_llong next;
} mm_job;

static void mm_fn(void *p, int ith, int nth)
{
    (void)ith;
    (void)nth;
    mm_job *j = p;
    for (;;) {
        int64_t idx = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
        if (idx >= j->first[j->n_task])
            return;
        int ti = 0;
        while (idx >= j->first[ti + 1])
            ti++;
        const mm_task *t = &j->t[ti];
        int64_t r0 = (idx - j->first[ti]) * j->chunk;
        int64_t r1 = r0 + j->chunk < t->m ? r0 + j->chunk : t->m;
        mm_rows(t, r0, r1);
    }
}

static void mm_run(cpu_be *c, mm_job *j)
{
    double work = 0;
    int64_t rows = 0;
    for (int i = 0; i < j->n_task; i++) {
        work += (double)j->t[i].m * (double)j->t[i].k * j->t[i].n;
        rows += j->t[i].m;
    }
    int nth = nth_for(c, work);
    /* about 8 chunks per thread, whole tiles, so the tail is short */
    int64_t chunk = rows / ((int64_t)nth * 8);
    chunk = (chunk + QUANT_TILE_R - 1) / QUANT_TILE_R * QUANT_TILE_R;
    if (chunk < QUANT_TILE_R)
        chunk = QUANT_TILE_R;
    if (chunk > 256)
        chunk = 256;
    j->chunk = chunk;
    j->first[0] = 0;
    for (int i = 0; i < j->n_task; i++)
        j->first[i + 1] = j->first[i] + (j->t[i].m + chunk - 1) / chunk;
    atomic_store(&j->next, 0);
    par(c, nth, mm_fn, j);
}

typedef struct quant_ctx {
    int type;
    const float *x;
    int64_t k;
    size_t x_stride; /* floats */
    uint8_t *dst;
    size_t dst_stride;
    int n;
} quant_ctx;

static void quant_fn(void *p, int ith, int nth)
{
    quant_ctx *q = p;
    int64_t a, b;
    split(q->n, ith, nth, &a, &b);
    for (int64_t i = a; i < b; i++)
        quantize_row(q->type, q->x + i * q->x_stride, q->dst + i * q->dst_stride, q->k);
}

/* n rows of k floats converted to `type` in dst (rows dst_stride apart). */
static void quantize_rows(cpu_be *c, int type, const float *x, size_t x_stride, int n, int64_t k,
                          void *dst, size_t dst_stride)
{
    quant_ctx q = {type, x, k, x_stride, dst, dst_stride, n};
    par(c, nth_for(c, (double)n * k * 4), quant_fn, &q);
}

/* x in dot type dt for rows of k: x itself for F32, else buffer b (grown as needed).
 * NULL when the buffer cannot grow. */
static const uint8_t *prepare_act(cpu_be *c, buf *b, int dt, const float *x, int n, int64_t k,
                                  size_t *stride)
{
    if (dt == T_F32) {
        *stride = (size_t)k * sizeof(float);
        return (const uint8_t *)x;
    }
    size_t rb = type_row_bytes(dt, k);
    if (!buf_reserve(b, rb * (size_t)n)) {
        fail(c, ENOMEM);
        return NULL;
    }
    quantize_rows(c, dt, x, (size_t)k, n, k, b->p, rb);
    *stride = rb;
    return b->p;
}

static void cpu_matmul_multi(backend *be, float *const *out, const tensor *const *w, int count,
                             const float *x, int n)
{
    cpu_be *c = impl(be);
    if (count < 1 || count > MM_MAX_TASKS) {
        fail(c, EINVAL);
        return;
    }
    mm_job j = {.n_task = count};
    int types[MM_MAX_TASKS];
    const uint8_t *acts[MM_MAX_TASKS];
    size_t strides[MM_MAX_TASKS];
    int n_types = 0;
    for (int i = 0; i < count; i++) {
        if (w[i]->ne[0] != w[0]->ne[0]) {
            fail(c, EINVAL);
            return;
        }
        int dt = type_info(w[i]->type)->dot_type, ti = 0;
        while (ti < n_types && types[ti] != dt)
            ti++;
        if (ti == n_types) {
            acts[ti] = prepare_act(c, &c->act[ti], dt, x, n, w[i]->ne[0], &strides[ti]);
            if (!acts[ti])
                return;
            types[n_types++] = dt;
        }
        j.t[i] = (mm_task){w[i]->type, w[i]->ne[0], w[i]->ne[1], w[i]->data, w[i]->nb1, acts[ti],
                           strides[ti], n, out[i], (size_t)w[i]->ne[1]};
    }
    mm_run(c, &j);
}

static void cpu_matmul(backend *be, float *out, const tensor *w, const float *x, int n)
{
    cpu_matmul_multi(be, &out, &w, 1, x, n);
}

/* ---------------------------------------------------------------- elementwise */

typedef struct ew_ctx {
    float *out;
    const float *a, *b;
    int64_t n;
    int d; /* bias length */
} ew_ctx;

static void add_bias_fn(void *p, int ith, int nth)
{
    ew_ctx *e = p;
    int64_t a, b;
    split(e->n, ith, nth, &a, &b);
    for (int64_t r = a; r < b; r++) {
        float *x = e->out + r * e->d;
        for (int i = 0; i < e->d; i++)
            x[i] += e->a[i];
    }
}

static void cpu_add_bias(backend *be, float *x, const float *bias, int rows, int d)
{
    cpu_be *c = impl(be);
    ew_ctx e = {x, bias, NULL, rows, d};
    par(c, nth_for(c, (double)rows * d), add_bias_fn, &e);
}

static void add_fn(void *p, int ith, int nth)
{
    ew_ctx *e = p;
    int64_t a, b;
    split(e->n, ith, nth, &a, &b);
    for (int64_t i = a; i < b; i++)
        e->out[i] += e->a[i];
}

static void cpu_add(backend *be, float *x, const float *y, int64_t n)
{
    cpu_be *c = impl(be);
    ew_ctx e = {x, y, NULL, n, 0};
    par(c, nth_for(c, (double)n), add_fn, &e);
}

static void swiglu_fn(void *p, int ith, int nth)
{
    ew_ctx *e = p;
    int64_t a, b;
    split(e->n, ith, nth, &a, &b);
    kern()->swiglu(e->out + a, e->a + a, e->b + a, b - a);
}

static void cpu_swiglu(backend *be, float *out, const float *gate, const float *up, int64_t n)
{
    cpu_be *c = impl(be);
    ew_ctx e = {out, gate, up, n, 0};
    par(c, nth_for(c, (double)n * 8), swiglu_fn, &e);
}

/* GELU, tanh approximation (what Gemma's hidden_activation gelu_pytorch_tanh is), as
 * llama.cpp's CPU backend computes it: the input rounded to f16 and looked up in a table
 * of f16 results, so ours rounds the same way (outside +-10 the table is not used). */
static inline float gelu_tanh(float g)
{
    if (g <= -10.0f)
        return 0.0f;
    if (g >= 10.0f)
        return g;
    g = f16_to_f32(f32_to_f16(g));
    return f16_to_f32(f32_to_f16(0.5f * g * (1.0f + tanhf(0.7978845608f * (g + 0.044715f * g * g * g)))));
}

static void geglu_fn(void *p, int ith, int nth)
{
    ew_ctx *e = p;
    int64_t a, b;
    split(e->n, ith, nth, &a, &b);
    for (int64_t i = a; i < b; i++)
        e->out[i] = gelu_tanh(e->a[i]) * e->b[i];
}

static void cpu_geglu(backend *be, float *out, const float *gate, const float *up, int64_t n)
{
    cpu_be *c = impl(be);
    ew_ctx e = {out, gate, up, n, 0};
    par(c, nth_for(c, (double)n * 16), geglu_fn, &e);
}

typedef struct scale_ctx {
    float *x;
    float s;
    int64_t n;
    bool cap;
} scale_ctx;

static void scale_fn(void *p, int ith, int nth)
{
    scale_ctx *e = p;
    int64_t a, b;
    split(e->n, ith, nth, &a, &b);
    if (e->cap)
        for (int64_t i = a; i < b; i++)
            e->x[i] = e->s * tanhf(e->x[i] / e->s);
    else
        for (int64_t i = a; i < b; i++)
            e->x[i] *= e->s;
}

static void cpu_scale(backend *be, float *x, float s, int64_t n)
{
    cpu_be *c = impl(be);
    scale_ctx e = {x, s, n, false};
    par(c, nth_for(c, (double)n), scale_fn, &e);
}

static void cpu_softcap(backend *be, float *x, float cap, int64_t n)
{
    cpu_be *c = impl(be);
    scale_ctx e = {x, cap, n, true};
    par(c, nth_for(c, (double)n * 16), scale_fn, &e);
}

static void cpu_scale_ids(backend *be, float *w, const int32_t *ids, const float *s, int64_t n)
{
    (void)be;
    for (int64_t i = 0; i < n; i++)
        w[i] *= s[ids[i]];
}

static void cpu_copy2d(backend *be, float *dst, int64_t dst_stride, const float *src, int64_t src_stride,
                       int rows, int d)
{
    (void)be;
    for (int r = 0; r < rows; r++)
        memmove(dst + r * dst_stride, src + r * src_stride, sizeof(float) * (size_t)d);
}

/* ---------------------------------------------------------------- rope */

/* YaRN's correction dims: the pair index where the frequency turns b times per
 * original context, floored (b = beta_fast) and ceiled (b = beta_slow), within the pairs. */
static void rope_yarn_dims(const rope_params *p, double *lo, double *hi)
{
    double l2b = 2 * log((double)p->freq_base);
    double a = p->n_rot * log(p->yarn_orig_ctx / (2 * M_PI * p->yarn_beta_fast)) / l2b;
    double b = p->n_rot * log(p->yarn_orig_ctx / (2 * M_PI * p->yarn_beta_slow)) / l2b;
    *lo = fmax(0, floor(a));
    *hi = fmin(p->n_rot - 1, ceil(b));
}

/* What YaRN multiplies cos and sin by; 1 without it. */
static double rope_mscale(const rope_params *p)
{
    if (!(p->yarn_ext_factor > 0))
        return 1;
    return p->yarn_attn_factor * (1 + 0.1 * log(1.0 / p->freq_scale));
}

/* theta of pair i at position pos: pos * freq_scale * base^(-2i/n_rot) / factor_i, with
 * the llama3 blend of l3_* or the file's per-pair divisors applied. */
static double rope_inv_freq(const rope_params *p, int i)
{
    double f = pow((double)p->freq_base, -2.0 * i / p->n_rot);
    if (p->freq_factors)
        f /= p->freq_factors[i];
    else if (p->l3_factor > 0) {
        double wavelen = 2 * M_PI / f;
        double lo = p->l3_orig_ctx / p->l3_low_freq_factor;
        double hi = p->l3_orig_ctx / p->l3_high_freq_factor;
        if (wavelen > lo)
            f /= p->l3_factor;
        else if (wavelen >= hi) {
            double smooth = (p->l3_orig_ctx / wavelen - p->l3_low_freq_factor) /
                            (p->l3_high_freq_factor - p->l3_low_freq_factor);
            f = (1 - smooth) * f / p->l3_factor + smooth * f;
        }
    }
    if (p->yarn_ext_factor > 0) {
        /* YaRN: the ramp between the correction dims mixes the interpolated and the
         * original frequency (ggml's rope_yarn; i is ggml's i0/2) */
        double lo, hi;
        rope_yarn_dims(p, &lo, &hi);
        double y = (i - lo) / fmax(0.001, hi - lo);
        double ramp = (1 - fmin(1, fmax(0, y))) * p->yarn_ext_factor;
        return f * (p->freq_scale * (1 - ramp) + ramp);
    }
    return f * p->freq_scale;
}

static bool rope_table(cpu_be *c, const rope_params *p)
{
    const rope_params *k = &c->rope_key;
    if (c->rope_valid && k->n_rot == p->n_rot && k->neox == p->neox && k->freq_base == p->freq_base &&
        k->freq_scale == p->freq_scale && k->l3_factor == p->l3_factor &&
        k->l3_low_freq_factor == p->l3_low_freq_factor &&
        k->l3_high_freq_factor == p->l3_high_freq_factor && k->l3_orig_ctx == p->l3_orig_ctx &&
        k->freq_factors == p->freq_factors && k->yarn_ext_factor == p->yarn_ext_factor &&
        k->yarn_attn_factor == p->yarn_attn_factor && k->yarn_beta_fast == p->yarn_beta_fast &&
        k->yarn_beta_slow == p->yarn_beta_slow && k->yarn_orig_ctx == p->yarn_orig_ctx)
        return true;
    int half = p->n_rot / 2;
    if (!buf_reserve(&c->rope_cs, sizeof(float) * 2 * (size_t)half * (size_t)(c->n ? c->n : 1))) {
        fail(c, ENOMEM);
        return false;
    }
    float *cs = c->rope_cs.p;
    const int32_t *pos = c->pos.p;
    double inv[1024];
    for (int i = 0; i < half && i < 1024; i++)
        inv[i] = rope_inv_freq(p, i);
    double ms = rope_mscale(p);
    for (int t = 0; t < c->n; t++)
        for (int i = 0; i < half; i++) {
            double th = pos[t] * inv[i];
            cs[((size_t)t * half + i) * 2] = (float)(cos(th) * ms);
            cs[((size_t)t * half + i) * 2 + 1] = (float)(sin(th) * ms);
        }
    c->rope_key = *p;
    c->rope_valid = true;
    return true;
}

typedef struct rope_ctx {
    cpu_be *c;
    float *x;
    int n_head, head_dim;
    const rope_params *p;
} rope_ctx;

static void rope_fn(void *v, int ith, int nth)
{
    rope_ctx *r = v;
    int half = r->p->n_rot / 2;
    const float *cs_all = r->c->rope_cs.p;
    int64_t a, b;
    split((int64_t)r->c->n * r->n_head, ith, nth, &a, &b);
    for (int64_t th = a; th < b; th++) {
        int64_t t = th / r->n_head;
        float *x = r->x + th * r->head_dim;
        const float *cs = cs_all + t * half * 2;
        for (int i = 0; i < half; i++) {
            /* llama pairs neighbours (2i, 2i+1); NEOX pairs the halves (i, i + n_rot/2) */
            int i0 = r->p->neox ? i : 2 * i;
            int i1 = r->p->neox ? i + half : 2 * i + 1;
            float x0 = x[i0], x1 = x[i1], co = cs[2 * i], si = cs[2 * i + 1];
            x[i0] = x0 * co - x1 * si;
            x[i1] = x0 * si + x1 * co;
        }
    }
}

static void cpu_rope(backend *be, float *x, int n, int n_head, int head_dim, const rope_params *p)
{
    cpu_be *c = impl(be);
    (void)n;
    if (p->n_rot / 2 > 1024 || p->n_rot > head_dim) {
        fail(c, EINVAL);
        return;
    }
    if (!rope_table(c, p))
        return;
    rope_ctx r = {c, x, n_head, head_dim, p};
    par(c, nth_for(c, (double)c->n * n_head * head_dim * 2), rope_fn, &r);
}

/* ---------------------------------------------------------------- hadamard */

typedef struct had_ctx {
    float *x;
    int64_t n_blocks;
    int block;
} had_ctx;

/* In-place fast Walsh-Hadamard transform of each block (natural, Sylvester order),
 * scaled by 1/sqrt(block) so it is orthonormal and its own inverse. */
static void hadamard_fn(void *p, int ith, int nth)
{
    had_ctx *h = p;
    int nb = h->block;
    float scale = (float)(1.0 / sqrt((double)nb));
    int64_t a, b;
    split(h->n_blocks, ith, nth, &a, &b);
    for (int64_t i = a; i < b; i++) {
        float *x = h->x + i * nb;
        for (int len = 1; len < nb; len *= 2)
            for (int j = 0; j < nb; j += 2 * len)
                for (int k = j; k < j + len; k++) {
                    float u = x[k], v = x[k + len];
                    x[k] = u + v;
                    x[k + len] = u - v;
                }
        for (int k = 0; k < nb; k++)
            x[k] *= scale;
    }
}

static void cpu_hadamard(backend *be, float *x, int64_t n, int block)
{
    cpu_be *c = impl(be);
    if (block <= 0 || (block & (block - 1)) || n % block) {
        fail(c, EINVAL);
        return;
    }
    had_ctx h = {x, n / block, block};
    par(c, nth_for(c, (double)n * 8), hadamard_fn, &h);
}

/* ---------------------------------------------------------------- KV cache */

typedef struct kvs_ctx {
    cpu_be *c;
    kv_cache *kv;
    int il;
    const float *k, *v;
} kvs_ctx;

static void kv_store_fn(void *p, int ith, int nth)
{
    kvs_ctx *s = p;
    const struct kv_layer *L = &s->kv->layer[s->il];
    const int32_t *pos = s->c->pos.p, *seq = s->c->seq.p;
    int e = L->n_embd_kv;
    int64_t a, b;
    split(s->c->n, ith, nth, &a, &b);
    for (int64_t t = a; t < b; t++) {
        size_t cell = kv_row(s->kv, s->il, seq[t], pos[t]);
        quantize_row(s->kv->type_k, s->k + t * e, (uint8_t *)L->k + cell * L->k_row, e);
        quantize_row(s->kv->type_v, s->v + t * e, (uint8_t *)L->v + cell * L->v_row, e);
    }
}

static void cpu_kv_store(backend *be, kv_cache *kv, int il, const float *k, const float *v, int n)
{
    cpu_be *c = impl(be);
    (void)n;
    kvs_ctx s = {c, kv, il, k, v};
    if (!kv->layer[il].k) { /* a layer that shares another's cache stores nothing */
        fail(c, EINVAL);
        return;
    }
    par(c, nth_for(c, (double)c->n * kv->layer[il].n_embd_kv * 8), kv_store_fn, &s);
}

/* ---------------------------------------------------------------- attention */

#define FLASH_TILE 64 /* cells per step of the online softmax (and per dequantized value tile) */

/* Causal attention of one (token, KV head) item: the group of query heads sharing that KV
 * head is handled together so each key and value row is read once for all of them.
 * With an f16 cache, queries are rounded to f16 and probabilities too before they meet
 * f16 values (what llama.cpp computes), and the f16 kernels do the work; other cache
 * types go through vec_dot with queries in K's dot type and dequantized value rows. */
typedef struct attn_ctx {
    cpu_be *c;
    float *out;
    const float *q;
    const kv_cache *kv;
    int il;
    attn_params p;
    int group;      /* query heads per KV head */
    int k_dot;      /* K's dot type */
    size_t qdot_row;
    size_t k_head, v_head; /* bytes of one head's slice of a cache row */
} attn_ctx;

static void axpy(float *y, float a, const float *x, int n)
{
    for (int i = 0; i < n; i++)
        y[i] += a * x[i];
}

static void scale_vec(float *y, float a, int n)
{
    for (int i = 0; i < n; i++)
        y[i] *= a;
}

/* out[h * stride + j] = scaled scores of cells j0 .. j0+n for the item's heads */
static void attn_scores(const attn_ctx *A, attn_tls *T, const uint8_t *kb, int j0, int n, float *out,
                        size_t stride)
{
    const struct kv_layer *L = &A->kv->layer[A->il];
    int hd = A->p.head_dim, g = A->group;
    if (A->kv->type_k == T_F16) {
        kern()->scores_f16(kb + (size_t)j0 * L->k_row, L->k_row, n, T->qf.p, g, hd, A->p.scale, out,
                           stride);
        return;
    }
    /* other types: vec_dot_rows over tiles of rows, the next tile's slices requested
     * ahead (they are strided: one head of longer rows) */
    const uint8_t *qd = T->qdot.p;
    for (int t0 = 0; t0 < n; t0 += FLASH_TILE) {
        int nt = n - t0 < FLASH_TILE ? n - t0 : FLASH_TILE;
        const uint8_t *rows = kb + (size_t)(j0 + t0) * L->k_row;
        for (int j = 0; j < nt && t0 + FLASH_TILE + j < n; j++)
            for (size_t o = 0; o < A->k_head; o += 64)
                __builtin_prefetch(rows + (size_t)(FLASH_TILE + j) * L->k_row + o);
        for (int h = 0; h < g; h++) {
            float *o = out + (size_t)h * stride + t0;
            vec_dot_rows(A->kv->type_k, hd, nt, rows, L->k_row, qd + h * A->qdot_row, o);
            for (int j = 0; j < nt; j++)
                o[j] *= A->p.scale;
        }
    }
}

/* acc[h] += sum_j p[h * stride + j] * V(j0 + j) */
static void attn_accum(const attn_ctx *A, attn_tls *T, const uint8_t *vb, int j0, int n, const float *p,
                       size_t stride, float *acc)
{
    const struct kv_layer *L = &A->kv->layer[A->il];
    int hd = A->p.head_dim, g = A->group;
    if (A->kv->type_v == T_F16) {
        kern()->accum_f16(acc, vb + (size_t)j0 * L->v_row, L->v_row, n, p, stride, g, hd);
        return;
    }
    /* other types: a tile of value rows as floats, then the f32 kernel */
    float *vt = T->vrow.p;
    for (int t0 = 0; t0 < n; t0 += FLASH_TILE) {
        int nt = n - t0 < FLASH_TILE ? n - t0 : FLASH_TILE;
        for (int j = 0; j < nt; j++) {
            const uint8_t *vr = vb + (size_t)(j0 + t0 + j) * L->v_row;
            for (size_t o = 0; o < A->v_head; o += 64)
                __builtin_prefetch(vr + 8 * L->v_row + o);
            dequantize_row(A->kv->type_v, vr, vt + (size_t)j * hd, hd);
        }
        kern()->accum_f32(acc, vt, sizeof(float) * (size_t)hd, nt, p + t0, stride, g, hd);
    }
}

/* The cells a token sees, oldest first: one run of rows, or two where a sliding-window
 * ring wraps (its end, then its start). */
typedef struct attn_span {
    const uint8_t *kb, *vb; /* the first row of the run, at the item's head */
    int n;
} attn_span;

/* Materialised scores: all of them, one softmax, then the weighted sum of values. */
static void attn_item_plain(const attn_ctx *A, attn_tls *T, float *o, int n_cells, const attn_span *sp,
                            int n_sp, const float *sinks)
{
    int hd = A->p.head_dim, g = A->group;
    float *sc = T->scores.p, *acc = T->acc.p;
    for (int i = 0, off = 0; i < n_sp; off += sp[i++].n)
        attn_scores(A, T, sp[i].kb, 0, sp[i].n, sc + off, (size_t)n_cells);
    for (int h = 0; h < g; h++) {
        float *s = sc + (size_t)h * n_cells, mx = -FLT_MAX, sum = 0;
        for (int j = 0; j < n_cells; j++)
            mx = s[j] > mx ? s[j] : mx;
        if (sinks) { /* the sink's logit joins the maximum and the sum, with no value */
            mx = sinks[h] > mx ? sinks[h] : mx;
            sum = expf(sinks[h] - mx);
        }
        for (int j = 0; j < n_cells; j++) {
            s[j] = expf(s[j] - mx);
            sum += s[j];
        }
        float inv = 1.0f / sum;
        for (int j = 0; j < n_cells; j++)
            s[j] *= inv;
        if (A->kv->type_v == T_F16)
            kern()->round_f16(s, n_cells);
    }
    memset(acc, 0, sizeof(float) * (size_t)g * hd);
    for (int i = 0, off = 0; i < n_sp; off += sp[i++].n)
        attn_accum(A, T, sp[i].vb, 0, sp[i].n, sc + off, (size_t)n_cells, acc);
    memcpy(o, acc, sizeof(float) * (size_t)g * hd);
}

/* Online softmax over tiles of cells: a running maximum and sum per head, the output
 * rescaled whenever the maximum grows; no per-cell storage beyond one tile. */
static void attn_item_flash(const attn_ctx *A, attn_tls *T, float *o, int n_cells, const attn_span *sp,
                            int n_sp, const float *sinks)
{
    int hd = A->p.head_dim, g = A->group;
    float *sc = T->scores.p, *acc = T->acc.p;
    float *mx = sc + (size_t)g * FLASH_TILE, *sum = mx + g;
    memset(acc, 0, sizeof(float) * (size_t)g * hd);
    for (int h = 0; h < g; h++) {
        mx[h] = -FLT_MAX;
        sum[h] = 0;
    }
    /* tiles of the window in position order, wherever a ring wraps: a tile that spans the
     * wrap is read in two pieces, so the tiles (and the rounding) are a full cache's */
    for (int j0 = 0; j0 < n_cells; j0 += FLASH_TILE) {
        int nj = n_cells - j0 < FLASH_TILE ? n_cells - j0 : FLASH_TILE;
        for (int i = 0, off = 0, lo = j0; i < n_sp; off += sp[i++].n) {
            int a = lo - off, b = j0 + nj - off < sp[i].n ? j0 + nj - off : sp[i].n;
            if (a >= 0 && a < b) {
                attn_scores(A, T, sp[i].kb, a, b - a, sc + (lo - j0), FLASH_TILE);
                lo += b - a;
            }
        }
        for (int h = 0; h < g; h++) {
            float *s = sc + h * FLASH_TILE, m = mx[h];
            for (int j = 0; j < nj; j++)
                m = s[j] > m ? s[j] : m;
            if (m > mx[h]) {
                float r = expf(mx[h] - m);
                scale_vec(acc + h * hd, r, hd);
                sum[h] *= r;
                mx[h] = m;
            }
            for (int j = 0; j < nj; j++) {
                s[j] = expf(s[j] - m);
                sum[h] += s[j];
            }
        }
        for (int i = 0, off = 0, lo = j0; i < n_sp; off += sp[i++].n) {
            int a = lo - off, b = j0 + nj - off < sp[i].n ? j0 + nj - off : sp[i].n;
            if (a >= 0 && a < b) {
                attn_accum(A, T, sp[i].vb, a, b - a, sc + (lo - j0), FLASH_TILE, acc);
                lo += b - a;
            }
        }
    }
    for (int h = 0; h < g; h++) {
        if (sinks) { /* the sink joins the sum at the end, at the larger of the two maxima */
            float m = mx[h] > sinks[h] ? mx[h] : sinks[h], r = expf(mx[h] - m);
            scale_vec(acc + h * hd, r, hd);
            sum[h] = sum[h] * r + expf(sinks[h] - m);
        }
        for (int i = 0; i < hd; i++)
            o[h * hd + i] = acc[h * hd + i] / sum[h];
    }
}

static void attn_fn(void *v, int ith, int nth)
{
    attn_ctx *A = v;
    cpu_be *c = A->c;
    attn_tls *T = &c->tls[ith];
    const struct kv_layer *L = &A->kv->layer[A->il];
    const int32_t *pos = c->pos.p, *seq = c->seq.p;
    int hd = A->p.head_dim, nkv = A->p.n_head_kv, g = A->group;
    int64_t items = (int64_t)c->n * nkv;
    /* interleaved: later tokens see more cells, striding spreads them over threads */
    for (int64_t it = ith; it < items; it += nth) {
        int t = (int)(it / nkv), kvh = (int)(it % nkv);
        /* the cells this token sees: all before it, or its window */
        int first = A->p.n_swa > 0 && pos[t] >= A->p.n_swa ? pos[t] - A->p.n_swa + 1 : 0;
        /* ... up to itself, or to the last of its image (non-causal) */
        int n_cells = ((const int32_t *)c->last.p)[t] + 1 - first;
        /* in a ring the run may wrap: its end first, then its start */
        int c0 = first % L->n_cells, tail = L->n_cells - c0 < n_cells ? L->n_cells - c0 : n_cells;
        size_t rows[2] = {kv_row(A->kv, A->il, seq[t], first), (size_t)seq[t] * L->n_cells};
        attn_span sp[2];
        int n_sp = tail < n_cells ? 2 : 1;
        for (int i = 0; i < n_sp; i++) {
            sp[i].kb = (const uint8_t *)L->k + rows[i] * L->k_row + kvh * A->k_head;
            sp[i].vb = (const uint8_t *)L->v + rows[i] * L->v_row + kvh * A->v_head;
            sp[i].n = i ? n_cells - tail : tail;
        }
        const float *q = A->q + ((size_t)t * A->p.n_head + (size_t)kvh * g) * hd;
        float *o = A->out + ((size_t)t * A->p.n_head + (size_t)kvh * g) * hd;
        if (A->kv->type_k == T_F16) {
            memcpy(T->qf.p, q, sizeof(float) * (size_t)g * hd);
            kern()->round_f16(T->qf.p, g * hd);
        } else {
            for (int h = 0; h < g; h++)
                quantize_row(A->k_dot, q + h * hd, (uint8_t *)T->qdot.p + h * A->qdot_row, hd);
        }
        const float *sinks = A->p.sinks ? A->p.sinks + (size_t)kvh * g : NULL;
        if (A->p.flash)
            attn_item_flash(A, T, o, n_cells, sp, n_sp, sinks);
        else
            attn_item_plain(A, T, o, n_cells, sp, n_sp, sinks);
    }
}

static void cpu_attention(backend *be, float *out, const float *q, const kv_cache *kv, int il,
                          int n, const attn_params *p)
{
    cpu_be *c = impl(be);
    (void)n;
    attn_ctx A = {.c = c, .out = out, .q = q, .kv = kv, .il = il, .p = *p};
    A.group = p->n_head / p->n_head_kv;
    A.k_dot = type_info(kv->type_k)->dot_type;
    A.qdot_row = type_row_bytes(A.k_dot, p->head_dim);
    A.k_head = type_row_bytes(kv->type_k, p->head_dim);
    A.v_head = type_row_bytes(kv->type_v, p->head_dim);

    int max_cells = 1;
    const int32_t *last = c->last.p, *pos = c->pos.p;
    for (int t = 0; t < c->n; t++) {
        /* the cells a token sees: from its window's start (or 0) to its last */
        int first = p->n_swa > 0 && pos[t] >= p->n_swa ? pos[t] - p->n_swa + 1 : 0;
        max_cells = last[t] + 1 - first > max_cells ? last[t] + 1 - first : max_cells;
    }
    size_t cells = p->flash ? FLASH_TILE : (size_t)max_cells;
    size_t gh = (size_t)A.group * p->head_dim;
    int nth = nth_for(c, (double)c->n * p->n_head * p->head_dim * max_cells * 2);
    for (int i = 0; i < nth && i < c->n_tls; i++) {
        attn_tls *T = &c->tls[i];
        if (!buf_reserve(&T->scores, sizeof(float) * ((size_t)A.group * cells + 2 * (size_t)A.group)) ||
            !buf_reserve(&T->acc, sizeof(float) * gh) || !buf_reserve(&T->qf, sizeof(float) * gh) ||
            !buf_reserve(&T->qdot, A.qdot_row * (size_t)A.group) ||
            !buf_reserve(&T->vrow, sizeof(float) * FLASH_TILE * (size_t)p->head_dim)) {
            fail(c, ENOMEM);
            return;
        }
    }
    par(c, nth, attn_fn, &A);
}

/* ---------------------------------------------------------------- MoE */

typedef struct topk_ctx {
    int32_t *ids;
    float *w;
    const float *logits;
    int n, n_expert, k;
    bool norm;
} topk_ctx;

static void topk_fn(void *p, int ith, int nth)
{
    topk_ctx *q = p;
    int64_t a, b;
    split(q->n, ith, nth, &a, &b);
    for (int64_t t = a; t < b; t++) {
        const float *l = q->logits + t * q->n_expert;
        int32_t *ids = q->ids + t * q->k;
        float *w = q->w + t * q->k;
        float mx = -FLT_MAX, sum = 0;
        for (int e = 0; e < q->n_expert; e++)
            mx = l[e] > mx ? l[e] : mx;
        for (int e = 0; e < q->n_expert; e++)
            sum += expf(l[e] - mx);
        /* selection by repeated maximum; k is small. Ties go to the lower id. */
        float wsum = 0;
        for (int j = 0; j < q->k; j++) {
            int best = -1;
            for (int e = 0; e < q->n_expert; e++) {
                bool taken = false;
                for (int i = 0; i < j; i++)
                    taken |= ids[i] == e;
                if (!taken && (best < 0 || l[e] > l[best]))
                    best = e;
            }
            ids[j] = best;
            w[j] = expf(l[best] - mx) / sum;
            wsum += w[j];
        }
        if (q->norm)
            for (int j = 0; j < q->k; j++)
                w[j] /= wsum;
    }
}

static void cpu_topk_softmax(backend *be, int32_t *ids, float *weights, const float *logits, int n,
                             int n_expert, int k, bool norm)
{
    cpu_be *c = impl(be);
    topk_ctx q = {ids, weights, logits, n, n_expert, k, norm};
    par(c, nth_for(c, (double)n * n_expert * (k + 8)), topk_fn, &q);
}

/* The routed FFN, touching only the experts some token selected. Slots (token, j) are
 * grouped by expert so each expert's activations are contiguous and its weights are
 * streamed once per batch:
 *   1. x rows converted to the gate/up dot type, one row per slot, in expert order;
 *   2. gate and up products of every active expert in one dispatch; silu(g) * u;
 *   3. the hidden rows converted to the down dot type;
 *   4. down products of every active expert in one dispatch;
 *   5. each token's slots summed with their router weights. */
typedef struct moe_item {
    int e;         /* expert */
    int64_t r0, r1; /* output rows */
} moe_item;

typedef struct moe_ctx {
    cpu_be *c;
    const tensor *w1, *w3;  /* gate, up  (or down, NULL in step 4) */
    const uint8_t *a;       /* activations in slot order */
    size_t a_stride;
    const int *cnt, *off;
    float *g, *u;           /* [slots][rows] */
    int64_t rows;
    const moe_item *items;
    int n_items;
    int act;                /* enum ffn_act */
    atomic_int next;
    const moe_extra *ex;    /* biases and activation; NULL: plain SwiGLU */
    const tensor *b1, *b3;  /* biases of w1, w3 [n_expert][rows] or NULL */
} moe_ctx;

/* y[r0..r1) += row e of the bias b [n_expert][rows] */
static void moe_bias(float *y, const moe_ctx *m, const tensor *b, int e, int64_t r0, int64_t r1)
{
    if (!b)
        return;
    const float *bb = (const float *)b->data + (size_t)e * (size_t)m->rows;
    for (int64_t r = r0; r < r1; r++)
        y[r] += bb[r];
}

static void moe_mm_fn(void *p, int ith, int nth)
{
    (void)ith;
    (void)nth;
    moe_ctx *m = p;
    for (;;) {
        int idx = atomic_fetch_add_explicit(&m->next, 1, memory_order_relaxed);
        if (idx >= m->n_items)
            return;
        const moe_item *it = &m->items[idx];
        int e = it->e, n = m->cnt[e];
        const uint8_t *a = m->a + (size_t)m->off[e] * m->a_stride;
        mm_task t1 = {m->w1->type, m->w1->ne[0], m->w1->ne[1],
                      (const uint8_t *)m->w1->data + (size_t)e * m->w1->nb2, m->w1->nb1,
                      a, m->a_stride, n, m->g + (size_t)m->off[e] * m->rows, (size_t)m->rows};
        mm_rows(&t1, it->r0, it->r1);
        for (int s = 0; s < n; s++)
            moe_bias(t1.out + (size_t)s * m->rows, m, m->b1, e, it->r0, it->r1);
        if (!m->w3)
            continue;
        mm_task t3 = t1;
        t3.type = m->w3->type;
        t3.w = (const uint8_t *)m->w3->data + (size_t)e * m->w3->nb2;
        t3.w_stride = m->w3->nb1;
        t3.out = m->u + (size_t)m->off[e] * m->rows;
        mm_rows(&t3, it->r0, it->r1);
        for (int s = 0; s < n; s++) {
            float *g = t1.out + (size_t)s * m->rows, *u = t3.out + (size_t)s * m->rows;
            moe_bias(u, m, m->b3, e, it->r0, it->r1);
            if (m->act == FFN_GELU)
                for (int64_t r = it->r0; r < it->r1; r++)
                    g[r] = gelu_tanh(g[r]) * u[r];
            else if (m->ex && m->ex->swiglu_limit > 0)
                swiglu_oai(g + it->r0, g + it->r0, u + it->r0, it->r1 - it->r0, m->ex->swiglu_alpha,
                           m->ex->swiglu_limit);
            else
                kern()->swiglu(g + it->r0, g + it->r0, u + it->r0, it->r1 - it->r0);
        }
    }
}

/* Builds work items (expert, row chunk) for the active experts. */
static int moe_items(cpu_be *c, const int *cnt, int n_expert, int64_t rows, int nslots)
{
    int64_t chunk = rows / ((int64_t)c->nth * 4 > 0 ? (int64_t)c->nth * 4 : 1);
    /* with many tokens per expert the work is larger: fewer, bigger chunks suffice */
    if (nslots > n_expert)
        chunk = rows / 2;
    chunk = (chunk + QUANT_TILE_R - 1) / QUANT_TILE_R * QUANT_TILE_R;
    if (chunk < 16)
        chunk = 16;
    moe_item *items = c->moe_items.p;
    int n = 0;
    for (int e = 0; e < n_expert; e++) {
        if (!cnt[e])
            continue;
        for (int64_t r = 0; r < rows; r += chunk)
            items[n++] = (moe_item){e, r, r + chunk < rows ? r + chunk : rows};
    }
    return n;
}

typedef struct moe_sum_ctx {
    float *out;
    const float *y, *w;
    const int *slot;
    int n, k;
    int64_t d;
} moe_sum_ctx;

static void moe_sum_fn(void *p, int ith, int nth)
{
    moe_sum_ctx *s = p;
    int64_t a, b;
    split(s->n, ith, nth, &a, &b);
    for (int64_t t = a; t < b; t++) {
        float *o = s->out + t * s->d;
        memset(o, 0, sizeof(float) * (size_t)s->d);
        for (int j = 0; j < s->k; j++)
            axpy(o, s->w[t * s->k + j], s->y + (size_t)s->slot[t * s->k + j] * s->d, (int)s->d);
    }
}

typedef struct gather_ctx {
    int type;
    const float *x;
    int64_t k;
    const int *slot;   /* [n*k] slot of (token, j) */
    int n, kk;
    uint8_t *dst;
    size_t stride;
} gather_ctx;

static void gather_fn(void *p, int ith, int nth)
{
    gather_ctx *g = p;
    int64_t a, b;
    split((int64_t)g->n * g->kk, ith, nth, &a, &b);
    for (int64_t i = a; i < b; i++)
        quantize_row(g->type, g->x + (i / g->kk) * g->k, g->dst + (size_t)g->slot[i] * g->stride, g->k);
}

static void cpu_moe_ffn(backend *be, float *out, const float *x, const tensor *gate, const tensor *up,
                        const tensor *down, const int32_t *ids, const float *weights, int n, int k, int act,
                        const moe_extra *ex)
{
    cpu_be *c = impl(be);
    tensor gv, uv;
    if (!up) { /* fused: each expert's gate rows, then its up rows; read in place as two views */
        gv = *gate;
        gv.ne[1] = gate->ne[1] / 2;
        uv = gv;
        uv.data = (uint8_t *)gate->data + (size_t)gv.ne[1] * gate->nb1;
        gate = &gv;
        up = &uv;
    }
    int ne = (int)gate->ne[2];
    int64_t d = gate->ne[0], f = gate->ne[1];
    int ns = n * k;
    int dt1 = type_info(gate->type)->dot_type, dt2 = type_info(down->type)->dot_type;
    if (type_info(up->type)->dot_type != dt1) {
        fail(c, EINVAL);
        return;
    }
    size_t rb1 = type_row_bytes(dt1, d), rb2 = type_row_bytes(dt2, f);
    int64_t max_items = (int64_t)ne * ((f > d ? f : d) / 16 + 1);
    if (!buf_reserve(&c->moe_cnt, sizeof(int) * (size_t)ne) ||
        !buf_reserve(&c->moe_off, sizeof(int) * (size_t)ne) ||
        !buf_reserve(&c->moe_slot, sizeof(int) * (size_t)ns) ||
        !buf_reserve(&c->moe_xq, rb1 * (size_t)ns) ||
        !buf_reserve(&c->moe_g, sizeof(float) * (size_t)ns * (size_t)f) ||
        !buf_reserve(&c->moe_u, sizeof(float) * (size_t)ns * (size_t)f) ||
        !buf_reserve(&c->moe_hq, rb2 * (size_t)ns) ||
        !buf_reserve(&c->moe_y, sizeof(float) * (size_t)ns * (size_t)d) ||
        !buf_reserve(&c->moe_items, sizeof(moe_item) * (size_t)max_items)) {
        fail(c, ENOMEM);
        return;
    }
    int *cnt = c->moe_cnt.p, *off = c->moe_off.p, *slot = c->moe_slot.p;
    memset(cnt, 0, sizeof(int) * (size_t)ne);
    for (int i = 0; i < ns; i++) {
        if (ids[i] < 0 || ids[i] >= ne) {
            fail(c, EINVAL);
            return;
        }
        cnt[ids[i]]++;
    }
    for (int e = 0, o = 0; e < ne; e++) {
        off[e] = o;
        o += cnt[e];
    }
    /* slot of (token, j): its expert's block, in token order within it (cnt is rebuilt) */
    memset(cnt, 0, sizeof(int) * (size_t)ne);
    for (int i = 0; i < ns; i++)
        slot[i] = off[ids[i]] + cnt[ids[i]]++;

    /* 1 */
    gather_ctx gc = {dt1, x, d, slot, n, k, c->moe_xq.p, rb1};
    par(c, nth_for(c, (double)ns * d * 4), gather_fn, &gc);

    /* 2 */
    moe_ctx m = {.c = c, .w1 = gate, .w3 = up, .a = c->moe_xq.p, .a_stride = rb1, .cnt = cnt,
                 .off = off, .g = c->moe_g.p, .u = c->moe_u.p, .rows = f, .act = act, .ex = ex,
                 .b1 = ex ? ex->gate_b : NULL, .b3 = ex ? ex->up_b : NULL};
    m.items = c->moe_items.p;
    m.n_items = moe_items(c, cnt, ne, f, ns);
    atomic_store(&m.next, 0);
    par(c, nth_for(c, (double)ns * d * f * 2), moe_mm_fn, &m);

    /* 3 */
    quantize_rows(c, dt2, c->moe_g.p, (size_t)f, ns, f, c->moe_hq.p, rb2);

    /* 4 */
    moe_ctx m2 = {.c = c, .w1 = down, .w3 = NULL, .a = c->moe_hq.p, .a_stride = rb2, .cnt = cnt,
                  .off = off, .g = c->moe_y.p, .rows = d, .ex = ex, .b1 = ex ? ex->down_b : NULL};
    m2.items = c->moe_items.p;
    m2.n_items = moe_items(c, cnt, ne, d, ns);
    atomic_store(&m2.next, 0);
    par(c, nth_for(c, (double)ns * d * f), moe_mm_fn, &m2);

    /* 5 */
    moe_sum_ctx s = {out, c->moe_y.p, weights, slot, n, k, d};
    par(c, nth_for(c, (double)ns * d), moe_sum_fn, &s);
}

/* ---------------------------------------------------------------- streamed weights */

/* What the CUDA backend does with its copy stream, done at once: a CPU backend only
 * streams when tests stand it in for a GPU, so the model's streaming runs on any machine.
 * Copies, rather than pointing at the source, so that a slot read after its next
 * stage_copy gives wrong results there too. */
static void cpu_stage_release(backend *be)
{
    cpu_be *c = impl(be);
    for (int k = 0; k < 2; k++) {
        free(c->stage[k].p);
        memset(&c->stage[k], 0, sizeof c->stage[k]);
    }
}

static int cpu_stage_copy(backend *be, int slot, tensor *dst, const tensor *const *src, int count,
                          struct llmfs_error *err)
{
    cpu_be *c = impl(be);
    if (slot < 0 || slot > 1 || count < 0)
        return llmfs_errorf(err, EINVAL, "CPU: stage_copy: slot %d with %d tensors", slot, count);
    size_t need = 0;
    for (int i = 0; i < count; i++)
        need += (src[i]->nb2 * (size_t)src[i]->ne[2] + 63) & ~(size_t)63;
    if (!buf_reserve(&c->stage[slot], need))
        return llmfs_errorf(err, ENOMEM, "CPU: out of memory for %zu bytes of weight staging", need);
    char *p = c->stage[slot].p;
    for (int i = 0; i < count; i++) {
        const size_t n = src[i]->nb2 * (size_t)src[i]->ne[2];
        memcpy(p, src[i]->data, n);
        dst[i] = *src[i];
        dst[i].data = p;
        dst[i].be = be;
        p += (n + 63) & ~(size_t)63;
    }
    return 0;
}

static void cpu_stage_wait(backend *be, int slot)
{
    (void)be;
    (void)slot;
}

/* ---------------------------------------------------------------- recurrent layers
 *
 * Gated DeltaNet (hybrid Qwen). The state of a token's sequence lives in the cache
 * (kv->state[il]); a token at position 0 starts from zeros, so a cleared sequence needs
 * no separate reset. */

static float silu_f(float x) { return x / (1.0f + expf(-x)); }
static float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }

typedef struct rows_copy_ctx {
    float *dst;
    const float *src;
    int64_t ds, ss;
    int rows, d;
} rows_copy_ctx;

static void copy_rows_fn(void *p, int ith, int nth)
{
    rows_copy_ctx *k = p;
    int64_t a, b;
    split(k->rows, ith, nth, &a, &b);
    for (int64_t r = a; r < b; r++)
        memmove(k->dst + r * k->ds, k->src + r * k->ss, sizeof(float) * (size_t)k->d);
}

static void cpu_copy_rows(backend *be, float *dst, int64_t dst_stride, const float *src,
                          int64_t src_stride, int rows, int d)
{
    cpu_be *c = impl(be);
    rows_copy_ctx k = {dst, src, dst_stride, src_stride, rows, d};
    par(c, nth_for(c, (double)rows * d), copy_rows_fn, &k);
}

typedef struct conv_ctx {
    cpu_be *c;
    float *out;
    const float *x, *w;
    int64_t xs;
    float *state;       /* [n_seq][K-1][channels] */
    size_t seq_floats;
    int channels, K;
    const kv_cache *kv; /* its per-token snapshots (kv_snap_slot) */
    float *snap;        /* [n_seq][n_snap][K-1][channels], NULL none */
} conv_ctx;

/* Channels are independent: each thread walks all tokens for its channels, in order, so
 * a sequence's earlier tokens in the batch are its window. */
static void conv_fn(void *p, int ith, int nth)
{
    conv_ctx *k = p;
    const int32_t *pos = k->c->pos.p, *seq = k->c->seq.p;
    const int K = k->K, C = k->channels;
    int64_t a, b;
    split(C, ith, nth, &a, &b);
    for (int t = 0; t < k->c->n; t++) {
        float *st = k->state + (size_t)seq[t] * k->seq_floats;
        const float *x = k->x + (int64_t)t * k->xs;
        float *o = k->out + (int64_t)t * C;
        for (int64_t ch = a; ch < b; ch++) {
            const float *w = k->w + ch * K;
            if (pos[t] == 0)
                for (int r = 0; r < K - 1; r++)
                    st[(size_t)r * C + ch] = 0;
            float acc = w[K - 1] * x[ch];
            for (int r = 0; r < K - 1; r++)
                acc += w[r] * st[(size_t)r * C + ch];
            for (int r = 0; r + 1 < K - 1; r++)
                st[(size_t)r * C + ch] = st[(size_t)(r + 1) * C + ch];
            if (K > 1)
                st[(size_t)(K - 2) * C + ch] = x[ch];
            o[ch] = silu_f(acc);
        }
        const int sl = k->snap ? kv_snap_slot(k->kv, seq[t], pos[t]) : -1;
        if (sl >= 0) { /* the state after this token, for a rollback to it */
            float *dst = k->snap + ((size_t)seq[t] * k->kv->n_snap + (size_t)sl) * k->seq_floats;
            for (int r = 0; r < K - 1; r++)
                memcpy(dst + (size_t)r * C + a, st + (size_t)r * C + a, sizeof(float) * (size_t)(b - a));
        }
    }
}

static void cpu_ssm_conv(backend *be, float *out, const float *x, int64_t x_stride, const float *w,
                         kv_cache *kv, int il, int n, int channels, int d_conv)
{
    cpu_be *c = impl(be);
    (void)n;
    if (!kv->state || !kv->state[il].conv || (size_t)(d_conv - 1) * channels != kv->conv_floats) {
        fail(c, EINVAL);
        return;
    }
    conv_ctx k = {c, out, x, w, x_stride, kv->state[il].conv, kv->conv_floats, channels, d_conv, kv,
                  kv->n_snap ? kv->state[il].conv_snap : NULL};
    par(c, nth_for(c, (double)c->n * channels * d_conv), conv_fn, &k);
}

typedef struct l2_ctx {
    float *x;
    int64_t stride;
    int rows, groups, d;
    float eps;
} l2_ctx;

static void l2norm_fn(void *p, int ith, int nth)
{
    l2_ctx *k = p;
    int64_t a, b;
    split((int64_t)k->rows * k->groups, ith, nth, &a, &b);
    for (int64_t i = a; i < b; i++) {
        float *x = k->x + (i / k->groups) * k->stride + (i % k->groups) * k->d;
        double ss = 0;
        for (int j = 0; j < k->d; j++)
            ss += (double)x[j] * x[j];
        float nrm = (float)sqrt(ss);
        float sc = 1.0f / (nrm > k->eps ? nrm : k->eps);
        for (int j = 0; j < k->d; j++)
            x[j] *= sc;
    }
}

static void cpu_l2norm(backend *be, float *x, int rows, int groups, int d, int64_t row_stride, float eps)
{
    cpu_be *c = impl(be);
    l2_ctx k = {x, row_stride, rows, groups, d, eps};
    par(c, nth_for(c, (double)rows * groups * d * 2), l2norm_fn, &k);
}

static void cpu_delta_gates(backend *be, float *g, float *beta, const float *dt_bias, const float *a,
                            int n, int n_v)
{
    (void)be;
    for (int t = 0; t < n; t++)
        for (int j = 0; j < n_v; j++) {
            float x = g[t * n_v + j] + dt_bias[j];
            float sp = x > 20.0f ? x : log1pf(expf(x)); /* softplus */
            g[t * n_v + j] = sp * a[j];
            beta[t * n_v + j] = sigmoid_f(beta[t * n_v + j]);
        }
}

typedef struct delta_ctx {
    cpu_be *c;
    float *out;
    const float *qkv, *g, *beta;
    int64_t stride;
    float *ssm;         /* [n_seq][n_v][d][d] */
    size_t seq_floats;
    const delta_params *p;
    const kv_cache *kv; /* its per-token snapshots (kv_snap_slot) */
    float *snap;        /* [n_seq][n_snap][n_v][d][d], NULL none */
} delta_ctx;

/* Row jv of S_j (S stored transposed: one row per value dim) evolves on its own:
 *   s = exp(g) s;  s += beta (v[jv] - s.k) k;  o[jv] = s.q / sqrt(d)
 * so the work splits over (head, row) with every token of the batch in order. */
static void delta_fn(void *v, int ith, int nth)
{
    delta_ctx *k = v;
    const delta_params *p = k->p;
    const int32_t *pos = k->c->pos.p, *seq = k->c->seq.p;
    const int d = p->d, nv = p->n_v, nk = p->n_k, r = nv / nk;
    const float scale = 1.0f / sqrtf((float)d);
    int64_t a, b;
    split((int64_t)nv * d, ith, nth, &a, &b);
    for (int t = 0; t < k->c->n; t++) {
        const float *row = k->qkv + (int64_t)t * k->stride;
        float *o = k->out + (int64_t)t * nv * d;
        for (int64_t i = a; i < b; i++) {
            int j = (int)(i / d);
            int kh = p->tiled ? j % nk : j / r;
            const float *q = row + (size_t)kh * d, *kk = row + (size_t)(nk + kh) * d;
            float vv = row[(size_t)2 * nk * d + i];
            float *s = k->ssm + (size_t)seq[t] * k->seq_floats + (size_t)i * d;
            if (pos[t] == 0)
                memset(s, 0, sizeof(float) * (size_t)d);
            float eg = expf(k->g[t * nv + j]), bt = k->beta[t * nv + j];
            o[i] = kern()->delta_row(s, kk, q, d, eg, bt, vv) * scale;
        }
        const int sl = k->snap ? kv_snap_slot(k->kv, seq[t], pos[t]) : -1;
        if (sl >= 0) /* this thread's rows of the state after this token */
            memcpy(k->snap + ((size_t)seq[t] * k->kv->n_snap + (size_t)sl) * k->seq_floats + (size_t)a * d,
                   k->ssm + (size_t)seq[t] * k->seq_floats + (size_t)a * d, sizeof(float) * (size_t)(b - a) * d);
    }
}

/* The chunked form, for a run of L <= chunk tokens of one sequence at consecutive
 * positions and one head j (state S0, rows s of d floats, one per value dim). With
 * G_t = g_1 + ... + g_t (log decay so far in the run) and delta_i the update the
 * sequential form adds at token i (s_i = e^{g_i} s_{i-1} + delta_i k_i):
 *   s_t = e^{G_t} s0 + sum_{i<=t} e^{G_t - G_i} delta_i k_i
 *   delta_i + b_i sum_{j<i} e^{G_i - G_j} (k_i.k_j) delta_j = b_i (v_i - e^{G_i} s0.k_i)
 * a unit lower-triangular system shared by every row of the head, solved by forward
 * substitution for all rows at once; then
 *   o_t = e^{G_t} s0.q_t + sum_{i<=t} e^{G_t - G_i} (q_t.k_i) delta_i
 *   s_L = e^{G_L} s0 + sum_i e^{G_L - G_i} delta_i k_i
 * Dot products become small matrix products instead of a d x d pass per token. */
typedef struct delta_ws {
    float *G, *A, *M, *D; /* [L], [L][L] k.k, [L][L] q.k, [L][d] deltas (row t = token) */
} delta_ws;

static void delta_run_chunk(const delta_ctx *k, int j, const int *tok, int L, float *S, delta_ws *w)
{
    const delta_params *p = k->p;
    const int d = p->d, nv = p->n_v, nk = p->n_k, r = nv / nk;
    const int kh = p->tiled ? j % nk : j / r;
    const float scale = 1.0f / sqrtf((float)d);
    const float *Q[256], *K[256], *V[256];
    for (int t = 0; t < L; t++) {
        const float *row = k->qkv + (int64_t)tok[t] * k->stride;
        Q[t] = row + (size_t)kh * d;
        K[t] = row + (size_t)(nk + kh) * d;
        V[t] = row + (size_t)2 * nk * d + (size_t)j * d;
        w->G[t] = (t ? w->G[t - 1] : 0.0f) + k->g[tok[t] * nv + j];
    }
    for (int t = 0; t < L; t++)
        for (int i = 0; i <= t; i++) {
            float kk = 0, qk = 0;
            for (int x = 0; x < d; x++) {
                kk += K[t][x] * K[i][x];
                qk += Q[t][x] * K[i][x];
            }
            float dec = expf(w->G[t] - w->G[i]);
            w->A[t * L + i] = kk * dec;
            w->M[t * L + i] = qk * dec;
        }
    /* right-hand sides, then forward substitution: row t of D for every value dim */
    for (int t = 0; t < L; t++) {
        float bt = k->beta[tok[t] * nv + j], eg = expf(w->G[t]);
        float *Dt = w->D + (size_t)t * d;
        for (int jv = 0; jv < d; jv++) {
            const float *s = S + (size_t)jv * d;
            float sk = 0;
            for (int x = 0; x < d; x++)
                sk += s[x] * K[t][x];
            Dt[jv] = V[t][jv] - eg * sk;
        }
        for (int i = 0; i < t; i++) {
            float a = w->A[t * L + i];
            const float *Di = w->D + (size_t)i * d;
            for (int jv = 0; jv < d; jv++)
                Dt[jv] -= a * Di[jv];
        }
        for (int jv = 0; jv < d; jv++)
            Dt[jv] *= bt;
    }
    /* outputs from the state at the start of the run and the deltas */
    for (int t = 0; t < L; t++) {
        float eg = expf(w->G[t]);
        float *o = k->out + (int64_t)tok[t] * nv * d + (size_t)j * d;
        for (int jv = 0; jv < d; jv++) {
            const float *s = S + (size_t)jv * d;
            float sq = 0;
            for (int x = 0; x < d; x++)
                sq += s[x] * Q[t][x];
            float acc = eg * sq;
            for (int i = 0; i <= t; i++)
                acc += w->M[t * L + i] * w->D[(size_t)i * d + jv];
            o[jv] = acc * scale;
        }
    }
    /* the state after the run */
    float eL = expf(w->G[L - 1]);
    for (int jv = 0; jv < d; jv++) {
        float *s = S + (size_t)jv * d;
        for (int x = 0; x < d; x++)
            s[x] *= eL;
        for (int i = 0; i < L; i++) {
            float c = expf(w->G[L - 1] - w->G[i]) * w->D[(size_t)i * d + jv];
            for (int x = 0; x < d; x++)
                s[x] += c * K[i][x];
        }
    }
}

/* The sequential step of one token for every row of head j. */
static void delta_step(const delta_ctx *k, int j, int t, float *S)
{
    const delta_params *p = k->p;
    const int d = p->d, nv = p->n_v, nk = p->n_k, r = nv / nk;
    const int kh = p->tiled ? j % nk : j / r;
    const float *row = k->qkv + (int64_t)t * k->stride;
    const float *q = row + (size_t)kh * d, *kk = row + (size_t)(nk + kh) * d;
    const float *v = row + (size_t)2 * nk * d + (size_t)j * d;
    float *o = k->out + (int64_t)t * nv * d + (size_t)j * d;
    float eg = expf(k->g[t * nv + j]), bt = k->beta[t * nv + j];
    const float scale = 1.0f / sqrtf((float)d);
    const cpu_kernels *kn = kern();
    for (int jv = 0; jv < d; jv++)
        o[jv] = kn->delta_row(S + (size_t)jv * d, kk, q, d, eg, bt, v[jv]) * scale;
}

/* Heads split over threads; each walks the batch, cutting it into runs of one
 * sequence's consecutive positions (at most p->chunk tokens), run by the chunked form
 * (a single token: the sequential step). */
static void delta_chunked_fn(void *v, int ith, int nth)
{
    delta_ctx *k = v;
    const delta_params *p = k->p;
    const int32_t *pos = k->c->pos.p, *seq = k->c->seq.p;
    const int n = k->c->n, d = p->d, C = p->chunk;
    int64_t a, b;
    split(p->n_v, ith, nth, &a, &b);
    if (a >= b)
        return;
    delta_ws w;
    float *mem = malloc(sizeof(float) * ((size_t)C + 2 * (size_t)C * C + (size_t)C * d));
    int *tok = malloc(sizeof(int) * (size_t)C);
    char *done = malloc((size_t)n);
    if (!mem || !tok || !done) {
        free(mem);
        free(tok);
        free(done);
        fail(k->c, ENOMEM);
        return;
    }
    w.G = mem;
    w.A = w.G + C;
    w.M = w.A + (size_t)C * C;
    w.D = w.M + (size_t)C * C;
    for (int64_t j = a; j < b; j++) {
        memset(done, 0, (size_t)n);
        for (int t = 0; t < n; t++) {
            if (done[t])
                continue;
            /* the run: this sequence's next tokens in batch order, at consecutive positions */
            int L = 0;
            tok[L++] = t;
            for (int u = t + 1; u < n && L < C; u++) {
                if (seq[u] != seq[t])
                    continue;
                if (pos[u] != pos[tok[L - 1]] + 1)
                    break;
                tok[L++] = u;
            }
            for (int i = 0; i < L; i++)
                done[tok[i]] = 1;
            float *S = k->ssm + (size_t)seq[t] * k->seq_floats + (size_t)j * d * d;
            if (pos[t] == 0)
                memset(S, 0, sizeof(float) * (size_t)d * d);
            if (L == 1)
                delta_step(k, (int)j, t, S);
            else
                delta_run_chunk(k, (int)j, tok, L, S, &w);
        }
    }
    free(done);
    free(mem);
    free(tok);
}

static void cpu_gated_delta(backend *be, float *out, const float *qkv, int64_t stride, const float *g,
                            const float *beta, kv_cache *kv, int il, int n, const delta_params *p)
{
    cpu_be *c = impl(be);
    (void)n;
    if (!kv->state || !kv->state[il].ssm || p->n_k <= 0 || p->n_v % p->n_k ||
        (size_t)p->n_v * p->d * p->d != kv->ssm_floats) {
        fail(c, EINVAL);
        return;
    }
    delta_ctx k = {c, out, qkv, g, beta, stride, kv->state[il].ssm, kv->ssm_floats, p, kv,
                   kv->n_snap ? kv->state[il].ssm_snap : NULL};
    /* the chunked form keeps no per-token states: snapshots take the sequential one (the
     * same math) */
    if (p->chunk > 1 && p->chunk <= 256 && c->n > 1 && !k.snap)
        par(c, p->n_v < c->nth ? p->n_v : c->nth, delta_chunked_fn, &k);
    else
        par(c, nth_for(c, (double)c->n * p->n_v * p->d * p->d * 4), delta_fn, &k);
}

typedef struct gnorm_ctx {
    float *out;
    const float *x, *w, *z;
    int rows, d;
    float eps;
} gnorm_ctx;

static void gated_rmsnorm_fn(void *p, int ith, int nth)
{
    gnorm_ctx *k = p;
    int64_t a, b;
    split(k->rows, ith, nth, &a, &b);
    for (int64_t r = a; r < b; r++) {
        const float *x = k->x + r * k->d, *z = k->z + r * k->d;
        float *o = k->out + r * k->d;
        double ss = 0;
        for (int i = 0; i < k->d; i++)
            ss += (double)x[i] * x[i];
        float sc = (float)(1.0 / sqrt(ss / k->d + k->eps));
        for (int i = 0; i < k->d; i++)
            o[i] = x[i] * sc * k->w[i] * silu_f(z[i]);
    }
}

static void cpu_gated_rmsnorm(backend *be, float *out, const float *x, const float *w, const float *z,
                              int rows, int d, float eps)
{
    cpu_be *c = impl(be);
    gnorm_ctx k = {out, x, w, z, rows, d, eps};
    par(c, nth_for(c, (double)rows * d * 4), gated_rmsnorm_fn, &k);
}

static void cpu_sigmoid_mul(backend *be, float *x, const float *g, int rows, int d, bool per_row)
{
    (void)be;
    for (int64_t r = 0; r < rows; r++)
        for (int i = 0; i < d; i++)
            x[r * d + i] *= sigmoid_f(per_row ? g[r] : g[r * d + i]);
}

/* ---------------------------------------------------------------- vision tower ops
 * Plain loops: the CPU tower (clip.c) has its own; these are what the GPU's kernels are
 * tested against. */

static void cpu_layer_norm(backend *be, float *out, const float *x, const float *w, const float *b, int rows, int d,
                           float eps)
{
    (void)be;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * d;
        float *o = out + (size_t)r * d;
        double sum = 0, sq = 0;
        for (int i = 0; i < d; i++)
            sum += xr[i];
        const double mean = sum / d;
        for (int i = 0; i < d; i++)
            sq += (xr[i] - mean) * (xr[i] - mean);
        const float scale = (float)(1.0 / sqrt(sq / d + eps));
        for (int i = 0; i < d; i++)
            o[i] = (float)(xr[i] - mean) * scale * w[i] + (b ? b[i] : 0.0f);
    }
}

static void cpu_gelu(backend *be, float *out, const float *x, const float *up, int64_t n, int kind)
{
    (void)be;
    for (int64_t i = 0; i < n; i++) {
        const double v = x[i];
        double a;
        if (kind == GELU_ERF)
            a = 0.5 * v * (1.0 + erf(v * 0.70710678118654752440));
        else if (kind == GELU_QUICK)
            a = v / (1.0 + exp(-1.702 * v));
        else
            a = 0.5 * v * (1.0 + tanh(0.79788456080286535588 * (v + 0.044715 * v * v * v)));
        out[i] = (float)a * (up ? up[i] : 1.0f);
    }
}

static void cpu_clamp(backend *be, float *x, int64_t n, float lo, float hi)
{
    (void)be;
    for (int64_t i = 0; i < n; i++)
        x[i] = x[i] < lo ? lo : x[i] > hi ? hi : x[i];
}

static void cpu_avg_pool(backend *be, float *out, const float *x, int cols, int rows, int k, int d)
{
    (void)be;
    const int tc = cols / k, tr = rows / k;
    for (int ty = 0; ty < tr; ty++)
        for (int tx = 0; tx < tc; tx++)
            for (int i = 0; i < d; i++) {
                double s = 0;
                for (int dy = 0; dy < k; dy++)
                    for (int dx = 0; dx < k; dx++)
                        s += x[((size_t)(ty * k + dy) * cols + tx * k + dx) * d + i];
                out[((size_t)ty * tc + tx) * d + i] = (float)(s / (k * k));
            }
}

/* ---------------------------------------------------------------- setup */

static void cpu_destroy(backend *be);

static const struct backend_ops cpu_ops = {
    .name = "CPU",
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_copy,
    .download = cpu_copy,
    .sync = cpu_sync,
    .begin = cpu_begin,
    .get_rows = cpu_get_rows,
    .rmsnorm = cpu_rmsnorm,
    .matmul = cpu_matmul,
    .matmul_multi = cpu_matmul_multi,
    .add_bias = cpu_add_bias,
    .add = cpu_add,
    .swiglu = cpu_swiglu,
    .geglu = cpu_geglu,
    .scale = cpu_scale,
    .softcap = cpu_softcap,
    .scale_ids = cpu_scale_ids,
    .copy2d = cpu_copy2d,
    .rope = cpu_rope,
    .kv_store = cpu_kv_store,
    .attention = cpu_attention,
    .non_causal = cpu_non_causal,
    .topk_softmax = cpu_topk_softmax,
    .moe_ffn = cpu_moe_ffn,
    .hadamard = cpu_hadamard,
    .copy_rows = cpu_copy_rows,
    .ssm_conv = cpu_ssm_conv,
    .l2norm = cpu_l2norm,
    .delta_gates = cpu_delta_gates,
    .gated_delta = cpu_gated_delta,
    .recurrent_snapshots = true,
    .gated_rmsnorm = cpu_gated_rmsnorm,
    .sigmoid_mul = cpu_sigmoid_mul,
    .layer_norm = cpu_layer_norm,
    .gelu = cpu_gelu,
    .clamp = cpu_clamp,
    .avg_pool = cpu_avg_pool,
    .check = cpu_check,
    .destroy = cpu_destroy,
    .stage_copy = cpu_stage_copy,
    .stage_wait = cpu_stage_wait,
    .stage_release = cpu_stage_release,
};

backend *backend_cpu_new(int n_threads, int n_threads_batch)
{
    if (n_threads <= 0)
        n_threads = cpu_physical_cores();
    if (n_threads_batch <= 0)
        n_threads_batch = n_threads;
    int size = n_threads > n_threads_batch ? n_threads : n_threads_batch;
    backend *be = calloc(1, sizeof *be);
    cpu_be *c = calloc(1, sizeof *c);
    if (!be || !c)
        goto fail;
    c->tls = calloc((size_t)size, sizeof *c->tls);
    c->n_tls = size;
    if (!c->tls)
        goto fail;
    c->pool = threadpool_new(size);
    if (!c->pool)
        goto fail;
    be->ops = &cpu_ops;
    c->n_threads = n_threads;
    c->n_threads_batch = n_threads_batch;
    be->impl = c;
    c->nth = n_threads;
    return be;
fail:
    if (c)
        free(c->tls);
    free(c);
    free(be);
    return NULL;
}

int backend_cpu_threads(const backend *be)
{
    return be && be->ops == &cpu_ops ? ((const cpu_be *)be->impl)->n_threads : 0;
}

int backend_cpu_tids(backend *be, int *tids, int cap)
{
    return be && be->ops == &cpu_ops ? threadpool_tids(((cpu_be *)be->impl)->pool, tids, cap) : 0;
}

static void buf_free(buf *b) { free(b->p); }

static void cpu_destroy(backend *be)
{
    cpu_be *c = be->impl;
    threadpool_free(c->pool);
    buf *bufs[] = {&c->tok, &c->pos, &c->seq, &c->last, &c->act[0], &c->act[1], &c->act[2], &c->act[3],
                   &c->rope_cs, &c->moe_cnt, &c->moe_off,
                   &c->moe_slot, &c->moe_xq, &c->moe_g, &c->moe_u, &c->moe_hq, &c->moe_y,
                   &c->moe_items, &c->stage[0], &c->stage[1]};
    for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++)
        buf_free(bufs[i]);
    for (int i = 0; i < c->n_tls; i++) {
        buf_free(&c->tls[i].scores);
        buf_free(&c->tls[i].acc);
        buf_free(&c->tls[i].qdot);
        buf_free(&c->tls[i].vrow);
        buf_free(&c->tls[i].qf);
    }
    free(c->tls);
    free(c);
    free(be);
}
