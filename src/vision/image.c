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

static uint8_t clamp_byte(long long x)
{
    return (uint8_t)(x < 0 ? 0 : x > 255 ? 255 : x);
}

/* In place: JFIF YCbCr to RGB, R = Y + 1.402 Cr, G = Y - 0.71414 Cr - 0.34414 Cb,
 * B = Y + 1.772 Cb (Cb, Cr centred on 128), with 20 fraction bits and round-half-up.
 * This is stb_image's scalar conversion; its SSE2 one (different rounding) only runs
 * for 4-channel output, and llama.cpp asks for 3. */
static void ycc_to_rgb(uint8_t *p, size_t n)
{
    const int kr = fixed20(1.40200f), kgr = -fixed20(0.71414f), kgb = -fixed20(0.34414f), kb = fixed20(1.77200f);
    for (size_t i = 0; i < n; i++, p += 3) {
        int y = (p[0] << 20) + (1 << 19), cb = p[1] - 128, cr = p[2] - 128;
        int v[3] = {y + cr * kr, y + cr * kgr + (int)((unsigned)(cb * kgb) & 0xffff0000u), y + cb * kb};
        for (int c = 0; c < 3; c++)
            p[c] = clamp_byte(v[c] >> 20);
    }
}

/* The inverse DCT stb_image applies, which differs from libjpeg's JDCT_ISLOW in its
 * constants (12 fraction bits, not 13) and in where it rounds; it reproduces stb_image's
 * bytes exactly on the test picture. Both are the Loeffler-Ligtenberg-Moschytz
 * factorisation below; the constants are cos/sin products of the 8-point DCT, scaled
 * by 4096 and rounded as stb_image does (+0.5, then toward zero, so the negative ones
 * come out one less in magnitude than rounding to nearest would give). */
#define IDCT_C(x) ((long long)((x) * 4096.0 + 0.5))

/* One 8-point pass over in[0], in[step], ..., in[7 * step] into out likewise; bias is
 * added before the final shift (rounding, and in the second pass also the +128 level
 * shift). 64-bit so that a corrupt file's huge coefficients cannot overflow. */
static void idct_pass(const long long *in, int step, long long *out, long long bias, int shift)
{
    /* even part: inputs 0, 2, 4, 6 */
    long long r = (in[2 * step] + in[6 * step]) * IDCT_C(0.5411961);
    long long e2 = r + in[6 * step] * IDCT_C(-1.847759065);
    long long e3 = r + in[2 * step] * IDCT_C(0.765366865);
    long long e0 = (in[0] + in[4 * step]) * 4096, e1 = (in[0] - in[4 * step]) * 4096;
    long long x0 = e0 + e3 + bias, x3 = e0 - e3 + bias, x1 = e1 + e2 + bias, x2 = e1 - e2 + bias;
    /* odd part: inputs 1, 3, 5, 7 */
    long long o0 = in[7 * step], o1 = in[5 * step], o2 = in[3 * step], o3 = in[step];
    long long s70 = o0 + o2, s53 = o1 + o3, s73 = o0 + o3, s51 = o1 + o2;
    long long z = (s70 + s53) * IDCT_C(1.175875602);
    long long a = z + s73 * IDCT_C(-0.899976223), b = z + s51 * IDCT_C(-2.562915447);
    long long c = s70 * IDCT_C(-1.961570560), d = s53 * IDCT_C(-0.390180644);
    long long t0 = o0 * IDCT_C(0.298631336) + a + c;
    long long t1 = o1 * IDCT_C(2.053119869) + b + d;
    long long t2 = o2 * IDCT_C(3.072711026) + b + c;
    long long t3 = o3 * IDCT_C(1.501321110) + a + d;
    out[0] = (x0 + t3) >> shift;
    out[7 * step] = (x0 - t3) >> shift;
    out[1 * step] = (x1 + t2) >> shift;
    out[6 * step] = (x1 - t2) >> shift;
    out[2 * step] = (x2 + t1) >> shift;
    out[5 * step] = (x2 - t1) >> shift;
    out[3 * step] = (x3 + t0) >> shift;
    out[4 * step] = (x3 - t0) >> shift;
}

/* One block of quantised coefficients (natural order, as libjpeg keeps them) to 8x8
 * samples at out (rows stride bytes apart). */
static void idct_block(const JCOEF *coef, const JQUANT_TBL *qt, uint8_t *out, size_t stride)
{
    long long v[64], t[64], row[8];
    for (int i = 0; i < 64; i++) {
        /* stb_image keeps the dequantised coefficient in a 16-bit short: wrap as it does.
         * No table: a component no scan reached (a cut-off progressive file), whose
         * coefficients are all zero anyway. */
        long long x = (long long)coef[i] * (qt ? qt->quantval[i] : 0);
        x &= 0xffff;
        v[i] = x >= 0x8000 ? x - 0x10000 : x;
    }
    /* columns first, keeping 2 more bits than the input (rounded at bit 9) */
    for (int i = 0; i < 8; i++)
        idct_pass(v + i, 8, t + i, 1 << 9, 10);
    /* then rows: 17 bits of scale off, rounded, +128 level shift, clamped to a byte */
    for (int i = 0; i < 8; i++) {
        idct_pass(t + 8 * i, 1, row, (1 << 16) + (128LL << 17), 17);
        for (int j = 0; j < 8; j++)
            out[(size_t)i * stride + j] = clamp_byte(row[j]);
    }
}

/* Full-resolution JPEGs (every component sampled alike: grey, or YCbCr 4:4:4) take
 * libjpeg's coefficients and do the IDCT above, so they come out byte for byte as
 * stb_image's. Subsampled ones keep libjpeg's own IDCT and upsampling, which stb_image
 * does differently (within a few steps). */
static bool jpeg_own_idct(const struct jpeg_decompress_struct *cinfo)
{
    if (!(cinfo->num_components == 1 && cinfo->jpeg_color_space == JCS_GRAYSCALE) &&
        !(cinfo->num_components == 3 && cinfo->jpeg_color_space == JCS_YCbCr))
        return false;
    for (int k = 1; k < cinfo->num_components; k++)
        if (cinfo->comp_info[k].h_samp_factor != cinfo->comp_info[0].h_samp_factor ||
            cinfo->comp_info[k].v_samp_factor != cinfo->comp_info[0].v_samp_factor)
            return false;
    return true;
}

static int decode_jpeg(const uint8_t *buf, size_t len, image_rgb *out, llmfs_error *err)
{
    struct jpeg_decompress_struct cinfo;
    jpeg_fail_mgr jerr;
    uint8_t *volatile rgb = NULL, *volatile band = NULL;
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
        free(band);
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
    size_t w = cinfo.image_width, h = cinfo.image_height;
    bool ycc = cinfo.jpeg_color_space == JCS_YCbCr && cinfo.num_components == 3;
    if (jpeg_own_idct(&cinfo)) {
        jvirt_barray_ptr *coefs = jpeg_read_coefficients(&cinfo);
        const int nc = cinfo.num_components;
        /* one row of blocks per component, 8 sample rows; every component has as many
         * blocks as the picture needs, plus whatever the last MCU pads */
        size_t bw = cinfo.comp_info[0].width_in_blocks, stride = bw * 8;
        rgb = malloc(w * h * 3);
        band = malloc((size_t)nc * 8 * stride);
        if (!rgb || !band) {
            code = ENOMEM;
            longjmp(jerr.jump, 1);
        }
        for (size_t by = 0; by * 8 < h; by++) {
            for (int k = 0; k < nc; k++) {
                jpeg_component_info *comp = &cinfo.comp_info[k];
                JBLOCKARRAY blocks = cinfo.mem->access_virt_barray((j_common_ptr)&cinfo, coefs[k],
                                                                   (JDIMENSION)by, 1, FALSE);
                for (size_t bx = 0; bx < bw; bx++)
                    idct_block(blocks[0][bx], comp->quant_table, band + ((size_t)k * 8 * stride) + bx * 8, stride);
            }
            for (size_t y = by * 8; y < h && y < by * 8 + 8; y++) {
                uint8_t *o = rgb + y * w * 3;
                const uint8_t *s = band + (y - by * 8) * stride;
                for (size_t x = 0; x < w; x++, o += 3)
                    for (int c = 0; c < 3; c++)
                        o[c] = s[(size_t)(nc == 3 ? c : 0) * 8 * stride + x];
            }
        }
        jpeg_finish_decompress(&cinfo);
        jpeg_destroy_decompress(&cinfo);
        free(band);
        band = NULL;
    } else {
        /* Subsampled YCbCr pictures come out of libjpeg as YCbCr and are converted
         * below in stb_image's fixed point, which is where most of its difference from
         * libjpeg's own conversion lies; RGB-component pictures come out as RGB */
        cinfo.out_color_space = ycc ? JCS_YCbCr : JCS_RGB;
        cinfo.dct_method = JDCT_ISLOW;
        jpeg_start_decompress(&cinfo);
        if (cinfo.output_components != 3) {
            longjmp(jerr.jump, 1);
        }
        w = cinfo.output_width;
        h = cinfo.output_height;
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
    }
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
