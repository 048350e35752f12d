/* clip.h — a vision projector (mmproj GGUF): the ViT tower and the projection that turn
 * one image into rows of text-model input embeddings.
 *
 * Two projector types, as llama.cpp's tools/mtmd reads them:
 *   gemma3   SigLIP tower (LayerNorm, tanh GELU), fixed square input, 4x4 average
 *            pooling, soft-embedding RMS norm, projection to the text width;
 *   gemma4v  dynamic input size (aspect ratio kept, token count between a minimum and a
 *            maximum), RMS-norm tower with q/k/v norms, 2-D rope, clamped linears,
 *            gelu_quick gated MLP, layer scalars, 3x3 pooling, standardisation.
 * The forward runs on the CPU (its own backend instance and threads), or on a GPU
 * backend (clip_load_on); matrices go through the backend's matmul, which rounds
 * activations to the weight's dot type as llama.cpp does (f16 for F16 weights).
 */
#ifndef LLMFS_CLIP_H
#define LLMFS_CLIP_H

#include "backend.h"
#include "image.h"
#include "llmfs.h"

#include <stdbool.h>
#include <stdint.h>

enum clip_projector { CLIP_GEMMA3, CLIP_GEMMA4V };

typedef struct clip_hparams {
    int projector;          /* enum clip_projector */
    const char *type_name;  /* "gemma3", "gemma4v" */
    int image_size;         /* gemma3: the fixed input side; gemma4v: informational */
    int patch;              /* patch side in pixels */
    int n_embd, n_ff, n_layer, n_head, head_dim; /* the tower */
    int pool;               /* pooling kernel (= stride) in patches */
    int n_embd_out;         /* output rows' width: the text model's n_embd */
    float eps;              /* every norm's epsilon */
    float mean[3], std[3];  /* per-channel normalisation of [0,1] pixels */
    bool gelu_tanh;         /* MLP activation: tanh GELU (clip.use_gelu) or gelu_quick */
    int min_tokens, max_tokens; /* gemma4v: the file's image-token limits (defaults 40, 280) */
} clip_hparams;

typedef struct clip_model clip_model;

/* Loads an mmproj file; n_threads <= 0: the machine's cores. -ENOENT, -EINVAL (not a
 * projector llmfs runs, reason in err), -ENOMEM. */
clip_model *clip_load(const char *path, int n_threads, llmfs_error *err);
/* The same with the forward on backend dev (a GPU: the text model's, so the tower runs
 * where its layers do), its weights copied there; NULL, or a backend without the ops
 * the tower needs (backend.h: layer_norm, gelu, clamp, avg_pool, non_causal, ...): the
 * CPU as clip_load. dev must outlive the projector, and an encode uses it as a forward
 * call does: not at the same time as another. */
clip_model *clip_load_on(const char *path, int n_threads, backend *dev, llmfs_error *err);
void clip_free(clip_model *c);
/* Where the forward runs ("CPU", "CUDA"), and the bytes of weights it placed there (0
 * on the CPU, which reads the mapped file). */
const char *clip_device(const clip_model *c);
uint64_t clip_device_bytes(const clip_model *c);
/* Whether c (NULL: none) runs on a GPU backend, which it then shares with the text model. */
bool clip_on_device(const clip_model *c);
const clip_hparams *clip_hp(const clip_model *c);
/* The CPU threads its forward runs on. */
int clip_threads(const clip_model *c);
/* Bytes of the projector's weights (what the file maps; its copy on a GPU takes no
 * more), and of the scratch an image of the largest size the limits allow needs (on the
 * CPU or on a GPU, whichever is more). */
uint64_t clip_weight_bytes(const clip_model *c);
uint64_t clip_buffer_bytes(const clip_model *c, int max_tokens);

/* The preprocessed size w x h of an nx x ny picture and its token count. min/max_tokens
 * <= 0 take the file's (gemma4v only; gemma3's size is fixed). */
void clip_image_dims(const clip_model *c, int nx, int ny, int min_tokens, int max_tokens, int *w, int *h);
int clip_n_tokens(const clip_model *c, int w, int h);

/* pixels [3][h][w] (malloc'd, *w and *h set): the decoded image resized and normalised
 * as the tower's input. 0 or -ENOMEM. */
int clip_preprocess(const clip_model *c, const image_rgb *img, int min_tokens, int max_tokens,
                    float **pixels, int *w, int *h, llmfs_error *err);

/* out [clip_n_tokens(w, h)][n_embd_out] = projector(tower(pixels [3][h][w])). 0, or
 * -EINVAL (a size the tower cannot take) / -ENOMEM with the reason in err. One call at
 * a time per projector. */
int clip_encode(clip_model *c, const float *pixels, int w, int h, float *out, llmfs_error *err);

/* A gemma3 projector of a given shape with random weights (src/clip_mk.c), for speed
 * measurements: image side, patch, tower width, feed-forward width, layers, heads, and
 * the text width it projects to. */
typedef struct clip_mk_shape {
    int image_size, patch, width, ff, layers, heads, n_embd_out;
} clip_mk_shape;
/* "gemma3-4b", "gemma3-12b", "gemma3-27b": false if unknown. */
bool clip_mk_shape_find(const char *name, clip_mk_shape *out);
/* Writes the file; 0 or a negative errno with the reason in err. */
int clip_mk_write(const char *path, const clip_mk_shape *s, uint64_t seed, llmfs_error *err);

#endif
