/* test_recurrent.c — the CPU ops of recurrent (Gated DeltaNet) layers against plain
 * double-precision references written straight from the definitions: the causal conv
 * with its state, L2 norm, the gates, the gated delta rule (token by token and the
 * chunked form, over batches that interleave sequences and cross chunk boundaries),
 * the gated RMS norm and the sigmoid gate; and the state checkpoints of kv.c. */
#include "testutil.h"

#include "backend.h"
#include "kv.h"
#include "quant.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { NK = 2, NV = 4, D = 16, KC = 4, CH = 2 * NK * D + NV * D, NSEQ = 3 };

static float frand(unsigned *s)
{
    *s = *s * 1664525u + 1013904223u;
    return (float)((*s >> 8) & 0xffff) / 32768.0f - 1.0f;
}

/* A cache holding only the recurrent state of one layer (layer 0) on be. */
static kv_cache *state_cache(backend *be)
{
    kv_cache *kv = calloc(1, sizeof *kv);
    kv->n_layer = 1;
    kv->n_seq = NSEQ;
    kv->n_ctx = 1024;
    kv->layer = calloc(1, sizeof *kv->layer);
    kv->seq_len = calloc(NSEQ, sizeof(int));
    kv->seq_top = calloc(NSEQ, sizeof(int));
    kv->state = calloc(1, sizeof *kv->state);
    kv->n_recurrent = 1;
    kv->conv_floats = (size_t)(KC - 1) * CH;
    kv->ssm_floats = (size_t)NV * D * D;
    kv->state[0].be = be;
    kv->state[0].conv = calloc(kv->conv_floats * NSEQ, sizeof(float));
    kv->state[0].ssm = calloc(kv->ssm_floats * NSEQ, sizeof(float));
    kv->max_ckpt = 4;
    kv->ckpt = calloc(4, sizeof *kv->ckpt);
    return kv;
}

static void state_cache_free(kv_cache *kv)
{
    free(kv->state[0].conv);
    free(kv->state[0].ssm);
    kv->state[0].conv = kv->state[0].ssm = NULL;
    kv->state[0].be = NULL;
    kv_cache_free(kv);
}

/* A batch: n tokens; sequence of token t from seqs, positions counted per sequence. */
typedef struct tbatch {
    int n;
    int32_t tok[256], pos[256], seq[256];
} tbatch;

static void make_batch(tbatch *b, int n, const int *seqs, int *next_pos)
{
    b->n = n;
    for (int t = 0; t < n; t++) {
        b->tok[t] = 0;
        b->seq[t] = seqs[t];
        b->pos[t] = next_pos[seqs[t]]++;
    }
}

static void begin(backend *be, const tbatch *b)
{
    fwd_batch fb = {b->n, b->tok, b->pos, b->seq, NULL};
    ck_assert_int_eq(be->ops->begin(be, &fb), 0);
}

/* ---- references, per sequence state in doubles ---- */

typedef struct ref_state {
    double conv[NSEQ][KC - 1][CH];  /* previous inputs, oldest first */
    double S[NSEQ][NV][D][D];       /* S[j][key dim][value dim] (the natural orientation) */
} ref_state;

static double silu(double x) { return x / (1 + exp(-x)); }

/* Everything a DeltaNet layer does between the projections and the output norm. */
static void reference(ref_state *rs, const tbatch *b, const float *qkv, const float *graw,
                      const float *braw, const float *dt, const float *A, const float *w, bool tiled,
                      double *out)
{
    for (int t = 0; t < b->n; t++) {
        int s = b->seq[t];
        if (b->pos[t] == 0)
            memset(&rs->conv[s], 0, sizeof rs->conv[s]), memset(&rs->S[s], 0, sizeof rs->S[s]);
        double c[CH];
        for (int ch = 0; ch < CH; ch++) {
            double acc = w[ch * KC + KC - 1] * (double)qkv[t * CH + ch];
            for (int i = 0; i < KC - 1; i++)
                acc += w[ch * KC + i] * rs->conv[s][i][ch];
            for (int i = 0; i + 1 < KC - 1; i++)
                rs->conv[s][i][ch] = rs->conv[s][i + 1][ch];
            rs->conv[s][KC - 2][ch] = qkv[t * CH + ch];
            c[ch] = silu(acc);
        }
        for (int h = 0; h < 2 * NK; h++) { /* q and k heads to unit length */
            double ss = 0;
            for (int i = 0; i < D; i++)
                ss += c[h * D + i] * c[h * D + i];
            double nrm = sqrt(ss) > 1e-6 ? sqrt(ss) : 1e-6;
            for (int i = 0; i < D; i++)
                c[h * D + i] /= nrm;
        }
        for (int j = 0; j < NV; j++) {
            int kh = tiled ? j % NK : j / (NV / NK);
            const double *q = c + kh * D, *k = c + (NK + kh) * D, *v = c + 2 * NK * D + j * D;
            double x = graw[t * NV + j] + dt[j];
            double g = log1p(exp(x)) * A[j], beta = 1 / (1 + exp(-(double)braw[t * NV + j]));
            double (*S)[D] = rs->S[s][j];
            for (int a = 0; a < D; a++)
                for (int e = 0; e < D; e++)
                    S[a][e] *= exp(g);
            for (int e = 0; e < D; e++) {
                double u = 0;
                for (int a = 0; a < D; a++)
                    u += S[a][e] * k[a];
                double delta = beta * (v[e] - u);
                for (int a = 0; a < D; a++)
                    S[a][e] += k[a] * delta;
            }
            for (int e = 0; e < D; e++) {
                double o = 0;
                for (int a = 0; a < D; a++)
                    o += S[a][e] * q[a];
                out[(size_t)t * NV * D + j * D + e] = o / sqrt((double)D);
            }
        }
    }
}

/* The backend's ops in the order a DeltaNet layer calls them. */
static void run_ops(backend *be, kv_cache *kv, const tbatch *b, const float *qkv, const float *graw,
                    const float *braw, const float *dt, const float *A, const float *w, bool tiled,
                    int chunk, float *out)
{
    const struct backend_ops *o = be->ops;
    int n = b->n;
    float *conv = malloc(sizeof(float) * (size_t)n * CH), *g = malloc(sizeof(float) * (size_t)n * NV),
          *beta = malloc(sizeof(float) * (size_t)n * NV);
    memcpy(g, graw, sizeof(float) * (size_t)n * NV);
    memcpy(beta, braw, sizeof(float) * (size_t)n * NV);
    begin(be, b);
    o->delta_gates(be, g, beta, dt, A, n, NV);
    o->ssm_conv(be, conv, qkv, CH, w, kv, 0, n, CH, KC);
    o->l2norm(be, conv, n, 2 * NK, D, CH, 1e-6f);
    delta_params p = {.n_k = NK, .n_v = NV, .d = D, .tiled = tiled, .chunk = chunk};
    o->gated_delta(be, out, conv, CH, g, beta, kv, 0, n, &p);
    llmfs_error err = {0};
    ck_assert_int_eq(o->check(be, &err), 0);
    free(conv);
    free(g);
    free(beta);
}

static double max_err(const float *a, const double *r, size_t n)
{
    double worst = 0, scale = 1e-3;
    for (size_t i = 0; i < n; i++)
        scale = fabs(r[i]) > scale ? fabs(r[i]) : scale;
    for (size_t i = 0; i < n; i++) {
        double e = fabs(a[i] - r[i]) / scale;
        worst = e > worst ? e : worst;
    }
    return worst;
}

/* Three batches over three sequences: interleaved prompts (runs cut by other
 * sequences), a long run of one sequence crossing chunk boundaries, then a step with
 * one token each, a sequence restarting at position 0 in the middle. */
static void check_layer(bool tiled, int chunk)
{
    backend *be = backend_cpu_new(2, 2);
    kv_cache *kv = state_cache(be);
    static ref_state rs;
    memset(&rs, 0, sizeof rs);
    unsigned seed = 7u + (unsigned)chunk;
    float dt[NV], A[NV], w[CH * KC];
    for (int j = 0; j < NV; j++)
        dt[j] = frand(&seed) * 2 - 1, A[j] = -1 - 3 * (frand(&seed) + 1);
    for (int i = 0; i < CH * KC; i++)
        w[i] = frand(&seed) * 0.7f;
    int next_pos[NSEQ] = {0};
    int pattern[3][256], lens[3] = {40, 150, 3};
    for (int t = 0; t < 40; t++)
        pattern[0][t] = t % 3 == 2 ? 1 : t % 2 ? 2 : 0;
    for (int t = 0; t < 150; t++)
        pattern[1][t] = t < 140 ? 0 : 2;
    pattern[2][0] = 1, pattern[2][1] = 0, pattern[2][2] = 2;
    double worst = 0;
    for (int k = 0; k < 3; k++) {
        if (k == 2)
            next_pos[1] = 0; /* sequence 1 starts again */
        tbatch b;
        make_batch(&b, lens[k], pattern[k], next_pos);
        int n = b.n;
        float *qkv = malloc(sizeof(float) * (size_t)n * CH), *graw = malloc(sizeof(float) * (size_t)n * NV),
              *braw = malloc(sizeof(float) * (size_t)n * NV), *out = malloc(sizeof(float) * (size_t)n * NV * D);
        double *ref = malloc(sizeof(double) * (size_t)n * NV * D);
        for (int i = 0; i < n * CH; i++)
            qkv[i] = frand(&seed) * 2;
        for (int i = 0; i < n * NV; i++)
            graw[i] = frand(&seed) * 3, braw[i] = frand(&seed) * 3;
        reference(&rs, &b, qkv, graw, braw, dt, A, w, tiled, ref);
        run_ops(be, kv, &b, qkv, graw, braw, dt, A, w, tiled, chunk, out);
        double e = max_err(out, ref, (size_t)n * NV * D);
        worst = e > worst ? e : worst;
        free(qkv), free(graw), free(braw), free(out), free(ref);
    }
    printf("delta rule %s, chunk %3d: max error vs reference %.2e\n", tiled ? "tiled  " : "grouped", chunk, worst);
    ck_assert_msg(worst < 2e-4, "delta rule (tiled %d, chunk %d) differs from the reference by %.3g", tiled,
                  chunk, worst);
    state_cache_free(kv);
    backend_free(be);
}

START_TEST(sequential_tiled) { check_layer(true, 0); }
END_TEST

/* The vectorised row update against the scalar one, same inputs. */
START_TEST(vector_vs_scalar)
{
    static const char *isa[] = {"scalar", "avx2"};
    if (!quant_force_isa("avx2")) {
        fprintf(stderr, "no AVX2: only the scalar kernels run\n");
        return;
    }
    float out[2][150 * NV * D];
    for (int i = 0; i < 2; i++) {
        ck_assert(quant_force_isa(isa[i]));
        backend *be = backend_cpu_new(2, 2);
        kv_cache *kv = state_cache(be);
        unsigned seed = 5;
        float dt[NV], A[NV], w[CH * KC];
        for (int j = 0; j < NV; j++)
            dt[j] = frand(&seed), A[j] = -2 + frand(&seed);
        for (int x = 0; x < CH * KC; x++)
            w[x] = frand(&seed);
        int seqs[150], next[NSEQ] = {0};
        for (int t = 0; t < 150; t++)
            seqs[t] = t % 3;
        tbatch b;
        make_batch(&b, 150, seqs, next);
        float *qkv = malloc(sizeof(float) * 150 * CH), g[150 * NV], bb[150 * NV];
        for (int x = 0; x < 150 * CH; x++)
            qkv[x] = frand(&seed);
        for (int x = 0; x < 150 * NV; x++)
            g[x] = frand(&seed), bb[x] = frand(&seed);
        run_ops(be, kv, &b, qkv, g, bb, dt, A, w, true, 0, out[i]);
        free(qkv);
        state_cache_free(kv);
        backend_free(be);
    }
    quant_force_isa(NULL);
    double worst = 0, scale = 1e-3;
    for (int x = 0; x < 150 * NV * D; x++)
        scale = fmax(scale, fabs(out[0][x]));
    for (int x = 0; x < 150 * NV * D; x++)
        worst = fmax(worst, fabs(out[0][x] - out[1][x]) / scale);
    printf("delta rule avx2 vs scalar: %.2e\n", worst);
    ck_assert_msg(worst < 1e-5, "avx2 delta rule differs from scalar by %g", worst);
}
END_TEST
START_TEST(sequential_grouped) { check_layer(false, 0); }
END_TEST
START_TEST(chunked_64) { check_layer(true, 64); }
END_TEST
START_TEST(chunked_5) { check_layer(false, 5); }
END_TEST

/* The chunked form against the sequential form of the same backend on the same inputs. */
START_TEST(chunked_vs_sequential)
{
    backend *be = backend_cpu_new(2, 2);
    kv_cache *k1 = state_cache(be), *k2 = state_cache(be);
    unsigned seed = 99;
    float dt[NV], A[NV], w[CH * KC];
    for (int j = 0; j < NV; j++)
        dt[j] = frand(&seed), A[j] = -2 + frand(&seed);
    for (int i = 0; i < CH * KC; i++)
        w[i] = frand(&seed);
    int seqs[200], next1[NSEQ] = {0}, next2[NSEQ] = {0};
    for (int t = 0; t < 200; t++)
        seqs[t] = t < 100 ? 0 : 1 + (t / 7) % 2;
    tbatch b1, b2;
    make_batch(&b1, 200, seqs, next1);
    make_batch(&b2, 200, seqs, next2);
    float *qkv = malloc(sizeof(float) * 200 * CH), *g = malloc(sizeof(float) * 200 * NV),
          *bb = malloc(sizeof(float) * 200 * NV), *o1 = malloc(sizeof(float) * 200 * NV * D),
          *o2 = malloc(sizeof(float) * 200 * NV * D);
    for (int i = 0; i < 200 * CH; i++)
        qkv[i] = frand(&seed);
    for (int i = 0; i < 200 * NV; i++)
        g[i] = frand(&seed) * 2, bb[i] = frand(&seed) * 2;
    run_ops(be, k1, &b1, qkv, g, bb, dt, A, w, true, 0, o1);
    run_ops(be, k2, &b2, qkv, g, bb, dt, A, w, true, 64, o2);
    double worst = 0, scale = 1e-3;
    for (int i = 0; i < 200 * NV * D; i++)
        scale = fabsf(o1[i]) > scale ? fabsf(o1[i]) : scale;
    for (int i = 0; i < 200 * NV * D; i++)
        worst = fmax(worst, fabs(o1[i] - o2[i]) / scale);
    double ws = 0;
    for (size_t i = 0; i < k1->ssm_floats * NSEQ; i++)
        ws = fmax(ws, fabs(k1->state[0].ssm[i] - k2->state[0].ssm[i]));
    printf("chunked vs sequential: outputs %.2e, states %.2e\n", worst, ws);
    ck_assert_msg(worst < 1e-4 && ws < 1e-4, "chunked and sequential forms differ: %.3g / %.3g", worst, ws);
    free(qkv), free(g), free(bb), free(o1), free(o2);
    state_cache_free(k1);
    state_cache_free(k2);
    backend_free(be);
}
END_TEST

START_TEST(norms_and_gates)
{
    backend *be = backend_cpu_new(2, 2);
    const struct backend_ops *o = be->ops;
    unsigned seed = 3;
    enum { R = 37, W = 48 };
    float x[R * W], z[R * W], wt[W], out[R * W], gt[R * W], gr[R], y[R * W];
    for (int i = 0; i < R * W; i++)
        x[i] = frand(&seed) * 3, z[i] = frand(&seed) * 3, gt[i] = frand(&seed) * 4;
    for (int i = 0; i < W; i++)
        wt[i] = 1 + frand(&seed);
    for (int r = 0; r < R; r++)
        gr[r] = frand(&seed) * 4;
    tbatch b = {.n = R};
    begin(be, &b);
    o->gated_rmsnorm(be, out, x, wt, z, R, W, 1e-6f);
    double worst = 0;
    for (int r = 0; r < R; r++) {
        double ss = 0;
        for (int i = 0; i < W; i++)
            ss += (double)x[r * W + i] * x[r * W + i];
        for (int i = 0; i < W; i++) {
            double want = x[r * W + i] / sqrt(ss / W + 1e-6) * wt[i] * silu(z[r * W + i]);
            worst = fmax(worst, fabs(out[r * W + i] - want));
        }
    }
    ck_assert_msg(worst < 1e-5, "gated_rmsnorm off by %g", worst);
    /* elementwise and per-row sigmoid gates */
    memcpy(y, x, sizeof y);
    o->sigmoid_mul(be, y, gt, R, W, false);
    for (int i = 0; i < R * W; i++)
        ck_assert(fabs(y[i] - x[i] / (1 + exp(-(double)gt[i]))) < 1e-5);
    memcpy(y, x, sizeof y);
    o->sigmoid_mul(be, y, gr, R, W, true);
    for (int i = 0; i < R * W; i++)
        ck_assert(fabs(y[i] - x[i] / (1 + exp(-(double)gr[i / W]))) < 1e-5);
    /* l2 norm of 3 groups of 16 within rows of 48, a zero group stays zero (eps) */
    memcpy(y, x, sizeof y);
    memset(y, 0, sizeof(float) * 16);
    o->l2norm(be, y, R, 3, 16, W, 1e-6f);
    for (int r = 0; r < R; r++)
        for (int g = 0; g < 3; g++) {
            double ss = 0;
            for (int i = 0; i < 16; i++)
                ss += (double)y[r * W + g * 16 + i] * y[r * W + g * 16 + i];
            ck_assert(r == 0 && g == 0 ? ss == 0 : fabs(ss - 1) < 1e-5);
        }
    /* strided row copies */
    float dst[R * 8];
    o->copy_rows(be, dst, 8, x + 5, W, R, 8);
    for (int r = 0; r < R; r++)
        ck_assert(!memcmp(dst + r * 8, x + r * W + 5, 8 * sizeof(float)));
    llmfs_error err = {0};
    ck_assert_int_eq(o->check(be, &err), 0);
    backend_free(be);
}
END_TEST

/* A recurrent state is restored from a checkpoint, never cut back. */
START_TEST(checkpoints)
{
    backend *be = backend_cpu_new(1, 1);
    kv_cache *kv = state_cache(be);
    float *ssm = kv->state[0].ssm;
    ssm[kv->ssm_floats] = 5; /* sequence 1 */
    kv->seq_len[1] = 10;
    ck_assert_int_eq(kv_checkpoint_save(kv, 1), 0);
    ck_assert_int_eq(kv_checkpoint_count(kv, 1), 1);
    ck_assert_int_eq(kv_checkpoint_count(kv, 0), 0);
    ssm[kv->ssm_floats] = 7;
    kv->seq_len[1] = 20;
    ck_assert_int_eq(kv_seq_can_keep(kv, 1, 25), 20); /* nothing to cut */
    ck_assert_int_eq(kv_seq_can_keep(kv, 1, 15), 10); /* back to the checkpoint */
    ck_assert_int_eq(kv_seq_can_keep(kv, 1, 9), 0);   /* none at or below: cleared */
    ck_assert_int_eq(kv_seq_keep(kv, 1, 15), 10);
    ck_assert_int_eq(kv->seq_len[1], 10);
    ck_assert(ssm[kv->ssm_floats] == 5);
    ck_assert_int_eq(kv_seq_keep(kv, 1, 0), 0);
    ck_assert_int_eq(kv_checkpoint_count(kv, -1), 0); /* past what is kept: dropped */
    /* more checkpoints than room: the least recently used goes */
    for (int i = 1; i <= 6; i++) {
        kv->seq_len[0] = i;
        ck_assert_int_eq(kv_checkpoint_save(kv, 0), 0);
    }
    ck_assert_int_eq(kv_checkpoint_count(kv, 0), 4);
    ck_assert_int_eq(kv_seq_can_keep(kv, 0, 2), 0);
    ck_assert_int_eq(kv_seq_can_keep(kv, 0, 4), 4);
    ck_assert_uint_eq(kv_state_bytes(kv), sizeof(float) * ((KC - 1) * CH + NV * D * D));
    state_cache_free(kv);
    backend_free(be);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("recurrent");
    TCase *tc = tcase_create("ops");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, sequential_tiled);
    tcase_add_test(tc, sequential_grouped);
    tcase_add_test(tc, vector_vs_scalar);
    tcase_add_test(tc, chunked_64);
    tcase_add_test(tc, chunked_5);
    tcase_add_test(tc, chunked_vs_sequential);
    tcase_add_test(tc, norms_and_gates);
    tcase_add_test(tc, checkpoints);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}
