/* fuzz_tokenizer.c — libFuzzer target for encoding and streaming decoding.
 *
 * Two small vocabularies are built in memory (SentencePiece with byte fallback;
 * byte-level BPE with the qwen2 pre-tokenizer and a control token), and the real ones in
 * ../shared/tokenizer (or $LLMFS_SHARED/tokenizer) are added when the test assets are
 * there. Input layout: one byte choosing the vocabulary and the flags, then the text.
 *
 * Every text must encode into in-range ids, with the same count whether or not the id
 * buffer was big enough; streaming the ids back must only ever hand out well-formed
 * UTF-8, in chunks within the documented room. Where the text and the tokens' pieces are
 * well-formed UTF-8 the stream equals the pieces' concatenation (a vocabulary with every
 * byte always gives such pieces), and byte-level BPE with a token for every byte decodes
 * back to the text itself.
 */
#include "gguf.h"
#include "tokenizer.h"
#include "unicode.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                        \
    do {                                                                                \
        if (!(c)) {                                                                     \
            fprintf(stderr, "fuzz_tokenizer: check failed: %s (line %d)\n", #c, __LINE__); \
            abort();                                                                    \
        }                                                                               \
    } while (0)

static const char *const vocab_files[] = {
    "ggml-vocab-llama-spm.gguf", "ggml-vocab-phi-3.gguf",  "qwen3-vocab.gguf",
    "ggml-vocab-gpt-2.gguf",     "ggml-vocab-falcon.gguf", "ggml-vocab-deepseek-coder.gguf",
};
#define N_FILES (sizeof vocab_files / sizeof vocab_files[0])

#define MAX_TOKS (2 + N_FILES)

/* Built or loaded once, kept for the life of the process. */
static gguf_file *files[MAX_TOKS];
static void *bufs[MAX_TOKS];
static tokenizer *toks[MAX_TOKS];
/* Byte-level BPE vocabulary with a token for every byte (falcon's lacks 14 control
 * bytes, which are then dropped, as llama.cpp drops them). */
static bool all_bytes[MAX_TOKS];
static int n_toks;

/* GPT-2's printable stand-in for byte b. */
static uint32_t byte_char(int b)
{
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174)
        return (uint32_t)b;
    return (uint32_t)(256 + (b <= 32 ? b : b <= 160 ? 33 + (b - 127) : 67));
}

static bool has_all_bytes(const tokenizer *t)
{
    for (int b = 0; b < 256; b++) {
        char u[5] = {0};
        utf8_encode(byte_char(b), u);
        if (tokenizer_find(t, u) < 0)
            return false;
    }
    return true;
}

static void add_built(gguf_writer *w)
{
    size_t len;
    llmfs_error err = {0};
    CHECK(gguf_writer_write_mem(w, &bufs[n_toks], &len, &err) == 0);
    gguf_writer_free(w);
    files[n_toks] = gguf_open_buffer(bufs[n_toks], len, &err);
    CHECK(files[n_toks]);
    toks[n_toks] = tokenizer_load(files[n_toks], &err);
    CHECK(toks[n_toks]);
    n_toks++;
}

static const char *shared_dir(void)
{
    const char *env = getenv("LLMFS_SHARED");
    if (env && *env)
        return env;
#ifdef LLMFS_SOURCE_DIR
    return LLMFS_SOURCE_DIR "/../shared";
#else
    return "../shared";
#endif
}

static void add_shared(void)
{
    const char *dir = shared_dir();
    int found = 0;
    for (size_t k = 0; k < N_FILES; k++) {
        char path[4096];
        snprintf(path, sizeof path, "%s/tokenizer/%s", dir, vocab_files[k]);
        llmfs_error err = {0};
        gguf_file *f = gguf_open(path, NULL, &err);
        if (!f)
            continue;
        tokenizer *t = tokenizer_load(f, &err);
        if (!t) {
            fprintf(stderr, "fuzz_tokenizer: %s: %s\n", path, err.msg);
            abort();
        }
        files[n_toks] = f;
        toks[n_toks++] = t;
        found++;
    }
    if (!found)
        fprintf(stderr, "fuzz_tokenizer: no vocabularies in %s/tokenizer (set LLMFS_SHARED); "
                        "fuzzing the built-in ones only\n", dir);
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
    static const char *const pieces[] = {"\xe2\x96\x81", "a", "b", ("\xe2\x96\x81" "a"), "ab", "\xc3\xa9"};
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
    add_built(w);

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
    static const char *const merges[] = {"a b", "\xc4\xa0 a", ("\xc4\xa0" "a b")};
    w = gguf_writer_new();
    gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_w_str(w, "tokenizer.ggml.pre", "qwen2");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", bpe, 260);
    gguf_w_arr_str(w, "tokenizer.ggml.merges", merges, 3);
    add_built(w);

    add_shared();
    for (int k = 0; k < n_toks; k++)
        all_bytes[k] = tokenizer_kind(toks[k]) == TOK_BPE && has_all_bytes(toks[k]);
    return 0;
}

static bool valid_utf8(const char *s, size_t n)
{
    return utf8_valid_prefix((const uint8_t *)s, n) == n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint8_t sel = data[0];
    int which = (sel & 7) % n_toks;
    const tokenizer *t = toks[which];
    bool add_special = sel & 8, parse_special = sel & 16, special = sel & 32;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    int n_vocab = tokenizer_n_vocab(t);

    /* A too-small buffer gives the full count and the ids that fit. */
    int32_t few[4];
    int n = tokenizer_encode(t, text, len, add_special, parse_special, few, 4);
    CHECK(n >= 0);
    int32_t *ids = malloc(sizeof *ids * (size_t)(n + 1));
    CHECK(ids);
    CHECK(tokenizer_encode(t, text, len, add_special, parse_special, ids, n + 1) == n);
    CHECK(memcmp(ids, few, sizeof *ids * (size_t)(n < 4 ? n : 4)) == 0);
    CHECK(len == 0 || n > 0 || (tokenizer_kind(t) == TOK_BPE && !all_bytes[which]));

    int max_piece = tokenizer_max_piece(t);
    int room = max_piece + 8;
    /* a piece's bytes may each come out as U+FFFD (3 bytes) */
    size_t cap = (size_t)n * (size_t)(3 * max_piece + 3) + 16;
    char *stream = malloc(cap), *pieces = malloc(cap), *chunk = malloc((size_t)room);
    CHECK(stream && pieces && chunk);
    size_t s_len = 0, p_len = 0;
    detok_state st = {0};
    st.special = special;
    for (int i = 0; i < n; i++) {
        CHECK(ids[i] >= 0 && ids[i] < n_vocab);
        int c = detok_push(t, &st, ids[i], chunk, room);
        CHECK(c >= 0 && c <= room);
        CHECK(valid_utf8(chunk, (size_t)c));
        memcpy(stream + s_len, chunk, (size_t)c);
        s_len += (size_t)c;
        int pn = tokenizer_piece(t, ids[i], special, pieces + p_len, max_piece);
        CHECK(pn >= 0 && pn <= max_piece);
        p_len += (size_t)pn;
    }
    int c = detok_flush(&st, chunk, room);
    CHECK(c >= 0 && c <= room && valid_utf8(chunk, (size_t)c));
    memcpy(stream + s_len, chunk, (size_t)c);
    s_len += (size_t)c;
    CHECK(detok_flush(&st, chunk, room) == 0);

    /* A vocabulary without a token for some byte drops that byte (as llama.cpp does), so
     * only one with every byte (byte-level BPE with all 256, SentencePiece's byte
     * fallback) must spell well-formed text in well-formed pieces. */
    bool keeps_bytes = all_bytes[which] || tokenizer_kind(t) == TOK_SPM;
    bool text_ok = valid_utf8(text, len), pieces_ok = valid_utf8(pieces, p_len);
    if (text_ok && keeps_bytes)
        CHECK(pieces_ok);
    if (text_ok && pieces_ok) {
        CHECK(s_len == p_len && memcmp(stream, pieces, s_len) == 0);
        /* Byte-level BPE loses nothing: without special-token parsing the ids spell
         * the text (user-defined tokens stand for their own text). Decoding drops a
         * leading BOS, which a text can spell when BOS is an ordinary token (GPT-2's
         * default BOS is id 11). */
        if (all_bytes[which] && !parse_special && !add_special && (n == 0 || ids[0] != tokenizer_bos(t))) {
            int d = tokenizer_decode(t, ids, n, false, pieces, (int)cap);
            if (d < 0 || (size_t)d != len || memcmp(pieces, text, len) != 0) {
                fprintf(stderr, "fuzz_tokenizer: %s: '%.*s' decodes to '%.*s'; ids:", tokenizer_pre_name(t),
                        (int)len, text, d, pieces);
                for (int i = 0; i < n; i++)
                    fprintf(stderr, " %d '%s' (attr %d)", ids[i], tokenizer_text(t, ids[i]), tokenizer_attr(t, ids[i]));
                fprintf(stderr, "; %zu bytes in, %d out:", len, d);
                for (int i = 0; i < d && i < (int)cap; i++)
                    fprintf(stderr, " %02x", (uint8_t)pieces[i]);
                fprintf(stderr, "\n");
                abort();
            }
        }
    }
    free(chunk);
    free(pieces);
    free(stream);
    free(ids);
    return 0;
}
