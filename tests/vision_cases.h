/* vision_cases.h — llama.cpp's vision fixtures (fixtures/<model>/vision-*) and the checks
 * that test_vision (CPU) and gpu_vision (the text model and the tower on a GPU) share. */
#ifndef LLMFS_VISION_CASES_H
#define LLMFS_VISION_CASES_H

#include "backend.h"
#include "clip.h"
#include "image.h"

#include <stddef.h>

typedef struct vcase {
    char dir[1024], name[300];
    char model[1024], mmproj[1024], image[1024];
    int nx, ny, n_img, img_pos, n_embd, min_tok, max_tok, ph, pw;
} vcase;

extern vcase vcases[16];
extern int n_vcases;

/* Finds every case under the shared fixtures (a broken one ends the program). */
void vcase_find(void);
/* A file of the case's folder (malloc'd; fails the running test when missing). */
void *vcase_file(const vcase *c, const char *file, size_t *len);
/* The projector at path, its forward on be (NULL: its own CPU backend). */
clip_model *vcase_clip(const char *path, backend *be);
/* The stored decoded image as an image_rgb (malloc'd pixels). */
image_rgb vcase_stored_rgb(const vcase *c);
/* The image rows from the image file through our whole path (decode, preprocess, tower). */
float *vcase_encode(const vcase *c, clip_model *cm);
/* Checks rows against image_embd.f32 (5e-3 relative RMS per row); returns the worst. */
double vcase_check_embd(const vcase *c, const float *rows);
/* The text model (ngl layers on the GPU) fed the prompt's tokens and the image rows as
 * llama.cpp's chunks (text, the image non-causal, text): the stored logits within the
 * text model's tolerance and the greedy continuation by the margin rule. Returns the
 * worst relative RMS error. */
double vcase_check_text(const vcase *c, const float *embd, int ngl);

#endif
