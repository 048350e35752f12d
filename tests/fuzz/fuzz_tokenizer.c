/* fuzz_tokenizer.c — libFuzzer target for encoding and streaming decoding with the real
 * vocabularies in ../shared/tokenizer (or $LLMFS_SHARED/tokenizer).
 *
 * Input layout: one byte choosing the vocabulary and the flags, then the text. Every
 * text must encode into in-range ids, with the same count whether or not the id buffer
 * was big enough; streaming the ids back must only ever hand out well-formed UTF-8, in
 * chunks within the documented room. Where the text is well-formed UTF-8 the stream
 * equals the concatenation of the tokens' pieces, and byte-level BPE decodes back to
 * the text itself. Without the test assets the target reports that and exits.
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

/* Loaded once, kept for the life of the process. */
static gguf_file *files[N_FILES];
static tokenizer *toks[N_FILES];
static int n_toks;

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

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    const char *dir = shared_dir();
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
    }
    if (!n_toks) {
        fprintf(stderr, "fuzz_tokenizer: SKIPPED: no vocabularies in %s/tokenizer (set LLMFS_SHARED)\n", dir);
        exit(0);
    }
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
    const tokenizer *t = toks[(sel & 7) % n_toks];
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
    CHECK(len == 0 || n > 0);

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

    if (valid_utf8(text, len)) {
        CHECK(valid_utf8(pieces, p_len));
        CHECK(s_len == p_len && memcmp(stream, pieces, s_len) == 0);
        /* Byte-level BPE loses nothing: without special-token parsing the ids spell
         * the text (user-defined tokens stand for their own text). */
        if (tokenizer_kind(t) == TOK_BPE && !parse_special && !add_special) {
            int d = tokenizer_decode(t, ids, n, false, pieces, (int)cap);
            CHECK(d >= 0 && (size_t)d == len && memcmp(pieces, text, len) == 0);
        }
    }
    free(chunk);
    free(pieces);
    free(stream);
    free(ids);
    return 0;
}
