/* image.h — decoding PNG and JPEG files to 8-bit RGB, and the resizes and normalisation
 * a vision projector's input needs.
 *
 * Decoding goes through libpng and libjpeg. What comes out matches what llama.cpp's
 * stb_image gives for the same file: three channels, alpha dropped, grey expanded,
 * 16-bit samples reduced to their high byte, palettes expanded. PNG bytes are exactly
 * stb_image's. Grey and 4:4:4 JPEGs take libjpeg's coefficients (its Huffman decoding
 * and markers) through an integer IDCT and colour conversion with stb_image's constants
 * and rounding, so they match it byte for byte; chroma-subsampled ones use libjpeg's own
 * IDCT and upsampling, a few steps from stb_image's.
 *
 * The resize is llama.cpp's (mtmd-image.cpp img_tool::resize with RESIZE_ALGO_BILINEAR,
 * PAD_CEIL): the picture keeps its aspect ratio, scaled to fit the target and centred on
 * a black canvas; the bilinear filter is corner-aligned, computed in float32 and
 * truncated to bytes.
 */
#ifndef LLMFS_IMAGE_H
#define LLMFS_IMAGE_H

#include "llmfs.h"

#include <stddef.h>
#include <stdint.h>

/* Largest side accepted by the decoders (an image bigger than this is refused with
 * EFBIG before its pixels are allocated). */
#define IMAGE_MAX_SIDE 16384

typedef struct image_rgb {
    int nx, ny;
    uint8_t *rgb; /* [ny][nx][3], malloc'd */
} image_rgb;

/* Decodes a PNG or JPEG held in memory (recognised by its signature). 0, or -EINVAL
 * (not an image / corrupt, reason in err), -EFBIG (sides above IMAGE_MAX_SIDE), -ENOMEM. */
int image_decode(const void *buf, size_t len, image_rgb *out, llmfs_error *err);
void image_free(image_rgb *img);

/* Letterboxes img into a tw x th canvas (see the header comment): out->rgb malloc'd.
 * An image already of that size is copied unchanged. 0 or -ENOMEM. */
int image_letterbox(const image_rgb *img, int tw, int th, image_rgb *out, llmfs_error *err);

/* out [3][ny][nx] (planar R, G, B) = (byte / 255 - mean[c]) / std[c], in float32. */
void image_normalize(const image_rgb *img, const float mean[3], const float std[3], float *out);

#endif
