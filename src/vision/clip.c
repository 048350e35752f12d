/* clip.c — the gemma3 / gemma4v vision projectors: loading, preprocessing, forward.
 *
 * Notation in shape comments: P patches, E tower width, F feed-forward width, H heads of
 * D dims, T image tokens (after pooling), O output width (the text model's n_embd).
 */
#include "clip.h"

#include "backend.h"
#include "gguf.h"
#include "kv.h"
#include "quant.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Gemma4ClippableLinear: input clamped, matmul, output clamped (±FLT_MAX when the file
 * has no scalars). */
typedef struct clamp4 {
    float in_min, in_max, out_min, out_max;
} clamp4;

enum { LIN_Q, LIN_K, LIN_V, LIN_O, LIN_GATE, LIN_UP, LIN_DOWN, LIN_COUNT };

typedef struct clip_layer {
    tensor *ln1_w, *ln1_b, *ln2_w, *ln2_b;        /* [E] (gemma4v: RMS norms, no biases) */
    tensor *wq, *wk, *wv, *wo;                     /* [E][E] */
    tensor *bq, *bk, *bv, *bo;                     /* [E] gemma3 */
    tensor *w_gate, *w_up, *w_down;                /* [F][E] x2, [E][F]; gate gemma4v only */
    tensor *b_up, *b_down;                         /* [F], [E] gemma3 */
    /* gemma4v */
    tensor *q_norm, *k_norm;                       /* [D] */
    tensor *attn_post_norm, *ffn_post_norm;        /* [E] */
    float out_scale;
    clamp4 clamp[LIN_COUNT];
} clip_layer;

struct clip_model {
    clip_hparams hp;
    gguf_file *file;
    backend *be;                /* a CPU backend of its own: its threads, its scratch */
    tensor tensors[512];
    int n_tensors;
    bool is_mat[512];           /* tensors[i] is a matmul weight */
    bool host_only[512];        /* not copied to a GPU: read at load, or on the host */
    /* The forward on a GPU backend (clip_load_on): a copy of every tensor there, in
     * the backend's own layout for matrices and as plain floats for vectors; NULL dev:
     * the CPU forward. The backend is the caller's. */
    backend *dev;
    tensor *dtensors;           /* [n_tensors] */
    uint64_t dev_bytes;
    tensor *patch_w;            /* [E][C*p*p] conv kernel as a matrix (F16: llama.cpp's im2col rounds to f16) */
    tensor *patch_b;            /* [E] gemma3 */
    tensor *pos_embd;           /* gemma3 [P][E]; gemma4v [2][n_pos][E] (column table, row table) */
    int n_pos;                  /* gemma4v: rows of each position table */
    clip_layer *layers;
    tensor *post_ln_w, *post_ln_b; /* [E] gemma3 */
    tensor *soft_emb_norm;      /* [E] gemma3 */
    tensor *std_bias, *std_scale; /* [E] gemma4v */
    tensor *proj;               /* [O][E] */
    uint16_t *owned_f16[2];     /* converted copies (patch kernel, transposed projection) */
    float *act_table;           /* [65536]: the MLP activation of every f16 value, rounded to f16 */
    uint64_t weight_bytes;
};

const clip_hparams *clip_hp(const clip_model *c) { return &c->hp; }
int clip_threads(const clip_model *c) { return backend_cpu_threads(c->be); }
uint64_t clip_weight_bytes(const clip_model *c) { return c->weight_bytes; }

/* ---------------------------------------------------------------- loading */

static int bind(clip_model *c, const char *name, int64_t ne0, int64_t ne1, bool matmul, bool optional,
                tensor **out, llmfs_error *err)
{
    *out = NULL;
    const gguf_tensor *g = gguf_find_tensor(c->file, name);
    if (!g) {
        if (optional)
            return 0;
        return llmfs_errorf(err, EINVAL, "mmproj: missing tensor %s", name);
    }
    int64_t rows = g->ne[1] * g->ne[2] * g->ne[3];
    if (g->ne[0] != ne0 || rows != (ne1 ? ne1 : 1))
        return llmfs_errorf(err, EINVAL, "mmproj: tensor %s has shape [%lld %lld %lld %lld], expected %lld x %lld",
                            name, (long long)g->ne[0], (long long)g->ne[1], (long long)g->ne[2],
                            (long long)g->ne[3], (long long)ne0, (long long)(ne1 ? ne1 : 1));
    const type_traits *tt = type_info(g->type);
    if (!tt)
        return llmfs_errorf(err, EINVAL, "mmproj: tensor %s has unsupported type %d", name, g->type);
    if (!matmul && g->type != T_F32)
        return llmfs_errorf(err, EINVAL, "mmproj: tensor %s must be F32, is %s", name, tt->name);
    const type_traits *dt = type_info(tt->dot_type);
    if (g->ne[0] % tt->block || (matmul && (!dt || g->ne[0] % dt->block)))
        return llmfs_errorf(err, EINVAL, "mmproj: tensor %s: rows of %lld are not whole %s blocks", name,
                            (long long)g->ne[0], tt->name);
    size_t row = type_row_bytes(g->type, g->ne[0]);
    if (g->size < row * (size_t)rows)
        return llmfs_errorf(err, EINVAL, "mmproj: tensor %s is truncated", name);
    if (c->n_tensors == (int)(sizeof c->tensors / sizeof c->tensors[0]))
        return llmfs_errorf(err, EINVAL, "mmproj: too many tensors");
    tensor *t = &c->tensors[c->n_tensors++];
    snprintf(t->name, sizeof t->name, "%.63s", name);
    t->type = g->type;
    t->ne[0] = ne0;
    t->ne[1] = rows;
    t->ne[2] = 1;
    t->nb1 = row;
    t->nb2 = row * (size_t)rows;
    t->data = (void *)g->data;
    t->be = c->be;
    c->is_mat[t - c->tensors] = matmul;
    c->weight_bytes += g->size;
    *out = t;
    return 0;
}

static int bind_blk(clip_model *c, int il, const char *suffix, int64_t ne0, int64_t ne1, bool matmul,
                    bool optional, tensor **out, llmfs_error *err)
{
    char name[96];
    snprintf(name, sizeof name, "v.blk.%d.%s", il, suffix);
    return bind(c, name, ne0, ne1, matmul, optional, out, err);
}

static float scalar_of(const tensor *t, float dflt)
{
    return t ? ((const float *)t->data)[0] : dflt;
}

/* A tensor of the projector's own: an F16 copy of src, rows [rows][cols]; transpose:
 * src holds the transpose ([cols][rows]). */
static int own_f16(clip_model *c, int slot, const tensor *src, int64_t rows, int64_t cols, bool transpose,
                   tensor *dst, llmfs_error *err)
{
    float *tmp = malloc(sizeof(float) * (size_t)(rows * cols));
    uint16_t *h = malloc(sizeof(uint16_t) * (size_t)(rows * cols));
    if (!tmp || !h) {
        free(tmp);
        free(h);
        return llmfs_errorf(err, ENOMEM, "mmproj: out of memory");
    }
    /* the source is contiguous: all of it as one row */
    const int64_t src_cols = transpose ? rows : cols;
    dequantize_row(src->type, src->data, tmp, rows * cols);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < cols; k++)
            h[r * cols + k] = f32_to_f16(transpose ? tmp[k * src_cols + r] : tmp[r * cols + k]);
    free(tmp);
    c->owned_f16[slot] = h;
    *dst = *src;
    dst->type = T_F16;
    dst->ne[0] = cols;
    dst->ne[1] = rows;
    dst->nb1 = sizeof(uint16_t) * (size_t)cols;
    dst->nb2 = dst->nb1 * (size_t)rows;
    dst->data = h;
    return 0;
}

static float gelu_tanh_f32(float x)
{
    const float sqrt_2_over_pi = 0.79788456080286535587989211986876f;
    return 0.5f * x * (1.0f + tanhf(sqrt_2_over_pi * x * (1.0f + 0.044715f * x * x)));
}

static float gelu_quick_f32(float x)
{
    return x * (1.0f / (1.0f + expf(-1.702f * x)));
}

static int read_hparams(clip_model *c, llmfs_error *err)
{
    gguf_file *f = c->file;
    clip_hparams *hp = &c->hp;
    const char *arch = gguf_get_str(f, "general.architecture", NULL);
    if (!arch || strcmp(arch, "clip"))
        return llmfs_errorf(err, EINVAL, "mmproj: not a projector file (general.architecture %s, want clip)",
                            arch ? arch : "missing");
    const char *pt = gguf_get_str(f, "clip.vision.projector_type", NULL);
    if (!pt)
        pt = gguf_get_str(f, "clip.projector_type", NULL);
    if (!pt)
        return llmfs_errorf(err, EINVAL, "mmproj: no clip.projector_type");
    if (!strcmp(pt, "gemma3")) {
        hp->projector = CLIP_GEMMA3;
        hp->type_name = "gemma3";
    } else if (!strcmp(pt, "gemma4v")) {
        hp->projector = CLIP_GEMMA4V;
        hp->type_name = "gemma4v";
    } else {
        return llmfs_errorf(err, EINVAL, "mmproj: projector type %s is not supported (gemma3, gemma4v)", pt);
    }
    bool has_vision = false;
    if (!gguf_get_bool(f, "clip.has_vision_encoder", &has_vision) || !has_vision)
        return llmfs_errorf(err, EINVAL, "mmproj: the file has no vision encoder");
    static const struct {
        const char *key;
        size_t off;
    } ints[] = {
        {"clip.vision.image_size", offsetof(clip_hparams, image_size)},
        {"clip.vision.patch_size", offsetof(clip_hparams, patch)},
        {"clip.vision.embedding_length", offsetof(clip_hparams, n_embd)},
        {"clip.vision.feed_forward_length", offsetof(clip_hparams, n_ff)},
        {"clip.vision.block_count", offsetof(clip_hparams, n_layer)},
        {"clip.vision.attention.head_count", offsetof(clip_hparams, n_head)},
    };
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        uint32_t v;
        if (!gguf_get_u32(f, ints[i].key, &v) || v == 0 || v > 65536)
            return llmfs_errorf(err, EINVAL, "mmproj: %s missing or out of range", ints[i].key);
        *(int *)((char *)hp + ints[i].off) = (int)v;
    }
    if (hp->n_embd % hp->n_head)
        return llmfs_errorf(err, EINVAL, "mmproj: width %d is not a multiple of %d heads", hp->n_embd, hp->n_head);
    hp->head_dim = hp->n_embd / hp->n_head;
    if (hp->projector == CLIP_GEMMA4V && hp->head_dim % 4)
        return llmfs_errorf(err, EINVAL, "mmproj: head size %d cannot take the 2-D rope", hp->head_dim);
    if (!gguf_get_f32(f, "clip.vision.attention.layer_norm_epsilon", &hp->eps))
        hp->eps = 1e-6f;
    for (int k = 0; k < 3; k++)
        if (!gguf_get_arr_f32(f, "clip.vision.image_mean", (uint64_t)k, &hp->mean[k]) ||
            !gguf_get_arr_f32(f, "clip.vision.image_std", (uint64_t)k, &hp->std[k]) || hp->std[k] == 0)
            return llmfs_errorf(err, EINVAL, "mmproj: clip.vision.image_mean / image_std missing");
    /* llama.cpp: tanh GELU only when the file says so, else gelu_quick */
    bool gelu = false;
    hp->gelu_tanh = gguf_get_bool(f, "clip.use_gelu", &gelu) && gelu;
    uint32_t sf;
    if (hp->projector == CLIP_GEMMA3)
        hp->pool = gguf_get_u32(f, "clip.vision.projector.scale_factor", &sf) && sf > 0 ? (int)sf : 4;
    else
        hp->pool = 3;
    hp->min_tokens = 40; /* llama.cpp's defaults for gemma4v */
    hp->max_tokens = 280;
    if (hp->projector == CLIP_GEMMA3) {
        int side = hp->image_size / hp->patch;
        if (hp->image_size % hp->patch || side % hp->pool)
            return llmfs_errorf(err, EINVAL, "mmproj: image %d, patch %d, pooling %d do not divide", hp->image_size,
                                hp->patch, hp->pool);
    }
    return 0;
}

static int bind_weights(clip_model *c, llmfs_error *err)
{
    clip_hparams *hp = &c->hp;
    const int E = hp->n_embd, F = hp->n_ff, D = hp->head_dim, K = 3 * hp->patch * hp->patch;
    const bool g3 = hp->projector == CLIP_GEMMA3;
    int rc;
    tensor *pw, *proj;
    if ((rc = bind(c, "v.patch_embd.weight", hp->patch, (int64_t)hp->patch * 3 * E, true, false, &pw, err)))
        return rc;
    if (g3) {
        int P = (hp->image_size / hp->patch) * (hp->image_size / hp->patch);
        if ((rc = bind(c, "v.patch_embd.bias", E, 0, false, false, &c->patch_b, err)) ||
            (rc = bind(c, "v.position_embd.weight", E, P, false, false, &c->pos_embd, err)) ||
            (rc = bind(c, "v.post_ln.weight", E, 0, false, false, &c->post_ln_w, err)) ||
            (rc = bind(c, "v.post_ln.bias", E, 0, false, false, &c->post_ln_b, err)) ||
            (rc = bind(c, "mm.soft_emb_norm.weight", E, 0, false, false, &c->soft_emb_norm, err)))
            return rc;
        const gguf_tensor *g = gguf_find_tensor(c->file, "mm.input_projection.weight");
        if (!g)
            return llmfs_errorf(err, EINVAL, "mmproj: missing tensor mm.input_projection.weight");
        hp->n_embd_out = (int)g->ne[0];
        /* stored [E][O] (ne0 = O: out = x P); the matmul wants [O][E] */
        if ((rc = bind(c, "mm.input_projection.weight", hp->n_embd_out, E, true, false, &proj, err)))
            return rc;
    } else {
        const gguf_tensor *g = gguf_find_tensor(c->file, "v.position_embd.weight");
        if (!g || g->ne[2] != 2)
            return llmfs_errorf(err, EINVAL, "mmproj: v.position_embd.weight missing or not two tables");
        c->n_pos = (int)g->ne[1];
        const gguf_tensor *p = gguf_find_tensor(c->file, "mm.input_projection.weight");
        if (!p)
            return llmfs_errorf(err, EINVAL, "mmproj: missing tensor mm.input_projection.weight");
        hp->n_embd_out = (int)p->ne[1];
        if ((rc = bind(c, "v.position_embd.weight", E, 2 * (int64_t)c->n_pos, false, false, &c->pos_embd, err)) ||
            (rc = bind(c, "v.std_bias", E, 0, false, false, &c->std_bias, err)) ||
            (rc = bind(c, "v.std_scale", E, 0, false, false, &c->std_scale, err)) ||
            (rc = bind(c, "mm.input_projection.weight", E, hp->n_embd_out, true, false, &c->proj, err)))
            return rc;
        /* the forward on a GPU reads these on the host (the position rows are summed
         * there, the few pooled rows standardised there) */
        c->host_only[c->pos_embd - c->tensors] = true;
        c->host_only[c->std_bias - c->tensors] = true;
        c->host_only[c->std_scale - c->tensors] = true;
    }
    if (hp->n_embd_out <= 0 || hp->n_embd_out > 65536)
        return llmfs_errorf(err, EINVAL, "mmproj: bad projection width %d", hp->n_embd_out);
    /* the conv kernel as an F16 matrix [E][3*p*p]; (c, ky, kx) order as the patches */
    if (c->n_tensors + 2 > (int)(sizeof c->tensors / sizeof c->tensors[0]))
        return llmfs_errorf(err, EINVAL, "mmproj: too many tensors");
    tensor *conv = &c->tensors[c->n_tensors++];
    c->is_mat[conv - c->tensors] = true;
    if ((rc = own_f16(c, 0, pw, E, K, false, conv, err)))
        return rc;
    c->host_only[pw - c->tensors] = true;
    c->patch_w = conv;
    if (g3) {
        tensor *pt = &c->tensors[c->n_tensors++];
        c->is_mat[pt - c->tensors] = true;
        if ((rc = own_f16(c, 1, proj, hp->n_embd_out, E, true, pt, err)))
            return rc;
        c->host_only[proj - c->tensors] = true;
        c->proj = pt;
    }

    c->layers = calloc((size_t)hp->n_layer, sizeof *c->layers);
    if (!c->layers)
        return llmfs_errorf(err, ENOMEM, "mmproj: out of memory");
    static const char *const lin_names[LIN_COUNT] = {"attn_q", "attn_k", "attn_v", "attn_out",
                                                    "ffn_gate", "ffn_up", "ffn_down"};
    for (int il = 0; il < hp->n_layer; il++) {
        clip_layer *L = &c->layers[il];
        if ((rc = bind_blk(c, il, "ln1.weight", E, 0, false, false, &L->ln1_w, err)) ||
            (rc = bind_blk(c, il, "ln2.weight", E, 0, false, false, &L->ln2_w, err)) ||
            (rc = bind_blk(c, il, "attn_q.weight", E, E, true, false, &L->wq, err)) ||
            (rc = bind_blk(c, il, "attn_k.weight", E, E, true, false, &L->wk, err)) ||
            (rc = bind_blk(c, il, "attn_v.weight", E, E, true, false, &L->wv, err)) ||
            (rc = bind_blk(c, il, "attn_out.weight", E, E, true, false, &L->wo, err)) ||
            (rc = bind_blk(c, il, "ffn_up.weight", E, F, true, false, &L->w_up, err)) ||
            (rc = bind_blk(c, il, "ffn_down.weight", F, E, true, false, &L->w_down, err)))
            return rc;
        if (g3) {
            if ((rc = bind_blk(c, il, "ln1.bias", E, 0, false, false, &L->ln1_b, err)) ||
                (rc = bind_blk(c, il, "ln2.bias", E, 0, false, false, &L->ln2_b, err)) ||
                (rc = bind_blk(c, il, "attn_q.bias", E, 0, false, false, &L->bq, err)) ||
                (rc = bind_blk(c, il, "attn_k.bias", E, 0, false, false, &L->bk, err)) ||
                (rc = bind_blk(c, il, "attn_v.bias", E, 0, false, false, &L->bv, err)) ||
                (rc = bind_blk(c, il, "attn_out.bias", E, 0, false, false, &L->bo, err)) ||
                (rc = bind_blk(c, il, "ffn_up.bias", F, 0, false, false, &L->b_up, err)) ||
                (rc = bind_blk(c, il, "ffn_down.bias", E, 0, false, false, &L->b_down, err)))
                return rc;
            L->out_scale = 1.0f;
            continue;
        }
        tensor *os;
        if ((rc = bind_blk(c, il, "ffn_gate.weight", E, F, true, false, &L->w_gate, err)) ||
            (rc = bind_blk(c, il, "attn_q_norm.weight", D, 0, false, false, &L->q_norm, err)) ||
            (rc = bind_blk(c, il, "attn_k_norm.weight", D, 0, false, false, &L->k_norm, err)) ||
            (rc = bind_blk(c, il, "attn_post_norm.weight", E, 0, false, false, &L->attn_post_norm, err)) ||
            (rc = bind_blk(c, il, "ffn_post_norm.weight", E, 0, false, false, &L->ffn_post_norm, err)) ||
            (rc = bind_blk(c, il, "out_scale.weight", 1, 0, false, true, &os, err)))
            return rc;
        L->out_scale = scalar_of(os, 1.0f);
        for (int k = 0; k < LIN_COUNT; k++) {
            static const char *const part[4] = {"input_min", "input_max", "output_min", "output_max"};
            float v[4] = {-FLT_MAX, FLT_MAX, -FLT_MAX, FLT_MAX};
            for (int j = 0; j < 4; j++) {
                char suffix[48];
                tensor *t;
                snprintf(suffix, sizeof suffix, "%s.%s", lin_names[k], part[j]);
                if ((rc = bind_blk(c, il, suffix, 1, 0, false, true, &t, err)))
                    return rc;
                v[j] = scalar_of(t, v[j]);
            }
            L->clamp[k] = (clamp4){v[0], v[1], v[2], v[3]};
        }
    }
    return 0;
}

/* The ops the forward on a GPU backend uses. */
static bool dev_capable(const backend *be)
{
    const struct backend_ops *o = be->ops;
    return o->begin && o->matmul && o->rmsnorm && o->add && o->add_bias && o->scale && o->copy2d && o->rope &&
           o->kv_store && o->attention && o->non_causal && o->layer_norm && o->gelu && o->clamp && o->avg_pool &&
           o->upload && o->download && o->sync && o->alloc && o->free;
}

/* Copies every tensor to c->dev: matrices as the backend stores weights, vectors (norms,
 * biases, tables) as plain floats its ops read. */
static int dev_upload(clip_model *c, llmfs_error *err)
{
    backend *d = c->dev;
    c->dtensors = calloc((size_t)c->n_tensors, sizeof *c->dtensors);
    if (!c->dtensors)
        return llmfs_errorf(err, ENOMEM, "mmproj: out of memory");
    for (int i = 0; i < c->n_tensors; i++) {
        const tensor *t = &c->tensors[i];
        tensor *dt = &c->dtensors[i];
        *dt = *t;
        dt->data = NULL;
        if (c->host_only[i] || (t->ne[0] == 1 && t->ne[1] == 1))
            continue;
        const size_t bytes = t->nb2 * (size_t)(t->ne[2] > 0 ? t->ne[2] : 1);
        if (c->is_mat[i] && d->ops->load_weight) {
            int rc = d->ops->load_weight(d, dt, t->data, err);
            if (rc) {
                dt->data = NULL;
                return rc;
            }
        } else {
            dt->data = d->ops->alloc(d, bytes);
            if (!dt->data)
                return llmfs_errorf(err, ENOMEM, "mmproj: no room on %s for %s (%zu bytes)", d->ops->name, t->name,
                                    bytes);
            d->ops->upload(d, dt->data, t->data, bytes);
            dt->be = d;
        }
        c->dev_bytes += bytes;
    }
    return d->ops->check ? d->ops->check(d, err) : 0;
}

clip_model *clip_load(const char *path, int n_threads, llmfs_error *err)
{
    return clip_load_on(path, n_threads, NULL, err);
}

clip_model *clip_load_on(const char *path, int n_threads, backend *dev, llmfs_error *err)
{
    clip_model *c = calloc(1, sizeof *c);
    if (!c) {
        llmfs_errorf(err, ENOMEM, "mmproj: out of memory");
        return NULL;
    }
    gguf_open_opts go = {0};
    c->file = gguf_open(path, &go, err);
    if (!c->file) {
        free(c);
        return NULL;
    }
    c->be = backend_cpu_new(n_threads, n_threads);
    c->act_table = malloc(sizeof(float) * 65536);
    if (!c->be || !c->act_table) {
        llmfs_errorf(err, ENOMEM, "mmproj: out of memory");
        clip_free(c);
        return NULL;
    }
    if (read_hparams(c, err) || bind_weights(c, err)) {
        clip_free(c);
        return NULL;
    }
    /* llama.cpp's CPU GELUs read a table of f16 results indexed by the f16 input */
    for (int i = 0; i < 65536; i++) {
        float x = f16_to_f32((uint16_t)i);
        float y = c->hp.gelu_tanh ? gelu_tanh_f32(x) : gelu_quick_f32(x);
        c->act_table[i] = f16_to_f32(f32_to_f16(y));
    }
    /* the attention kernels take heads of a multiple of 8 dims up to 256 */
    if (dev && dev_capable(dev) && c->hp.head_dim % 8 == 0 && c->hp.head_dim <= 256) {
        c->dev = dev;
        if (dev_upload(c, err)) {
            clip_free(c);
            return NULL;
        }
    }
    return c;
}

const char *clip_device(const clip_model *c)
{
    return c->dev ? c->dev->ops->name : "CPU";
}

uint64_t clip_device_bytes(const clip_model *c)
{
    return c->dev ? c->dev_bytes : 0;
}

bool clip_on_device(const clip_model *c)
{
    return c && c->dev;
}

void clip_free(clip_model *c)
{
    if (!c)
        return;
    if (c->dtensors) {
        for (int i = 0; i < c->n_tensors; i++)
            if (c->dtensors[i].data)
                c->dev->ops->free(c->dev, c->dtensors[i].data);
        free(c->dtensors);
    }
    free(c->layers);
    free(c->owned_f16[0]);
    free(c->owned_f16[1]);
    free(c->act_table);
    backend_free(c->be);
    gguf_close(c->file);
    free(c);
}

/* ---------------------------------------------------------------- sizes */

void clip_image_dims(const clip_model *c, int nx, int ny, int min_tokens, int max_tokens, int *w, int *h)
{
    const clip_hparams *hp = &c->hp;
    if (hp->projector == CLIP_GEMMA3) {
        *w = *h = hp->image_size;
        return;
    }
    /* llama.cpp's calc_size_preserved_ratio, in float32: sides multiples of patch x pool,
     * the pixel count between min and max tokens' worth */
    const int align = hp->patch * hp->pool;
    const int min_t = min_tokens > 0 ? min_tokens : hp->min_tokens;
    const int max_t = max_tokens > 0 ? max_tokens : hp->max_tokens;
    const int64_t min_pixels = (int64_t)min_t * align * align, max_pixels = (int64_t)max_t * align * align;
    int hb = (int)roundf((float)ny / (float)align) * align, wb = (int)roundf((float)nx / (float)align) * align;
    hb = hb > align ? hb : align;
    wb = wb > align ? wb : align;
    if ((int64_t)hb * wb > max_pixels) {
        float beta = sqrtf((float)ny * (float)nx / (float)max_pixels);
        hb = (int)floorf((float)ny / beta / (float)align) * align;
        wb = (int)floorf((float)nx / beta / (float)align) * align;
        hb = hb > align ? hb : align;
        wb = wb > align ? wb : align;
    } else if ((int64_t)hb * wb < min_pixels) {
        float beta = sqrtf((float)min_pixels / ((float)ny * (float)nx));
        hb = (int)ceilf((float)ny * beta / (float)align) * align;
        wb = (int)ceilf((float)nx * beta / (float)align) * align;
    }
    *w = wb;
    *h = hb;
}

int clip_n_tokens(const clip_model *c, int w, int h)
{
    const int s = c->hp.patch * c->hp.pool;
    return (w / s) * (h / s);
}

uint64_t clip_buffer_bytes(const clip_model *c, int max_tokens)
{
    const clip_hparams *hp = &c->hp;
    int T = hp->projector == CLIP_GEMMA3 ? clip_n_tokens(c, hp->image_size, hp->image_size)
                                         : (max_tokens > 0 ? max_tokens : hp->max_tokens);
    uint64_t P = (uint64_t)T * hp->pool * hp->pool, E = hp->n_embd, F = hp->n_ff;
    uint64_t K = 3ull * hp->patch * hp->patch;
    /* patches, x h q k v att, two MLP rows, one head's scores and slices, output */
    const uint64_t cpu = sizeof(float) * (P * K + 6 * P * E + 2 * P * F + P * P + 3 * P * hp->head_dim +
                                          (uint64_t)T * (E + hp->n_embd_out) + 3 * P * hp->patch * hp->patch);
    /* on a GPU: x h q k v att, the MLP rows, the cache's K and V, patches, pooled, output,
     * and the one-token attention kernel's partial results for images of up to 16 patches */
    const uint64_t dev = sizeof(float) * (8 * P * E + 2 * P * F + P * K + (uint64_t)T * (E + hp->n_embd_out) +
                                          16 * (uint64_t)hp->n_head * 16 * (hp->head_dim + 2));
    return cpu > dev ? cpu : dev;
}

int clip_preprocess(const clip_model *c, const image_rgb *img, int min_tokens, int max_tokens, float **pixels,
                    int *w, int *h, llmfs_error *err)
{
    clip_image_dims(c, img->nx, img->ny, min_tokens, max_tokens, w, h);
    image_rgb boxed;
    int rc = image_letterbox(img, *w, *h, &boxed, err);
    if (rc)
        return rc;
    *pixels = malloc(sizeof(float) * 3 * (size_t)*w * *h);
    if (!*pixels) {
        image_free(&boxed);
        return llmfs_errorf(err, ENOMEM, "image: out of memory");
    }
    image_normalize(&boxed, c->hp.mean, c->hp.std, *pixels);
    image_free(&boxed);
    return 0;
}

/* ---------------------------------------------------------------- forward */

/* x[r] = (x[r] - mean) / sqrt(var + eps) * w + b (biased variance) */
static void layer_norm(float *out, const float *x, const float *w, const float *b, int rows, int d, float eps)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * d;
        float *o = out + (size_t)r * d;
        double sum = 0;
        for (int i = 0; i < d; i++)
            sum += xr[i];
        float mean = (float)(sum / d);
        double sq = 0;
        for (int i = 0; i < d; i++) {
            float v = xr[i] - mean;
            o[i] = v;
            sq += (double)v * v;
        }
        float scale = 1.0f / sqrtf((float)(sq / d) + eps);
        for (int i = 0; i < d; i++)
            o[i] = o[i] * scale * w[i] + (b ? b[i] : 0.0f);
    }
}

/* out[r] = x[r] / sqrt(mean(x[r]^2) + eps) * w (w NULL: no weight) */
static void rms_norm(float *out, const float *x, const float *w, int rows, int d, float eps)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * d;
        float *o = out + (size_t)r * d;
        double sq = 0;
        for (int i = 0; i < d; i++)
            sq += (double)xr[i] * xr[i];
        float scale = 1.0f / sqrtf((float)(sq / d) + eps);
        for (int i = 0; i < d; i++)
            o[i] = w ? xr[i] * scale * w[i] : xr[i] * scale;
    }
}

static void add_bias(float *x, const float *b, int rows, int d)
{
    for (int r = 0; r < rows; r++)
        for (int i = 0; i < d; i++)
            x[(size_t)r * d + i] += b[i];
}

static void clampf_n(float *x, size_t n, float lo, float hi)
{
    if (lo == -FLT_MAX && hi == FLT_MAX)
        return;
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] < lo ? lo : x[i] > hi ? hi : x[i];
}

/* The MLP activation from the f16 table: act(f16(x)), as llama.cpp's CPU ops. tanh GELU
 * leaves |x| >= 10 to its limits (0 and x) as ggml does. */
static void activation(const clip_model *c, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        if (c->hp.gelu_tanh && v <= -10.0f)
            x[i] = 0.0f;
        else if (c->hp.gelu_tanh && v >= 10.0f)
            x[i] = v;
        else
            x[i] = c->act_table[f32_to_f16(v)];
    }
}

typedef struct clip_bufs {
    int P, cols, rows;          /* patches, patch grid */
    float *x, *h, *q, *k, *v, *att, *f1, *f2; /* [P][E] x6, [P][F] x2 */
    float *qh, *kh, *vt, *oh, *sc; /* one head: [P][D] x2, [D][P], [P][D], scores [P][P] */
} clip_bufs;

/* out [n][rows of w] = x [n][cols of w] wᵀ, on the projector's CPU backend */
static void matmul(clip_model *c, float *out, const tensor *w, const float *x, int n)
{
    c->be->ops->matmul(c->be, out, w, x, n);
}

/* A clamped linear (gemma4v) or a plain one (gemma3: the clamps are ±FLT_MAX) */
static void linear(clip_model *c, float *out, const tensor *w, float *x, int n, const clamp4 *cl)
{
    const size_t in = (size_t)n * w->ne[0], outn = (size_t)n * w->ne[1];
    if (cl)
        clampf_n(x, in, cl->in_min, cl->in_max);
    matmul(c, out, w, x, n);
    if (cl)
        clampf_n(out, outn, cl->out_min, cl->out_max);
}

/* NEOX rope of dims [off, off + n) of each head at one position (pairs (i, i + n/2)),
 * theta_i = pos * base^(-2i/n), as ggml computes it (theta multiplied along). */
static void rope_part(float *head, int off, int n, int pos, float base)
{
    const float theta_scale = powf(base, -2.0f / (float)n);
    float theta = (float)pos;
    for (int i = 0; i < n / 2; i++) {
        float cs = cosf(theta), sn = sinf(theta);
        float a = head[off + i], b = head[off + i + n / 2];
        head[off + i] = a * cs - b * sn;
        head[off + i + n / 2] = a * sn + b * cs;
        theta *= theta_scale;
    }
}

/* att [P][E] = softmax(q kᵀ * scale) v per head, every patch seeing every patch. The two
 * products go through the backend's matmul with the head's keys and transposed values
 * standing in as F32 weights. */
static void attention(clip_model *c, clip_bufs *B, float scale)
{
    const clip_hparams *hp = &c->hp;
    const int P = B->P, E = hp->n_embd, D = hp->head_dim;
    tensor kt = {.type = T_F32, .ne = {D, P, 1}, .nb1 = sizeof(float) * (size_t)D, .data = B->kh, .be = c->be};
    tensor vt = {.type = T_F32, .ne = {P, D, 1}, .nb1 = sizeof(float) * (size_t)P, .data = B->vt, .be = c->be};
    kt.nb2 = kt.nb1 * (size_t)P;
    vt.nb2 = vt.nb1 * (size_t)D;
    for (int hd = 0; hd < hp->n_head; hd++) {
        for (int p = 0; p < P; p++) {
            memcpy(B->qh + (size_t)p * D, B->q + (size_t)p * E + hd * D, sizeof(float) * D); /* qh [P][D] */
            memcpy(B->kh + (size_t)p * D, B->k + (size_t)p * E + hd * D, sizeof(float) * D); /* kh [P][D] */
            for (int i = 0; i < D; i++)
                B->vt[(size_t)i * P + p] = B->v[(size_t)p * E + hd * D + i];               /* vt [D][P] */
        }
        matmul(c, B->sc, &kt, B->qh, P);                                                    /* sc [P][P] */
        for (int r = 0; r < P; r++) {
            float *s = B->sc + (size_t)r * P, mx = -FLT_MAX;
            for (int j = 0; j < P; j++) {
                s[j] *= scale;
                mx = s[j] > mx ? s[j] : mx;
            }
            double sum = 0;
            for (int j = 0; j < P; j++) {
                s[j] = expf(s[j] - mx);
                sum += s[j];
            }
            float inv = (float)(1.0 / sum);
            for (int j = 0; j < P; j++)
                s[j] *= inv;
        }
        matmul(c, B->oh, &vt, B->sc, P);                                                    /* oh [P][D] */
        for (int p = 0; p < P; p++)
            memcpy(B->att + (size_t)p * E + hd * D, B->oh + (size_t)p * D, sizeof(float) * D);
    }
}

static void layer_gemma3(clip_model *c, const clip_layer *L, clip_bufs *B)
{
    const clip_hparams *hp = &c->hp;
    const int P = B->P, E = hp->n_embd, F = hp->n_ff;
    const size_t PE = (size_t)P * E;
    layer_norm(B->h, B->x, L->ln1_w->data, L->ln1_b->data, P, E, hp->eps);  /* h [P][E] */
    matmul(c, B->q, L->wq, B->h, P);                                         /* q k v [P][E] */
    matmul(c, B->k, L->wk, B->h, P);
    matmul(c, B->v, L->wv, B->h, P);
    add_bias(B->q, L->bq->data, P, E);
    add_bias(B->k, L->bk->data, P, E);
    add_bias(B->v, L->bv->data, P, E);
    attention(c, B, 1.0f / sqrtf((float)hp->head_dim));                     /* att [P][E] */
    matmul(c, B->h, L->wo, B->att, P);                                       /* h [P][E] */
    add_bias(B->h, L->bo->data, P, E);
    for (size_t i = 0; i < PE; i++)
        B->x[i] += B->h[i];
    layer_norm(B->h, B->x, L->ln2_w->data, L->ln2_b->data, P, E, hp->eps);
    matmul(c, B->f1, L->w_up, B->h, P);                                      /* f1 [P][F] */
    add_bias(B->f1, L->b_up->data, P, F);
    activation(c, B->f1, (size_t)P * F);
    matmul(c, B->h, L->w_down, B->f1, P);                                    /* h [P][E] */
    add_bias(B->h, L->b_down->data, P, E);
    for (size_t i = 0; i < PE; i++)
        B->x[i] += B->h[i];
}

static void layer_gemma4v(clip_model *c, const clip_layer *L, clip_bufs *B)
{
    const clip_hparams *hp = &c->hp;
    const int P = B->P, E = hp->n_embd, F = hp->n_ff, H = hp->n_head, D = hp->head_dim;
    const size_t PE = (size_t)P * E;
    const float eps = hp->eps;
    rms_norm(B->h, B->x, L->ln1_w->data, P, E, eps);                        /* h [P][E] */
    /* each linear clamps its own input: three copies of h */
    memcpy(B->att, B->h, sizeof(float) * PE);
    linear(c, B->q, L->wq, B->att, P, &L->clamp[LIN_Q]);                     /* q [P][E] */
    memcpy(B->att, B->h, sizeof(float) * PE);
    linear(c, B->k, L->wk, B->att, P, &L->clamp[LIN_K]);                     /* k [P][E] */
    linear(c, B->v, L->wv, B->h, P, &L->clamp[LIN_V]);                       /* v [P][E] */
    rms_norm(B->q, B->q, L->q_norm->data, P * H, D, eps);                    /* per head [P*H][D] */
    rms_norm(B->k, B->k, L->k_norm->data, P * H, D, eps);
    rms_norm(B->v, B->v, NULL, P * H, D, eps);
    /* 2-D rope: the first half of each head by the patch's column, the second by its row */
    for (int p = 0; p < P; p++) {
        int col = p % B->cols, row = p / B->cols;
        for (int hd = 0; hd < H; hd++) {
            float *qh = B->q + (size_t)p * E + hd * D, *kh = B->k + (size_t)p * E + hd * D;
            rope_part(qh, 0, D / 2, col, 100.0f);
            rope_part(qh, D / 2, D / 2, row, 100.0f);
            rope_part(kh, 0, D / 2, col, 100.0f);
            rope_part(kh, D / 2, D / 2, row, 100.0f);
        }
    }
    attention(c, B, 1.0f);                                                   /* att [P][E] */
    linear(c, B->h, L->wo, B->att, P, &L->clamp[LIN_O]);                     /* h [P][E] */
    rms_norm(B->h, B->h, L->attn_post_norm->data, P, E, eps);
    for (size_t i = 0; i < PE; i++)
        B->x[i] += B->h[i];
    rms_norm(B->h, B->x, L->ln2_w->data, P, E, eps);
    memcpy(B->att, B->h, sizeof(float) * PE);
    linear(c, B->f1, L->w_gate, B->att, P, &L->clamp[LIN_GATE]);             /* f1 [P][F] */
    linear(c, B->f2, L->w_up, B->h, P, &L->clamp[LIN_UP]);                   /* f2 [P][F] */
    activation(c, B->f1, (size_t)P * F);
    for (size_t i = 0; i < (size_t)P * F; i++)
        B->f1[i] *= B->f2[i];
    linear(c, B->h, L->w_down, B->f1, P, &L->clamp[LIN_DOWN]);               /* h [P][E] */
    rms_norm(B->h, B->h, L->ffn_post_norm->data, P, E, eps);
    for (size_t i = 0; i < PE; i++)
        B->x[i] = (B->x[i] + B->h[i]) * L->out_scale;
}

/* pooled [T][E]: the mean of each k x k block of patches, tokens row-major over blocks */
static void avg_pool(const float *x, float *pooled, int cols, int rows, int k, int E)
{
    const int tc = cols / k, tr = rows / k;
    for (int ty = 0; ty < tr; ty++)
        for (int tx = 0; tx < tc; tx++) {
            float *o = pooled + ((size_t)ty * tc + tx) * E;
            for (int i = 0; i < E; i++) {
                float s = 0;
                for (int dy = 0; dy < k; dy++)
                    for (int dx = 0; dx < k; dx++)
                        s += x[((size_t)(ty * k + dy) * cols + tx * k + dx) * E + i];
                o[i] = s / (float)(k * k);
            }
        }
}

/* ---------------------------------------------------------------- forward on a GPU
 *
 * The same steps with the backend's ops on its memory. The patches are cut on the host
 * (a copy, no arithmetic) and uploaded; attention is the backend's own over a one-layer
 * F32 cache of the image's P cells, non-causal, so every patch sees every patch. */

typedef struct dev_bufs {
    backend *be;
    int P, cols, rows;
    float *x, *h, *q, *k, *v, *att, *f1, *f2;   /* [P][E] x6, [P][F] x2 */
    kv_cache kv;                                 /* one layer of P cells */
    struct kv_layer layer;
    int seq_len, seq_top;
    int32_t *pos_seq, *pos_col, *pos_row, *zeros; /* [P] each */
    int8_t *flags;
} dev_bufs;

static const tensor *DT(const clip_model *c, const tensor *t)
{
    return &c->dtensors[t - c->tensors];
}

static const float *DV(const clip_model *c, const tensor *t)
{
    return t ? (const float *)c->dtensors[t - c->tensors].data : NULL;
}

/* The batch of the image's P patches at positions pos (rope) or 0..P-1 (attention). */
static int dev_begin(dev_bufs *B, const int32_t *pos)
{
    fwd_batch fb = {B->P, B->zeros, pos, B->zeros, B->flags};
    return B->be->ops->begin(B->be, &fb);
}

static void dev_linear(const clip_model *c, dev_bufs *B, float *out, const tensor *w, float *x, const clamp4 *cl)
{
    const struct backend_ops *o = B->be->ops;
    const int64_t in = (int64_t)B->P * w->ne[0], outn = (int64_t)B->P * w->ne[1];
    if (cl && (cl->in_min != -FLT_MAX || cl->in_max != FLT_MAX))
        o->clamp(B->be, x, in, cl->in_min, cl->in_max);
    o->matmul(B->be, out, DT(c, w), x, B->P);
    if (cl && (cl->out_min != -FLT_MAX || cl->out_max != FLT_MAX))
        o->clamp(B->be, out, outn, cl->out_min, cl->out_max);
}

/* att = softmax(q kᵀ scale) v over all patches, per head */
static int dev_attention(const clip_model *c, dev_bufs *B, float scale)
{
    const clip_hparams *hp = &c->hp;
    const struct backend_ops *o = B->be->ops;
    int rc = dev_begin(B, B->pos_seq);
    if (rc)
        return rc;
    o->non_causal(B->be);
    o->kv_store(B->be, &B->kv, 0, B->k, B->v, B->P);
    attn_params ap = {.n_head = hp->n_head, .n_head_kv = hp->n_head, .head_dim = hp->head_dim, .scale = scale,
                      .flash = true};
    o->attention(B->be, B->att, B->q, &B->kv, 0, B->P, &ap);
    return 0;
}

static int dev_layer_gemma3(const clip_model *c, const clip_layer *L, dev_bufs *B)
{
    const clip_hparams *hp = &c->hp;
    const struct backend_ops *o = B->be->ops;
    backend *be = B->be;
    const int P = B->P, E = hp->n_embd, F = hp->n_ff;
    const int64_t PE = (int64_t)P * E;
    const int act = hp->gelu_tanh ? GELU_TANH : GELU_QUICK;
    o->layer_norm(be, B->h, B->x, DV(c, L->ln1_w), DV(c, L->ln1_b), P, E, hp->eps);
    o->matmul(be, B->q, DT(c, L->wq), B->h, P);
    o->matmul(be, B->k, DT(c, L->wk), B->h, P);
    o->matmul(be, B->v, DT(c, L->wv), B->h, P);
    o->add_bias(be, B->q, DV(c, L->bq), P, E);
    o->add_bias(be, B->k, DV(c, L->bk), P, E);
    o->add_bias(be, B->v, DV(c, L->bv), P, E);
    int rc = dev_attention(c, B, 1.0f / sqrtf((float)hp->head_dim));
    if (rc)
        return rc;
    o->matmul(be, B->h, DT(c, L->wo), B->att, P);
    o->add_bias(be, B->h, DV(c, L->bo), P, E);
    o->add(be, B->x, B->h, PE);
    o->layer_norm(be, B->h, B->x, DV(c, L->ln2_w), DV(c, L->ln2_b), P, E, hp->eps);
    o->matmul(be, B->f1, DT(c, L->w_up), B->h, P);
    o->add_bias(be, B->f1, DV(c, L->b_up), P, F);
    o->gelu(be, B->f1, B->f1, NULL, (int64_t)P * F, act);
    o->matmul(be, B->h, DT(c, L->w_down), B->f1, P);
    o->add_bias(be, B->h, DV(c, L->b_down), P, E);
    o->add(be, B->x, B->h, PE);
    return 0;
}

static int dev_layer_gemma4v(const clip_model *c, const clip_layer *L, dev_bufs *B)
{
    const clip_hparams *hp = &c->hp;
    const struct backend_ops *o = B->be->ops;
    backend *be = B->be;
    const int P = B->P, E = hp->n_embd, F = hp->n_ff, H = hp->n_head, D = hp->head_dim;
    const int64_t PE = (int64_t)P * E;
    const float eps = hp->eps;
    o->rmsnorm(be, B->h, B->x, DV(c, L->ln1_w), P, E, eps);
    /* each linear clamps its own input: copies of h */
    o->copy2d(be, B->att, E, B->h, E, P, E);
    dev_linear(c, B, B->q, L->wq, B->att, &L->clamp[LIN_Q]);
    o->copy2d(be, B->att, E, B->h, E, P, E);
    dev_linear(c, B, B->k, L->wk, B->att, &L->clamp[LIN_K]);
    dev_linear(c, B, B->v, L->wv, B->h, &L->clamp[LIN_V]);
    o->rmsnorm(be, B->q, B->q, DV(c, L->q_norm), P * H, D, eps);
    o->rmsnorm(be, B->k, B->k, DV(c, L->k_norm), P * H, D, eps);
    o->rmsnorm(be, B->v, B->v, NULL, P * H, D, eps);
    /* 2-D rope: the first half of each head at the patch's column, the second at its row */
    rope_params rp = {.n_rot = D / 2, .neox = true, .freq_base = 100.0f, .freq_scale = 1.0f};
    int rc = dev_begin(B, B->pos_col);
    if (rc)
        return rc;
    o->rope(be, B->q, P, H, D, &rp);
    o->rope(be, B->k, P, H, D, &rp);
    if ((rc = dev_begin(B, B->pos_row)))
        return rc;
    o->rope(be, B->q + D / 2, P, H, D, &rp);
    o->rope(be, B->k + D / 2, P, H, D, &rp);
    if ((rc = dev_attention(c, B, 1.0f)))
        return rc;
    dev_linear(c, B, B->h, L->wo, B->att, &L->clamp[LIN_O]);
    o->rmsnorm(be, B->h, B->h, DV(c, L->attn_post_norm), P, E, eps);
    o->add(be, B->x, B->h, PE);
    o->rmsnorm(be, B->h, B->x, DV(c, L->ln2_w), P, E, eps);
    o->copy2d(be, B->att, E, B->h, E, P, E);
    dev_linear(c, B, B->f1, L->w_gate, B->att, &L->clamp[LIN_GATE]);
    dev_linear(c, B, B->f2, L->w_up, B->h, &L->clamp[LIN_UP]);
    o->gelu(be, B->f1, B->f1, B->f2, (int64_t)P * F, hp->gelu_tanh ? GELU_TANH : GELU_QUICK);
    dev_linear(c, B, B->h, L->w_down, B->f1, &L->clamp[LIN_DOWN]);
    o->rmsnorm(be, B->h, B->h, DV(c, L->ffn_post_norm), P, E, eps);
    o->add(be, B->x, B->h, PE);
    if (L->out_scale != 1.0f)
        o->scale(be, B->x, L->out_scale, PE);
    return 0;
}

static int encode_dev(clip_model *c, const float *pixels, int w, int h, float *out, llmfs_error *err)
{
    const clip_hparams *hp = &c->hp;
    backend *be = c->dev;
    const struct backend_ops *o = be->ops;
    const int ps = hp->patch, E = hp->n_embd, F = hp->n_ff, K = 3 * ps * ps, O = hp->n_embd_out;
    const bool g3 = hp->projector == CLIP_GEMMA3;
    dev_bufs B = {.be = be, .cols = w / ps, .rows = h / ps};
    const int P = B.P = B.cols * B.rows, T = clip_n_tokens(c, w, h);
    const size_t PE = (size_t)P * E;

    /* host: the patches [P][K], the position rows [P][E] (gemma4v), the batch arrays */
    float *patches = malloc(sizeof(float) * (size_t)P * (K > E ? K : E));
    float *pooled = malloc(sizeof(float) * (size_t)T * E);
    int32_t *ints = malloc(sizeof(int32_t) * 4 * (size_t)P);
    B.flags = calloc((size_t)P, 1);
    /* device: x h q k v att, f1 f2, the cache's K and V, the patches, pooled, out */
    float *mem = o->alloc(be, sizeof(float) * (6 * PE + 2 * (size_t)P * F + 2 * PE + (size_t)P * K +
                                              (size_t)T * E + (size_t)T * O));
    int rc = 0;
    if (!patches || !pooled || !ints || !B.flags || !mem) {
        rc = llmfs_errorf(err, ENOMEM, "mmproj: out of memory for a %dx%d image on %s", w, h, o->name);
        goto done;
    }
    float *m = mem;
    B.x = m, m += PE;
    B.h = m, m += PE;
    B.q = m, m += PE;
    B.k = m, m += PE;
    B.v = m, m += PE;
    B.att = m, m += PE;
    B.f1 = m, m += (size_t)P * F;
    B.f2 = m, m += (size_t)P * F;
    float *kc = m, *vc = m + PE;
    m += 2 * PE;
    float *dpatches = m;
    m += (size_t)P * K;
    float *dpooled = m;
    m += (size_t)T * E;
    float *dout = m;
    B.pos_seq = ints, B.pos_col = ints + P, B.pos_row = ints + 2 * P, B.zeros = ints + 3 * P;
    for (int p = 0; p < P; p++) {
        B.pos_seq[p] = p;
        B.pos_col[p] = p % B.cols;
        B.pos_row[p] = p / B.cols;
        B.zeros[p] = 0;
    }
    B.kv = (kv_cache){.n_layer = 1, .n_ctx = P, .n_seq = 1, .n_embd_kv = E, .head_dim = hp->head_dim,
                      .type_k = T_F32, .type_v = T_F32, .layer = &B.layer, .seq_len = &B.seq_len,
                      .seq_top = &B.seq_top};
    B.layer = (struct kv_layer){.k = kc, .v = vc, .be = be, .k_row = sizeof(float) * (size_t)E,
                                .v_row = sizeof(float) * (size_t)E, .n_embd_kv = E, .head_dim = hp->head_dim,
                                .n_cells = P};
    if ((rc = dev_begin(&B, B.pos_seq))) {
        rc = llmfs_errorf(err, -rc, "mmproj: %s refused the image", o->name);
        goto done;
    }

    /* patch embedding: the (c, ky, kx) block of each patch times the kernel */
    const size_t plane = (size_t)w * h;
    for (int p = 0; p < P; p++) {
        int px = p % B.cols, py = p / B.cols;
        float *q = patches + (size_t)p * K;
        for (int ch = 0; ch < 3; ch++)
            for (int ky = 0; ky < ps; ky++)
                for (int kx = 0; kx < ps; kx++) {
                    float v = pixels[ch * plane + (size_t)(py * ps + ky) * w + px * ps + kx];
                    *q++ = g3 ? v : v * 2.0f - 1.0f;
                }
    }
    o->upload(be, dpatches, patches, sizeof(float) * (size_t)P * K);
    o->matmul(be, B.x, DT(c, c->patch_w), dpatches, P);
    if (g3) {
        o->add_bias(be, B.x, DV(c, c->patch_b), P, E);
        o->add(be, B.x, DV(c, c->pos_embd), (int64_t)PE);
    } else {
        /* the column and row tables' rows of each patch, summed on the host */
        const float *tcol = c->pos_embd->data, *trow = tcol + (size_t)c->n_pos * E;
        o->sync(be); /* the patches' host buffer is reused */
        for (int p = 0; p < P; p++) {
            int col = p % B.cols, row = p / B.cols;
            for (int i = 0; i < E; i++)
                patches[(size_t)p * E + i] = tcol[(size_t)col * E + i] + trow[(size_t)row * E + i];
        }
        o->upload(be, B.h, patches, sizeof(float) * PE);
        o->add(be, B.x, B.h, (int64_t)PE);
    }

    for (int il = 0; il < hp->n_layer && !rc; il++)
        rc = g3 ? dev_layer_gemma3(c, &c->layers[il], &B) : dev_layer_gemma4v(c, &c->layers[il], &B);
    if (rc) {
        rc = llmfs_errorf(err, -rc, "mmproj: %s refused the image", o->name);
        goto done;
    }

    if (g3) {
        o->layer_norm(be, B.x, B.x, DV(c, c->post_ln_w), DV(c, c->post_ln_b), P, E, hp->eps);
        o->avg_pool(be, dpooled, B.x, B.cols, B.rows, hp->pool, E);
        o->rmsnorm(be, dpooled, dpooled, DV(c, c->soft_emb_norm), T, E, hp->eps);
    } else {
        /* the standardisation and its norm on the host: T rows */
        o->avg_pool(be, dpooled, B.x, B.cols, B.rows, hp->pool, E);
        o->download(be, pooled, dpooled, sizeof(float) * (size_t)T * E);
        const float s = sqrtf((float)E), *sb = c->std_bias->data, *ss = c->std_scale->data;
        for (int t = 0; t < T; t++)
            for (int i = 0; i < E; i++) {
                float *v = &pooled[(size_t)t * E + i];
                *v = (*v * s - sb[i]) * ss[i];
            }
        rms_norm(pooled, pooled, NULL, T, E, hp->eps);
        o->upload(be, dpooled, pooled, sizeof(float) * (size_t)T * E);
    }
    o->matmul(be, dout, DT(c, c->proj), dpooled, T);
    o->download(be, out, dout, sizeof(float) * (size_t)T * O);
    rc = o->check ? o->check(be, err) : 0;
done:
    if (mem) {
        o->sync(be);
        o->free(be, mem);
    }
    free(patches);
    free(pooled);
    free(ints);
    free(B.flags);
    return rc;
}

int clip_encode(clip_model *c, const float *pixels, int w, int h, float *out, llmfs_error *err)
{
    const clip_hparams *hp = &c->hp;
    const int ps = hp->patch, E = hp->n_embd, F = hp->n_ff, D = hp->head_dim, K = 3 * ps * ps;
    const bool g3 = hp->projector == CLIP_GEMMA3;
    if (w <= 0 || h <= 0 || w % (ps * hp->pool) || h % (ps * hp->pool) ||
        (g3 && (w != hp->image_size || h != hp->image_size)) ||
        (!g3 && (w / ps > c->n_pos || h / ps > c->n_pos)))
        return llmfs_errorf(err, EINVAL, "mmproj: the tower cannot take a %dx%d image", w, h);
    if (c->dev)
        return encode_dev(c, pixels, w, h, out, err);
    clip_bufs B = {.cols = w / ps, .rows = h / ps};
    const int P = B.P = B.cols * B.rows, T = clip_n_tokens(c, w, h);
    const size_t PE = (size_t)P * E;
    float *mem = malloc(sizeof(float) * (PE * 6 + (size_t)P * F * 2 + (size_t)P * D * 4 + (size_t)P * P +
                                         (size_t)P * K));
    int32_t *ints = malloc(sizeof(int32_t) * 3 * (size_t)P);
    int8_t *flags = calloc((size_t)P, 1);
    if (!mem || !ints || !flags) {
        free(mem);
        free(ints);
        free(flags);
        return llmfs_errorf(err, ENOMEM, "mmproj: out of memory for a %dx%d image", w, h);
    }
    float *m = mem;
    B.x = m, m += PE;
    B.h = m, m += PE;
    B.q = m, m += PE;
    B.k = m, m += PE;
    B.v = m, m += PE;
    B.att = m, m += PE;
    B.f1 = m, m += (size_t)P * F;
    B.f2 = m, m += (size_t)P * F;
    B.qh = m, m += (size_t)P * D;
    B.kh = m, m += (size_t)P * D;
    B.vt = m, m += (size_t)P * D;
    B.oh = m, m += (size_t)P * D;
    B.sc = m, m += (size_t)P * P;
    float *patches = m;

    /* the backend's threads work for a batch of P rows */
    for (int i = 0; i < P; i++) {
        ints[i] = 0;
        ints[P + i] = i;
        ints[2 * P + i] = 0;
    }
    fwd_batch fb = {P, ints, ints + P, ints + 2 * P, flags};
    int rc = c->be->ops->begin(c->be, &fb);
    if (rc) {
        free(mem);
        free(ints);
        free(flags);
        return llmfs_errorf(err, -rc, "mmproj: the CPU backend refused the image");
    }

    /* patches [P][3*ps*ps], each the (c, ky, kx) block of its patch; gemma4v maps the
     * pixels to 2x - 1 first */
    const size_t plane = (size_t)w * h;
    for (int p = 0; p < P; p++) {
        int px = p % B.cols, py = p / B.cols;
        float *o = patches + (size_t)p * K;
        for (int ch = 0; ch < 3; ch++)
            for (int ky = 0; ky < ps; ky++)
                for (int kx = 0; kx < ps; kx++) {
                    float v = pixels[ch * plane + (size_t)(py * ps + ky) * w + px * ps + kx];
                    *o++ = g3 ? v : v * 2.0f - 1.0f;
                }
    }
    matmul(c, B.x, c->patch_w, patches, P);                                  /* x [P][E] */
    if (g3) {
        add_bias(B.x, c->patch_b->data, P, E);
        const float *pe = c->pos_embd->data;                                 /* [P][E] */
        for (size_t i = 0; i < PE; i++)
            B.x[i] += pe[i];
    } else {
        const float *tcol = c->pos_embd->data, *trow = tcol + (size_t)c->n_pos * E; /* [n_pos][E] x2 */
        for (int p = 0; p < P; p++) {
            int col = p % B.cols, row = p / B.cols;
            for (int i = 0; i < E; i++)
                B.x[(size_t)p * E + i] += tcol[(size_t)col * E + i] + trow[(size_t)row * E + i];
        }
    }

    for (int il = 0; il < hp->n_layer; il++) {
        if (g3)
            layer_gemma3(c, &c->layers[il], &B);
        else
            layer_gemma4v(c, &c->layers[il], &B);
    }

    float *pooled = B.h;                                                     /* [T][E] */
    if (g3) {
        layer_norm(B.x, B.x, c->post_ln_w->data, c->post_ln_b->data, P, E, hp->eps);
        avg_pool(B.x, pooled, B.cols, B.rows, hp->pool, E);
        rms_norm(pooled, pooled, c->soft_emb_norm->data, T, E, hp->eps);
    } else {
        avg_pool(B.x, pooled, B.cols, B.rows, hp->pool, E);
        const float s = sqrtf((float)E), *sb = c->std_bias->data, *ss = c->std_scale->data;
        for (int t = 0; t < T; t++)
            for (int i = 0; i < E; i++) {
                float *v = &pooled[(size_t)t * E + i];
                *v = (*v * s - sb[i]) * ss[i];
            }
        rms_norm(pooled, pooled, NULL, T, E, hp->eps);
    }
    matmul(c, out, c->proj, pooled, T);                                     /* out [T][O] */
    rc = c->be->ops->check ? c->be->ops->check(c->be, err) : 0;
    free(mem);
    free(ints);
    free(flags);
    return rc;
}
