/* test_cuda_host.c — the CUDA kernels' block decoding, device layout, dot products and
 * KV rows, compiled for the host, against quant.c's references. Runs without a GPU;
 * skipped (77) when llmfs is built without CUDA. */
#include "testutil.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef LLMFS_HAVE_CUDA
#include "backend.h"
#include "host_check.h"
#include "gguf.h"
#include "quant.h"

static const int weight_types[] = {T_F32,  T_F16,  T_BF16, T_Q4_0, T_Q4_1, T_Q5_0, T_Q5_1,
                                   T_Q8_0, T_Q2_K, T_Q3_K, T_Q4_K, T_Q5_K, T_Q6_K,
                                   T_IQ4_NL, T_MXFP4, T_IQ4_XS, T_TQ1_0, T_TQ2_0, T_IQ3_XXS,
                                   T_IQ3_S, T_IQ2_XXS, T_IQ2_XS, T_IQ2_S, T_IQ1_S, T_IQ1_M};
#define N_WT ((int)(sizeof weight_types / sizeof weight_types[0]))

static void put16(void *p, size_t off, uint16_t v) { memcpy((char *)p + off, &v, 2); }
static uint16_t scale16(float mag) { return f32_to_f16((test_uniform() * 2 - 1) * mag); }

/* Rows of random bits (every quant value occurs) with finite scale fields. */
static void random_bits(int type, int64_t n, void *dst)
{
    const type_traits *t = type_info(type);
    const size_t nb = (size_t)(n / t->block), bb = t->block_bytes;
    unsigned char *p = dst;
    if (type == T_F32 || type == T_F16 || type == T_BF16) {
        for (int64_t i = 0; i < n; i++) {
            float x = test_normal();
            if (type == T_F32)
                memcpy(p + 4 * i, &x, 4);
            else
                put16(p, 2 * (size_t)i, type == T_F16 ? f32_to_f16(x) : f32_to_bf16(x));
        }
        return;
    }
    for (size_t i = 0; i < nb * bb; i++)
        p[i] = (unsigned char)test_rand();
    for (size_t b = 0; b < nb; b++) {
        unsigned char *q = p + b * bb;
        switch (type) {
        case T_Q4_0: case T_Q5_0: case T_Q8_0: put16(q, 0, scale16(0.1f)); break;
        case T_Q4_1: case T_Q5_1: put16(q, 0, scale16(0.1f)); put16(q, 2, scale16(1.f)); break;
        case T_Q2_K: put16(q, 80, scale16(0.1f)); put16(q, 82, scale16(0.1f)); break;
        case T_Q3_K: put16(q, 108, scale16(0.1f)); break;
        case T_Q4_K: case T_Q5_K: put16(q, 0, scale16(0.1f)); put16(q, 2, scale16(0.1f)); break;
        case T_Q6_K: put16(q, 208, scale16(0.1f)); break;
        case T_IQ4_NL: case T_IQ4_XS: case T_IQ3_XXS: case T_IQ3_S: case T_IQ2_XXS: case T_IQ2_XS:
        case T_IQ2_S: case T_IQ1_S: put16(q, 0, scale16(0.1f)); break;
        case T_TQ1_0: put16(q, 52, scale16(0.1f)); break;
        case T_TQ2_0: put16(q, 64, scale16(0.1f)); break;
        case T_MXFP4: q[0] = (unsigned char)(test_rand() % 8 == 0 ? test_rand() % 2 : 118 + test_rand() % 12); break;
        case T_IQ1_M: { /* the f16 scale: top nibbles of the four scale words */
            uint16_t d = scale16(0.1f), sc[4];
            memcpy(sc, q + 48, 8);
            for (int k = 0; k < 4; k++)
                sc[k] = (uint16_t)((sc[k] & 0x0fff) | ((d >> (4 * k)) & 15) << 12);
            memcpy(q + 48, sc, 8);
            break;
        }
        }
    }
}

static float max_abs(const float *x, int64_t n)
{
    float m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmaxf(m, fabsf(x[i]));
    return m;
}

/* Decoding through the device layout gives quant.c's dequantization of the GGUF
 * bytes (up to float rounding of scale * q + min), for random bits and for
 * quantized normals, over several row counts and lengths. */
START_TEST(decode_matches_reference)
{
    const int64_t lens[] = {256, 512, 768};
    const int64_t rows_list[] = {1, 3, 7};
    for (int ti = 0; ti < N_WT; ti++) {
        const int type = weight_types[ti];
        for (int li = 0; li < 3; li++)
            for (int ri = 0; ri < 3; ri++)
                for (int how = 0; how < 2; how++) {
                    const int64_t ne0 = lens[li], rows = rows_list[ri];
                    const size_t rb = type_row_bytes(type, ne0);
                    unsigned char *w = malloc(rb * (size_t)rows);
                    float *ref = malloc(sizeof(float) * (size_t)(ne0 * rows));
                    float *got = malloc(sizeof(float) * (size_t)(ne0 * rows));
                    if (how == 0 || !type_info(type)->has_quantize) {
                        random_bits(type, ne0 * rows, w);
                    } else {
                        for (int64_t r = 0; r < rows; r++) {
                            float x[768];
                            for (int64_t i = 0; i < ne0; i++)
                                x[i] = test_normal() * 0.05f;
                            quantize_row(type, x, w + rb * (size_t)r, ne0);
                        }
                    }
                    for (int64_t r = 0; r < rows; r++)
                        quant_ref_dequantize_row(type, w + rb * (size_t)r, ref + r * ne0, ne0);
                    char msg[128] = "";
                    const int rc = cuda_host_repack_dequant(type, w, ne0, rows, got, msg, sizeof msg);
                    ck_assert_msg(rc == 0, "%s ne0 %lld: %d %s", type_info(type)->name, (long long)ne0, rc, msg);
                    const float tol = max_abs(ref, ne0 * rows) * 2e-6f;
                    for (int64_t i = 0; i < ne0 * rows; i++)
                        ck_assert_msg(fabsf(got[i] - ref[i]) <= tol, "%s ne0 %lld rows %lld: element %lld: %g vs %g",
                                      type_info(type)->name, (long long)ne0, (long long)rows, (long long)i, got[i],
                                      ref[i]);
                    free(w);
                    free(ref);
                    free(got);
                }
    }
}
END_TEST

/* The matrix-vector dot (8-bit activation blocks, dp4a arithmetic) stays within the
 * activation rounding of the exact dot with the dequantized weights: six standard
 * deviations of the rounding noise sum_i w_i e_i, e_i uniform in half a step of x's
 * block. A wrong offset, scale or half-block order errs by far more. */
START_TEST(dot_matches_reference)
{
    const int64_t ne0 = 512, rows = 9;
    for (int ti = 0; ti < N_WT; ti++) {
        const int type = weight_types[ti];
        const size_t rb = type_row_bytes(type, ne0);
        unsigned char *w = malloc(rb * rows);
        float x[512], deq[512], got[9];
        random_bits(type, ne0 * rows, w);
        for (int i = 0; i < ne0; i++)
            x[i] = test_normal() + (i % 7 == 0 ? 3.0f : 0.0f); /* outliers stress the block scales */
        char msg[128] = "";
        const int rc = cuda_host_dot(type, w, ne0, rows, x, got, msg, sizeof msg);
        ck_assert_msg(rc == 0, "%s: %d %s", type_info(type)->name, rc, msg);
        for (int r = 0; r < rows; r++) {
            quant_ref_dequantize_row(type, w + rb * r, deq, ne0);
            double exact = 0, var = 0, wn = 0, xn = 0;
            for (int b = 0; b < ne0 / 32; b++) {
                float amax = 0;
                double wb = 0;
                for (int i = b * 32; i < b * 32 + 32; i++) {
                    exact += (double)deq[i] * x[i];
                    wn += (double)deq[i] * deq[i];
                    xn += (double)x[i] * x[i];
                    wb += (double)deq[i] * deq[i];
                    amax = fmaxf(amax, fabsf(x[i]));
                }
                const double step = amax / 127.0;
                var += wb * step * step / 12;
            }
            const int is_float = type == T_F32 || type == T_F16 || type == T_BF16;
            const double tol = is_float ? 1e-5 * sqrt(wn * xn) : 6 * sqrt(var) + 1e-5 * sqrt(wn * xn);
            ck_assert_msg(fabs(got[r] - exact) <= tol, "%s row %d: %g vs %g (tolerance %g)", type_info(type)->name, r,
                          got[r], exact, tol);
        }
        free(w);
    }
}
END_TEST

/* A KV row stored in the CUDA cache layout reads back as GGUF's quantization of it
 * would (f16 exactly; q8_0/q4_0 within one quantization step of quant.c's rounding). */
START_TEST(kv_rows_round_trip)
{
    /* 32 and 96: q8_0/q4_0 rows of 34, 18, 102 and 54 bytes, so the second cell (where
     * the row is stored) is not 8-byte aligned */
    const int types[] = {T_F16, T_Q8_0, T_Q4_0, T_F32};
    const int dims[] = {32, 64, 96, 256, 1024};
    for (int ti = 0; ti < 4; ti++)
        for (int di = 0; di < 5; di++) {
            const int d = dims[di], type = types[ti];
            float x[1024], got[1024], ref[1024];
            unsigned char q[4096]; /* an f32 row of 1024 */
            for (int i = 0; i < d; i++)
                x[i] = test_normal() * (i % 32 == 5 ? 4.0f : 1.0f);
            const int rb = cuda_host_kv_roundtrip(type, x, d, got);
            ck_assert_int_eq(rb, (int)type_row_bytes(type, d));
            quantize_row(type, x, q, d);
            dequantize_row(type, q, ref, d);
            /* the same bytes as the CPU's cache: a cache filled by either backend reads
             * the same, and so do hybrid placements */
            for (int i = 0; i < d; i++)
                ck_assert_msg(got[i] == ref[i], "type %d d %d element %d: %g vs %g", type, d, i, got[i], ref[i]);
        }
    /* f16 rows too short for 32-element blocks */
    float x[8] = {1, -2, 3.5f, 1e-3f, 65504, -0.25f, 7, 8}, got[8];
    ck_assert_int_eq(cuda_host_kv_roundtrip(T_F16, x, 8, got), 16);
    for (int i = 0; i < 8; i++)
        ck_assert(got[i] == f16_to_f32(f32_to_f16(x[i])));
    ck_assert_int_eq(cuda_host_kv_roundtrip(T_Q8_0, x, 8, got), -EINVAL);
}
END_TEST

/* Rotary angles: plain base^(-2i/n) frequencies, and llama3's three bands. */
START_TEST(rope_angles)
{
    for (int i = 0; i < 64; i += 7)
        ck_assert(fabs(cuda_host_rope_theta(1000, i, 128, 10000.f, 0.5f, 0, 0, 0, 0) -
                       1000 * 0.5 * pow(10000.0, -2.0 * i / 128)) < 1e-9);
    /* llama 3.1: factor 8, low 1, high 4, original context 8192, base 500000 */
    const double two_pi = 6.283185307179586;
    int seen[3] = {0, 0, 0};
    for (int i = 0; i < 64; i++) {
        const double f = pow(500000.0, -2.0 * i / 128), wl = two_pi / f;
        const double got = cuda_host_rope_theta(10, i, 128, 500000.f, 1.f, 8.f, 1.f, 4.f, 8192) / 10;
        if (wl < 8192 / 4.0) {
            ck_assert(fabs(got - f) <= 1e-12 * f);
            seen[0]++;
        } else if (wl > 8192 / 1.0) {
            ck_assert(fabs(got - f / 8) <= 1e-12 * f);
            seen[1]++;
        } else {
            ck_assert(got < f && got > f / 8);
            seen[2]++;
        }
    }
    ck_assert(seen[0] && seen[1] && seen[2]);
}
END_TEST

/* Every weight of the llama-tiny models, as llama.cpp wrote them, decodes through the
 * device layout to quant.c's dequantization. */
START_TEST(real_models_decode)
{
    static const char *const names[] = {"f16",  "bf16", "q8_0", "q6_k", "q5_k", "q5_1",
                                        "q5_0", "q4_k", "q4_1", "q4_0", "q3_k", "q2_k"};
    for (int k = 0; k < 12; k++) {
        char rel[128], path[1024];
        snprintf(rel, sizeof rel, "models/llama-tiny-%s.gguf", names[k]);
        llmfs_error err = {0};
        gguf_file *f = gguf_open(test_shared_path(rel, path, sizeof path), NULL, &err);
        ck_assert_msg(f != NULL, "%s: %s", path, err.msg);
        int checked = 0;
        for (int i = 0; i < gguf_n_tensors(f); i++) {
            const gguf_tensor *t = gguf_tensor_at(f, i);
            if (t->n_dims < 2)
                continue;
            const int64_t ne0 = t->ne[0], rows = t->ne[1];
            float *ref = malloc(sizeof(float) * (size_t)(ne0 * rows)), *got = malloc(sizeof(float) * (size_t)(ne0 * rows));
            const size_t rb = type_row_bytes(t->type, ne0);
            for (int64_t r = 0; r < rows; r++)
                dequantize_row(t->type, (const char *)t->data + rb * r, ref + r * ne0, ne0);
            char msg[128] = "";
            ck_assert_int_eq(cuda_host_repack_dequant(t->type, t->data, ne0, rows, got, msg, sizeof msg), 0);
            const float tol = max_abs(ref, ne0 * rows) * 2e-6f;
            for (int64_t j = 0; j < ne0 * rows; j++)
                ck_assert_msg(fabsf(got[j] - ref[j]) <= tol, "%s %s element %lld", names[k], t->name, (long long)j);
            free(ref);
            free(got);
            checked++;
        }
        ck_assert_int_ge(checked, 15);
        gguf_close(f);
    }
}
END_TEST

/* Without a GPU the backend says why and returns NULL; with one it starts and stops. */
START_TEST(backend_new_without_gpu)
{
    char err[256] = "";
    backend *be = backend_gpu_new(0, err, sizeof err);
    if (backend_gpu_count() == 0) {
        ck_assert_ptr_null(be);
        ck_assert_msg(strlen(err) > 10, "no reason given");
        backend_gpu_info gi;
        ck_assert_int_eq(backend_gpu_info_of(0, &gi, err, sizeof err), -ENODEV);
    } else {
        ck_assert_msg(be != NULL, "%s", err);
        ck_assert_str_eq(be->ops->name, "CUDA");
        be->ops->destroy(be);
    }
    ck_assert_ptr_null(backend_gpu_new(-1, err, sizeof err));
    ck_assert_ptr_null(backend_gpu_new(1000, err, sizeof err));
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("cuda_host");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, decode_matches_reference);
    tcase_add_test(tc, dot_matches_reference);
    tcase_add_test(tc, kv_rows_round_trip);
    tcase_add_test(tc, rope_angles);
    tcase_add_test(tc, backend_new_without_gpu);
    suite_add_tcase(s, tc);
    TCase *tm = tcase_create("models");
    tcase_set_timeout(tm, 300);
    if (test_shared_dir())
        tcase_add_test(tm, real_models_decode);
    else
        fprintf(stderr, "\n*** test_cuda_host: real_models_decode SKIPPED: test assets not found ***\n\n");
    suite_add_tcase(s, tm);
    return s;
}

int main(void)
{
    test_rand_seed(12345);
    return test_run_suite(make_suite());
}

#else
int main(void)
{
    fprintf(stderr, "\n*** SKIPPED test_cuda_host: llmfs was built without CUDA ***\n\n");
    return 77;
}
#endif
