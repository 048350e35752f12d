/* gguf.h — reading and writing GGUF files (versions 2 and 3).
 *
 * gguf_open maps the file (or reads it into RAM with no_mmap) and validates the whole
 * header, key/value table and tensor table before returning: afterwards every accessor
 * is a bounds-checked lookup and every tensor's data lies inside the file. A malformed
 * file is refused with -EINVAL and a one-line reason naming the problem. Keys and tensor
 * names are looked up as C strings, so one containing a NUL byte makes the file malformed;
 * arrays of arrays are refused too.
 *
 * The writer streams: metadata and the tensor table are written first, then each
 * tensor's bytes are produced by a callback, so files larger than RAM can be made.
 */
#ifndef LLMFS_GGUF_H
#define LLMFS_GGUF_H

#include "llmfs.h"

enum gguf_vtype {
    GGUF_T_U8 = 0, GGUF_T_I8 = 1, GGUF_T_U16 = 2, GGUF_T_I16 = 3, GGUF_T_U32 = 4,
    GGUF_T_I32 = 5, GGUF_T_F32 = 6, GGUF_T_BOOL = 7, GGUF_T_STRING = 8,
    GGUF_T_ARRAY = 9, GGUF_T_U64 = 10, GGUF_T_I64 = 11, GGUF_T_F64 = 12,
};

typedef struct gguf_tensor {
    const char *name;   /* NUL-terminated */
    int type;           /* enum ggml_type (quant.h) */
    int n_dims;         /* 1..4 */
    int64_t ne[4];      /* ne[0] is the row length (contiguous); unused dims are 1 */
    uint64_t offset;    /* from the start of the data section */
    size_t size;        /* bytes */
    const void *data;   /* inside the mapping (or the RAM copy) */
} gguf_tensor;

typedef struct gguf_open_opts {
    bool no_mmap;   /* read into RAM instead of mapping */
    bool mlock;     /* pin the pages */
} gguf_open_opts;

typedef struct gguf_file gguf_file;

gguf_file *gguf_open(const char *path, const gguf_open_opts *opts, llmfs_error *err);
/* The same checks on a buffer in memory (for the fuzzer and tests); buf must outlive the result. */
gguf_file *gguf_open_buffer(const void *buf, size_t len, llmfs_error *err);
void gguf_close(gguf_file *f);

uint32_t gguf_version(const gguf_file *f);
size_t gguf_file_size(const gguf_file *f);
size_t gguf_alignment(const gguf_file *f);

/* ---- metadata ---- */
int gguf_n_kv(const gguf_file *f);
const char *gguf_kv_key(const gguf_file *f, int i);
int gguf_find_key(const gguf_file *f, const char *key);     /* index or -1 */
enum gguf_vtype gguf_kv_type(const gguf_file *f, int i);
enum gguf_vtype gguf_kv_arr_type(const gguf_file *f, int i); /* element type of an array */
uint64_t gguf_kv_arr_n(const gguf_file *f, int i);           /* 0 if not an array */
/* The value's bytes as stored in the file, after its type field (for copying as is). */
const void *gguf_kv_raw(const gguf_file *f, int i, size_t *len);

/* Typed lookups by key. They return false when the key is missing or of a type that
 * cannot be converted without loss (any integer type converts to the wider ones; an
 * integer of another type converts when its value fits). */
bool gguf_get_u32(const gguf_file *f, const char *key, uint32_t *out);
bool gguf_get_i64(const gguf_file *f, const char *key, int64_t *out);
bool gguf_get_f32(const gguf_file *f, const char *key, float *out); /* F32 or F64 */
bool gguf_get_bool(const gguf_file *f, const char *key, bool *out);
/* A string value: NUL-terminated copy owned by f; *len its length (may hold NULs). */
const char *gguf_get_str(const gguf_file *f, const char *key, size_t *len);
/* Element i of a string array (NUL-terminated, owned by f), or NULL. */
const char *gguf_get_arr_str(const gguf_file *f, const char *key, uint64_t i, size_t *len);
/* Raw little-endian elements of a numeric array (possibly unaligned), *n elements of *type. */
const void *gguf_get_arr_data(const gguf_file *f, const char *key, enum gguf_vtype *type, uint64_t *n);
/* Array element i converted: integers to int64, floats to float. */
bool gguf_get_arr_i64(const gguf_file *f, const char *key, uint64_t i, int64_t *out);
bool gguf_get_arr_f32(const gguf_file *f, const char *key, uint64_t i, float *out);

/* ---- tensors ---- */
int gguf_n_tensors(const gguf_file *f);
const gguf_tensor *gguf_tensor_at(const gguf_file *f, int i);
const gguf_tensor *gguf_find_tensor(const gguf_file *f, const char *name); /* NULL if none */

/* ---- writer ---- */
typedef struct gguf_writer gguf_writer;
/* Produces a tensor's bytes: writes exactly `size` bytes to `out` through emit(),
 * in as many calls as it likes. Returns 0 or a negative errno. */
typedef int (*gguf_emit_fn)(void *sink, const void *bytes, size_t n);
typedef int (*gguf_fill_fn)(void *ctx, const gguf_tensor *t, gguf_emit_fn emit, void *sink);

gguf_writer *gguf_writer_new(void);
void gguf_writer_free(gguf_writer *w);
/* Setting a key that is already set replaces its value in place. Bad arguments (and
 * running out of memory) are remembered and reported by gguf_writer_write. */
void gguf_w_u32(gguf_writer *w, const char *key, uint32_t v);
void gguf_w_i32(gguf_writer *w, const char *key, int32_t v);
void gguf_w_f32(gguf_writer *w, const char *key, float v);
void gguf_w_bool(gguf_writer *w, const char *key, bool v);
void gguf_w_str(gguf_writer *w, const char *key, const char *v);
void gguf_w_arr_str(gguf_writer *w, const char *key, const char *const *v, uint64_t n);
void gguf_w_arr_i32(gguf_writer *w, const char *key, const int32_t *v, uint64_t n);
void gguf_w_arr_f32(gguf_writer *w, const char *key, const float *v, uint64_t n);
/* Any scalar type but STRING and ARRAY, from its little-endian bytes at v. */
void gguf_w_val(gguf_writer *w, const char *key, enum gguf_vtype type, const void *v);
/* An array of any element type but STRING and ARRAY, n elements at v. */
void gguf_w_arr(gguf_writer *w, const char *key, enum gguf_vtype type, const void *v, uint64_t n);
/* Copies key/value i of another file as it is (any type, arrays included). */
void gguf_w_copy_kv(gguf_writer *w, const gguf_file *src, int i);
/* Adds a tensor; its bytes come from fill(ctx, ...) at write time (ne[0] first). */
void gguf_w_tensor(gguf_writer *w, const char *name, int type, int n_dims, const int64_t *ne,
                   gguf_fill_fn fill, void *ctx);
/* Writes version 3 with 32-byte alignment (or general.alignment when it was set, as a
 * u32 power of two). The file appears under `path` only once complete. 0 or a negative
 * errno. */
int gguf_writer_write(gguf_writer *w, const char *path, llmfs_error *err);
/* The same into a malloc'd buffer (*buf, *len), for tests and small files. */
int gguf_writer_write_mem(gguf_writer *w, void **buf, size_t *len, llmfs_error *err);

#endif
