/* test_gguf.c — GGUF reader and writer: real files, round trips, malformed files. */
#include "gguf.h"
#include "quant.h"
#include "testutil.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- an independent walk over a GGUF file, to find where each field lies ---- */

#define MAXE 256

typedef struct layout {
    int n_kv, n_t;
    size_t kv_start[MAXE], kv_type[MAXE], kv_val[MAXE];
    size_t t_start[MAXE], t_ndims[MAXE], t_ne[MAXE], t_type[MAXE], t_off[MAXE];
    uint64_t t_offset[MAXE], t_bytes[MAXE];
    size_t tables_end, data_start;
} layout;

static uint64_t get64(const uint8_t *b, size_t o)
{
    uint64_t v;
    memcpy(&v, b + o, 8);
    return v;
}

static uint32_t get32(const uint8_t *b, size_t o)
{
    uint32_t v;
    memcpy(&v, b + o, 4);
    return v;
}

static void put64(uint8_t *b, size_t o, uint64_t v) { memcpy(b + o, &v, 8); }
static void put32(uint8_t *b, size_t o, uint32_t v) { memcpy(b + o, &v, 4); }

static size_t elem_size(uint32_t t)
{
    static const size_t sz[] = {1, 1, 2, 2, 4, 4, 4, 1, 0, 0, 8, 8, 8};
    return t < 13 ? sz[t] : 0;
}

static size_t skip_value(const uint8_t *b, size_t o, uint32_t t)
{
    if (t == GGUF_T_STRING)
        return o + 8 + get64(b, o);
    if (t == GGUF_T_ARRAY) {
        uint32_t at = get32(b, o);
        uint64_t n = get64(b, o + 4);
        o += 12;
        for (uint64_t i = 0; i < n; i++)
            o = at == GGUF_T_STRING ? o + 8 + get64(b, o) : o + elem_size(at);
        return o;
    }
    return o + elem_size(t);
}

/* Only for well-formed files; `align` is the file's alignment. */
static void walk(const uint8_t *b, layout *L, size_t align)
{
    memset(L, 0, sizeof *L);
    uint64_t nt = get64(b, 8), nkv = get64(b, 16);
    ck_assert_uint_le(nt, MAXE);
    ck_assert_uint_le(nkv, MAXE);
    L->n_kv = (int)nkv;
    L->n_t = (int)nt;
    size_t o = 24;
    for (int i = 0; i < L->n_kv; i++) {
        L->kv_start[i] = o;
        o += 8 + get64(b, o);
        L->kv_type[i] = o;
        L->kv_val[i] = o + 4;
        o = skip_value(b, o + 4, get32(b, o));
    }
    for (int i = 0; i < L->n_t; i++) {
        L->t_start[i] = o;
        o += 8 + get64(b, o);
        L->t_ndims[i] = o;
        uint32_t nd = get32(b, o);
        L->t_ne[i] = o + 4;
        o += 4 + 8 * nd;
        L->t_type[i] = o;
        L->t_off[i] = o + 4;
        L->t_offset[i] = get64(b, o + 4);
        o += 12;
    }
    L->tables_end = o;
    L->data_start = (o + align - 1) / align * align;
}

/* ---- fill callbacks for the writer ---- */

typedef struct pattern {
    uint8_t seed;
    size_t chunk;   /* emit in pieces of this size */
    long delta;     /* bytes more (or fewer) than asked for */
    int fail;       /* errno to fail with */
} pattern;

static uint8_t pattern_byte(uint8_t seed, size_t i) { return (uint8_t)(seed + i * 7 + (i >> 8)); }

static int fill_pattern(void *ctx, const gguf_tensor *t, gguf_emit_fn emit, void *sink)
{
    const pattern *p = ctx;
    if (p->fail)
        return -p->fail;
    size_t n = (size_t)((long)t->size + p->delta), chunk = p->chunk ? p->chunk : 1000;
    uint8_t buf[4096];
    for (size_t i = 0; i < n;) {
        size_t k = n - i < chunk ? n - i : chunk;
        if (k > sizeof buf)
            k = sizeof buf;
        for (size_t j = 0; j < k; j++)
            buf[j] = pattern_byte(p->seed, i + j);
        int rc = emit(sink, buf, k);
        if (rc)
            return rc;
        i += k;
    }
    return 0;
}

static bool matches_pattern(const gguf_tensor *t, uint8_t seed)
{
    const uint8_t *d = t->data;
    for (size_t i = 0; i < t->size; i++)
        if (d[i] != pattern_byte(seed, i))
            return false;
    return true;
}

/* ---- real files ---- */

typedef struct known {
    const char *rel;
    const char *arch;
    uint64_t n_vocab;
    int n_tensors;  /* -1: not checked */
} known;

static const known KNOWN[] = {
    {"models/stories260K.gguf", "llama", 512, 48},
    {"models/llama-tiny-f16.gguf", "llama", 512, 21},
    {"models/llama-tiny-bf16.gguf", "llama", 512, 21},
    {"models/llama-tiny-q8_0.gguf", "llama", 512, 21},
    {"models/llama-tiny-q6_k.gguf", "llama", 512, 21},
    {"models/llama-tiny-q5_k.gguf", "llama", 512, 21},
    {"models/llama-tiny-q5_1.gguf", "llama", 512, 21},
    {"models/llama-tiny-q5_0.gguf", "llama", 512, 21},
    {"models/llama-tiny-q4_k.gguf", "llama", 512, 21},
    {"models/llama-tiny-q4_1.gguf", "llama", 512, 21},
    {"models/llama-tiny-q4_0.gguf", "llama", 512, 21},
    {"models/llama-tiny-q3_k.gguf", "llama", 512, 21},
    {"models/llama-tiny-q2_k.gguf", "llama", 512, 21},
    {"models/qwen2-tiny-q8_0.gguf", "qwen2", 8224, -1},
    {"models/qwen3-tiny-q4_k.gguf", "qwen3", 8224, -1},
    {"models/qwen3moe-tiny-q8_0.gguf", "qwen3moe", 8224, 26},
    {"tokenizer/ggml-vocab-llama-spm.gguf", NULL, 32000, 0},
    {"tokenizer/ggml-vocab-phi-3.gguf", NULL, 32064, 0},
    {"tokenizer/ggml-vocab-gpt-2.gguf", NULL, 50257, 0},
    {"tokenizer/ggml-vocab-deepseek-coder.gguf", NULL, 32256, 0},
    {"tokenizer/ggml-vocab-falcon.gguf", NULL, 65024, 0},
    {"tokenizer/qwen3-vocab.gguf", "qwen3", 151936, 0},
};
#define N_KNOWN (int)(sizeof KNOWN / sizeof KNOWN[0])

/* Properties every valid file has, checked through the accessors. */
static void check_consistent(const gguf_file *f)
{
    size_t size = gguf_file_size(f), align = gguf_alignment(f);
    ck_assert(align && !(align & (align - 1)));
    for (int i = 0; i < gguf_n_kv(f); i++) {
        const char *k = gguf_kv_key(f, i);
        ck_assert_ptr_nonnull(k);
        ck_assert_int_eq(gguf_find_key(f, k), i);
        if (gguf_kv_type(f, i) == GGUF_T_ARRAY && gguf_kv_arr_type(f, i) == GGUF_T_STRING) {
            uint64_t n = gguf_kv_arr_n(f, i);
            size_t len;
            if (n) {
                const char *s = gguf_get_arr_str(f, k, n - 1, &len);
                ck_assert_ptr_nonnull(s);
                ck_assert_int_eq(s[len], 0);
            }
            ck_assert_ptr_null(gguf_get_arr_str(f, k, n, &len));
        }
    }
    const uint8_t *data_section = NULL;
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        ck_assert_ptr_eq(gguf_find_tensor(f, t->name), t);
        ck_assert_int_ge(t->n_dims, 1);
        ck_assert_int_le(t->n_dims, 4);
        ck_assert_uint_eq(t->offset % align, 0);
        int64_t rows = t->ne[1] * t->ne[2] * t->ne[3];
        ck_assert_uint_eq(t->size, type_row_bytes(t->type, t->ne[0]) * (size_t)rows);
        const uint8_t *d = (const uint8_t *)t->data - t->offset;
        if (!data_section)
            data_section = d;
        ck_assert_ptr_eq(d, data_section);
        ck_assert_uint_le(t->offset + t->size, size);
    }
    ck_assert_ptr_null(gguf_tensor_at(f, gguf_n_tensors(f)));
    ck_assert_ptr_null(gguf_tensor_at(f, -1));
    ck_assert_ptr_null(gguf_kv_key(f, gguf_n_kv(f)));
    ck_assert_ptr_null(gguf_find_tensor(f, "no such tensor"));
    ck_assert_int_eq(gguf_find_key(f, "no.such.key"), -1);
}

START_TEST(test_shared_files)
{
    const known *k = &KNOWN[_i];
    char path[4096];
    test_shared_path(k->rel, path, sizeof path);
    llmfs_error err = {0};
    gguf_file *f = gguf_open(path, NULL, &err);
    ck_assert_msg(f, "%s: %s", k->rel, err.msg);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_uint_eq(gguf_file_size(f), (size_t)st.st_size);
    ck_assert_uint_eq(gguf_version(f), 3);
    if (k->arch)
        ck_assert_str_eq(gguf_get_str(f, "general.architecture", NULL), k->arch);
    int ti = gguf_find_key(f, "tokenizer.ggml.tokens");
    ck_assert_int_ge(ti, 0);
    ck_assert_int_eq(gguf_kv_type(f, ti), GGUF_T_ARRAY);
    ck_assert_int_eq(gguf_kv_arr_type(f, ti), GGUF_T_STRING);
    ck_assert_uint_eq(gguf_kv_arr_n(f, ti), k->n_vocab);
    if (k->n_tensors >= 0)
        ck_assert_int_eq(gguf_n_tensors(f), k->n_tensors);
    check_consistent(f);

    /* The RAM copy reads the same. */
    gguf_open_opts o = {.no_mmap = true};
    gguf_file *g = gguf_open(path, &o, &err);
    ck_assert_msg(g, "%s: %s", k->rel, err.msg);
    ck_assert_int_eq(gguf_n_kv(g), gguf_n_kv(f));
    ck_assert_int_eq(gguf_n_tensors(g), gguf_n_tensors(f));
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *a = gguf_tensor_at(f, i), *b = gguf_tensor_at(g, i);
        ck_assert_str_eq(a->name, b->name);
        ck_assert_uint_eq(a->size, b->size);
        ck_assert_ptr_ne(a->data, b->data);
        ck_assert(memcmp(a->data, b->data, a->size) == 0);
    }
    for (uint64_t i = 0; i < k->n_vocab; i += 997) {
        size_t la, lb;
        const char *a = gguf_get_arr_str(f, "tokenizer.ggml.tokens", i, &la);
        const char *b = gguf_get_arr_str(g, "tokenizer.ggml.tokens", i, &lb);
        ck_assert_uint_eq(la, lb);
        ck_assert(memcmp(a, b, la) == 0);
    }
    gguf_close(g);
    gguf_close(f);
}
END_TEST

START_TEST(test_stories260k_facts)
{
    char path[4096];
    size_t len;
    uint8_t *buf = (uint8_t *)test_read_file(test_shared_path("models/stories260K.gguf", path, sizeof path), &len);
    ck_assert_ptr_nonnull(buf);
    llmfs_error err = {0};
    gguf_file *f = gguf_open_buffer(buf, len, &err);
    ck_assert_msg(f, "%s", err.msg);
    ck_assert_int_eq(gguf_n_kv(f), 19);
    ck_assert_int_eq(gguf_n_tensors(f), 48);
    ck_assert_uint_eq(gguf_alignment(f), 32);

    uint32_t u;
    int64_t i64;
    float x;
    bool b;
    ck_assert(gguf_get_u32(f, "llama.embedding_length", &u) && u == 64);
    ck_assert(gguf_get_u32(f, "llama.block_count", &u) && u == 5);
    ck_assert(gguf_get_u32(f, "llama.feed_forward_length", &u) && u == 172);
    ck_assert(gguf_get_u32(f, "llama.attention.head_count", &u) && u == 8);
    ck_assert(gguf_get_u32(f, "llama.attention.head_count_kv", &u) && u == 4);
    ck_assert(gguf_get_u32(f, "llama.context_length", &u) && u == 2048);
    ck_assert(gguf_get_i64(f, "tokenizer.ggml.seperator_token_id", &i64) && i64 == 4294967295LL);
    ck_assert(gguf_get_u32(f, "tokenizer.ggml.seperator_token_id", &u) && u == 4294967295u);
    ck_assert(gguf_get_f32(f, "llama.attention.layer_norm_rms_epsilon", &x) && fabsf(x - 1e-5f) < 1e-9f);
    /* Conversions that would lose information are refused. */
    ck_assert(!gguf_get_f32(f, "llama.block_count", &x));
    ck_assert(!gguf_get_u32(f, "llama.attention.layer_norm_rms_epsilon", &u));
    ck_assert(!gguf_get_bool(f, "llama.block_count", &b));
    ck_assert_ptr_null(gguf_get_str(f, "llama.block_count", NULL));
    ck_assert(!gguf_get_u32(f, "general.architecture", &u));
    ck_assert(!gguf_get_u32(f, "missing.key", &u));

    size_t sl;
    ck_assert_str_eq(gguf_get_str(f, "general.architecture", &sl), "llama");
    ck_assert_uint_eq(sl, 5);
    ck_assert_str_eq(gguf_get_str(f, "tokenizer.ggml.model", NULL), "llama");
    ck_assert_str_eq(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 0, &sl), "<unk>");
    ck_assert_str_eq(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 1, NULL), "<s>");
    ck_assert_str_eq(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 3, NULL), "<0x00>");
    ck_assert_ptr_null(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 512, NULL));
    ck_assert_ptr_null(gguf_get_arr_str(f, "tokenizer.ggml.scores", 0, NULL));
    ck_assert(gguf_get_arr_i64(f, "tokenizer.ggml.token_type", 0, &i64) && i64 == 2);
    ck_assert(gguf_get_arr_i64(f, "tokenizer.ggml.token_type", 1, &i64) && i64 == 3);
    ck_assert(!gguf_get_arr_i64(f, "tokenizer.ggml.token_type", 512, &i64));
    ck_assert(gguf_get_arr_f32(f, "tokenizer.ggml.scores", 0, &x) && x == 0.0f);
    ck_assert(!gguf_get_arr_f32(f, "tokenizer.ggml.token_type", 0, &x));
    enum gguf_vtype at;
    uint64_t n;
    ck_assert_ptr_nonnull(gguf_get_arr_data(f, "tokenizer.ggml.scores", &at, &n));
    ck_assert_int_eq(at, GGUF_T_F32);
    ck_assert_uint_eq(n, 512);
    ck_assert_ptr_null(gguf_get_arr_data(f, "tokenizer.ggml.tokens", &at, &n));

    /* Tensor table, as an independent walk of the bytes sees it. */
    layout L;
    walk(buf, &L, 32);
    ck_assert_uint_eq(L.data_start, 14176);
    for (int i = 0; i < 48; i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        ck_assert_int_eq(t->type, T_F32);
        ck_assert_uint_eq(t->offset, L.t_offset[i]);
        ck_assert_ptr_eq(t->data, buf + L.data_start + L.t_offset[i]);
    }
    const gguf_tensor *t = gguf_find_tensor(f, "token_embd.weight");
    ck_assert(t && t->n_dims == 2 && t->ne[0] == 64 && t->ne[1] == 512 && t->ne[2] == 1 && t->ne[3] == 1);
    ck_assert_uint_eq(t->size, 64 * 512 * 4);
    t = gguf_find_tensor(f, "blk.4.attn_k.weight");
    ck_assert(t && t->n_dims == 2 && t->ne[0] == 64 && t->ne[1] == 32);
    t = gguf_find_tensor(f, "blk.2.ffn_down.weight");
    ck_assert(t && t->ne[0] == 172 && t->ne[1] == 64);
    t = gguf_find_tensor(f, "output_norm.weight");
    ck_assert(t && t->n_dims == 1 && t->ne[0] == 64);
    /* RMS norm weights of a trained model: finite, mostly positive. */
    const float *w = t->data;
    int pos = 0;
    for (int i = 0; i < 64; i++) {
        ck_assert(isfinite(w[i]));
        pos += w[i] > 0;
    }
    ck_assert_int_gt(pos, 48);
    t = gguf_tensor_at(f, 47);
    ck_assert_str_eq(t->name, "blk.4.ffn_norm.weight");
    ck_assert_uint_eq(L.data_start + t->offset + t->size, len);
    gguf_close(f);
    free(buf);
}
END_TEST

static int type_of(const gguf_file *f, const char *name)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    ck_assert_msg(t, "no tensor %s", name);
    return t->type;
}

START_TEST(test_model_tensor_types)
{
    static const struct { const char *stem; int type; } tiny[] = {
        {"f16", T_F16}, {"bf16", T_BF16}, {"q8_0", T_Q8_0}, {"q6_k", T_Q6_K}, {"q5_k", T_Q5_K},
        {"q5_1", T_Q5_1}, {"q5_0", T_Q5_0}, {"q4_1", T_Q4_1}, {"q4_0", T_Q4_0}, {"q3_k", T_Q3_K},
        {"q2_k", T_Q2_K},
    };
    char rel[128], path[4096];
    llmfs_error err;
    for (size_t k = 0; k < sizeof tiny / sizeof tiny[0]; k++) {
        snprintf(rel, sizeof rel, "models/llama-tiny-%s.gguf", tiny[k].stem);
        gguf_file *f = gguf_open(test_shared_path(rel, path, sizeof path), NULL, &err);
        ck_assert_msg(f, "%s", err.msg);
        ck_assert_int_eq(type_of(f, "token_embd.weight"), tiny[k].type);
        ck_assert_int_eq(type_of(f, "output.weight"), tiny[k].type);
        ck_assert_int_eq(type_of(f, "blk.1.ffn_down.weight"), tiny[k].type);
        ck_assert_int_eq(type_of(f, "blk.0.attn_norm.weight"), T_F32);
        const gguf_tensor *t = gguf_find_tensor(f, "blk.0.ffn_up.weight");
        ck_assert(t->ne[0] == 256 && t->ne[1] == 768);
        gguf_close(f);
    }
    gguf_file *f = gguf_open(test_shared_path("models/llama-tiny-q4_k.gguf", path, sizeof path), NULL, &err);
    ck_assert_msg(f, "%s", err.msg);
    ck_assert_int_eq(type_of(f, "output.weight"), T_Q6_K);
    ck_assert_int_eq(type_of(f, "blk.1.attn_v.weight"), T_Q6_K);
    ck_assert_int_eq(type_of(f, "blk.1.ffn_down.weight"), T_Q6_K);
    ck_assert_int_eq(type_of(f, "blk.0.attn_v.weight"), T_Q4_K);
    ck_assert_int_eq(type_of(f, "blk.0.attn_q.weight"), T_Q4_K);
    gguf_close(f);

    f = gguf_open(test_shared_path("models/qwen3-tiny-q4_k.gguf", path, sizeof path), NULL, &err);
    ck_assert_msg(f, "%s", err.msg);
    ck_assert_int_eq(type_of(f, "token_embd.weight"), T_Q6_K);
    ck_assert_ptr_null(gguf_find_tensor(f, "output.weight"));
    ck_assert_int_eq(type_of(f, "blk.0.attn_q_norm.weight"), T_F32);
    const gguf_tensor *q = gguf_find_tensor(f, "blk.0.attn_q.weight");
    ck_assert(q->ne[0] == 256 && q->ne[1] == 512);
    const char *tmpl = gguf_get_str(f, "tokenizer.chat_template", NULL);
    ck_assert_ptr_nonnull(tmpl);
    ck_assert_ptr_nonnull(strstr(tmpl, "<|im_start|>assistant"));
    gguf_close(f);

    f = gguf_open(test_shared_path("models/qwen3moe-tiny-q8_0.gguf", path, sizeof path), NULL, &err);
    ck_assert_msg(f, "%s", err.msg);
    const gguf_tensor *e = gguf_find_tensor(f, "blk.1.ffn_down_exps.weight");
    ck_assert(e && e->n_dims == 3 && e->ne[0] == 256 && e->ne[1] == 128 && e->ne[2] == 8 && e->type == T_Q8_0);
    uint32_t u;
    ck_assert(gguf_get_u32(f, "qwen3moe.expert_count", &u) && u == 8);
    ck_assert(gguf_get_u32(f, "general.alignment", &u) && u == 32);
    bool b = true;
    ck_assert(gguf_get_bool(f, "tokenizer.ggml.add_bos_token", &b) && !b);
    gguf_close(f);

    f = gguf_open(test_shared_path("tokenizer/qwen3-vocab.gguf", path, sizeof path), NULL, &err);
    ck_assert_msg(f, "%s", err.msg);
    ck_assert_str_eq(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 0, NULL), "!");
    ck_assert_str_eq(gguf_get_arr_str(f, "tokenizer.ggml.merges", 2, NULL), "i n");
    int mi = gguf_find_key(f, "tokenizer.ggml.merges");
    ck_assert_uint_eq(gguf_kv_arr_n(f, mi), 151387);
    ck_assert(gguf_get_u32(f, "tokenizer.ggml.eos_token_id", &u) && u == 151645);
    gguf_close(f);
}
END_TEST

/* ---- writer round trip ---- */

static const char *const STRS[] = {"", "hello", "\xc4\xa0world", "tab\there", "x"};

static gguf_writer *round_trip_writer(pattern *pats)
{
    gguf_writer *w = gguf_writer_new();
    uint8_t u8 = 200;
    int8_t i8 = -100;
    uint16_t u16 = 60000;
    int16_t i16 = -30000;
    uint64_t u64 = 0xfedcba9876543210ull;
    int64_t i64 = -1234567890123LL;
    double f64 = 3.141592653589793;
    gguf_w_val(w, "t.u8", GGUF_T_U8, &u8);
    gguf_w_val(w, "t.i8", GGUF_T_I8, &i8);
    gguf_w_val(w, "t.u16", GGUF_T_U16, &u16);
    gguf_w_val(w, "t.i16", GGUF_T_I16, &i16);
    gguf_w_u32(w, "t.u32", 4000000000u);
    gguf_w_i32(w, "t.i32", -2000000000);
    gguf_w_f32(w, "t.f32", 0.5f);
    gguf_w_bool(w, "t.bool", true);
    gguf_w_bool(w, "t.false", false);
    gguf_w_str(w, "t.str", "first");
    gguf_w_val(w, "t.u64", GGUF_T_U64, &u64);
    gguf_w_val(w, "t.i64", GGUF_T_I64, &i64);
    gguf_w_val(w, "t.f64", GGUF_T_F64, &f64);
    gguf_w_str(w, "t.empty", "");
    gguf_w_str(w, "t.str", "replaced value"); /* replaces, keeps position */

    uint8_t au8[3] = {1, 2, 255};
    int8_t ai8[2] = {-1, 1};
    uint16_t au16[2] = {1, 65535};
    int16_t ai16[2] = {-32768, 32767};
    uint32_t au32[2] = {0, 4294967295u};
    int32_t ai32[4] = {-1, 0, 7, 2147483647};
    float af32[3] = {1.5f, -2.25f, 1e30f};
    uint8_t abool[2] = {1, 0};
    uint64_t au64[2] = {1, 0xffffffffffffffffull};
    int64_t ai64[2] = {INT64_MIN, INT64_MAX};
    double af64[2] = {-0.125, 1e300};
    gguf_w_arr(w, "a.u8", GGUF_T_U8, au8, 3);
    gguf_w_arr(w, "a.i8", GGUF_T_I8, ai8, 2);
    gguf_w_arr(w, "a.u16", GGUF_T_U16, au16, 2);
    gguf_w_arr(w, "a.i16", GGUF_T_I16, ai16, 2);
    gguf_w_arr(w, "a.u32", GGUF_T_U32, au32, 2);
    gguf_w_arr_i32(w, "a.i32", ai32, 4);
    gguf_w_arr_f32(w, "a.f32", af32, 3);
    gguf_w_arr(w, "a.bool", GGUF_T_BOOL, abool, 2);
    gguf_w_arr(w, "a.u64", GGUF_T_U64, au64, 2);
    gguf_w_arr(w, "a.i64", GGUF_T_I64, ai64, 2);
    gguf_w_arr(w, "a.f64", GGUF_T_F64, af64, 2);
    gguf_w_arr_str(w, "a.str", STRS, 5);
    gguf_w_arr_str(w, "a.nostr", NULL, 0);
    gguf_w_arr_i32(w, "a.noint", NULL, 0);

    static const int64_t ne0[] = {3, 5}, ne1[] = {64, 3}, ne2[] = {7}, ne3[] = {32, 2, 2, 2}, ne4[] = {256, 1, 2};
    gguf_w_tensor(w, "t.f32", T_F32, 2, ne0, fill_pattern, &pats[0]);
    gguf_w_tensor(w, "t.q4_0", T_Q4_0, 2, ne1, fill_pattern, &pats[1]);
    gguf_w_tensor(w, "t.f16", T_F16, 1, ne2, fill_pattern, &pats[2]);
    gguf_w_tensor(w, "t.q8_0", T_Q8_0, 4, ne3, fill_pattern, &pats[3]);
    gguf_w_tensor(w, "t.q6_k", T_Q6_K, 3, ne4, fill_pattern, &pats[4]);
    return w;
}

static void check_round_trip(const gguf_file *f, size_t align)
{
    uint32_t u;
    int64_t i;
    float x;
    bool b;
    size_t len;
    ck_assert_uint_eq(gguf_version(f), 3);
    ck_assert_uint_eq(gguf_alignment(f), align);
    ck_assert(gguf_get_u32(f, "t.u8", &u) && u == 200);
    ck_assert(gguf_get_i64(f, "t.i8", &i) && i == -100);
    ck_assert(!gguf_get_u32(f, "t.i8", &u));
    ck_assert(gguf_get_u32(f, "t.u16", &u) && u == 60000);
    ck_assert(gguf_get_i64(f, "t.i16", &i) && i == -30000);
    ck_assert(gguf_get_u32(f, "t.u32", &u) && u == 4000000000u);
    ck_assert(gguf_get_i64(f, "t.u32", &i) && i == 4000000000LL);
    ck_assert(gguf_get_i64(f, "t.i32", &i) && i == -2000000000);
    ck_assert(gguf_get_f32(f, "t.f32", &x) && x == 0.5f);
    ck_assert(gguf_get_bool(f, "t.bool", &b) && b);
    ck_assert(gguf_get_bool(f, "t.false", &b) && !b);
    ck_assert(!gguf_get_i64(f, "t.u64", &i)); /* above INT64_MAX */
    ck_assert(!gguf_get_u32(f, "t.u64", &u));
    ck_assert(gguf_get_i64(f, "t.i64", &i) && i == -1234567890123LL);
    ck_assert(gguf_get_f32(f, "t.f64", &x) && x == (float)3.141592653589793);
    ck_assert_str_eq(gguf_get_str(f, "t.str", &len), "replaced value");
    ck_assert_uint_eq(len, 14);
    ck_assert_str_eq(gguf_get_str(f, "t.empty", &len), "");
    ck_assert_uint_eq(len, 0);
    ck_assert_int_eq(gguf_find_key(f, "t.str"), 9);
    ck_assert_int_eq(gguf_kv_type(f, gguf_find_key(f, "t.u64")), GGUF_T_U64);
    ck_assert_int_eq(gguf_kv_type(f, gguf_find_key(f, "t.f64")), GGUF_T_F64);

    static const struct { const char *k; enum gguf_vtype t; uint64_t n; int64_t first, last; } ints[] = {
        {"a.u8", GGUF_T_U8, 3, 1, 255},           {"a.i8", GGUF_T_I8, 2, -1, 1},
        {"a.u16", GGUF_T_U16, 2, 1, 65535},       {"a.i16", GGUF_T_I16, 2, -32768, 32767},
        {"a.u32", GGUF_T_U32, 2, 0, 4294967295LL}, {"a.i32", GGUF_T_I32, 4, -1, 2147483647},
        {"a.i64", GGUF_T_I64, 2, INT64_MIN, INT64_MAX},
    };
    for (size_t k = 0; k < sizeof ints / sizeof ints[0]; k++) {
        enum gguf_vtype t;
        uint64_t n;
        int ki = gguf_find_key(f, ints[k].k);
        ck_assert_int_eq(gguf_kv_arr_type(f, ki), ints[k].t);
        ck_assert_uint_eq(gguf_kv_arr_n(f, ki), ints[k].n);
        ck_assert_ptr_nonnull(gguf_get_arr_data(f, ints[k].k, &t, &n));
        ck_assert_int_eq(t, ints[k].t);
        ck_assert_uint_eq(n, ints[k].n);
        ck_assert(gguf_get_arr_i64(f, ints[k].k, 0, &i) && i == ints[k].first);
        ck_assert(gguf_get_arr_i64(f, ints[k].k, n - 1, &i) && i == ints[k].last);
        ck_assert(!gguf_get_arr_i64(f, ints[k].k, n, &i));
        ck_assert(!gguf_get_arr_f32(f, ints[k].k, 0, &x));
    }
    ck_assert(gguf_get_arr_i64(f, "a.u64", 0, &i) && i == 1);
    ck_assert(!gguf_get_arr_i64(f, "a.u64", 1, &i));
    ck_assert(!gguf_get_arr_i64(f, "a.bool", 0, &i));
    const uint8_t *bools = gguf_get_arr_data(f, "a.bool", NULL, NULL);
    ck_assert(bools && bools[0] == 1 && bools[1] == 0);
    ck_assert(gguf_get_arr_f32(f, "a.f32", 1, &x) && x == -2.25f);
    ck_assert(gguf_get_arr_f32(f, "a.f32", 2, &x) && x == 1e30f);
    ck_assert(gguf_get_arr_f32(f, "a.f64", 0, &x) && x == -0.125f);
    ck_assert(gguf_get_arr_f32(f, "a.f64", 1, &x) && isinf(x));
    double d;
    memcpy(&d, (const uint8_t *)gguf_get_arr_data(f, "a.f64", NULL, NULL) + 8, 8);
    ck_assert(d == 1e300);
    for (int k = 0; k < 5; k++) {
        const char *s = gguf_get_arr_str(f, "a.str", (uint64_t)k, &len);
        ck_assert_str_eq(s, STRS[k]);
        ck_assert_uint_eq(len, strlen(STRS[k]));
    }
    ck_assert_uint_eq(gguf_kv_arr_n(f, gguf_find_key(f, "a.nostr")), 0);
    ck_assert_int_eq(gguf_kv_arr_type(f, gguf_find_key(f, "a.nostr")), GGUF_T_STRING);
    ck_assert_ptr_null(gguf_get_arr_str(f, "a.nostr", 0, NULL));
    ck_assert_uint_eq(gguf_kv_arr_n(f, gguf_find_key(f, "a.noint")), 0);
    ck_assert_int_eq(gguf_n_kv(f), align == 32 ? 28 : 29); /* general.alignment added */

    static const struct { const char *name; int type, n_dims; int64_t ne[4]; size_t size; } T[] = {
        {"t.f32", T_F32, 2, {3, 5, 1, 1}, 60},
        {"t.q4_0", T_Q4_0, 2, {64, 3, 1, 1}, 2 * 18 * 3},
        {"t.f16", T_F16, 1, {7, 1, 1, 1}, 14},
        {"t.q8_0", T_Q8_0, 4, {32, 2, 2, 2}, 34 * 8},
        {"t.q6_k", T_Q6_K, 3, {256, 1, 2, 1}, 210 * 2},
    };
    ck_assert_int_eq(gguf_n_tensors(f), 5);
    for (int k = 0; k < 5; k++) {
        const gguf_tensor *t = gguf_tensor_at(f, k);
        ck_assert_str_eq(t->name, T[k].name);
        ck_assert_int_eq(t->type, T[k].type);
        ck_assert_int_eq(t->n_dims, T[k].n_dims);
        ck_assert(memcmp(t->ne, T[k].ne, sizeof t->ne) == 0);
        ck_assert_uint_eq(t->size, T[k].size);
        ck_assert_uint_eq(t->offset % align, 0);
        ck_assert_msg(matches_pattern(t, (uint8_t)(k * 50 + 3)), "tensor %d bytes", k);
    }
    check_consistent(f);
}

static void init_patterns(pattern *p)
{
    static const size_t chunks[5] = {1, 7, 1000, 3, 64};
    for (int k = 0; k < 5; k++)
        p[k] = (pattern){.seed = (uint8_t)(k * 50 + 3), .chunk = chunks[k]};
}

static char *tmp_path(char *buf, size_t cap, const char *name)
{
    const char *d = getenv("TMPDIR");
    snprintf(buf, cap, "%s/llmfs-test-gguf-%d-%s", d && *d ? d : "/tmp", (int)getpid(), name);
    return buf;
}

START_TEST(test_writer_round_trip)
{
    pattern pats[5];
    init_patterns(pats);
    gguf_writer *w = round_trip_writer(pats);
    llmfs_error err = {0};
    void *mem;
    size_t len;
    ck_assert_msg(gguf_writer_write_mem(w, &mem, &len, &err) == 0, "%s", err.msg);
    gguf_file *f = gguf_open_buffer(mem, len, &err);
    ck_assert_msg(f, "%s", err.msg);
    check_round_trip(f, 32);
    /* Data starts aligned, and each tensor ends with zero padding to the alignment. */
    layout L;
    walk(mem, &L, 32);
    ck_assert_ptr_eq(gguf_tensor_at(f, 0)->data, (uint8_t *)mem + L.data_start);
    ck_assert_uint_eq(len % 32, 0);
    for (size_t o = L.tables_end; o < L.data_start; o++)
        ck_assert_int_eq(((uint8_t *)mem)[o], 0);
    gguf_close(f);

    /* To a file: the same bytes, read back through mmap and through RAM. */
    char path[512];
    tmp_path(path, sizeof path, "rt.gguf");
    ck_assert_msg(gguf_writer_write(w, path, &err) == 0, "%s", err.msg);
    size_t flen;
    char *fb = test_read_file(path, &flen);
    ck_assert_uint_eq(flen, len);
    ck_assert(memcmp(fb, mem, len) == 0);
    free(fb);
    f = gguf_open(path, NULL, &err);
    ck_assert_msg(f, "%s", err.msg);
    check_round_trip(f, 32);
    gguf_close(f);
    gguf_open_opts o = {.no_mmap = true};
    f = gguf_open(path, &o, &err);
    ck_assert_msg(f, "%s", err.msg);
    check_round_trip(f, 32);
    gguf_close(f);
    unlink(path);
    free(mem);

    /* Another alignment. */
    gguf_w_u32(w, "general.alignment", 256);
    ck_assert_msg(gguf_writer_write_mem(w, &mem, &len, &err) == 0, "%s", err.msg);
    f = gguf_open_buffer(mem, len, &err);
    ck_assert_msg(f, "%s", err.msg);
    ck_assert_int_eq(gguf_n_kv(f), 29);
    check_round_trip(f, 256);
    walk(mem, &L, 256);
    ck_assert_ptr_eq(gguf_tensor_at(f, 0)->data, (uint8_t *)mem + L.data_start);
    ck_assert_uint_eq(L.data_start % 256, 0);
    gguf_close(f);
    free(mem);
    gguf_writer_free(w);
}
END_TEST

START_TEST(test_writer_copy_kv)
{
    char path[4096];
    llmfs_error err = {0};
    gguf_file *src = gguf_open(test_shared_path("models/qwen3moe-tiny-q8_0.gguf", path, sizeof path), NULL, &err);
    ck_assert_msg(src, "%s", err.msg);
    gguf_writer *w = gguf_writer_new();
    for (int i = 0; i < gguf_n_kv(src); i++)
        gguf_w_copy_kv(w, src, i);
    gguf_w_str(w, "general.name", "copy");
    void *mem;
    size_t len;
    ck_assert_msg(gguf_writer_write_mem(w, &mem, &len, &err) == 0, "%s", err.msg);
    gguf_file *f = gguf_open_buffer(mem, len, &err);
    ck_assert_msg(f, "%s", err.msg);
    ck_assert_int_eq(gguf_n_kv(f), gguf_n_kv(src));
    ck_assert_int_eq(gguf_n_tensors(f), 0);
    for (int i = 0; i < gguf_n_kv(src); i++) {
        ck_assert_str_eq(gguf_kv_key(f, i), gguf_kv_key(src, i));
        ck_assert_int_eq(gguf_kv_type(f, i), gguf_kv_type(src, i));
        size_t la, lb;
        const void *a = gguf_kv_raw(f, i, &la), *b = gguf_kv_raw(src, i, &lb);
        if (strcmp(gguf_kv_key(f, i), "general.name") == 0)
            continue;
        ck_assert_uint_eq(la, lb);
        ck_assert(memcmp(a, b, la) == 0);
    }
    ck_assert_str_eq(gguf_get_str(f, "general.name", NULL), "copy");
    ck_assert_str_eq(gguf_get_arr_str(f, "tokenizer.ggml.tokens", 8194, NULL), "<|im_end|>");
    gguf_close(f);
    free(mem);
    gguf_writer_free(w);
    gguf_close(src);
}
END_TEST

/* A writer with one tensor whose fill misbehaves as `p` says. */
static int write_one(pattern *p, const char *name, int type, int64_t ne0, llmfs_error *err)
{
    gguf_writer *w = gguf_writer_new();
    gguf_w_str(w, "general.architecture", "x");
    int64_t ne[2] = {ne0, 2};
    gguf_w_tensor(w, name, type, 2, ne, fill_pattern, p);
    void *mem = NULL;
    size_t len;
    int rc = gguf_writer_write_mem(w, &mem, &len, err);
    free(mem);
    gguf_writer_free(w);
    return rc;
}

START_TEST(test_writer_errors)
{
    llmfs_error err = {0};
    pattern p = {.seed = 1, .chunk = 5};
    ck_assert_int_eq(write_one(&p, "ok", T_F32, 8, &err), 0);
    p.delta = -1;
    ck_assert_int_eq(write_one(&p, "short", T_F32, 8, &err), -EINVAL);
    ck_assert_msg(strstr(err.msg, "'short'") && strstr(err.msg, "expected 64"), "%s", err.msg);
    p.delta = 1;
    ck_assert_int_eq(write_one(&p, "long", T_F32, 8, &err), -EINVAL);
    ck_assert_msg(strstr(err.msg, "'long'") && strstr(err.msg, "more than 64"), "%s", err.msg);
    p.delta = 0;
    p.fail = EIO;
    ck_assert_int_eq(write_one(&p, "fails", T_F32, 8, &err), -EIO);
    ck_assert_msg(strstr(err.msg, "'fails'") && strstr(err.msg, "fill failed"), "%s", err.msg);
    p.fail = 0;
    ck_assert_int_eq(write_one(&p, "q", T_Q4_0, 33, &err), -EINVAL);
    ck_assert_msg(strstr(err.msg, "not a multiple"), "%s", err.msg);
    ck_assert_int_eq(write_one(&p, "u", 99, 8, &err), -EINVAL);
    ck_assert_msg(strstr(err.msg, "unknown type 99"), "%s", err.msg);
    ck_assert_int_eq(write_one(&p, "z", T_F32, 0, &err), -EINVAL);
    ck_assert_msg(strstr(err.msg, "dimension"), "%s", err.msg);

    gguf_writer *w = gguf_writer_new();
    int64_t ne[1] = {4};
    gguf_w_tensor(w, "dup", T_F32, 1, ne, fill_pattern, &p);
    gguf_w_tensor(w, "dup", T_F32, 1, ne, fill_pattern, &p);
    void *mem = NULL;
    size_t len;
    ck_assert_int_eq(gguf_writer_write_mem(w, &mem, &len, &err), -EINVAL);
    ck_assert_msg(strstr(err.msg, "duplicate tensor name 'dup'"), "%s", err.msg);
    gguf_writer_free(w);

    w = gguf_writer_new();
    gguf_w_u32(w, "general.alignment", 48);
    ck_assert_int_eq(gguf_writer_write_mem(w, &mem, &len, &err), -EINVAL);
    ck_assert_msg(strstr(err.msg, "general.alignment"), "%s", err.msg);
    gguf_writer_free(w);

    /* A failed write leaves nothing under the name, nor a temporary beside it. */
    char path[512];
    tmp_path(path, sizeof path, "fail.gguf");
    w = gguf_writer_new();
    p.delta = -1;
    gguf_w_tensor(w, "short", T_F32, 1, ne, fill_pattern, &p);
    ck_assert_int_eq(gguf_writer_write(w, path, &err), -EINVAL);
    ck_assert_int_ne(access(path, F_OK), 0);
    ck_assert_int_eq(gguf_writer_write(w, "/nonexistent-dir/x.gguf", &err), -ENOENT);
    gguf_writer_free(w);
}
END_TEST

/* ---- malformed files ---- */

/* The base file the malformed cases corrupt: every kind of entry the cases need. */
static uint8_t *base_file(size_t *len, layout *L)
{
    static pattern pats[3] = {{.seed = 1}, {.seed = 2}, {.seed = 3}};
    gguf_writer *w = gguf_writer_new();
    gguf_w_str(w, "general.architecture", "llama");     /* kv 0 */
    gguf_w_u32(w, "general.alignment", 32);             /* kv 1 */
    static const char *const toks[] = {"a", "bb", "ccc"};
    gguf_w_arr_str(w, "test.tokens", toks, 3);          /* kv 2 */
    static const int32_t ints[] = {1, 2, 3};
    gguf_w_arr_i32(w, "test.ints", ints, 3);            /* kv 3 */
    gguf_w_f32(w, "test.f", 1.5f);                      /* kv 4 */
    gguf_w_str(w, "test.s", "x");                       /* kv 5 */
    static const int64_t ne0[] = {8, 2}, ne1[] = {32, 2}, ne2[] = {4};
    gguf_w_tensor(w, "a", T_F32, 2, ne0, fill_pattern, &pats[0]);  /* 64 bytes at 0 */
    gguf_w_tensor(w, "b", T_Q4_0, 2, ne1, fill_pattern, &pats[1]); /* 36 bytes at 64 */
    gguf_w_tensor(w, "c", T_F16, 1, ne2, fill_pattern, &pats[2]);  /* 8 bytes at 128 */
    void *mem;
    llmfs_error err;
    ck_assert_msg(gguf_writer_write_mem(w, &mem, len, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);
    walk(mem, L, 32);
    return mem;
}

typedef struct bad_case {
    const char *what;
    const char *expect; /* a substring of the error */
} bad_case;

static const bad_case BAD[] = {
    {"bad magic", "bad magic"},
    {"version 1", "version 1 is not supported"},
    {"version 4", "bad version 4"},
    {"big-endian version", "big-endian"},
    {"header cut short", "truncated in header"},
    {"absurd n_kv", "n_kv 1099511627776"},
    {"absurd n_tensors", "n_tensors 1099511627776"},
    {"key length past end", "string of 1099511627776 bytes"},
    {"string value past end", "(entry 5 'test.s'): string of"},
    {"string array element past end", "(entry 2 'test.tokens'): string of"},
    {"unknown value type", "key 'test.f' has unknown value type 13"},
    {"unknown array element type", "array of unknown value type 99"},
    {"absurd array count", "array of 1125899906842624 elements past end"},
    {"absurd string array count", "array of 1125899906842624 strings past end"},
    {"array of arrays", "arrays of arrays"},
    {"duplicate key", "duplicate key 'test.f'"},
    {"alignment not a power of two", "general.alignment 48 is not a power of two"},
    {"alignment zero", "general.alignment 0 is not a power of two"},
    {"alignment of the wrong type", "general.alignment must be a u32"},
    {"n_dims 0", "tensor 'b': n_dims 0"},
    {"n_dims 5", "tensor 'b': n_dims 5"},
    {"dimension 0", "tensor 'a': dimension 1 is 0"},
    {"negative dimension", "tensor 'a': dimension 0 is -1"},
    {"element count overflow", "tensor 'a': element count overflows"},
    {"byte size overflow", "tensor 'a': byte size overflows"},
    {"unknown tensor type", "tensor 'c': unknown type 99"},
    {"removed tensor type", "tensor 'c': unknown type 4"},
    {"row not a multiple of the block", "tensor 'b': row length 33 is not a multiple"},
    {"misaligned offset", "tensor 'b': offset 65 is not aligned to 32"},
    {"offset past end", "tensor 'c' data ["},
    {"offset wrapping around", "past end of file"},
    {"same offset as another tensor", "overlaps tensor"},
    {"partial overlap", "tensor 'b' data"},
    {"duplicate tensor name", "duplicate tensor name 'a'"},
    {"tensor name past end", "truncated in tensor table (tensor 1): string of"},
    {"cut in the key/value table", "truncated in key/value table (entry 3 'test.ints')"},
    {"cut in the tensor table", "truncated in tensor table (tensor 1 'b')"},
    {"cut before the data section", "truncated before the data section"},
    {"cut in the last tensor's data", "tensor 'c' data"},
    {"cut in the first tensor's data", "tensor 'a' data"},
    {"NUL in a key", "key 'test?f' contains a NUL byte"},
    {"NUL in a tensor name", "tensor name '?' contains a NUL byte"},
};
#define N_BAD (int)(sizeof BAD / sizeof BAD[0])

/* Applies case c to b; returns the new length. */
static size_t corrupt(int c, uint8_t *b, size_t len, const layout *L)
{
    switch (c) {
    case 0: b[0] = 'X'; break;
    case 1: put32(b, 4, 1); break;
    case 2: put32(b, 4, 4); break;
    case 3: put32(b, 4, 0x03000000); break;
    case 4: return 20;
    case 5: put64(b, 16, 1ull << 40); break;
    case 6: put64(b, 8, 1ull << 40); break;
    case 7: put64(b, L->kv_start[0], 1ull << 40); break;
    case 8: put64(b, L->kv_val[5], 1ull << 40); break;
    case 9: put64(b, L->kv_val[2] + 12 + 9, 1ull << 40); break; /* length of "bb" */
    case 10: put32(b, L->kv_type[4], 13); break;
    case 11: put32(b, L->kv_val[3], 99); break;
    case 12: put64(b, L->kv_val[3] + 4, 1ull << 50); break;
    case 13: put64(b, L->kv_val[2] + 4, 1ull << 50); break;
    case 14: put32(b, L->kv_val[3], GGUF_T_ARRAY); break;
    case 15: b[L->kv_type[5] - 1] = 'f'; break; /* "test.s" -> "test.f" */
    case 16: put32(b, L->kv_val[1], 48); break;
    case 17: put32(b, L->kv_val[1], 0); break;
    case 18: put32(b, L->kv_type[1], GGUF_T_I32); break;
    case 19: put32(b, L->t_ndims[1], 0); break;
    case 20: put32(b, L->t_ndims[1], 5); break;
    case 21: put64(b, L->t_ne[0] + 8, 0); break;
    case 22: put64(b, L->t_ne[0], (uint64_t)-1); break;
    case 23: put64(b, L->t_ne[0], 1ull << 32); put64(b, L->t_ne[0] + 8, 1ull << 32); break;
    case 24: put64(b, L->t_ne[0], 1ull << 62); put64(b, L->t_ne[0] + 8, 1); break;
    case 25: put32(b, L->t_type[2], 99); break;
    case 26: put32(b, L->t_type[2], 4); break;
    case 27: put64(b, L->t_ne[1], 33); break;
    case 28: put64(b, L->t_off[1], L->t_offset[1] + 1); break;
    case 29: put64(b, L->t_off[2], 1ull << 20); break;
    case 30: put64(b, L->t_off[2], (uint64_t)0 - 32); break;
    case 31: put64(b, L->t_off[2], L->t_offset[0]); break;
    case 32: put64(b, L->t_off[1], 32); break;
    case 33: b[L->t_start[2] + 8] = 'a'; break;
    case 34: put64(b, L->t_start[1], 1ull << 40); break;
    case 35: return L->kv_val[3] + 5;
    case 36: return L->t_type[1] + 2;
    case 37: return L->tables_end + 1;
    case 38: return L->data_start + L->t_offset[2] + 4; /* the end of the file is padding */
    case 39: return L->data_start + 10;
    case 40: b[L->kv_type[4] - 2] = 0; break;   /* "test.f" -> "test\0f" */
    case 41: b[L->t_start[2] + 8] = 0; break;
    }
    return len;
}

START_TEST(test_base_file_valid)
{
    size_t len;
    layout L;
    uint8_t *b = base_file(&len, &L);
    llmfs_error err = {0};
    gguf_file *f = gguf_open_buffer(b, len, &err);
    ck_assert_msg(f, "%s", err.msg);
    ck_assert_int_eq(gguf_n_kv(f), 6);
    ck_assert_int_eq(gguf_n_tensors(f), 3);
    ck_assert_uint_eq(L.t_offset[1], 64);
    ck_assert_uint_eq(L.t_offset[2], 128);
    /* case 37 needs a tensor table that does not end on the alignment */
    ck_assert_uint_ne(L.tables_end % 32, 0);
    gguf_close(f);
    free(b);
}
END_TEST

START_TEST(test_malformed)
{
    size_t len;
    layout L;
    uint8_t *base = base_file(&len, &L);
    uint8_t *b = malloc(len);
    memcpy(b, base, len);
    size_t n = corrupt(_i, b, len, &L);
    /* An exact-size copy, so that any read past the end is caught by the sanitizer. */
    uint8_t *exact = malloc(n ? n : 1);
    memcpy(exact, b, n);
    llmfs_error err = {0};
    gguf_file *f = gguf_open_buffer(exact, n, &err);
    ck_assert_msg(!f, "case '%s' was accepted", BAD[_i].what);
    ck_assert_int_eq(err.code, EINVAL);
    ck_assert_msg(strstr(err.msg, BAD[_i].expect), "case '%s': error \"%s\" lacks \"%s\"", BAD[_i].what,
                  err.msg, BAD[_i].expect);
    ck_assert_msg(strncmp(err.msg, "gguf: ", 6) == 0 && !strchr(err.msg, '\n'), "%s", err.msg);
    free(exact);
    free(b);
    free(base);
}
END_TEST

/* Cuts f's bytes at `cut` and checks the result is refused (or, past the last tensor's
 * end, accepted). */
static void check_cut(const uint8_t *buf, size_t cut, size_t needed)
{
    uint8_t *exact = malloc(cut ? cut : 1);
    memcpy(exact, buf, cut);
    llmfs_error err = {0};
    gguf_file *f = gguf_open_buffer(exact, cut, &err);
    if (cut >= needed) {
        ck_assert_msg(f, "cut at %zu: %s", cut, err.msg);
        gguf_close(f);
    } else {
        ck_assert_msg(!f, "cut at %zu of %zu accepted", cut, needed);
        ck_assert_int_eq(err.code, EINVAL);
        ck_assert_msg(strstr(err.msg, "truncated") || strstr(err.msg, "past end"), "cut at %zu: %s", cut,
                      err.msg);
    }
    free(exact);
}

static const char *const CUT_FILES[] = {"models/stories260K.gguf", "models/qwen3moe-tiny-q8_0.gguf",
                                        "tokenizer/ggml-vocab-gpt-2.gguf"};

START_TEST(test_truncated_real)
{
    char path[4096];
    size_t len;
    uint8_t *buf = (uint8_t *)test_read_file(test_shared_path(CUT_FILES[_i], path, sizeof path), &len);
    ck_assert_ptr_nonnull(buf);
    layout L;
    walk(buf, &L, 32);
    size_t needed = L.tables_end;
    llmfs_error err;
    gguf_file *f = gguf_open_buffer(buf, len, &err);
    ck_assert_msg(f, "%s", err.msg);
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        size_t end = L.data_start + t->offset + t->size;
        if (end > needed)
            needed = end;
    }
    gguf_close(f);
    if (L.n_t == 0)
        needed = L.tables_end;

    int cuts = 0;
    for (int k = 0; k < 200; k++, cuts++)
        check_cut(buf, len * (size_t)k / 200, needed);
    size_t marks[3 * MAXE + 8];
    int nm = 0;
    marks[nm++] = 4;
    marks[nm++] = 8;
    marks[nm++] = 16;
    marks[nm++] = 24;
    for (int i = 0; i < L.n_kv; i++) {
        marks[nm++] = L.kv_start[i];
        marks[nm++] = L.kv_type[i];
        marks[nm++] = L.kv_val[i];
    }
    for (int i = 0; i < L.n_t; i++) {
        marks[nm++] = L.t_start[i];
        marks[nm++] = L.t_type[i];
        marks[nm++] = L.t_off[i];
    }
    marks[nm++] = L.tables_end;
    marks[nm++] = L.data_start;
    for (int m = 0; m < nm; m++)
        for (int d = -1; d <= 1; d++)
            if (marks[m] + (size_t)d <= len) {
                check_cut(buf, marks[m] + (size_t)d, needed);
                cuts++;
            }
    for (int i = 0; i < L.n_t; i++) {
        check_cut(buf, L.data_start + L.t_offset[i] + 1, needed);
        cuts++;
    }
    ck_assert_int_gt(cuts, 250);
    free(buf);
}
END_TEST

START_TEST(test_open_errors)
{
    llmfs_error err = {0};
    ck_assert_ptr_null(gguf_open("/nonexistent/file.gguf", NULL, &err));
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_ptr_nonnull(strstr(err.msg, "/nonexistent/file.gguf"));
    ck_assert_ptr_null(gguf_open("/tmp", NULL, &err));
    ck_assert_int_eq(err.code, EINVAL);
    ck_assert_ptr_null(gguf_open_buffer(NULL, 0, &err));
    ck_assert_int_eq(err.code, EINVAL);

    char path[512];
    tmp_path(path, sizeof path, "empty.gguf");
    FILE *fp = fopen(path, "wb");
    fclose(fp);
    for (int nm = 0; nm < 2; nm++) {
        gguf_open_opts o = {.no_mmap = nm};
        ck_assert_ptr_null(gguf_open(path, &o, &err));
        ck_assert_int_eq(err.code, EINVAL);
        ck_assert_ptr_nonnull(strstr(err.msg, "truncated in header"));
    }
    /* A truncated real model through both file paths. */
    char src[4096];
    size_t len;
    char *buf = test_read_file(test_shared_path("models/stories260K.gguf", src, sizeof src), &len);
    fp = fopen(path, "wb");
    fwrite(buf, 1, len - 100, fp);
    fclose(fp);
    for (int nm = 0; nm < 2; nm++) {
        gguf_open_opts o = {.no_mmap = nm};
        ck_assert_ptr_null(gguf_open(path, &o, &err));
        ck_assert_int_eq(err.code, EINVAL);
        ck_assert_msg(strstr(err.msg, "tensor 'blk.4.ffn_norm.weight' data [") && strstr(err.msg, "past end of file"),
                      "%s", err.msg);
    }
    free(buf);
    unlink(path);
}
END_TEST

START_TEST(test_mlock)
{
    char path[4096];
    test_shared_path("models/stories260K.gguf", path, sizeof path);
    llmfs_error err = {0};
    for (int nm = 0; nm < 2; nm++) {
        gguf_open_opts o = {.no_mmap = nm, .mlock = true};
        gguf_file *f = gguf_open(path, &o, &err);
        if (f) {
            ck_assert_int_eq(gguf_n_tensors(f), 48);
            gguf_close(f);
        } else {
            ck_assert_msg(strstr(err.msg, "mlock") && strstr(err.msg, "RLIMIT_MEMLOCK"), "%s", err.msg);
        }
    }
    /* With no lockable memory at all, mlock fails unless this process may lock regardless
     * (CAP_IPC_LOCK); either way the outcome is clean. */
    struct rlimit rl = {0, 0};
    if (setrlimit(RLIMIT_MEMLOCK, &rl) == 0) {
        gguf_open_opts o = {.mlock = true};
        gguf_file *f = gguf_open(path, &o, &err);
        if (f) {
            gguf_close(f);
        } else {
            ck_assert(err.code == EPERM || err.code == ENOMEM || err.code == EAGAIN);
            ck_assert_msg(strstr(err.msg, "mlock") && strstr(err.msg, "RLIMIT_MEMLOCK"), "%s", err.msg);
        }
    }
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("gguf");
    TCase *tc = tcase_create("read");
    tcase_add_loop_test(tc, test_shared_files, 0, N_KNOWN);
    tcase_add_test(tc, test_stories260k_facts);
    tcase_add_test(tc, test_model_tensor_types);
    tcase_add_test(tc, test_open_errors);
    tcase_add_test(tc, test_mlock);
    suite_add_tcase(s, tc);
    tc = tcase_create("write");
    tcase_add_test(tc, test_writer_round_trip);
    tcase_add_test(tc, test_writer_copy_kv);
    tcase_add_test(tc, test_writer_errors);
    suite_add_tcase(s, tc);
    tc = tcase_create("malformed");
    tcase_add_test(tc, test_base_file_valid);
    tcase_add_loop_test(tc, test_malformed, 0, N_BAD);
    tcase_add_loop_test(tc, test_truncated_real, 0, (int)(sizeof CUT_FILES / sizeof CUT_FILES[0]));
    suite_add_tcase(s, tc);
    return s;
}

static Suite *make_suite_no_assets(void)
{
    Suite *s = suite_create("gguf (no test assets)");
    TCase *tc = tcase_create("write");
    tcase_add_test(tc, test_writer_round_trip);
    tcase_add_test(tc, test_writer_errors);
    tcase_add_test(tc, test_base_file_valid);
    tcase_add_loop_test(tc, test_malformed, 0, N_BAD);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (test_shared_dir())
        return test_run_suite(make_suite());
    /* Without the assets the writer and malformed-file tests still run; the rest skip. */
    int rc = test_run_suite(make_suite_no_assets());
    if (rc == 0)
        test_skip_no_shared("test_gguf's tests of real model files");
    return rc;
}
