/* clip_mk.c — a gemma3 projector file of a given shape with random weights, for
 * measuring the tower's speed (llmfs bench --mmproj-shape). The numbers are only
 * plausible in scale (normal, 1/sqrt(fan in)); what it computes means nothing. */
#include "clip.h"

#include "gguf.h"
#include "quant.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The tower and projection of a released Gemma 3 with its text width. */
static const struct {
    const char *name;
    clip_mk_shape shape;
} shapes[] = {
    {"gemma3-4b", {896, 14, 1152, 4304, 27, 16, 2560}},
    {"gemma3-12b", {896, 14, 1152, 4304, 27, 16, 3840}},
    {"gemma3-27b", {896, 14, 1152, 4304, 27, 16, 5376}},
};

bool clip_mk_shape_find(const char *name, clip_mk_shape *out)
{
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (!strcmp(shapes[i].name, name)) {
            *out = shapes[i].shape;
            return true;
        }
    return false;
}

typedef struct fill_spec {
    int type;          /* T_F32 or T_F16 */
    int64_t n;         /* elements */
    float scale;       /* standard deviation; 0: the constant `mean` */
    float mean;
    uint64_t seed;
} fill_spec;

static uint64_t next(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* A sum of four uniforms: near enough to normal for weights nobody reads */
static float roughly_normal(uint64_t *s)
{
    float u = 0;
    for (int i = 0; i < 4; i++)
        u += (float)(next(s) >> 40) / (float)(1ull << 24);
    return (u - 2.0f) * 1.7320508f;
}

static int fill(void *ctx, const gguf_tensor *t, gguf_emit_fn emit, void *sink)
{
    const fill_spec *f = ctx;
    (void)t;
    uint64_t s = f->seed | 1;
    enum { CHUNK = 1 << 16 };
    static _Thread_local uint8_t buf[CHUNK * 4];
    for (int64_t i0 = 0; i0 < f->n; i0 += CHUNK) {
        int64_t n = f->n - i0 < CHUNK ? f->n - i0 : CHUNK;
        for (int64_t i = 0; i < n; i++) {
            float v = f->mean + (f->scale ? f->scale * roughly_normal(&s) : 0.0f);
            if (f->type == T_F16) {
                uint16_t h = f32_to_f16(v);
                memcpy(buf + i * 2, &h, 2);
            } else {
                memcpy(buf + i * 4, &v, 4);
            }
        }
        int rc = emit(sink, buf, (size_t)n * (f->type == T_F16 ? 2 : 4));
        if (rc < 0)
            return rc;
    }
    return 0;
}

int clip_mk_write(const char *path, const clip_mk_shape *s, uint64_t seed, llmfs_error *err)
{
    const int side = s->image_size / s->patch, P = side * side, E = s->width, F = s->ff;
    if (s->image_size % s->patch || side % 4 || E % s->heads)
        return llmfs_errorf(err, EINVAL, "mkmmproj: image %d, patch %d, width %d, %d heads do not divide",
                            s->image_size, s->patch, E, s->heads);
    gguf_writer *w = gguf_writer_new();
    int n_specs = 0, cap = 8 + 16 * s->layers;
    fill_spec *sp = calloc((size_t)cap, sizeof *sp);
    if (!w || !sp) {
        gguf_writer_free(w);
        free(sp);
        return llmfs_errorf(err, ENOMEM, "mkmmproj: out of memory");
    }
    gguf_w_str(w, "general.architecture", "clip");
    gguf_w_str(w, "general.type", "mmproj");
    gguf_w_str(w, "clip.projector_type", "gemma3");
    gguf_w_bool(w, "clip.has_vision_encoder", true);
    gguf_w_bool(w, "clip.use_gelu", true);
    gguf_w_u32(w, "clip.vision.image_size", (uint32_t)s->image_size);
    gguf_w_u32(w, "clip.vision.patch_size", (uint32_t)s->patch);
    gguf_w_u32(w, "clip.vision.embedding_length", (uint32_t)E);
    gguf_w_u32(w, "clip.vision.feed_forward_length", (uint32_t)F);
    gguf_w_u32(w, "clip.vision.block_count", (uint32_t)s->layers);
    gguf_w_u32(w, "clip.vision.attention.head_count", (uint32_t)s->heads);
    gguf_w_f32(w, "clip.vision.attention.layer_norm_epsilon", 1e-6f);
    gguf_w_u32(w, "clip.vision.projection_dim", (uint32_t)s->n_embd_out);
    const float half[3] = {0.5f, 0.5f, 0.5f};
    gguf_w_arr_f32(w, "clip.vision.image_mean", half, 3);
    gguf_w_arr_f32(w, "clip.vision.image_std", half, 3);

    /* name, type, ne0, ne1 (1: a vector), scale (0: constant mean), mean */
#define ADD(nm, ty, a, b, sc, mn)                                                                     \
    do {                                                                                              \
        fill_spec *f = &sp[n_specs++];                                                                \
        *f = (fill_spec){ty, (int64_t)(a) * (b), sc, mn, seed * 0x9e3779b97f4a7c15ull + (uint64_t)n_specs}; \
        int64_t ne[2] = {a, b};                                                                       \
        gguf_w_tensor(w, nm, ty, (b) > 1 ? 2 : 1, ne, fill, f);                                       \
    } while (0)
    {
        int64_t ne[4] = {s->patch, s->patch, 3, E};
        fill_spec *f = &sp[n_specs++];
        *f = (fill_spec){T_F32, ne[0] * ne[1] * ne[2] * ne[3], 1.0f / sqrtf(3.0f * s->patch * s->patch), 0,
                         seed + 1};
        gguf_w_tensor(w, "v.patch_embd.weight", T_F32, 4, ne, fill, f);
    }
    ADD("v.patch_embd.bias", T_F32, E, 1, 0.05f, 0);
    ADD("v.position_embd.weight", T_F32, E, P, 0.3f, 0);
    const float wi = 1.0f / sqrtf((float)E), wf = 1.0f / sqrtf((float)F);
    for (int il = 0; il < s->layers; il++) {
        char nm[64];
#define BLK(suffix, ty, a, b, sc, mn)                                                                 \
    do {                                                                                              \
        snprintf(nm, sizeof nm, "v.blk.%d.%s", il, suffix);                                          \
        ADD(nm, ty, a, b, sc, mn);                                                                    \
    } while (0)
        BLK("ln1.weight", T_F32, E, 1, 0, 1);
        BLK("ln1.bias", T_F32, E, 1, 0, 0);
        BLK("attn_q.weight", T_F16, E, E, wi, 0);
        BLK("attn_q.bias", T_F32, E, 1, 0.05f, 0);
        BLK("attn_k.weight", T_F16, E, E, wi, 0);
        BLK("attn_k.bias", T_F32, E, 1, 0.05f, 0);
        BLK("attn_v.weight", T_F16, E, E, wi, 0);
        BLK("attn_v.bias", T_F32, E, 1, 0.05f, 0);
        BLK("attn_out.weight", T_F16, E, E, wi, 0);
        BLK("attn_out.bias", T_F32, E, 1, 0.05f, 0);
        BLK("ln2.weight", T_F32, E, 1, 0, 1);
        BLK("ln2.bias", T_F32, E, 1, 0, 0);
        BLK("ffn_up.weight", T_F16, E, F, wi, 0);
        BLK("ffn_up.bias", T_F32, F, 1, 0.05f, 0);
        BLK("ffn_down.weight", T_F16, F, E, wf, 0);
        BLK("ffn_down.bias", T_F32, E, 1, 0.05f, 0);
#undef BLK
    }
    ADD("v.post_ln.weight", T_F32, E, 1, 0, 1);
    ADD("v.post_ln.bias", T_F32, E, 1, 0, 0);
    ADD("mm.soft_emb_norm.weight", T_F32, E, 1, 0, 1);
    ADD("mm.input_projection.weight", T_F16, s->n_embd_out, E, wi, 0);
#undef ADD
    int rc = gguf_writer_write(w, path, err);
    gguf_writer_free(w);
    free(sp);
    return rc;
}
