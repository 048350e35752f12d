/* fuzz_tokenizer.c — libFuzzer target for encoding and streaming decoding.
 *
 * Two small vocabularies (SentencePiece with byte fallback, byte-level BPE with the
 * qwen2 pre-tokenizer and a special token) are built in memory once. Every input is
 * encoded with both, with and without special-token parsing; the ids must be in range,
 * and streaming them back must only ever produce well-formed UTF-8. */
#include "gguf.h"
#include "tokenizer.h"
#include "unicode.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                     \
    do {                                                                             \
        if (!(c)) {                                                                  \
            fprintf(stderr, "fuzz_tokenizer: check failed: %s (line %d)\n", #c, __LINE__); \
            abort();                                                                 \
        }                                                                            \
    } while (0)

/* built once, kept for the process's life */
static tokenizer *toks[2];
static gguf_file *files[2];
static void *bufs[2];

static tokenizer *build(int k, gguf_writer *w)
{
    size_t len;
    llmfs_error err = {0};
    CHECK(gguf_writer_write_mem(w, &bufs[k], &len, &err) == 0);
    gguf_writer_free(w);
    files[k] = gguf_open_buffer(bufs[k], len, &err);
    CHECK(files[k]);
    tokenizer *t = tokenizer_load(files[k], &err);
    CHECK(t);
    return t;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* SentencePiece: <unk>, <s>, </s>, the 256 byte tokens, a few pieces */
    const char *spm[256 + 9];
    float scores[256 + 9];
    int32_t types[256 + 9];
    static char names[256][8];
    spm[0] = "<unk>", spm[1] = "<s>", spm[2] = "</s>";
    types[0] = 2, types[1] = 3, types[2] = 3;
    for (int b = 0; b < 256; b++) {
        snprintf(names[b], sizeof names[b], "<0x%02X>", b);
        spm[3 + b] = names[b];
        types[3 + b] = 6;
    }
    static const char *const pieces[] = {"\xe2\x96\x81", "a", "b", "\xe2\x96\x81" "a", "ab", "\xc3\xa9"};
    for (int i = 0; i < 6; i++) {
        spm[259 + i] = pieces[i];
        types[259 + i] = 1;
    }
    for (int i = 0; i < 265; i++)
        scores[i] = i < 259 ? 0.0f : -(float)(i - 258);
    gguf_writer *w = gguf_writer_new();
    gguf_w_str(w, "tokenizer.ggml.model", "llama");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", spm, 265);
    gguf_w_arr_f32(w, "tokenizer.ggml.scores", scores, 265);
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", types, 265);
    toks[0] = build(0, w);

    /* byte-level BPE: the 256 byte characters, a few merges, one control token */
    const char *bpe[256 + 4];
    static char chars[256][4];
    for (int b = 0; b < 256; b++) {
        char u[4];
        int cp = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174) ? b : -1;
        if (cp < 0) {
            int k = b <= 32 ? b : b <= 160 ? 33 + (b - 127) : 67;
            cp = 256 + k;
        }
        int n = utf8_encode((uint32_t)cp, u);
        memcpy(chars[b], u, (size_t)n);
        chars[b][n] = 0;
        bpe[b] = chars[b];
    }
    bpe[256] = "ab", bpe[257] = "\xc4\xa0" "a", bpe[258] = "\xc4\xa0" "ab", bpe[259] = "<|end|>";
    static const char *const merges[] = {"a b", "\xc4\xa0 a", "\xc4\xa0" "a b"};
    w = gguf_writer_new();
    gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_w_str(w, "tokenizer.ggml.pre", "qwen2");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", bpe, 260);
    gguf_w_arr_str(w, "tokenizer.ggml.merges", merges, 3);
    toks[1] = build(1, w);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    static int32_t ids[4096 * 4 + 8];
    for (int k = 0; k < 2; k++) {
        tokenizer *t = toks[k];
        for (int special = 0; special < 2; special++) {
            int n = tokenizer_encode(t, (const char *)data, size, special, special, ids, (int)(sizeof ids / sizeof ids[0]));
            CHECK(n >= 0 && (size_t)n <= sizeof ids / sizeof ids[0]);
            CHECK(size == 0 || n > 0);
            detok_state st = {0};
            st.special = special;
            char out[512];
            for (int i = 0; i < n; i++) {
                CHECK(ids[i] >= 0 && ids[i] < tokenizer_n_vocab(t));
                int c = detok_push(t, &st, ids[i], out, (int)sizeof out);
                CHECK(c >= 0 && utf8_valid_prefix((const uint8_t *)out, (size_t)c) == (size_t)c);
            }
            int c = detok_flush(&st, out, (int)sizeof out);
            CHECK(utf8_valid_prefix((const uint8_t *)out, (size_t)c) == (size_t)c);
        }
    }
    return 0;
}
