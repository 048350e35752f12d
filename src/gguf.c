/* gguf.c — GGUF reader (versions 2 and 3).
 *
 * The whole header, key/value table and tensor table are parsed and checked once, in
 * gguf_parse, so that every accessor afterwards is a plain bounds-checked lookup. Keys and
 * strings are copied NUL-terminated into one growing arena and referred to by offset,
 * so a 150k-entry vocabulary costs one pass and no allocation per string.
 */
#include "gguf.h"
#include "quant.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "GGUF values are read in place as little-endian");

#define GGUF_DEFAULT_ALIGNMENT 32
#define HEADER_BYTES 24
/* Smallest encodings, used to refuse counts the file could not hold before allocating:
 * a key/value is a key length, a type and at least one value byte; a tensor info is a
 * name length, n_dims, one dimension, a type and an offset. */
#define MIN_KV_BYTES (8 + 4 + 1)
#define MIN_TENSOR_BYTES (8 + 4 + 8 + 4 + 8)

typedef struct gguf_kv {
    uint64_t key;          /* arena offset of the NUL-terminated key */
    uint64_t key_len;
    enum gguf_vtype type;
    enum gguf_vtype arr_type;
    uint64_t arr_n;
    size_t raw;            /* file offset of the value (after the type field) */
    size_t raw_end;
    size_t data;           /* file offset of the scalar or of the first array element */
    uint64_t str;          /* arena offset: a string, or a string array's n+1 start offsets */
    uint64_t str_len;
} gguf_kv;

struct gguf_file {
    const uint8_t *base;
    size_t size;
    void *map;             /* mmap'd, or NULL */
    void *ram;             /* malloc'd copy (no_mmap), or NULL */
    bool locked;
    uint32_t version;
    size_t alignment;
    size_t data_offset;
    int n_kv;
    gguf_kv *kv;
    int n_tensors;
    gguf_tensor *tensors;
    char *arena;
    size_t arena_len, arena_cap;
    int32_t *kv_hash;      /* open addressing, index + 1, 0 = empty */
    size_t kv_mask;
    int32_t *t_hash;
    size_t t_mask;
};

/* ---- parsing state and error text ---- */

enum section { SEC_HEADER, SEC_KV, SEC_TENSOR, SEC_DATA };

typedef struct parser {
    gguf_file *f;
    const uint8_t *p;
    size_t len, pos;
    llmfs_error *err;
    enum section sec;
    int index;
    const uint8_t *name;   /* the current entry's key or tensor name, once read */
    uint64_t name_len;
} parser;

/* A name for an error message: at most 64 bytes, control bytes shown as '?', so the
 * message stays one line whatever the file holds. */
static const char *printable(char *buf, size_t cap, const uint8_t *s, uint64_t n)
{
    size_t max = cap - 4, o = 0;
    for (uint64_t i = 0; i < n && o < max; i++)
        buf[o++] = (s[i] < 0x20 || s[i] == 0x7f) ? '?' : (char)s[i];
    if (n > max)
        memcpy(buf + o, "...", 3), o += 3;
    buf[o] = 0;
    return buf;
}

static const char *where(const parser *ps, char *buf, size_t cap)
{
    char nm[72];
    const char *what = ps->sec == SEC_KV ? "key/value table (entry" : "tensor table (tensor";
    switch (ps->sec) {
    case SEC_HEADER:
        snprintf(buf, cap, "header");
        break;
    case SEC_DATA:
        snprintf(buf, cap, "data section");
        break;
    default:
        if (ps->name)
            snprintf(buf, cap, "%s %d '%s')", what, ps->index,
                     printable(nm, sizeof nm, ps->name, ps->name_len));
        else
            snprintf(buf, cap, "%s %d)", what, ps->index);
    }
    return buf;
}

/* The current entry's name for "key 'x'" / "tensor 'x'" messages. */
static const char *cur_name(const parser *ps, char *buf, size_t cap)
{
    return printable(buf, cap, ps->name, ps->name_len);
}

static int truncated(parser *ps)
{
    char w[160];
    return llmfs_errorf(ps->err, EINVAL, "gguf: truncated in %s at offset %zu (file size %zu)",
                        where(ps, w, sizeof w), ps->pos, ps->len);
}

static bool rd(parser *ps, void *dst, size_t n)
{
    if (ps->len - ps->pos < n)
        return false;
    memcpy(dst, ps->p + ps->pos, n);
    ps->pos += n;
    return true;
}

static int rd_u32(parser *ps, uint32_t *v)
{
    *v = 0;
    return rd(ps, v, sizeof *v) ? 0 : truncated(ps);
}

static int rd_u64(parser *ps, uint64_t *v)
{
    *v = 0;
    return rd(ps, v, sizeof *v) ? 0 : truncated(ps);
}

static int rd_string(parser *ps, const uint8_t **s, uint64_t *n)
{
    *s = NULL;
    int rc = rd_u64(ps, n);
    if (rc)
        return rc;
    if (*n > ps->len - ps->pos) {
        char w[160];
        return llmfs_errorf(ps->err, EINVAL,
                            "gguf: truncated in %s: string of %llu bytes at offset %zu past end of file (size %zu)",
                            where(ps, w, sizeof w), (unsigned long long)*n, ps->pos, ps->len);
    }
    *s = ps->p + ps->pos;
    ps->pos += *n;
    return 0;
}

/* ---- arena ---- */

static int arena_reserve(parser *ps, size_t n, size_t align, uint64_t *off)
{
    gguf_file *f = ps->f;
    size_t start = (f->arena_len + align - 1) & ~(align - 1);
    if (n > SIZE_MAX / 2 - start)
        return llmfs_errorf(ps->err, ENOMEM, "gguf: string storage too large");
    if (start + n > f->arena_cap) {
        size_t cap = f->arena_cap ? f->arena_cap : 4096;
        while (cap < start + n)
            cap *= 2;
        char *a = realloc(f->arena, cap);
        if (!a)
            return llmfs_errorf(ps->err, ENOMEM, "gguf: out of memory for %zu bytes of strings", cap);
        f->arena = a;
        f->arena_cap = cap;
    }
    f->arena_len = start + n;
    *off = start;
    return 0;
}

static int arena_str(parser *ps, const uint8_t *s, uint64_t n, uint64_t *off)
{
    int rc = arena_reserve(ps, n + 1, 1, off);
    if (rc)
        return rc;
    memcpy(ps->f->arena + *off, s, n);
    ps->f->arena[*off + n] = 0;
    return 0;
}

/* ---- value types ---- */

static size_t vtype_size(uint32_t t)
{
    switch (t) {
    case GGUF_T_U8: case GGUF_T_I8: case GGUF_T_BOOL:
        return 1;
    case GGUF_T_U16: case GGUF_T_I16:
        return 2;
    case GGUF_T_U32: case GGUF_T_I32: case GGUF_T_F32:
        return 4;
    case GGUF_T_U64: case GGUF_T_I64: case GGUF_T_F64:
        return 8;
    default:
        return 0;
    }
}

/* ---- hash tables for keys and tensor names ---- */

static uint64_t hash_bytes(const void *s, size_t n)
{
    const uint8_t *p = s;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static int32_t *hash_new(int n, size_t *mask)
{
    size_t cap = 16;
    while (cap < (size_t)n * 2)
        cap *= 2;
    *mask = cap - 1;
    return calloc(cap, sizeof(int32_t));
}

static const char *kv_key_ptr(const gguf_file *f, const gguf_kv *kv)
{
    return f->arena + kv->key;
}

/* Slot for key s in the key table: either empty or holding that key. */
static size_t kv_slot(const gguf_file *f, const char *s, size_t n)
{
    size_t h = (size_t)hash_bytes(s, n) & f->kv_mask;
    for (;;) {
        int32_t e = f->kv_hash[h];
        if (!e)
            return h;
        const gguf_kv *kv = &f->kv[e - 1];
        if (kv->key_len == n && memcmp(kv_key_ptr(f, kv), s, n) == 0)
            return h;
        h = (h + 1) & f->kv_mask;
    }
}

static size_t t_slot(const gguf_file *f, const char *s, size_t n)
{
    size_t h = (size_t)hash_bytes(s, n) & f->t_mask;
    for (;;) {
        int32_t e = f->t_hash[h];
        if (!e)
            return h;
        const char *name = f->tensors[e - 1].name;
        if (strlen(name) == n && memcmp(name, s, n) == 0)
            return h;
        h = (h + 1) & f->t_mask;
    }
}

/* ---- the key/value table ---- */

static int parse_array(parser *ps, gguf_kv *kv)
{
    char nm[72], w[160];
    uint32_t at;
    uint64_t n;
    int rc = rd_u32(ps, &at);
    if (!rc)
        rc = rd_u64(ps, &n);
    if (rc)
        return rc;
    kv->arr_type = (enum gguf_vtype)at;
    kv->arr_n = n;
    kv->data = ps->pos;
    size_t left = ps->len - ps->pos;
    if (at == GGUF_T_ARRAY)
        return llmfs_errorf(ps->err, EINVAL, "gguf: key '%s': arrays of arrays are not supported",
                            cur_name(ps, nm, sizeof nm));
    if (at == GGUF_T_STRING) {
        if (n > left / 8)
            return llmfs_errorf(ps->err, EINVAL,
                                "gguf: truncated in %s: array of %llu strings past end of file (size %zu)",
                                where(ps, w, sizeof w), (unsigned long long)n, ps->len);
        uint64_t idx;
        rc = arena_reserve(ps, (size_t)(n + 1) * sizeof(uint64_t), sizeof(uint64_t), &idx);
        if (rc)
            return rc;
        kv->str = idx;
        for (uint64_t j = 0; j < n; j++) {
            const uint8_t *s;
            uint64_t sl, off;
            rc = rd_string(ps, &s, &sl);
            if (!rc)
                rc = arena_str(ps, s, sl, &off);
            if (rc)
                return rc;
            ((uint64_t *)(void *)(ps->f->arena + idx))[j] = off;
        }
        ((uint64_t *)(void *)(ps->f->arena + idx))[n] = ps->f->arena_len;
        return 0;
    }
    size_t es = vtype_size(at);
    if (!es)
        return llmfs_errorf(ps->err, EINVAL, "gguf: key '%s': array of unknown value type %u",
                            cur_name(ps, nm, sizeof nm), at);
    if (n > left / es)
        return llmfs_errorf(ps->err, EINVAL,
                            "gguf: truncated in %s: array of %llu elements past end of file (size %zu)",
                            where(ps, w, sizeof w), (unsigned long long)n, ps->len);
    ps->pos += (size_t)n * es;
    return 0;
}

static int parse_kv(parser *ps, gguf_kv *kv)
{
    const uint8_t *key;
    uint64_t kl;
    uint32_t type;
    int rc = rd_string(ps, &key, &kl);
    if (rc)
        return rc;
    ps->name = key;
    ps->name_len = kl;
    if (memchr(key, 0, kl)) {
        char nm[72];
        return llmfs_errorf(ps->err, EINVAL, "gguf: key '%s' contains a NUL byte", cur_name(ps, nm, sizeof nm));
    }
    rc = arena_str(ps, key, kl, &kv->key);
    if (!rc)
        rc = rd_u32(ps, &type);
    if (rc)
        return rc;
    kv->key_len = kl;
    kv->type = (enum gguf_vtype)type;
    kv->arr_type = (enum gguf_vtype)-1;
    kv->raw = kv->data = ps->pos;
    if (type == GGUF_T_ARRAY) {
        rc = parse_array(ps, kv);
    } else if (type == GGUF_T_STRING) {
        const uint8_t *s;
        rc = rd_string(ps, &s, &kv->str_len);
        if (!rc)
            rc = arena_str(ps, s, kv->str_len, &kv->str);
    } else {
        size_t sz = vtype_size(type);
        char nm[72];
        if (!sz)
            return llmfs_errorf(ps->err, EINVAL, "gguf: key '%s' has unknown value type %u",
                                cur_name(ps, nm, sizeof nm), type);
        if (ps->len - ps->pos < sz)
            return truncated(ps);
        ps->pos += sz;
    }
    kv->raw_end = ps->pos;
    return rc;
}

static int parse_kvs(parser *ps, uint64_t n_kv)
{
    gguf_file *f = ps->f;
    int cap = 0;
    ps->sec = SEC_KV;
    for (uint64_t i = 0; i < n_kv; i++) {
        ps->index = (int)i;
        ps->name = NULL;
        if (f->n_kv == cap) {
            /* Grown as entries are parsed, so memory follows what the file really holds. */
            int nc = cap ? cap * 2 : 64;
            if ((uint64_t)nc > n_kv)
                nc = (int)n_kv;
            gguf_kv *k = realloc(f->kv, sizeof *k * (size_t)nc);
            if (!k)
                return llmfs_errorf(ps->err, ENOMEM, "gguf: out of memory for %d keys", nc);
            f->kv = k;
            cap = nc;
        }
        gguf_kv *kv = &f->kv[f->n_kv];
        memset(kv, 0, sizeof *kv);
        int rc = parse_kv(ps, kv);
        if (rc)
            return rc;
        f->n_kv++;
    }

    f->kv_hash = hash_new(f->n_kv, &f->kv_mask);
    if (!f->kv_hash)
        return llmfs_errorf(ps->err, ENOMEM, "gguf: out of memory");
    for (int i = 0; i < f->n_kv; i++) {
        const gguf_kv *kv = &f->kv[i];
        size_t h = kv_slot(f, kv_key_ptr(f, kv), kv->key_len);
        if (f->kv_hash[h]) {
            char nm[72];
            return llmfs_errorf(ps->err, EINVAL, "gguf: duplicate key '%s' (entries %d and %d)",
                                printable(nm, sizeof nm, (const uint8_t *)kv_key_ptr(f, kv), kv->key_len),
                                f->kv_hash[h] - 1, i);
        }
        f->kv_hash[h] = i + 1;
    }

    f->alignment = GGUF_DEFAULT_ALIGNMENT;
    int ai = gguf_find_key(f, "general.alignment");
    if (ai >= 0) {
        const gguf_kv *kv = &f->kv[ai];
        uint32_t a;
        if (kv->type != GGUF_T_U32)
            return llmfs_errorf(ps->err, EINVAL, "gguf: general.alignment must be a u32 (has value type %u)",
                                (unsigned)kv->type);
        memcpy(&a, f->base + kv->data, sizeof a);
        if (a == 0 || (a & (a - 1)))
            return llmfs_errorf(ps->err, EINVAL, "gguf: general.alignment %u is not a power of two", a);
        f->alignment = a;
    }
    return 0;
}

/* ---- the tensor table ---- */

static int parse_tensor(parser *ps, gguf_tensor *t, uint64_t *name_off)
{
    char nm[72];
    const uint8_t *name;
    uint64_t nl;
    uint32_t nd, type;
    int rc = rd_string(ps, &name, &nl);
    if (rc)
        return rc;
    ps->name = name;
    ps->name_len = nl;
    /* Names are looked up as C strings, so a NUL inside one would make it unreachable. */
    if (memchr(name, 0, nl))
        return llmfs_errorf(ps->err, EINVAL, "gguf: tensor name '%s' contains a NUL byte",
                            cur_name(ps, nm, sizeof nm));
    rc = arena_str(ps, name, nl, name_off);
    if (!rc)
        rc = rd_u32(ps, &nd);
    if (rc)
        return rc;
    if (nd < 1 || nd > 4)
        return llmfs_errorf(ps->err, EINVAL, "gguf: tensor '%s': n_dims %u (must be 1 to 4)",
                            cur_name(ps, nm, sizeof nm), nd);
    t->n_dims = (int)nd;
    int64_t nel = 1;
    for (int d = 0; d < 4; d++) {
        uint64_t ne = 1;
        if (d < (int)nd && (rc = rd_u64(ps, &ne)))
            return rc;
        if (ne == 0 || ne > INT64_MAX)
            return llmfs_errorf(ps->err, EINVAL, "gguf: tensor '%s': dimension %d is %lld (must be positive)",
                                cur_name(ps, nm, sizeof nm), d, (long long)ne);
        t->ne[d] = (int64_t)ne;
        if (__builtin_mul_overflow(nel, t->ne[d], &nel))
            return llmfs_errorf(ps->err, EINVAL, "gguf: tensor '%s': element count overflows",
                                cur_name(ps, nm, sizeof nm));
    }
    if ((rc = rd_u32(ps, &type)))
        return rc;
    const type_traits *ti = type_info((int)type);
    if (!ti || type > INT_MAX)
        return llmfs_errorf(ps->err, EINVAL, "gguf: tensor '%s': unknown type %u",
                            cur_name(ps, nm, sizeof nm), type);
    t->type = (int)type;
    if (t->ne[0] % ti->block)
        return llmfs_errorf(ps->err, EINVAL,
                            "gguf: tensor '%s': row length %lld is not a multiple of the %s block size %d",
                            cur_name(ps, nm, sizeof nm), (long long)t->ne[0], ti->name, ti->block);
    uint64_t row = (uint64_t)(t->ne[0] / ti->block), size;
    if (__builtin_mul_overflow(row, (uint64_t)ti->block_bytes, &row) ||
        __builtin_mul_overflow(row, (uint64_t)(nel / t->ne[0]), &size) || size > SIZE_MAX / 2)
        return llmfs_errorf(ps->err, EINVAL, "gguf: tensor '%s': byte size overflows",
                            cur_name(ps, nm, sizeof nm));
    t->size = (size_t)size;
    if ((rc = rd_u64(ps, &t->offset)))
        return rc;
    if (t->offset % ps->f->alignment)
        return llmfs_errorf(ps->err, EINVAL, "gguf: tensor '%s': offset %llu is not aligned to %zu",
                            cur_name(ps, nm, sizeof nm), (unsigned long long)t->offset, ps->f->alignment);
    return 0;
}

typedef struct span {
    uint64_t offset;
    int index;
} span;

static int by_offset(const void *a, const void *b)
{
    const span *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Every tensor's bytes inside the file and no two sharing a byte. */
static int check_layout(parser *ps)
{
    gguf_file *f = ps->f;
    char nm[72], nm2[72];
    for (int i = 0; i < f->n_tensors; i++) {
        const gguf_tensor *t = &f->tensors[i];
        uint64_t start, end;
        if (__builtin_add_overflow((uint64_t)f->data_offset, t->offset, &start) ||
            __builtin_add_overflow(start, (uint64_t)t->size, &end) || end > f->size)
            return llmfs_errorf(ps->err, EINVAL, "gguf: tensor '%s' data [%llu, %llu) past end of file (size %zu)",
                                printable(nm, sizeof nm, (const uint8_t *)t->name, strlen(t->name)),
                                (unsigned long long)(f->data_offset + t->offset),
                                (unsigned long long)(f->data_offset + t->offset + t->size), f->size);
    }
    size_t n_order = f->n_tensors > 0 ? (unsigned)f->n_tensors : 1u;
    span *order = malloc(sizeof *order * n_order);
    if (!order)
        return llmfs_errorf(ps->err, ENOMEM, "gguf: out of memory");
    for (int i = 0; i < f->n_tensors; i++)
        order[i] = (span){f->tensors[i].offset, i};
    qsort(order, (size_t)f->n_tensors, sizeof *order, by_offset);
    int rc = 0;
    for (int k = 1; k < f->n_tensors && !rc; k++) {
        const gguf_tensor *a = &f->tensors[order[k - 1].index], *b = &f->tensors[order[k].index];
        if (a->offset + a->size > b->offset)
            rc = llmfs_errorf(ps->err, EINVAL, "gguf: tensor '%s' data [%zu, %zu) overlaps tensor '%s' [%zu, %zu)",
                              printable(nm, sizeof nm, (const uint8_t *)b->name, strlen(b->name)),
                              (size_t)(f->data_offset + b->offset), (size_t)(f->data_offset + b->offset + b->size),
                              printable(nm2, sizeof nm2, (const uint8_t *)a->name, strlen(a->name)),
                              (size_t)(f->data_offset + a->offset), (size_t)(f->data_offset + a->offset + a->size));
    }
    free(order);
    return rc;
}

static int parse_tensors(parser *ps, uint64_t n_tensors)
{
    gguf_file *f = ps->f;
    int cap = 0, rc;
    uint64_t *name_off = NULL;
    ps->sec = SEC_TENSOR;
    for (uint64_t i = 0; i < n_tensors; i++) {
        ps->index = (int)i;
        ps->name = NULL;
        if (f->n_tensors == cap) {
            int nc = cap ? cap * 2 : 64;
            if ((uint64_t)nc > n_tensors)
                nc = (int)n_tensors;
            gguf_tensor *t = realloc(f->tensors, sizeof *t * (size_t)nc);
            uint64_t *no = t ? realloc(name_off, sizeof *no * (size_t)nc) : NULL;
            if (t)
                f->tensors = t;
            if (!no) {
                free(name_off);
                return llmfs_errorf(ps->err, ENOMEM, "gguf: out of memory for %d tensors", nc);
            }
            name_off = no;
            cap = nc;
        }
        gguf_tensor *t = &f->tensors[f->n_tensors];
        memset(t, 0, sizeof *t);
        if ((rc = parse_tensor(ps, t, &name_off[f->n_tensors]))) {
            free(name_off);
            return rc;
        }
        f->n_tensors++;
    }
    /* The arena has stopped moving: names become pointers now. */
    for (int i = 0; i < f->n_tensors; i++)
        f->tensors[i].name = f->arena + name_off[i];
    free(name_off);

    f->t_hash = hash_new(f->n_tensors, &f->t_mask);
    if (!f->t_hash)
        return llmfs_errorf(ps->err, ENOMEM, "gguf: out of memory");
    for (int i = 0; i < f->n_tensors; i++) {
        const char *name = f->tensors[i].name;
        size_t h = t_slot(f, name, strlen(name));
        if (f->t_hash[h]) {
            char nm[72];
            return llmfs_errorf(ps->err, EINVAL, "gguf: duplicate tensor name '%s' (tensors %d and %d)",
                                printable(nm, sizeof nm, (const uint8_t *)name, strlen(name)),
                                f->t_hash[h] - 1, i);
        }
        f->t_hash[h] = i + 1;
    }

    ps->sec = SEC_DATA;
    size_t a = f->alignment;
    uint64_t data = ((uint64_t)ps->pos + a - 1) / a * a;
    if (f->n_tensors > 0 && data > ps->len)
        return llmfs_errorf(ps->err, EINVAL,
                            "gguf: truncated before the data section (it starts at %llu, file size %zu)",
                            (unsigned long long)data, ps->len);
    /* A file without tensors (a vocabulary) may end right after its key/value table. */
    f->data_offset = data > ps->len ? ps->len : (size_t)data;
    if ((rc = check_layout(ps)))
        return rc;
    for (int i = 0; i < f->n_tensors; i++)
        f->tensors[i].data = f->base + f->data_offset + f->tensors[i].offset;
    return 0;
}

/* ---- the header ---- */

static int parse(parser *ps)
{
    gguf_file *f = ps->f;
    char magic[4];
    uint64_t n_tensors, n_kv;
    ps->sec = SEC_HEADER;
    if (!rd(ps, magic, 4))
        return truncated(ps);
    if (memcmp(magic, "GGUF", 4) != 0)
        return llmfs_errorf(ps->err, EINVAL, "gguf: bad magic (not a GGUF file)");
    int rc = rd_u32(ps, &f->version);
    if (rc)
        return rc;
    if (f->version == 1)
        return llmfs_errorf(ps->err, EINVAL, "gguf: version 1 is not supported (only versions 2 and 3)");
    if (f->version != 2 && f->version != 3) {
        uint32_t v = f->version;
        uint32_t sw = (v >> 24) | ((v >> 8) & 0xff00) | ((v << 8) & 0xff0000) | (v << 24);
        return llmfs_errorf(ps->err, EINVAL, "gguf: bad version %u (only versions 2 and 3 are supported)%s", v,
                            (sw == 2 || sw == 3) ? "; a big-endian file?" : "");
    }
    if ((rc = rd_u64(ps, &n_tensors)) || (rc = rd_u64(ps, &n_kv)))
        return rc;
    /* Only counts that cannot fit at all are refused here; the tables grow as they are
     * parsed, so a merely truncated file is reported where its bytes run out. */
    size_t left = ps->len - ps->pos;
    if (n_kv > left / MIN_KV_BYTES || n_kv > INT_MAX)
        return llmfs_errorf(ps->err, EINVAL,
                            "gguf: n_kv %llu is more than a file of %zu bytes can hold (truncated or corrupt)",
                            (unsigned long long)n_kv, ps->len);
    if (n_tensors > left / MIN_TENSOR_BYTES || n_tensors > INT_MAX)
        return llmfs_errorf(ps->err, EINVAL,
                            "gguf: n_tensors %llu is more than a file of %zu bytes can hold (truncated or corrupt)",
                            (unsigned long long)n_tensors, ps->len);
    if ((rc = parse_kvs(ps, n_kv)))
        return rc;
    return parse_tensors(ps, n_tensors);
}

static gguf_file *parse_buffer(const void *buf, size_t len, llmfs_error *err)
{
    gguf_file *f = calloc(1, sizeof *f);
    if (!f) {
        llmfs_errorf(err, ENOMEM, "gguf: out of memory");
        return NULL;
    }
    f->base = buf;
    f->size = len;
    parser ps = {.f = f, .p = buf, .len = len, .err = err};
    if (parse(&ps)) {
        gguf_close(f);
        return NULL;
    }
    return f;
}

gguf_file *gguf_open_buffer(const void *buf, size_t len, llmfs_error *err)
{
    static const uint8_t empty[1];
    return parse_buffer(buf ? buf : empty, buf ? len : 0, err);
}

static int read_all(int fd, void *dst, size_t n, const char *path, llmfs_error *err)
{
    uint8_t *p = dst;
    while (n) {
        ssize_t r = read(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return llmfs_errorf(err, errno, "gguf: read %s: %s", path, strerror(errno));
        if (r == 0)
            return llmfs_errorf(err, EIO, "gguf: read %s: file shrank while reading", path);
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

gguf_file *gguf_open(const char *path, const gguf_open_opts *opts, llmfs_error *err)
{
    gguf_open_opts o = opts ? *opts : (gguf_open_opts){0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        llmfs_errorf(err, errno, "gguf: cannot open %s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        llmfs_errorf(err, errno, "gguf: stat %s: %s", path, strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        llmfs_errorf(err, EINVAL, "gguf: %s is not a regular file", path);
        close(fd);
        return NULL;
    }
    size_t size = (size_t)st.st_size;
    void *map = NULL, *ram = NULL;
    const void *base = NULL;
    if (size == 0) {
        base = NULL; /* the parser reports the truncated header */
    } else if (o.no_mmap) {
        ram = malloc(size);
        if (!ram) {
            llmfs_errorf(err, ENOMEM, "gguf: cannot allocate %zu bytes to read %s", size, path);
            close(fd);
            return NULL;
        }
        if (read_all(fd, ram, size, path, err)) {
            free(ram);
            close(fd);
            return NULL;
        }
        base = ram;
    } else {
        map = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            llmfs_errorf(err, errno, "gguf: mmap %s: %s", path, strerror(errno));
            close(fd);
            return NULL;
        }
        base = map;
    }
    close(fd);

    gguf_file *f = gguf_open_buffer(base, size, err);
    if (!f) {
        if (map)
            munmap(map, size);
        free(ram);
        return NULL;
    }
    f->map = map;
    f->ram = ram;
    if (o.mlock && size) {
        if (mlock(f->base, size) != 0) {
            int e = errno;
            llmfs_errorf(err, e, "mlock: cannot pin %s (%zu bytes): %s (raise RLIMIT_MEMLOCK)", path, size,
                         strerror(e));
            gguf_close(f);
            return NULL;
        }
        f->locked = true;
    }
    return f;
}

void gguf_close(gguf_file *f)
{
    if (!f)
        return;
    if (f->locked)
        munlock(f->base, f->size);
    if (f->map)
        munmap(f->map, f->size);
    free(f->ram);
    free(f->kv);
    free(f->tensors);
    free(f->arena);
    free(f->kv_hash);
    free(f->t_hash);
    free(f);
}

uint32_t gguf_version(const gguf_file *f) { return f->version; }
size_t gguf_file_size(const gguf_file *f) { return f->size; }
size_t gguf_alignment(const gguf_file *f) { return f->alignment; }

/* ---- metadata accessors ---- */

int gguf_n_kv(const gguf_file *f) { return f->n_kv; }

static const gguf_kv *kv_at(const gguf_file *f, int i)
{
    return i >= 0 && i < f->n_kv ? &f->kv[i] : NULL;
}

const char *gguf_kv_key(const gguf_file *f, int i)
{
    const gguf_kv *kv = kv_at(f, i);
    return kv ? kv_key_ptr(f, kv) : NULL;
}

int gguf_find_key(const gguf_file *f, const char *key)
{
    if (!key || !f->kv_hash)
        return -1;
    return f->kv_hash[kv_slot(f, key, strlen(key))] - 1;
}

enum gguf_vtype gguf_kv_type(const gguf_file *f, int i)
{
    const gguf_kv *kv = kv_at(f, i);
    return kv ? kv->type : (enum gguf_vtype)-1;
}

enum gguf_vtype gguf_kv_arr_type(const gguf_file *f, int i)
{
    const gguf_kv *kv = kv_at(f, i);
    return kv && kv->type == GGUF_T_ARRAY ? kv->arr_type : (enum gguf_vtype)-1;
}

uint64_t gguf_kv_arr_n(const gguf_file *f, int i)
{
    const gguf_kv *kv = kv_at(f, i);
    return kv && kv->type == GGUF_T_ARRAY ? kv->arr_n : 0;
}

const void *gguf_kv_raw(const gguf_file *f, int i, size_t *len)
{
    const gguf_kv *kv = kv_at(f, i);
    if (!kv)
        return NULL;
    if (len)
        *len = kv->raw_end - kv->raw;
    return f->base + kv->raw;
}

static const gguf_kv *kv_find(const gguf_file *f, const char *key)
{
    return kv_at(f, gguf_find_key(f, key));
}

/* An integer of any width and signedness at p: *neg tells whether *mag is negated. */
static bool int_at(const uint8_t *p, enum gguf_vtype t, bool *neg, uint64_t *mag)
{
    int64_t s;
    *neg = false;
    switch (t) {
    case GGUF_T_U8: *mag = p[0]; return true;
    case GGUF_T_U16: { uint16_t v; memcpy(&v, p, 2); *mag = v; return true; }
    case GGUF_T_U32: { uint32_t v; memcpy(&v, p, 4); *mag = v; return true; }
    case GGUF_T_U64: memcpy(mag, p, 8); return true;
    case GGUF_T_I8: s = (int8_t)p[0]; break;
    case GGUF_T_I16: { int16_t v; memcpy(&v, p, 2); s = v; break; }
    case GGUF_T_I32: { int32_t v; memcpy(&v, p, 4); s = v; break; }
    case GGUF_T_I64: memcpy(&s, p, 8); break;
    default: return false;
    }
    *neg = s < 0;
    *mag = s < 0 ? (uint64_t)0 - (uint64_t)s : (uint64_t)s;
    return true;
}

static bool to_i64(const uint8_t *p, enum gguf_vtype t, int64_t *out)
{
    bool neg;
    uint64_t m;
    if (!int_at(p, t, &neg, &m))
        return false;
    if (neg) {
        *out = (int64_t)(0 - m); /* two's complement; m <= 2^63 by construction */
        return true;
    }
    if (m > INT64_MAX)
        return false;
    *out = (int64_t)m;
    return true;
}

static bool to_f32(const uint8_t *p, enum gguf_vtype t, float *out)
{
    if (t == GGUF_T_F32) {
        memcpy(out, p, 4);
        return true;
    }
    if (t == GGUF_T_F64) {
        double d;
        memcpy(&d, p, 8);
        *out = (float)d;
        return true;
    }
    return false;
}

bool gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out)
{
    const gguf_kv *kv = kv_find(f, key);
    bool neg;
    uint64_t m;
    if (!kv || !int_at(f->base + kv->data, kv->type, &neg, &m) || neg || m > UINT32_MAX)
        return false;
    *out = (uint32_t)m;
    return true;
}

bool gguf_get_i64(const gguf_file *f, const char *key, int64_t *out)
{
    const gguf_kv *kv = kv_find(f, key);
    return kv && to_i64(f->base + kv->data, kv->type, out);
}

bool gguf_get_f32(const gguf_file *f, const char *key, float *out)
{
    const gguf_kv *kv = kv_find(f, key);
    return kv && to_f32(f->base + kv->data, kv->type, out);
}

bool gguf_get_bool(const gguf_file *f, const char *key, bool *out)
{
    const gguf_kv *kv = kv_find(f, key);
    if (!kv || kv->type != GGUF_T_BOOL)
        return false;
    *out = f->base[kv->data] != 0;
    return true;
}

const char *gguf_get_str(const gguf_file *f, const char *key, size_t *len)
{
    const gguf_kv *kv = kv_find(f, key);
    if (!kv || kv->type != GGUF_T_STRING)
        return NULL;
    if (len)
        *len = (size_t)kv->str_len;
    return f->arena + kv->str;
}

const char *gguf_get_arr_str(const gguf_file *f, const char *key, uint64_t i, size_t *len)
{
    const gguf_kv *kv = kv_find(f, key);
    if (!kv || kv->type != GGUF_T_ARRAY || kv->arr_type != GGUF_T_STRING || i >= kv->arr_n)
        return NULL;
    const uint64_t *idx = (const uint64_t *)(const void *)(f->arena + kv->str);
    if (len)
        *len = (size_t)(idx[i + 1] - idx[i] - 1);
    return f->arena + idx[i];
}

const void *gguf_get_arr_data(const gguf_file *f, const char *key, enum gguf_vtype *type, uint64_t *n)
{
    const gguf_kv *kv = kv_find(f, key);
    if (!kv || kv->type != GGUF_T_ARRAY || kv->arr_type == GGUF_T_STRING)
        return NULL;
    if (type)
        *type = kv->arr_type;
    if (n)
        *n = kv->arr_n;
    return f->base + kv->data;
}

bool gguf_get_arr_i64(const gguf_file *f, const char *key, uint64_t i, int64_t *out)
{
    const gguf_kv *kv = kv_find(f, key);
    if (!kv || kv->type != GGUF_T_ARRAY || i >= kv->arr_n)
        return false;
    size_t es = vtype_size(kv->arr_type);
    return es && kv->arr_type != GGUF_T_BOOL && to_i64(f->base + kv->data + i * es, kv->arr_type, out);
}

bool gguf_get_arr_f32(const gguf_file *f, const char *key, uint64_t i, float *out)
{
    const gguf_kv *kv = kv_find(f, key);
    if (!kv || kv->type != GGUF_T_ARRAY || i >= kv->arr_n)
        return false;
    size_t es = vtype_size(kv->arr_type);
    return es && to_f32(f->base + kv->data + i * es, kv->arr_type, out);
}

/* ---- tensors ---- */

int gguf_n_tensors(const gguf_file *f) { return f->n_tensors; }

const gguf_tensor *gguf_tensor_at(const gguf_file *f, int i)
{
    return i >= 0 && i < f->n_tensors ? &f->tensors[i] : NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name)
{
    if (!name || !f->t_hash)
        return NULL;
    int32_t e = f->t_hash[t_slot(f, name, strlen(name))];
    return e ? &f->tensors[e - 1] : NULL;
}
