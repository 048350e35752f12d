/* image.c — PNG/JPEG decoding (libpng, libjpeg) and llama.cpp's letterbox resize. */
#include "image.h"

#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>

void image_free(image_rgb *img)
{
    if (!img)
        return;
    free(img->rgb);
    img->rgb = NULL;
    img->nx = img->ny = 0;
}

/* ---------------------------------------------------------------- PNG */

typedef struct png_src {
    const uint8_t *p;
    size_t len, at;
    char why[160]; /* libpng's message when it gives up */
} png_src;

static void png_read_mem(png_structp png, png_bytep out, png_size_t n)
{
    png_src *s = png_get_io_ptr(png);
    if (n > s->len - s->at)
        png_error(png, "file is truncated");
    memcpy(out, s->p + s->at, n);
    s->at += n;
}

static void png_fail(png_structp png, png_const_charp msg)
{
    png_src *s = png_get_error_ptr(png);
    snprintf(s->why, sizeof s->why, "%s", msg);
    png_longjmp(png, 1);
}

static void png_quiet(png_structp png, png_const_charp msg)
{
    (void)png;
    (void)msg;
}

static int decode_png(const uint8_t *buf, size_t len, image_rgb *out, llmfs_error *err)
{
    png_src src = {.p = buf, .len = len};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &src, png_fail, png_quiet);
    if (!png)
        return llmfs_errorf(err, ENOMEM, "image: out of memory");
    png_infop info = png_create_info_struct(png);
    /* volatile: these change between setjmp and a possible longjmp */
    uint8_t *volatile rgb = NULL;
    png_bytep *volatile rows = NULL;
    volatile int code = EINVAL;
    if (!info || setjmp(png_jmpbuf(png))) {
        free(rgb);
        free(rows);
        png_destroy_read_struct(&png, info ? &info : NULL, NULL);
        if (code == EFBIG)
            return llmfs_errorf(err, EFBIG, "image: PNG larger than %d pixels a side", IMAGE_MAX_SIDE);
        return llmfs_errorf(err, code, "image: bad PNG (%s)", src.why[0] ? src.why : "out of memory");
    }
    png_set_read_fn(png, &src, png_read_mem);
    png_set_user_limits(png, IMAGE_MAX_SIDE, IMAGE_MAX_SIDE);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int depth = png_get_bit_depth(png, info), ctype = png_get_color_type(png, info);
    if (w > IMAGE_MAX_SIDE || h > IMAGE_MAX_SIDE) {
        code = EFBIG;
        png_error(png, "too large");
    }
    /* stb_image's conversions: everything to 8-bit RGB, alpha dropped */
    if (ctype == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (ctype == PNG_COLOR_TYPE_GRAY && depth < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (depth == 16)
        png_set_strip_16(png);
    if (ctype == PNG_COLOR_TYPE_GRAY || ctype == PNG_COLOR_TYPE_GRAY_ALPHA)
        png_set_gray_to_rgb(png);
    if (ctype & PNG_COLOR_MASK_ALPHA)
        png_set_strip_alpha(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    if (png_get_rowbytes(png, info) != (size_t)w * 3)
        png_error(png, "unexpected pixel layout");
    rgb = malloc((size_t)w * h * 3);
    rows = malloc(sizeof(png_bytep) * h);
    if (!rgb || !rows) {
        code = ENOMEM;
        png_error(png, "out of memory");
    }
    for (png_uint_32 y = 0; y < h; y++)
        rows[y] = rgb + (size_t)y * w * 3;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    free(rows);
    png_destroy_read_struct(&png, &info, NULL);
    out->nx = (int)w;
    out->ny = (int)h;
    out->rgb = rgb;
    return 0;
}

/* ---------------------------------------------------------------- JPEG */

typedef struct jpeg_fail_mgr {
    struct jpeg_error_mgr pub;
    jmp_buf jump;
} jpeg_fail_mgr;

static void jpeg_fail(j_common_ptr cinfo)
{
    jpeg_fail_mgr *f = (jpeg_fail_mgr *)cinfo->err;
    longjmp(f->jump, 1);
}

static void jpeg_quiet(j_common_ptr cinfo, int level)
{
    (void)cinfo;
    (void)level;
}

/* x in 12.8 fixed point (x * 4096 rounded, then 8 more bits) */
static int fixed20(float x)
{
    return (int)(x * 4096.0f + 0.5f) * 256;
}

/* In place: JFIF YCbCr to RGB, R = Y + 1.402 Cr, G = Y - 0.71414 Cr - 0.34414 Cb,
 * B = Y + 1.772 Cb (Cb, Cr centred on 128), with 20 fraction bits and round-half-up */
static void ycc_to_rgb(uint8_t *p, size_t n)
{
    const int kr = fixed20(1.40200f), kgr = -fixed20(0.71414f), kgb = -fixed20(0.34414f), kb = fixed20(1.77200f);
    for (size_t i = 0; i < n; i++, p += 3) {
        int y = (p[0] << 20) + (1 << 19), cb = p[1] - 128, cr = p[2] - 128;
        int v[3] = {y + cr * kr, y + cr * kgr + (int)((unsigned)(cb * kgb) & 0xffff0000u), y + cb * kb};
        for (int c = 0; c < 3; c++) {
            int x = v[c] >> 20;
            p[c] = (uint8_t)(x < 0 ? 0 : x > 255 ? 255 : x);
        }
    }
}

static int decode_jpeg(const uint8_t *buf, size_t len, image_rgb *out, llmfs_error *err)
{
    struct jpeg_decompress_struct cinfo;
    jpeg_fail_mgr jerr;
    uint8_t *volatile rgb = NULL;
    volatile int code = EINVAL;
    cinfo.err = jpeg_std_error(&jerr.pub);
    jerr.pub.error_exit = jpeg_fail;
    jerr.pub.emit_message = jpeg_quiet;
    if (setjmp(jerr.jump)) {
        char why[JMSG_LENGTH_MAX] = "";
        if (code == EINVAL)
            jerr.pub.format_message((j_common_ptr)&cinfo, why);
        jpeg_destroy_decompress(&cinfo);
        free(rgb);
        if (code == EFBIG)
            return llmfs_errorf(err, EFBIG, "image: JPEG larger than %d pixels a side", IMAGE_MAX_SIDE);
        if (code == ENOMEM)
            return llmfs_errorf(err, ENOMEM, "image: out of memory");
        return llmfs_errorf(err, EINVAL, "image: bad JPEG (%s)", why);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, buf, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    if (cinfo.image_width > IMAGE_MAX_SIDE || cinfo.image_height > IMAGE_MAX_SIDE) {
        code = EFBIG;
        longjmp(jerr.jump, 1);
    }
    /* YCbCr pictures come out as YCbCr and are converted here, in stb_image's fixed
     * point (12-bit constants, the green's Cb term cut to 16 fraction bits), which is
     * where most of its difference from libjpeg's own conversion lies; grey and RGB
     * pictures come out as RGB */
    const bool ycc = cinfo.jpeg_color_space == JCS_YCbCr && cinfo.num_components == 3;
    cinfo.out_color_space = ycc ? JCS_YCbCr : JCS_RGB;
    cinfo.dct_method = JDCT_ISLOW;
    jpeg_start_decompress(&cinfo);
    if (cinfo.output_components != 3) {
        longjmp(jerr.jump, 1);
    }
    size_t w = cinfo.output_width, h = cinfo.output_height;
    rgb = malloc(w * h * 3);
    if (!rgb) {
        code = ENOMEM;
        longjmp(jerr.jump, 1);
    }
    while (cinfo.output_scanline < cinfo.output_height) {
        JSAMPROW row = rgb + (size_t)cinfo.output_scanline * w * 3;
        jpeg_read_scanlines(&cinfo, &row, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    if (ycc)
        ycc_to_rgb(rgb, w * h);
    out->nx = (int)w;
    out->ny = (int)h;
    out->rgb = rgb;
    return 0;
}

int image_decode(const void *buf, size_t len, image_rgb *out, llmfs_error *err)
{
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    const uint8_t *p = buf;
    memset(out, 0, sizeof *out);
    if (len >= 8 && !memcmp(p, png_sig, 8))
        return decode_png(p, len, out, err);
    if (len >= 3 && p[0] == 0xff && p[1] == 0xd8 && p[2] == 0xff)
        return decode_jpeg(p, len, out, err);
    return llmfs_errorf(err, EINVAL, "image: not a PNG or JPEG file");
}

/* ---------------------------------------------------------------- resize */

static float lerp(float s, float e, float t)
{
    return s + (e - s) * t;
}

/* Corner-aligned bilinear from src to a tw x th image at dst (row stride dst_stride
 * pixels): output pixel x samples source x * (sw - 1) / (tw - 1). float32 throughout,
 * truncated to bytes, as llama.cpp's resize_bilinear. */
static void bilinear(const image_rgb *src, uint8_t *dst, int dst_stride, int tw, int th)
{
    const int sw = src->nx, sh = src->ny;
    float x_ratio = tw > 1 ? (float)(sw - 1) / (float)(tw - 1) : 0.0f;
    float y_ratio = th > 1 ? (float)(sh - 1) / (float)(th - 1) : 0.0f;
    for (int y = 0; y < th; y++) {
        float py = (float)y * y_ratio;
        int y0 = (int)py < sh - 1 ? (int)py : sh - 1;
        int y1 = y0 + 1 < sh - 1 ? y0 + 1 : sh - 1;
        float yf = py - (float)y0;
        for (int x = 0; x < tw; x++) {
            float px = (float)x * x_ratio;
            int x0 = (int)px < sw - 1 ? (int)px : sw - 1;
            int x1 = x0 + 1 < sw - 1 ? x0 + 1 : sw - 1;
            float xf = px - (float)x0;
            const uint8_t *p00 = src->rgb + ((size_t)y0 * sw + x0) * 3, *p10 = src->rgb + ((size_t)y0 * sw + x1) * 3;
            const uint8_t *p01 = src->rgb + ((size_t)y1 * sw + x0) * 3, *p11 = src->rgb + ((size_t)y1 * sw + x1) * 3;
            uint8_t *o = dst + ((size_t)y * dst_stride + x) * 3;
            for (int c = 0; c < 3; c++) {
                float top = lerp((float)p00[c], (float)p10[c], xf);
                float bot = lerp((float)p01[c], (float)p11[c], xf);
                o[c] = (uint8_t)lerp(top, bot, yf);
            }
        }
    }
}

int image_letterbox(const image_rgb *img, int tw, int th, image_rgb *out, llmfs_error *err)
{
    memset(out, 0, sizeof *out);
    out->rgb = calloc((size_t)tw * th * 3, 1); /* black */
    if (!out->rgb)
        return llmfs_errorf(err, ENOMEM, "image: out of memory");
    out->nx = tw;
    out->ny = th;
    if (img->nx == tw && img->ny == th) {
        memcpy(out->rgb, img->rgb, (size_t)tw * th * 3);
        return 0;
    }
    /* the largest size with the picture's aspect ratio inside the target, rounded up */
    float scale = fminf((float)tw / (float)img->nx, (float)th / (float)img->ny);
    int nw = (int)ceilf((float)img->nx * scale), nh = (int)ceilf((float)img->ny * scale);
    nw = nw < tw ? nw : tw;
    nh = nh < th ? nh : th;
    nw = nw > 0 ? nw : 1;
    nh = nh > 0 ? nh : 1;
    int ox = (tw - nw) / 2, oy = (th - nh) / 2;
    bilinear(img, out->rgb + ((size_t)oy * tw + ox) * 3, tw, nw, nh);
    return 0;
}

void image_normalize(const image_rgb *img, const float mean[3], const float std[3], float *out)
{
    const size_t plane = (size_t)img->nx * img->ny;
    for (int c = 0; c < 3; c++)
        for (size_t i = 0; i < plane; i++) {
            float x = (float)img->rgb[i * 3 + c] / 255.0f;
            out[c * plane + i] = (x - mean[c]) / std[c];
        }
}
