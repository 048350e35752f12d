/* vision.h — images in prompts: an image encoded to input rows, and the token sequence
 * of a prompt whose text refers to images.
 *
 * As llama.cpp's mtmd: the prompt text is cut at each media marker; each text part is
 * tokenized on its own (special tokens parsed, no BOS), each image is wrapped in the
 * projector's begin/end strings (tokenized as text), and its rows take one position per
 * image token, written -1 in the token sequence. BOS goes first where the vocabulary
 * adds one. The text model reads such a span through model_forward_embd, non-causal.
 */
#ifndef LLMFS_VISION_H
#define LLMFS_VISION_H

#include "clip.h"
#include "llmfs.h"
#include "tokenizer.h"

#include <stdbool.h>
#include <stdint.h>

/* One image as the text model takes it. */
typedef struct vision_embd {
    int n_tok, n_embd;       /* rows, and their width (the text model's n_embd) */
    int nx, ny;              /* the picture's size */
    float *rows;             /* [n_tok][n_embd], malloc'd */
} vision_embd;

/* A run of image positions in a token sequence and the rows they take. */
typedef struct vision_span {
    int start, n;
    const float *rows;       /* [n][n_embd], owned by a vision_embd */
} vision_span;

void vision_embd_free(vision_embd *v);

/* The strings llama.cpp puts around an image for this projector type. */
void vision_markers(const clip_model *c, const char **begin, const char **end);

/* Decoded picture -> rows (preprocess and the tower). min/max_tokens <= 0: the
 * projector's own limits. 0, or a negative errno with the reason in err. */
int vision_encode(clip_model *c, const image_rgb *img, int min_tokens, int max_tokens, vision_embd *out,
                  llmfs_error *err);

/* How often marker occurs in text (0 for an empty marker). */
int vision_count_markers(const char *text, const char *marker);

/* The token sequence of text with imgs[i] at the i-th marker (the counts must match:
 * -EINVAL otherwise). add_bos: BOS first unless the text's first token already is one.
 * *toks and *spans malloc'd; returns the token count or a negative errno. */
int vision_tokenize(const tokenizer *tok, const char *text, const char *marker, const char *begin,
                    const char *end, const vision_embd *const *imgs, int n_imgs, bool add_bos, int32_t **toks,
                    vision_span **spans, llmfs_error *err);

#endif
