/* gguf_write.c — streaming GGUF writer (version 3).
 *
 * Metadata values are encoded when they are set; tensor bytes are produced by their fill
 * callbacks only while the file is written, through a buffered sink that also counts them,
 * so a file of tens of GB never has to fit in memory.
 */
#include "gguf.h"
#include "quant.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define GGUF_DEFAULT_ALIGNMENT 32
#define SINK_BUFFER (1u << 20)

typedef struct wkv {
    char *key;
    uint32_t type;
    uint8_t *val;      /* the encoded value, as it follows the type field */
    size_t val_len;
} wkv;

typedef struct wtensor {
    char *name;
    int type;
    int n_dims;
    int64_t ne[4];
    size_t size;
    gguf_fill_fn fill;
    void *ctx;
} wtensor;

struct gguf_writer {
    wkv *kv;
    int n_kv, cap_kv;
    wtensor *t;
    int n_t, cap_t;
    llmfs_error err;   /* the first bad call, reported by gguf_writer_write */
};

gguf_writer *gguf_writer_new(void)
{
    return calloc(1, sizeof(gguf_writer));
}

void gguf_writer_free(gguf_writer *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->n_kv; i++) {
        free(w->kv[i].key);
        free(w->kv[i].val);
    }
    for (int i = 0; i < w->n_t; i++)
        free(w->t[i].name);
    free(w->kv);
    free(w->t);
    free(w);
}

#define W_FAIL(w, ecode, ...)                                  \
    do {                                                       \
        if (!(w)->err.code)                                    \
            llmfs_errorf(&(w)->err, (ecode), __VA_ARGS__);     \
    } while (0)

static size_t vsize(enum gguf_vtype t)
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

/* Takes ownership of val. */
static void set_kv(gguf_writer *w, const char *key, uint32_t type, uint8_t *val, size_t len)
{
    if (!key) {
        W_FAIL(w, EINVAL, "gguf writer: NULL key");
        free(val);
        return;
    }
    if (!val) {
        W_FAIL(w, ENOMEM, "gguf writer: out of memory for key '%s'", key);
        return;
    }
    for (int i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, key) == 0) {
            free(w->kv[i].val);
            w->kv[i].type = type;
            w->kv[i].val = val;
            w->kv[i].val_len = len;
            return;
        }
    }
    if (w->n_kv == w->cap_kv) {
        int nc = w->cap_kv ? w->cap_kv * 2 : 32;
        wkv *k = realloc(w->kv, sizeof *k * (size_t)nc);
        if (!k) {
            W_FAIL(w, ENOMEM, "gguf writer: out of memory");
            free(val);
            return;
        }
        w->kv = k;
        w->cap_kv = nc;
    }
    char *k = strdup(key);
    if (!k) {
        W_FAIL(w, ENOMEM, "gguf writer: out of memory");
        free(val);
        return;
    }
    w->kv[w->n_kv++] = (wkv){k, type, val, len};
}

static uint8_t *dup_bytes(const void *p, size_t n)
{
    uint8_t *b = malloc(n ? n : 1);
    if (b && n)
        memcpy(b, p, n);
    return b;
}

void gguf_w_val(gguf_writer *w, const char *key, enum gguf_vtype type, const void *v)
{
    size_t n = vsize(type);
    if (!n || !v) {
        W_FAIL(w, EINVAL, "gguf writer: key '%s': bad scalar type %d", key ? key : "(null)", (int)type);
        return;
    }
    set_kv(w, key, type, dup_bytes(v, n), n);
}

void gguf_w_u32(gguf_writer *w, const char *key, uint32_t v) { gguf_w_val(w, key, GGUF_T_U32, &v); }
void gguf_w_i32(gguf_writer *w, const char *key, int32_t v) { gguf_w_val(w, key, GGUF_T_I32, &v); }
void gguf_w_f32(gguf_writer *w, const char *key, float v) { gguf_w_val(w, key, GGUF_T_F32, &v); }

void gguf_w_bool(gguf_writer *w, const char *key, bool v)
{
    uint8_t b = v ? 1 : 0;
    gguf_w_val(w, key, GGUF_T_BOOL, &b);
}

void gguf_w_str(gguf_writer *w, const char *key, const char *v)
{
    uint64_t n = v ? strlen(v) : 0;
    uint8_t *b = malloc(8 + n);
    if (b) {
        memcpy(b, &n, 8);
        if (n)
            memcpy(b + 8, v, n);
    }
    set_kv(w, key, GGUF_T_STRING, b, 8 + n);
}

void gguf_w_arr(gguf_writer *w, const char *key, enum gguf_vtype type, const void *v, uint64_t n)
{
    size_t es = vsize(type);
    if (!es || (n && !v) || n > (SIZE_MAX - 12) / es) {
        W_FAIL(w, EINVAL, "gguf writer: key '%s': bad array of type %d", key ? key : "(null)", (int)type);
        return;
    }
    uint32_t t = type;
    uint8_t *b = malloc(12 + n * es);
    if (b) {
        memcpy(b, &t, 4);
        memcpy(b + 4, &n, 8);
        if (n)
            memcpy(b + 12, v, n * es);
    }
    set_kv(w, key, GGUF_T_ARRAY, b, 12 + n * es);
}

void gguf_w_arr_i32(gguf_writer *w, const char *key, const int32_t *v, uint64_t n)
{
    gguf_w_arr(w, key, GGUF_T_I32, v, n);
}

void gguf_w_arr_f32(gguf_writer *w, const char *key, const float *v, uint64_t n)
{
    gguf_w_arr(w, key, GGUF_T_F32, v, n);
}

void gguf_w_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n)
{
    if (n && !v) {
        W_FAIL(w, EINVAL, "gguf writer: key '%s': NULL string array", key ? key : "(null)");
        return;
    }
    size_t total = 12;
    for (uint64_t i = 0; i < n; i++)
        total += 8 + (v[i] ? strlen(v[i]) : 0);
    uint8_t *b = malloc(total);
    if (b) {
        uint32_t t = GGUF_T_STRING;
        memcpy(b, &t, 4);
        memcpy(b + 4, &n, 8);
        size_t o = 12;
        for (uint64_t i = 0; i < n; i++) {
            uint64_t l = v[i] ? strlen(v[i]) : 0;
            memcpy(b + o, &l, 8);
            if (l)
                memcpy(b + o + 8, v[i], l);
            o += 8 + l;
        }
    }
    set_kv(w, key, GGUF_T_ARRAY, b, total);
}

void gguf_w_copy_kv(gguf_writer *w, const gguf_file *src, int i)
{
    size_t len;
    const void *raw = gguf_kv_raw(src, i, &len);
    if (!raw) {
        W_FAIL(w, EINVAL, "gguf writer: no key/value %d to copy", i);
        return;
    }
    set_kv(w, gguf_kv_key(src, i), (uint32_t)gguf_kv_type(src, i), dup_bytes(raw, len), len);
}

void gguf_w_tensor(gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                   gguf_fill_fn fill, void *ctx)
{
    const char *nm = name ? name : "(null)";
    const type_traits *ti = type_info(type);
    if (!name || !fill || !ne || n_dims < 1 || n_dims > 4) {
        W_FAIL(w, EINVAL, "gguf writer: tensor '%s': bad arguments", nm);
        return;
    }
    if (!ti) {
        W_FAIL(w, EINVAL, "gguf writer: tensor '%s': unknown type %d", nm, type);
        return;
    }
    wtensor t = {.type = type, .n_dims = n_dims, .ne = {1, 1, 1, 1}, .fill = fill, .ctx = ctx};
    int64_t nel = 1;
    for (int d = 0; d < n_dims; d++) {
        if (ne[d] <= 0 || __builtin_mul_overflow(nel, ne[d], &nel)) {
            W_FAIL(w, EINVAL, "gguf writer: tensor '%s': bad dimension %d (%lld)", nm, d, (long long)ne[d]);
            return;
        }
        t.ne[d] = ne[d];
    }
    if (ne[0] % ti->block) {
        W_FAIL(w, EINVAL, "gguf writer: tensor '%s': row length %lld is not a multiple of the %s block size %d",
               nm, (long long)ne[0], ti->name, ti->block);
        return;
    }
    uint64_t row = (uint64_t)(ne[0] / ti->block) * ti->block_bytes, size;
    if (__builtin_mul_overflow(row, (uint64_t)(nel / ne[0]), &size) || size > SIZE_MAX / 2) {
        W_FAIL(w, EINVAL, "gguf writer: tensor '%s': byte size overflows", nm);
        return;
    }
    t.size = (size_t)size;
    for (int i = 0; i < w->n_t; i++) {
        if (strcmp(w->t[i].name, name) == 0) {
            W_FAIL(w, EINVAL, "gguf writer: duplicate tensor name '%s'", name);
            return;
        }
    }
    if (w->n_t == w->cap_t) {
        int nc = w->cap_t ? w->cap_t * 2 : 64;
        wtensor *tt = realloc(w->t, sizeof *tt * (size_t)nc);
        if (!tt) {
            W_FAIL(w, ENOMEM, "gguf writer: out of memory");
            return;
        }
        w->t = tt;
        w->cap_t = nc;
    }
    if (!(t.name = strdup(name))) {
        W_FAIL(w, ENOMEM, "gguf writer: out of memory");
        return;
    }
    w->t[w->n_t++] = t;
}

/* ---- output ---- */

typedef struct sink {
    int fd;            /* -1: memory */
    uint8_t *buf;
    size_t n, cap;
    uint64_t total;
    /* per tensor: bytes allowed and bytes seen */
    uint64_t limit, seen;
    bool over;
    int io_errno;
} sink;

static int sink_flush(sink *s)
{
    size_t o = 0;
    while (o < s->n) {
        ssize_t r = write(s->fd, s->buf + o, s->n - o);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return s->io_errno = errno, -errno;
        o += (size_t)r;
    }
    s->n = 0;
    return 0;
}

static int sink_put(sink *s, const void *p, size_t n)
{
    if (s->io_errno)
        return -s->io_errno;
    s->total += n;
    if (s->fd < 0) {
        if (s->n + n > s->cap) {
            size_t cap = s->cap ? s->cap : 4096;
            while (cap < s->n + n)
                cap *= 2;
            uint8_t *b = realloc(s->buf, cap);
            if (!b)
                return s->io_errno = ENOMEM, -ENOMEM;
            s->buf = b;
            s->cap = cap;
        }
        memcpy(s->buf + s->n, p, n);
        s->n += n;
        return 0;
    }
    const uint8_t *b = p;
    while (n) {
        if (s->n == s->cap) {
            int rc = sink_flush(s);
            if (rc)
                return rc;
        }
        size_t k = s->cap - s->n < n ? s->cap - s->n : n;
        memcpy(s->buf + s->n, b, k);
        s->n += k;
        b += k;
        n -= k;
    }
    return 0;
}

static int sink_pad(sink *s, size_t align)
{
    static const uint8_t zeros[64];
    size_t pad = (size_t)((align - s->total % align) % align);
    while (pad) {
        size_t k = pad < sizeof zeros ? pad : sizeof zeros;
        int rc = sink_put(s, zeros, k);
        if (rc)
            return rc;
        pad -= k;
    }
    return 0;
}

/* What fill callbacks get: counts the bytes so a fill that writes too much is stopped. */
static int tensor_emit(void *sp, const void *bytes, size_t n)
{
    sink *s = sp;
    if (n > s->limit - s->seen) {
        s->over = true;
        return -EINVAL;
    }
    s->seen += n;
    return sink_put(s, bytes, n);
}

static int put_str(sink *s, const char *str, uint64_t n)
{
    int rc = sink_put(s, &n, 8);
    return rc ? rc : sink_put(s, str, n);
}

static int write_all(gguf_writer *w, sink *s, llmfs_error *err)
{
    if (w->err.code)
        return llmfs_errorf(err, w->err.code, "%s", w->err.msg);

    size_t align = GGUF_DEFAULT_ALIGNMENT;
    for (int i = 0; i < w->n_kv; i++) {
        if (strcmp(w->kv[i].key, "general.alignment") == 0) {
            uint32_t a = 0;
            if (w->kv[i].type == GGUF_T_U32)
                memcpy(&a, w->kv[i].val, 4);
            if (a == 0 || (a & (a - 1)))
                return llmfs_errorf(err, EINVAL, "gguf writer: general.alignment must be a u32 power of two");
            align = a;
        }
    }

    uint32_t version = 3;
    uint64_t n_t = (uint64_t)w->n_t, n_kv = (uint64_t)w->n_kv;
    int rc = sink_put(s, "GGUF", 4);
    if (!rc) rc = sink_put(s, &version, 4);
    if (!rc) rc = sink_put(s, &n_t, 8);
    if (!rc) rc = sink_put(s, &n_kv, 8);
    for (int i = 0; i < w->n_kv && !rc; i++) {
        const wkv *kv = &w->kv[i];
        rc = put_str(s, kv->key, strlen(kv->key));
        if (!rc) rc = sink_put(s, &kv->type, 4);
        if (!rc) rc = sink_put(s, kv->val, kv->val_len);
    }
    uint64_t off = 0;
    for (int i = 0; i < w->n_t && !rc; i++) {
        const wtensor *t = &w->t[i];
        uint32_t nd = (uint32_t)t->n_dims, type = (uint32_t)t->type;
        rc = put_str(s, t->name, strlen(t->name));
        if (!rc) rc = sink_put(s, &nd, 4);
        for (int d = 0; d < t->n_dims && !rc; d++)
            rc = sink_put(s, &t->ne[d], 8);
        if (!rc) rc = sink_put(s, &type, 4);
        if (!rc) rc = sink_put(s, &off, 8);
        off += (t->size + align - 1) / align * align;
    }
    /* Without tensors there is no data section to align. */
    if (!rc && w->n_t)
        rc = sink_pad(s, align);
    if (rc)
        return llmfs_errorf(err, -rc, "gguf writer: %s", strerror(-rc));

    off = 0;
    for (int i = 0; i < w->n_t; i++) {
        const wtensor *t = &w->t[i];
        gguf_tensor info = {.name = t->name, .type = t->type, .n_dims = t->n_dims, .offset = off,
                            .size = t->size};
        memcpy(info.ne, t->ne, sizeof info.ne);
        s->limit = t->size;
        s->seen = 0;
        s->over = false;
        rc = t->fill(t->ctx, &info, tensor_emit, s);
        if (s->over)
            return llmfs_errorf(err, EINVAL, "gguf writer: tensor '%s': fill wrote more than %zu bytes", t->name,
                                t->size);
        if (s->io_errno)
            return llmfs_errorf(err, s->io_errno, "gguf writer: %s", strerror(s->io_errno));
        if (rc < 0)
            return llmfs_errorf(err, -rc, "gguf writer: tensor '%s': fill failed: %s", t->name, strerror(-rc));
        if (s->seen != t->size)
            return llmfs_errorf(err, EINVAL, "gguf writer: tensor '%s': fill wrote %llu bytes, expected %zu",
                                t->name, (unsigned long long)s->seen, t->size);
        if ((rc = sink_pad(s, align)))
            return llmfs_errorf(err, -rc, "gguf writer: %s", strerror(-rc));
        off += (t->size + align - 1) / align * align;
    }
    return 0;
}

int gguf_writer_write_mem(gguf_writer *w, void **buf, size_t *len, llmfs_error *err)
{
    sink s = {.fd = -1};
    int rc = write_all(w, &s, err);
    if (rc) {
        free(s.buf);
        return rc;
    }
    *buf = s.buf ? s.buf : malloc(1);
    *len = s.n;
    return *buf ? 0 : llmfs_errorf(err, ENOMEM, "gguf writer: out of memory");
}

int gguf_writer_write(gguf_writer *w, const char *path, llmfs_error *err)
{
    /* Written beside the target and renamed into place, so a failed or interrupted write
     * never leaves a partial file under the real name. */
    size_t pl = strlen(path);
    char *tmp = malloc(pl + 16);
    if (!tmp)
        return llmfs_errorf(err, ENOMEM, "gguf writer: out of memory");
    snprintf(tmp, pl + 16, "%s.tmp.XXXXXX", path);
    int fd = mkstemp(tmp);
    if (fd < 0) {
        int e = errno;
        free(tmp);
        return llmfs_errorf(err, e, "gguf writer: cannot create %s: %s", path, strerror(e));
    }
    fchmod(fd, 0644); /* mkstemp makes it 0600 */
    sink s = {.fd = fd, .cap = SINK_BUFFER, .buf = malloc(SINK_BUFFER)};
    int rc = s.buf ? write_all(w, &s, err) : llmfs_errorf(err, ENOMEM, "gguf writer: out of memory");
    if (!rc && sink_flush(&s))
        rc = llmfs_errorf(err, s.io_errno, "gguf writer: write %s: %s", path, strerror(s.io_errno));
    if (close(fd) != 0 && !rc)
        rc = llmfs_errorf(err, errno, "gguf writer: close %s: %s", path, strerror(errno));
    if (!rc && rename(tmp, path) != 0)
        rc = llmfs_errorf(err, errno, "gguf writer: rename to %s: %s", path, strerror(errno));
    if (rc)
        unlink(tmp);
    free(s.buf);
    free(tmp);
    return rc;
}
