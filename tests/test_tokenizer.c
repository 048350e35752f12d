/* Tokenizer tests: llama.cpp's tokenizer vectors, the fixture prompts, round trips,
 * streaming decoding, special tokens and malformed metadata. */
#include "gguf.h"
#include "testutil.h"
#include "fixture.h"
#include "pretok.h"
#include "tokenizer.h"
#include "unicode.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Every vector set in tokenizer/ ("X.gguf" for X.gguf.inp, tested with X.gguf), sorted;
 * the sets tests/unsupported.c names are left out, loudly. */
static char *vocabs[32];
static int n_vocabs;

static int cmp_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void find_vocabs(void)
{
    char buf[4096];
    DIR *d = opendir(test_shared_path("tokenizer", buf, sizeof buf));
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 4, ".inp"))
            continue;
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)(n - 4), e->d_name);
        const char *why = vocab_unsupported(name);
        if (why)
            test_say_skip(name, why);
        else if (n_vocabs < (int)(sizeof vocabs / sizeof vocabs[0]))
            vocabs[n_vocabs++] = strdup(name);
    }
    closedir(d);
    qsort(vocabs, (size_t)n_vocabs, sizeof *vocabs, cmp_name);
}

typedef struct loaded {
    gguf_file *f;
    tokenizer *t;
} loaded;

static loaded load_path(const char *path)
{
    llmfs_error err = {0};
    loaded l = {0};
    l.f = gguf_open(path, NULL, &err);
    ck_assert_msg(l.f, "gguf_open %s: %s", path, err.msg);
    l.t = tokenizer_load(l.f, &err);
    ck_assert_msg(l.t, "tokenizer_load %s: %s", path, err.msg);
    return l;
}

static void unload(loaded *l)
{
    tokenizer_free(l->t);
    gguf_close(l->f);
}

/* Vector sets of a pre-tokenizer over another file's vocabulary: llama.cpp's ids with
 * that vocabulary's tokens and merges and tokenizer.ggml.pre forced to `pre`. */
static const struct {
    const char *vectors, *vocab, *pre;
} forced_pre[] = {
    {"qwen35-pre", "qwen3-vocab.gguf", "qwen35"},
};

static loaded load_vocab(const char *name)
{
    char rel[256], buf[4096];
    for (size_t i = 0; i < sizeof forced_pre / sizeof forced_pre[0]; i++)
        if (!strcmp(name, forced_pre[i].vectors)) {
            snprintf(rel, sizeof rel, "tokenizer/%s", forced_pre[i].vocab);
            loaded l = load_path(test_shared_path(rel, buf, sizeof buf));
            ck_assert_int_eq(tokenizer_set_pre(l.t, forced_pre[i].pre), 0);
            ck_assert_str_eq(tokenizer_pre_name(l.t), forced_pre[i].pre);
            return l;
        }
    snprintf(rel, sizeof rel, "tokenizer/%s", name);
    return load_path(test_shared_path(rel, buf, sizeof buf));
}

/* The test strings of X.gguf.inp and the expected ids of X.gguf.out. */
typedef struct vectors {
    char *inp, *out;
    int n;
    const char *text[64];
    size_t len[64];
    const char *ids[64];
} vectors;

static void read_vectors(const char *name, vectors *v)
{
    char rel[256], buf[4096];
    snprintf(rel, sizeof rel, "tokenizer/%s.inp", name);
    size_t inp_len;
    v->inp = test_read_file(test_shared_path(rel, buf, sizeof buf), &inp_len);
    ck_assert_msg(v->inp, "cannot read %s", buf);
    snprintf(rel, sizeof rel, "tokenizer/%s.out", name);
    v->out = test_read_file(test_shared_path(rel, buf, sizeof buf), NULL);
    ck_assert_msg(v->out, "cannot read %s", buf);
    static const char sep[] = "\n__ggml_vocab_test__\n";
    v->n = 0;
    char *p = v->inp, *end = v->inp + inp_len;
    while (p < end) {
        char *s = memmem(p, (size_t)(end - p), sep, sizeof sep - 1);
        ck_assert_msg(s, "%s.inp does not end with the separator", name);
        ck_assert(v->n < 64);
        v->text[v->n] = p;
        v->len[v->n] = (size_t)(s - p);
        v->n++;
        p = s + sizeof sep - 1;
    }
    int lines = 0;
    for (char *q = v->out; *q && lines < 64;) {
        v->ids[lines++] = q;
        char *nl = strchr(q, '\n');
        if (!nl)
            break;
        *nl = 0;
        q = nl + 1;
    }
    ck_assert_msg(lines >= v->n, "%s.out has %d lines for %d strings", name, lines, v->n);
}

static int parse_ids(const char *s, int32_t *out, int cap)
{
    int n = 0;
    char *end;
    for (;;) {
        long x = strtol(s, &end, 10);
        if (end == s)
            break;
        if (n < cap)
            out[n] = (int32_t)x;
        n++;
        s = end;
    }
    return n;
}

static void format_ids(const int32_t *ids, int n, char *buf, size_t cap)
{
    size_t at = 0;
    buf[0] = 0;
    for (int i = 0; i < n && at + 12 < cap; i++)
        at += (size_t)snprintf(buf + at, cap - at, " %d", ids[i]);
}

/* ---- llama.cpp's vectors ---- */

START_TEST(test_vocab_vectors)
{
    const char *name = vocabs[_i];
    loaded l = load_vocab(name);
    vectors v;
    read_vectors(name, &v);
    ck_assert_int_ge(v.n, 46); /* llama.cpp's 46, and sets of ours that add more */
    int pass = 0;
    char diag[4096] = "";
    for (int i = 0; i < v.n; i++) {
        int32_t want[1024], got[1024];
        int nw = parse_ids(v.ids[i], want, 1024);
        int ng = tokenizer_encode(l.t, v.text[i], v.len[i], false, false, got, 1024);
        ck_assert_int_ge(ng, 0);
        ck_assert_int_le(ng, 1024);
        if (ng == nw && memcmp(got, want, (size_t)ng * sizeof *got) == 0) {
            pass++;
        } else if (!diag[0]) {
            char a[1500], b[1500];
            format_ids(want, nw, a, sizeof a);
            format_ids(got, ng, b, sizeof b);
            snprintf(diag, sizeof diag, "string %d (%.40s): want%s got%s", i, v.text[i], a, b);
        }
    }
    fprintf(stderr, "%s: %d/%d vectors\n", name, pass, v.n);
    ck_assert_msg(pass == v.n, "%s: %d/%d; first failure %s", name, pass, v.n, diag);
    free(v.inp);
    free(v.out);
    unload(&l);
}
END_TEST

/* Decoding the ids gives the text back, and streaming them never shows half a character. */
START_TEST(test_vocab_round_trip)
{
    const char *name = vocabs[_i];
    loaded l = load_vocab(name);
    vectors v;
    read_vectors(name, &v);
    for (int i = 0; i < v.n; i++) {
        int32_t ids[1024];
        int n = tokenizer_encode(l.t, v.text[i], v.len[i], true, false, ids, 1024);
        ck_assert_int_ge(n, 0);
        char text[8192];
        int tl = tokenizer_decode(l.t, ids, n, false, text, (int)sizeof text);
        ck_assert_int_ge(tl, 0);
        ck_assert_msg((size_t)tl == v.len[i] && memcmp(text, v.text[i], v.len[i]) == 0,
                      "%s string %d: decoded '%.*s' from '%.*s'", name, i, tl, text, (int)v.len[i], v.text[i]);

        /* streaming: every chunk whole UTF-8, and all of them the concatenated pieces */
        detok_state st = {0};
        char all[8192];
        int at = 0;
        for (int k = 0; k < n; k++) {
            char chunk[1024];
            int c = detok_push(l.t, &st, ids[k], chunk, (int)sizeof chunk);
            ck_assert_int_ge(c, 0);
            ck_assert_msg(utf8_valid_prefix((const uint8_t *)chunk, (size_t)c) == (size_t)c,
                          "%s string %d: chunk %d is not whole UTF-8", name, i, k);
            memcpy(all + at, chunk, (size_t)c);
            at += c;
        }
        at += detok_flush(&st, all + at, (int)sizeof all - at);
        char pieces[8192];
        int pl = 0;
        for (int k = 0; k < n; k++)
            pl += tokenizer_piece(l.t, ids[k], false, pieces + pl, (int)sizeof pieces - pl);
        ck_assert_int_eq(at, pl);
        ck_assert(memcmp(all, pieces, (size_t)pl) == 0);
    }
    free(v.inp);
    free(v.out);
    unload(&l);
}
END_TEST

/* Malformed UTF-8 and odd bytes: never a failure. Byte-level BPE reads broken
 * sequences as U+FFFD, so its text comes back well-formed; like llama.cpp it lets an
 * encoded surrogate through. */
#define BYTES(s) {s, sizeof s - 1}
START_TEST(test_malformed_input)
{
    static const struct {
        const char *s;
        size_t n;
    } inputs[] = {
        BYTES("\xf0 a"), BYTES("\xff\xfe"), BYTES("\xe2\x96"), BYTES("\xc0\x80"), BYTES("\x80\x80 x"),
        BYTES("a\0b"), BYTES("\xf4\x90\x80\x80"), BYTES(" \xf0\x9f\xa6"), BYTES("<|im_start|\xff>"),
        BYTES("\xe2\x96\x81\xe2\x96"), BYTES("\xed\xa0\x80"), /* the surrogate last */
    };
    const size_t n_inputs = sizeof inputs / sizeof inputs[0];
    loaded l = load_vocab(vocabs[_i]);
    for (size_t i = 0; i < n_inputs; i++) {
        int32_t ids[64];
        int n = tokenizer_encode(l.t, inputs[i].s, inputs[i].n, true, true, ids, 64);
        ck_assert_msg(n > 0 && n <= 64, "%s input %zu: %d", vocabs[_i], i, n);
        for (int k = 0; k < n; k++)
            ck_assert(ids[k] >= 0 && ids[k] < tokenizer_n_vocab(l.t));
        char text[256];
        int tl = tokenizer_decode(l.t, ids, n, false, text, (int)sizeof text);
        ck_assert_int_ge(tl, 0);
        if (tokenizer_kind(l.t) == TOK_BPE && i + 1 < n_inputs)
            ck_assert(utf8_valid_prefix((const uint8_t *)text, (size_t)tl) == (size_t)tl);
    }
    unload(&l);
}
END_TEST

/* ---- the fixture prompts ---- */

START_TEST(test_fixture_prompts)
{
    char buf[4096], path[8192];
    const char *dir = test_shared_path("fixtures", buf, sizeof buf);
    DIR *d = opendir(dir);
    ck_assert_msg(d, "cannot open %s", dir);
    struct dirent *e;
    int checked = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char mdir[4800];
        snprintf(mdir, sizeof mdir, "%s/%s", dir, e->d_name);
        DIR *cd = opendir(mdir);
        if (!cd)
            continue;
        struct dirent *c;
        while ((c = readdir(cd))) {
            if (c->d_name[0] == '.')
                continue;
            char meta[8192], model[256], mpath[8192];
            snprintf(meta, sizeof meta, "%s/%s/meta.txt", mdir, c->d_name);
            if (test_meta_get(meta, "model", model, sizeof model))
                continue;
            char name[600], arch[32], wtype[16], kind[16];
            snprintf(name, sizeof name, "%s/%s", e->d_name, c->d_name);
            snprintf(mpath, sizeof mpath, "%s/%s", mdir, c->d_name);
            ck_assert(!fixture_describe(mpath, name, arch, wtype, kind));
            if (!strcmp(kind, "vision")) /* -1 for the image: tests/test_vision.c tokenizes these */
                continue;
            const char *why = fixture_unsupported(arch, wtype, kind);
            if (why) {
                test_say_skip(name, why);
                continue;
            }
            snprintf(mpath, sizeof mpath, "%s/../models/%s", dir, model);
            loaded l = load_path(mpath);
            size_t plen;
            snprintf(path, sizeof path, "%s/%s/prompt.txt", mdir, c->d_name);
            char *prompt = test_read_file(path, &plen);
            ck_assert_msg(prompt, "cannot read %s", path);
            int32_t *want;
            snprintf(path, sizeof path, "%s/%s/tokens.txt", mdir, c->d_name);
            int nw = test_read_ints(path, &want);
            ck_assert_int_gt(nw, 0);
            int32_t got[512];
            int ng = tokenizer_encode(l.t, prompt, plen, true, true, got, 512);
            char a[2048], b[2048];
            format_ids(want, nw, a, sizeof a);
            format_ids(got, ng, b, sizeof b);
            ck_assert_msg(ng == nw && memcmp(got, want, (size_t)nw * sizeof *got) == 0,
                          "%s/%s: want%s got%s", e->d_name, c->d_name, a, b);
            checked++;
            free(prompt);
            free(want);
            unload(&l);
        }
        closedir(cd);
    }
    closedir(d);
    fprintf(stderr, "fixture prompts: %d/%d\n", checked, checked);
    ck_assert_int_ge(checked, 40);
}
END_TEST

/* ---- special tokens ---- */

static loaded load_model(const char *name)
{
    char rel[256], buf[4096];
    snprintf(rel, sizeof rel, "models/%s", name);
    return load_path(test_shared_path(rel, buf, sizeof buf));
}

START_TEST(test_qwen_specials)
{
    loaded l = load_model("qwen3-tiny-q4_k.gguf");
    tokenizer *t = l.t;
    ck_assert_int_eq(tokenizer_kind(t), TOK_BPE);
    ck_assert_int_eq(tokenizer_n_vocab(t), 8224);
    ck_assert_str_eq(tokenizer_pre_name(t), "qwen2");
    ck_assert(!tokenizer_add_bos(t));
    ck_assert(!tokenizer_add_eos(t));
    ck_assert_int_eq(tokenizer_eos(t), 8194);
    ck_assert_int_eq(tokenizer_find(t, "<|im_end|>"), 8194);
    ck_assert(tokenizer_is_eog(t, 8194));   /* <|im_end|> */
    ck_assert(tokenizer_is_eog(t, 8192));   /* <|endoftext|> */
    ck_assert(tokenizer_is_eog(t, tokenizer_find(t, "<|file_sep|>")));
    ck_assert(!tokenizer_is_eog(t, 8193));  /* <|im_start|> */
    ck_assert(!tokenizer_is_eog(t, 785));
    ck_assert(!tokenizer_is_eog(t, -1));
    ck_assert_int_eq(tokenizer_attr(t, 8193), TOKT_CONTROL);
    ck_assert_int_eq(tokenizer_attr(t, 8216), TOKT_USER_DEFINED);
    ck_assert_str_eq(tokenizer_text(t, 8216), "<think>");

    const char *s = "<|im_start|>user\n<think>Hi";
    int32_t a[64], b[64];
    int na = tokenizer_encode(t, s, strlen(s), true, true, a, 64);
    int nb = tokenizer_encode(t, s, strlen(s), true, false, b, 64);
    ck_assert_int_gt(na, 0);
    ck_assert_int_eq(a[0], 8193);
    ck_assert_int_gt(nb, na); /* <|im_start|> is text now */
    ck_assert_int_ne(b[0], 8193);
    /* user-defined tokens are matched without parse_special too */
    bool think_a = false, think_b = false;
    for (int i = 0; i < na; i++)
        think_a |= a[i] == 8216;
    for (int i = 0; i < nb; i++)
        think_b |= b[i] == 8216;
    ck_assert(think_a && think_b);

    /* control tokens show their text only when asked */
    char p[64];
    ck_assert_int_eq(tokenizer_piece(t, 8194, false, p, 64), 0);
    ck_assert_int_eq(tokenizer_piece(t, 8194, true, p, 64), 10);
    ck_assert(memcmp(p, "<|im_end|>", 10) == 0);
    ck_assert_int_eq(tokenizer_piece(t, 8216, false, p, 64), 7);
    ck_assert_int_eq(tokenizer_piece(t, 8223, true, p, 64), 0); /* [PAD8223], unused */
    /* a short buffer gets a prefix, the return value says how much is needed */
    ck_assert_int_eq(tokenizer_piece(t, 8194, true, p, 3), 10);
    ck_assert(memcmp(p, "<|i", 3) == 0);
    ck_assert_int_ge(tokenizer_max_piece(t), 10);

    /* the count is returned even when it does not fit */
    ck_assert_int_eq(tokenizer_encode(t, s, strlen(s), true, true, a, 1), na);
    ck_assert_int_eq(a[0], 8193);
    ck_assert_int_eq(tokenizer_encode(t, s, strlen(s), true, true, NULL, 0), na);
    ck_assert_int_eq(tokenizer_encode(t, "", 0, true, true, a, 64), 0);
    unload(&l);
}
END_TEST

START_TEST(test_spm_specials)
{
    loaded l = load_model("stories260K.gguf");
    tokenizer *t = l.t;
    ck_assert_int_eq(tokenizer_kind(t), TOK_SPM);
    ck_assert(tokenizer_add_bos(t));
    ck_assert(!tokenizer_add_eos(t));
    ck_assert_int_eq(tokenizer_bos(t), 1);
    ck_assert_int_eq(tokenizer_eos(t), 2);
    ck_assert(tokenizer_is_eog(t, 2));
    ck_assert(!tokenizer_is_eog(t, 1));
    int32_t ids[64];
    /* an empty prompt is BOS alone; BOS is not repeated for a space */
    ck_assert_int_eq(tokenizer_encode(t, "", 0, true, true, ids, 64), 1);
    ck_assert_int_eq(ids[0], 1);
    ck_assert_int_eq(tokenizer_encode(t, "", 0, false, true, ids, 64), 0);
    /* "</s>" is a control token: text unless parse_special */
    int n1 = tokenizer_encode(t, "a</s>b", 6, false, true, ids, 64);
    bool has_eos = false;
    for (int i = 0; i < n1; i++)
        has_eos |= ids[i] == 2;
    ck_assert(has_eos);
    int n2 = tokenizer_encode(t, "a</s>b", 6, false, false, ids, 64);
    for (int i = 0; i < n2; i++)
        ck_assert_int_ne(ids[i], 2);
    /* byte fallback: a character the 512-token vocab lacks comes back whole */
    const char *odd = "\xe6\x97\xa5"; /* 日 */
    int n3 = tokenizer_encode(t, odd, 3, false, false, ids, 64);
    ck_assert_int_eq(n3, 4); /* ▁ and three bytes */
    for (int i = 1; i < n3; i++)
        ck_assert_int_eq(tokenizer_attr(t, ids[i]), TOKT_BYTE);
    char text[64];
    int tl = tokenizer_decode(t, ids, n3, false, text, 64);
    ck_assert_int_eq(tl, 3);
    ck_assert(memcmp(text, odd, 3) == 0);
    unload(&l);
}
END_TEST

/* Phi-3 (by its general.name): whitespace after a special token is dropped, and the
 * text after a special token gets SentencePiece's space again. */
START_TEST(test_phi3_rstrip)
{
    loaded l = load_vocab("ggml-vocab-phi-3.gguf");
    const char *s = "<|user|>\nHello<|end|>\n";
    int32_t ids[16];
    int n = tokenizer_encode(l.t, s, strlen(s), true, true, ids, 16);
    ck_assert_int_eq(n, 4);
    ck_assert_int_eq(ids[0], 1);
    ck_assert_int_eq(ids[1], 32010);
    ck_assert_int_eq(ids[2], tokenizer_find(l.t, "\xe2\x96\x81Hello"));
    ck_assert_int_eq(ids[3], 32007);
    ck_assert(tokenizer_is_eog(l.t, 32007)); /* <|end|> */
    ck_assert(tokenizer_is_eog(l.t, 32000)); /* <|endoftext|>, the eos */
    ck_assert(!tokenizer_is_eog(l.t, 32010));
    unload(&l);
}
END_TEST

/* Byte tokens of one multi-byte character pushed one at a time: nothing comes out
 * until the character is complete; broken sequences come out as U+FFFD. */
START_TEST(test_stream_partial_chars)
{
    loaded l = load_vocab("ggml-vocab-llama-spm.gguf");
    tokenizer *t = l.t;
    const char *text = "a\xf0\x9f\xa6\x99\xc3\xa9z\xe4\xb8\xad";
    size_t n = strlen(text);
    /* the bytes as byte tokens, one by one, with a flush after every possible cut */
    for (size_t cut = 0; cut <= n; cut++) {
        detok_state st = {0};
        char out[256];
        int at = 0;
        for (size_t i = 0; i < n; i++) {
            char name[8];
            snprintf(name, sizeof name, "<0x%02X>", (unsigned char)text[i]);
            int32_t id = tokenizer_find(t, name);
            ck_assert_int_ge(id, 0);
            char chunk[64];
            int c = detok_push(t, &st, id, chunk, 64);
            ck_assert(utf8_valid_prefix((const uint8_t *)chunk, (size_t)c) == (size_t)c);
            memcpy(out + at, chunk, (size_t)c);
            at += c;
            if (i + 1 == cut) { /* a flush inside a character gives one U+FFFD */
                bool inside = st.n_pending > 0;
                int f = detok_flush(&st, out + at, 64);
                ck_assert_int_eq(f, inside ? 3 : 0);
                at += f;
            }
        }
        at += detok_flush(&st, out + at, 64);
        ck_assert(utf8_valid_prefix((const uint8_t *)out, (size_t)at) == (size_t)at);
        if (cut == 0 || cut == n) {
            ck_assert_int_eq(at, (int)n);
            ck_assert(memcmp(out, text, n) == 0);
        }
    }
    /* the llama emoji: four byte tokens, text only at the fourth */
    detok_state st = {0};
    const unsigned char emoji[] = {0xF0, 0x9F, 0xA6, 0x99};
    for (int i = 0; i < 4; i++) {
        char name[8], chunk[16];
        snprintf(name, sizeof name, "<0x%02X>", emoji[i]);
        int c = detok_push(t, &st, tokenizer_find(t, name), chunk, 16);
        ck_assert_int_eq(c, i == 3 ? 4 : 0);
        if (i == 3)
            ck_assert(memcmp(chunk, emoji, 4) == 0);
    }
    /* a lead byte followed by ASCII: U+FFFD, then the ASCII */
    char chunk[16];
    ck_assert_int_eq(detok_push(t, &st, tokenizer_find(t, "<0xE2>"), chunk, 16), 0);
    int c = detok_push(t, &st, tokenizer_find(t, "<0x28>"), chunk, 16);
    ck_assert_int_eq(c, 4);
    ck_assert(memcmp(chunk, "\xef\xbf\xbd(", 4) == 0);
    /* a stray continuation byte and an impossible byte */
    ck_assert_int_eq(detok_push(t, &st, tokenizer_find(t, "<0x80>"), chunk, 16), 3);
    ck_assert_int_eq(detok_push(t, &st, tokenizer_find(t, "<0xFF>"), chunk, 16), 3);
    /* a surrogate's encoding is not well-formed */
    detok_push(t, &st, tokenizer_find(t, "<0xED>"), chunk, 16);
    c = detok_push(t, &st, tokenizer_find(t, "<0xA0>"), chunk, 16);
    ck_assert(utf8_valid_prefix((const uint8_t *)chunk, (size_t)c) == (size_t)c);
    /* an unfinished character at the end */
    detok_push(t, &st, tokenizer_find(t, "<0xC3>"), chunk, 16);
    ck_assert_int_eq(detok_flush(&st, chunk, 16), 3);
    ck_assert_int_eq(detok_flush(&st, chunk, 16), 0);
    unload(&l);
}
END_TEST

/* Random byte tokens: whatever arrives, the output stays well-formed. */
START_TEST(test_stream_random_bytes)
{
    loaded l = load_vocab("ggml-vocab-llama-spm.gguf");
    int32_t byte_id[256];
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        byte_id[b] = tokenizer_find(l.t, name);
        ck_assert_int_ge(byte_id[b], 0);
    }
    unsigned seed = 12345;
    for (int round = 0; round < 2000; round++) {
        detok_state st = {0};
        char out[512];
        int at = 0;
        for (int i = 0; i < 12; i++) {
            seed = seed * 1103515245u + 12345u;
            /* lean towards bytes that build multi-byte sequences */
            unsigned r = (seed >> 16) & 0xFF;
            int b = r < 96 ? 0x80 + (int)(r % 64) : r < 160 ? 0xC0 + (int)(r % 64) : (int)r;
            at += detok_push(l.t, &st, byte_id[b], out + at, (int)sizeof out - at);
        }
        at += detok_flush(&st, out + at, (int)sizeof out - at);
        ck_assert(utf8_valid_prefix((const uint8_t *)out, (size_t)at) == (size_t)at);
    }
    unload(&l);
}
END_TEST

/* ---- speed ---- */

/* CPU time of the process: what the tokenizer costs, not how busy the machine is (the
 * bounds below are about scaling, not speed claims) */
static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

START_TEST(test_load_and_encode_speed)
{
    char buf[4096];
    llmfs_error err = {0};
    gguf_file *f = gguf_open(test_shared_path("tokenizer/qwen3-vocab.gguf", buf, sizeof buf), NULL, &err);
    ck_assert_msg(f, "%s", err.msg);
    double t0 = now_ms();
    tokenizer *t = tokenizer_load(f, &err);
    double t1 = now_ms();
    ck_assert_msg(t, "%s", err.msg);
    ck_assert_int_eq(tokenizer_n_vocab(t), 151936);
    fprintf(stderr, "qwen3 vocab (151936 tokens, 151387 merges): loaded in %.1f ms\n", t1 - t0);
    /* generous: the target is 100 ms, sanitizer builds are several times slower */
    ck_assert_msg(t1 - t0 < 1000, "loading took %.0f ms", t1 - t0);

    /* encoding time grows about linearly: 4x the text, well under 16x the time */
    const char *para = "The quick brown fox jumps over the lazy dog; 12345 r\xc3\xa9sum\xc3\xa9s "
                       "\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e  and\ttabs\n";
    size_t pl = strlen(para);
    size_t big = pl * 4000;
    char *text = malloc(big);
    for (size_t i = 0; i < 4000; i++)
        memcpy(text + i * pl, para, pl);
    /* one long word stresses the merge queue */
    memset(text + big / 2, 'a', 20000);
    int32_t *ids = malloc(big * sizeof *ids);
    double a0 = now_ms();
    int n1 = tokenizer_encode(t, text, big / 4, false, false, ids, (int)big);
    double a1 = now_ms();
    int n4 = tokenizer_encode(t, text, big, false, false, ids, (int)big);
    double a2 = now_ms();
    ck_assert_int_gt(n1, 0);
    ck_assert_int_gt(n4, n1);
    fprintf(stderr, "encode %zu bytes: %.1f ms, %zu bytes: %.1f ms\n", big / 4, a1 - a0, big, a2 - a1);
    ck_assert_msg(a2 - a1 < 16 * (a1 - a0) + 50, "encoding scales badly: %.1f vs %.1f ms", a1 - a0, a2 - a1);
    free(text);
    free(ids);
    tokenizer_free(t);
    gguf_close(f);
}
END_TEST

/* ---- malformed metadata ---- */

/* Writes w to a temporary file, opens it and tries to load a tokenizer: returns the
 * result code (0 on success) and the message. */
static int try_load(gguf_writer *w, char *msg, size_t cap)
{
    char path[] = "/tmp/llmfs-tok-XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    llmfs_error err = {0};
    ck_assert_msg(gguf_writer_write(w, path, &err) == 0, "%s", err.msg);
    gguf_writer_free(w);
    gguf_file *f = gguf_open(path, NULL, &err);
    ck_assert_msg(f, "%s", err.msg);
    tokenizer *t = tokenizer_load(f, &err);
    int rc = t ? 0 : -err.code;
    snprintf(msg, cap, "%s", t ? "" : err.msg);
    tokenizer_free(t);
    gguf_close(f);
    unlink(path);
    return rc;
}

static const char *const tiny_tokens[] = {"<unk>", "<s>", "</s>", "a", "b", "ab", "\xe2\x96\x81", "\xe2\x96\x81" "a"};
static const float tiny_scores[] = {0, 0, 0, -1, -2, -0.5f, -3, -0.25f};
static const int32_t tiny_types[] = {2, 3, 3, 1, 1, 1, 1, 1};

static gguf_writer *tiny_spm(void)
{
    gguf_writer *w = gguf_writer_new();
    gguf_w_str(w, "tokenizer.ggml.model", "llama");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", tiny_tokens, 8);
    gguf_w_arr_f32(w, "tokenizer.ggml.scores", tiny_scores, 8);
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", tiny_types, 8);
    return w;
}

static const char *const bpe_tokens[] = {"a", "b", "c", "ab", "abc", "\xc4\xa0", "<|endoftext|>"};
static const char *const bpe_merges[] = {"a b", "ab c"};

static gguf_writer *tiny_bpe(const char *pre)
{
    gguf_writer *w = gguf_writer_new();
    gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    if (pre)
        gguf_w_str(w, "tokenizer.ggml.pre", pre);
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", bpe_tokens, 7);
    gguf_w_arr_str(w, "tokenizer.ggml.merges", bpe_merges, 2);
    return w;
}

START_TEST(test_malformed_metadata)
{
    char msg[256];
    gguf_writer *w;

    /* a well-formed tiny vocabulary loads */
    ck_assert_int_eq(try_load(tiny_spm(), msg, sizeof msg), 0);
    ck_assert_int_eq(try_load(tiny_bpe("gpt-2"), msg, sizeof msg), 0);

    w = gguf_writer_new();
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", tiny_tokens, 8);
    ck_assert_int_eq(try_load(w, msg, sizeof msg), -EINVAL);
    ck_assert_msg(strstr(msg, "tokenizer.ggml.model"), "%s", msg);

    w = tiny_spm();
    gguf_w_str(w, "tokenizer.ggml.model", "bert");
    ck_assert_int_eq(try_load(w, msg, sizeof msg), -EINVAL);
    ck_assert_msg(strstr(msg, "bert"), "%s", msg);

    w = gguf_writer_new();
    gguf_w_str(w, "tokenizer.ggml.model", "llama");
    ck_assert_int_eq(try_load(w, msg, sizeof msg), -EINVAL);
    ck_assert_msg(strstr(msg, "tokenizer.ggml.tokens"), "%s", msg);

    w = gguf_writer_new();
    gguf_w_str(w, "tokenizer.ggml.model", "llama");
    gguf_w_arr_i32(w, "tokenizer.ggml.tokens", tiny_types, 8);
    ck_assert_int_eq(try_load(w, msg, sizeof msg), -EINVAL);
    ck_assert_msg(strstr(msg, "array of strings"), "%s", msg);

    w = gguf_writer_new();
    gguf_w_str(w, "tokenizer.ggml.model", "llama");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", tiny_tokens, 0);
    ck_assert_int_eq(try_load(w, msg, sizeof msg), -EINVAL);

    w = tiny_spm();
    gguf_w_arr_f32(w, "tokenizer.ggml.scores", tiny_scores, 5);
    ck_assert_int_eq(try_load(w, msg, sizeof msg), -EINVAL);
    ck_assert_msg(strstr(msg, "scores"), "%s", msg);

    w = tiny_spm();
    gguf_w_arr_i32(w, "tokenizer.ggml.token_type", tiny_types, 7);
    ck_assert_int_eq(try_load(w, msg, sizeof msg), -EINVAL);
    ck_assert_msg(strstr(msg, "token_type"), "%s", msg);

    w = gguf_writer_new();
    gguf_w_str(w, "tokenizer.ggml.model", "gpt2");
    gguf_w_arr_str(w, "tokenizer.ggml.tokens", bpe_tokens, 7);
    ck_assert_int_eq(try_load(w, msg, sizeof msg), -EINVAL);
    ck_assert_msg(strstr(msg, "merges"), "%s", msg);

    static const char *const bad_merge[] = {"a b", "abc"};
    w = tiny_bpe("gpt-2");
    gguf_w_arr_str(w, "tokenizer.ggml.merges", bad_merge, 2);
    ck_assert_int_eq(try_load(w, msg, sizeof msg), -EINVAL);
    ck_assert_msg(strstr(msg, "merge 1"), "%s", msg);

    ck_assert_int_eq(try_load(tiny_bpe("tekken"), msg, sizeof msg), -EINVAL);
    ck_assert_msg(strstr(msg, "tekken"), "%s", msg);

    /* asks for BOS, has none that fits */
    w = tiny_bpe("gpt-2");
    gguf_w_bool(w, "tokenizer.ggml.add_bos_token", true);
    ck_assert_int_eq(try_load(w, msg, sizeof msg), -EINVAL);
    ck_assert_msg(strstr(msg, "BOS"), "%s", msg);
}
END_TEST

/* Hand-made vocabularies whose right answers follow from the rules. */
START_TEST(test_tiny_vocabs)
{
    char path[] = "/tmp/llmfs-tok-XXXXXX";
    int fd = mkstemp(path);
    close(fd);
    llmfs_error err = {0};
    gguf_writer *w = tiny_spm();
    gguf_w_u32(w, "tokenizer.ggml.bos_token_id", 1);
    gguf_w_u32(w, "tokenizer.ggml.unknown_token_id", 0);
    ck_assert(gguf_writer_write(w, path, &err) == 0);
    gguf_writer_free(w);
    gguf_file *f = gguf_open(path, NULL, &err);
    tokenizer *t = tokenizer_load(f, &err);
    ck_assert_msg(t, "%s", err.msg);
    int32_t ids[16];
    /* "▁ab": "▁a" (score -0.25) merges before "ab" (-0.5); b stays alone */
    int n = tokenizer_encode(t, "ab", 2, true, false, ids, 16);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(ids[0], 1);
    ck_assert_int_eq(ids[1], 7);
    ck_assert_int_eq(ids[2], 4);
    /* no add_space_prefix: "ab" merges whole; a character outside the vocab and
     * without byte tokens becomes <unk> */
    tokenizer_free(t);
    gguf_close(f);
    w = tiny_spm();
    gguf_w_bool(w, "tokenizer.ggml.add_space_prefix", false);
    ck_assert(gguf_writer_write(w, path, &err) == 0);
    gguf_writer_free(w);
    f = gguf_open(path, NULL, &err);
    t = tokenizer_load(f, &err);
    ck_assert_msg(t, "%s", err.msg);
    n = tokenizer_encode(t, "abz", 3, false, false, ids, 16);
    ck_assert_int_eq(n, 2);
    ck_assert_int_eq(ids[0], 5);
    ck_assert_int_eq(ids[1], 0);
    tokenizer_free(t);
    gguf_close(f);

    /* BPE: "abc" by rank (a b, then ab c); " abc" keeps Ġ apart: no merge lists it */
    w = tiny_bpe("gpt-2");
    ck_assert(gguf_writer_write(w, path, &err) == 0);
    gguf_writer_free(w);
    f = gguf_open(path, NULL, &err);
    t = tokenizer_load(f, &err);
    ck_assert_msg(t, "%s", err.msg);
    n = tokenizer_encode(t, "abc abc", 7, true, false, ids, 16);
    ck_assert_int_eq(n, 3);
    ck_assert_int_eq(ids[0], 4);
    ck_assert_int_eq(ids[1], 5);
    ck_assert_int_eq(ids[2], 4);
    ck_assert(!tokenizer_add_bos(t));
    ck_assert(tokenizer_is_eog(t, 6)); /* <|endoftext|> by its text */
    ck_assert_int_eq(tokenizer_attr(t, 6), TOKT_CONTROL);
    char text[32];
    ck_assert_int_eq(tokenizer_decode(t, ids, n, false, text, 32), 7);
    ck_assert(memcmp(text, "abc abc", 7) == 0);
    tokenizer_free(t);
    gguf_close(f);
    unlink(path);
}
END_TEST

/* gpt-4o's words, worked out by hand from llama.cpp's rewrite of the o200k pattern:
 * only ASCII letters have a case, and a run of capitals keeps its lower-case tail. */
START_TEST(test_gpt4o_split)
{
    static const struct { const char *text, *words; } cases[] = {
        {"HelloWorld", "Hello|World"},
        {"JSONParser", "JSONParser"},
        {"helloWORLD", "hello|WORLD"},
        {" don't stop", " don't| stop"},
        {"$12.5/\n", "$|12|.|5|/\n"},
        {"1234567", "123|456|7"},
        {"\xc3\xa9" "ABC", "\xc3\xa9|ABC"},   /* U* gives back the capitals: only the é is W */
        {"ABC\xc3\xa9", "ABC\xc3\xa9"},
        {"a  \n\n b", "a|  \n\n| b"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *t = cases[c].text;
        uint32_t cps[64];
        size_t n = 0, off = 0, len = strlen(t), ends[64], tmp[64];
        while (off < len)
            cps[n++] = utf8_decode((const uint8_t *)t, len, &off);
        size_t nw = pretok_split(PRETOK_GPT4O, cps, n, ends, tmp);
        char got[256];
        size_t at = 0, start = 0;
        for (size_t w = 0; w < nw; w++) {
            if (w)
                got[at++] = '|';
            for (size_t i = start; i < ends[w]; i++)
                at += (size_t)utf8_encode(cps[i], got + at);
            start = ends[w];
        }
        got[at] = 0;
        ck_assert_msg(!strcmp(got, cases[c].words), "'%s': got '%s', want '%s'", t, got, cases[c].words);
    }
    ck_assert_int_eq(pretok_from_name("gpt-4o"), PRETOK_GPT4O);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("tokenizer");
    TCase *tc = tcase_create("vectors");
    tcase_set_timeout(tc, 600);
    tcase_add_loop_test(tc, test_vocab_vectors, 0, n_vocabs);
    tcase_add_loop_test(tc, test_vocab_round_trip, 0, n_vocabs);
    tcase_add_loop_test(tc, test_malformed_input, 0, n_vocabs);
    tcase_add_test(tc, test_fixture_prompts);
    suite_add_tcase(s, tc);
    TCase *sp = tcase_create("special");
    tcase_set_timeout(sp, 600);
    tcase_add_test(sp, test_qwen_specials);
    tcase_add_test(sp, test_gpt4o_split);
    tcase_add_test(sp, test_spm_specials);
    tcase_add_test(sp, test_phi3_rstrip);
    tcase_add_test(sp, test_stream_partial_chars);
    tcase_add_test(sp, test_stream_random_bytes);
    tcase_add_test(sp, test_load_and_encode_speed);
    suite_add_tcase(s, sp);
    TCase *bad = tcase_create("metadata");
    tcase_add_test(bad, test_malformed_metadata);
    tcase_add_test(bad, test_tiny_vocabs);
    suite_add_tcase(s, bad);
    return s;
}

int main(void)
{
    if (!test_shared_dir())
        test_skip_no_shared("tokenizer tests");
    find_vocabs();
    if (n_vocabs < 6) {
        fprintf(stderr, "tokenizer/: %d vector sets found, expected at least 6\n", n_vocabs);
        return 1;
    }
    return test_run_suite(make_suite());
}
