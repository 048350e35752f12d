/* fuzz_gguf.c — libFuzzer target for the GGUF reader.
 *
 * Any input must either be refused with a one-line -EINVAL/-ENOMEM reason or open into a
 * file whose every accessor stays in bounds. An accepted file is also written back out
 * with the writer and reopened: it must open and read the same.
 */
#include "gguf.h"
#include "quant.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                          \
    do {                                                                  \
        if (!(c)) {                                                       \
            fprintf(stderr, "fuzz_gguf: check failed: %s (line %d)\n", #c, __LINE__); \
            abort();                                                      \
        }                                                                 \
    } while (0)

static volatile uint8_t sink_byte;

static void touch(const void *p, size_t n)
{
    const uint8_t *b = p;
    uint8_t x = 0;
    /* The ends and a stride through the middle: enough for ASan to see any bad range. */
    for (size_t i = 0; i < n; i += 1 + n / 64)
        x ^= b[i];
    if (n)
        x ^= b[n - 1];
    sink_byte = x;
}

static void walk_kv(const gguf_file *f, int i)
{
    const char *key = gguf_kv_key(f, i);
    CHECK(key);
    CHECK(gguf_find_key(f, key) == i);
    enum gguf_vtype t = gguf_kv_type(f, i);
    size_t raw_len;
    const void *raw = gguf_kv_raw(f, i, &raw_len);
    CHECK(raw);
    touch(raw, raw_len);

    uint32_t u;
    int64_t v;
    float x;
    bool b;
    size_t len;
    (void)gguf_get_u32(f, key, &u);
    (void)gguf_get_i64(f, key, &v);
    (void)gguf_get_f32(f, key, &x);
    (void)gguf_get_bool(f, key, &b);
    const char *s = gguf_get_str(f, key, &len);
    CHECK(!s == (t != GGUF_T_STRING));
    if (s) {
        touch(s, len);
        CHECK(s[len] == 0);
    }
    uint64_t n = gguf_kv_arr_n(f, i);
    if (t != GGUF_T_ARRAY) {
        CHECK(n == 0);
        return;
    }
    enum gguf_vtype at = gguf_kv_arr_type(f, i);
    if (at == GGUF_T_STRING) {
        for (uint64_t k = 0; k < n; k += 1 + n / 32) {
            s = gguf_get_arr_str(f, key, k, &len);
            CHECK(s && s[len] == 0);
            touch(s, len);
        }
        CHECK(!n || gguf_get_arr_str(f, key, n - 1, &len));
        CHECK(!gguf_get_arr_str(f, key, n, &len));
        CHECK(!gguf_get_arr_data(f, key, NULL, NULL));
        return;
    }
    enum gguf_vtype dt;
    uint64_t dn;
    const void *d = gguf_get_arr_data(f, key, &dt, &dn);
    CHECK(d && dt == at && dn == n);
    CHECK(raw_len >= 12);
    touch(d, raw_len - 12);
    for (uint64_t k = 0; k < n && k < 16; k++) {
        (void)gguf_get_arr_i64(f, key, k, &v);
        (void)gguf_get_arr_f32(f, key, k, &x);
    }
    if (n) {
        (void)gguf_get_arr_i64(f, key, n - 1, &v);
        (void)gguf_get_arr_f32(f, key, n - 1, &x);
    }
    CHECK(!gguf_get_arr_i64(f, key, n, &v));
    CHECK(!gguf_get_arr_f32(f, key, n, &x));
}

static int copy_fill(void *ctx, const gguf_tensor *t, gguf_emit_fn emit, void *sink)
{
    const gguf_tensor *src = ctx;
    CHECK(t->size == src->size);
    /* In two pieces, to exercise the writer's accounting. */
    size_t half = src->size / 2;
    int rc = emit(sink, src->data, half);
    return rc ? rc : emit(sink, (const uint8_t *)src->data + half, src->size - half);
}

/* Writes f back out and checks the copy reads the same. */
static void round_trip(const gguf_file *f)
{
    gguf_writer *w = gguf_writer_new();
    CHECK(w);
    for (int i = 0; i < gguf_n_kv(f); i++)
        gguf_w_copy_kv(w, f, i);
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        gguf_w_tensor(w, t->name, t->type, t->n_dims, t->ne, copy_fill, (void *)t);
    }
    void *buf = NULL;
    size_t len = 0;
    llmfs_error err = {0};
    int rc = gguf_writer_write_mem(w, &buf, &len, &err);
    gguf_writer_free(w);
    if (rc == -ENOMEM)
        return;
    if (rc) {
        fprintf(stderr, "fuzz_gguf: writing an accepted file back failed: %s\n", err.msg);
        abort();
    }
    gguf_file *g = gguf_open_buffer(buf, len, &err);
    if (!g) {
        fprintf(stderr, "fuzz_gguf: the rewritten file was refused: %s\n", err.msg);
        abort();
    }
    CHECK(gguf_n_kv(g) == gguf_n_kv(f));
    CHECK(gguf_n_tensors(g) == gguf_n_tensors(f));
    CHECK(gguf_alignment(g) == gguf_alignment(f));
    for (int i = 0; i < gguf_n_kv(f); i++) {
        size_t la, lb;
        const void *a = gguf_kv_raw(f, i, &la), *b = gguf_kv_raw(g, i, &lb);
        CHECK(strcmp(gguf_kv_key(f, i), gguf_kv_key(g, i)) == 0);
        CHECK(gguf_kv_type(f, i) == gguf_kv_type(g, i));
        CHECK(la == lb && memcmp(a, b, la) == 0);
    }
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *a = gguf_tensor_at(f, i), *b = gguf_tensor_at(g, i);
        CHECK(strcmp(a->name, b->name) == 0);
        CHECK(a->type == b->type && a->n_dims == b->n_dims && a->size == b->size);
        CHECK(memcmp(a->ne, b->ne, sizeof a->ne) == 0);
        CHECK(memcmp(a->data, b->data, a->size) == 0);
    }
    gguf_close(g);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    llmfs_error err = {0};
    gguf_file *f = gguf_open_buffer(data, size, &err);
    if (!f) {
        CHECK(err.code == EINVAL || err.code == ENOMEM);
        CHECK(err.msg[0] && !strchr(err.msg, '\n'));
        return 0;
    }
    CHECK(gguf_version(f) == 2 || gguf_version(f) == 3);
    CHECK(gguf_file_size(f) == size);
    size_t align = gguf_alignment(f);
    CHECK(align && !(align & (align - 1)));
    for (int i = 0; i < gguf_n_kv(f); i++)
        walk_kv(f, i);
    CHECK(!gguf_kv_key(f, gguf_n_kv(f)) && !gguf_kv_key(f, -1));
    for (int i = 0; i < gguf_n_tensors(f); i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        CHECK(t && t->name && t->n_dims >= 1 && t->n_dims <= 4);
        CHECK(type_info(t->type));
        CHECK(t->offset % align == 0);
        CHECK((const uint8_t *)t->data >= data && (const uint8_t *)t->data + t->size <= data + size);
        touch(t->data, t->size);
        const gguf_tensor *u = gguf_find_tensor(f, t->name);
        CHECK(u == t);
    }
    CHECK(!gguf_tensor_at(f, gguf_n_tensors(f)));
    round_trip(f);
    gguf_close(f);
    return 0;
}
