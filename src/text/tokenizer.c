/* tokenizer.c — loading a vocabulary from GGUF metadata, and the lookups on it.
 *
 * The defaults and the special-token rules follow llama.cpp's vocabulary loader, so
 * that text tokenizes to the same ids. All token and merge texts are copied into two
 * arenas and indexed by hash tables: loading does a fixed number of allocations
 * whatever the vocabulary size. */
#include "tok_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define KEY(k) "tokenizer.ggml." k

uint64_t tok_hash_bytes(const void *p, size_t n)
{
    const uint8_t *s = p;
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0x100000001B3ull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, s, 8);
        h = (h ^ w) * 0xFF51AFD7ED558CCDull;
        h ^= h >> 32;
        s += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, s, n);
    h = (h ^ w) * 0xC4CEB9FE1A85EC53ull;
    h ^= h >> 29;
    return h;
}

static int hash_init(tok_hash *h, size_t n_keys)
{
    size_t cap = 16;
    while (cap < n_keys * 2)
        cap *= 2;
    h->slot = malloc(cap * sizeof *h->slot);
    if (!h->slot)
        return -ENOMEM;
    memset(h->slot, 0xFF, cap * sizeof *h->slot);
    h->mask = (uint32_t)(cap - 1);
    return 0;
}

int32_t tok_lookup(const tokenizer *t, const char *s, size_t n)
{
    uint32_t i = (uint32_t)tok_hash_bytes(s, n) & t->by_text.mask;
    for (;; i = (i + 1) & t->by_text.mask) {
        int32_t id = t->by_text.slot[i];
        if (id < 0)
            return -1;
        if (t->len[id] == n && memcmp(t->text + t->off[id], s, n) == 0)
            return id;
    }
}

static uint64_t merge_hash(const char *s, size_t split, size_t n)
{
    return tok_hash_bytes(s, n) ^ ((uint64_t)split * 0x9E3779B97F4A7C15ull);
}

int32_t tok_merge_rank(const tokenizer *t, const char *s, size_t split, size_t n)
{
    uint32_t i = (uint32_t)merge_hash(s, split, n) & t->by_merge.mask;
    for (;; i = (i + 1) & t->by_merge.mask) {
        int32_t r = t->by_merge.slot[i];
        if (r < 0)
            return -1;
        if (t->mlen[r] == n && t->msplit[r] == split && memcmp(t->mtext + t->moff[r], s, n) == 0)
            return r;
    }
}

int tok_vec_push(tok_vec *v, int32_t id)
{
    if (v->n == v->cap) {
        size_t cap = v->cap ? v->cap * 2 : 64;
        int32_t *p = realloc(v->v, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        v->v = p;
        v->cap = cap;
    }
    v->v[v->n++] = id;
    return 0;
}

/* ---- loading ---- */

typedef struct arena {
    char *p;
    size_t n, cap;
} arena;

static int arena_add(arena *a, const char *s, size_t n, uint32_t *off)
{
    if (a->n + n + 1 > UINT32_MAX)
        return -EOVERFLOW;
    if (a->n + n + 1 > a->cap) {
        size_t cap = a->cap ? a->cap : 1 << 16;
        while (cap < a->n + n + 1)
            cap *= 2;
        char *p = realloc(a->p, cap);
        if (!p)
            return -ENOMEM;
        a->p = p;
        a->cap = cap;
    }
    *off = (uint32_t)a->n;
    memcpy(a->p + a->n, s, n);
    a->p[a->n + n] = 0;
    a->n += n + 1;
    return 0;
}

static int load_tokens(tokenizer *t, const gguf_file *f, llmfs_error *err)
{
    int ki = gguf_find_key(f, KEY("tokens"));
    if (ki < 0)
        return llmfs_errorf(err, EINVAL, "tokenizer: no " KEY("tokens") " in the metadata");
    if (gguf_kv_type(f, ki) != GGUF_T_ARRAY || gguf_kv_arr_type(f, ki) != GGUF_T_STRING)
        return llmfs_errorf(err, EINVAL, "tokenizer: " KEY("tokens") " is not an array of strings");
    uint64_t n = gguf_kv_arr_n(f, ki);
    if (n == 0 || n > (1u << 30))
        return llmfs_errorf(err, EINVAL, "tokenizer: vocabulary of %llu tokens", (unsigned long long)n);
    t->n_vocab = (int)n;

    /* scores: optional f32 array of the same length */
    const float *scores = NULL;
    int si = gguf_find_key(f, KEY("scores"));
    if (si >= 0) {
        enum gguf_vtype st;
        uint64_t sn;
        scores = gguf_get_arr_data(f, KEY("scores"), &st, &sn);
        if (!scores || st != GGUF_T_F32 || sn != n)
            return llmfs_errorf(err, EINVAL, "tokenizer: " KEY("scores") " must be %llu f32 values",
                                (unsigned long long)n);
    }
    /* token types: optional integer array of the same length */
    int ti = gguf_find_key(f, KEY("token_type"));
    if (ti >= 0 && (gguf_kv_type(f, ti) != GGUF_T_ARRAY || gguf_kv_arr_n(f, ti) != n))
        return llmfs_errorf(err, EINVAL, "tokenizer: " KEY("token_type") " must be %llu integers",
                            (unsigned long long)n);

    t->off = malloc(n * sizeof *t->off);
    t->len = malloc(n * sizeof *t->len);
    t->score = malloc(n * sizeof *t->score);
    t->type = malloc(n);
    t->flags = calloc(n, 1);
    t->eog = calloc(n, 1);
    if (!t->off || !t->len || !t->score || !t->type || !t->flags || !t->eog || hash_init(&t->by_text, n))
        return llmfs_errorf(err, ENOMEM, "tokenizer: out of memory for %llu tokens", (unsigned long long)n);

    arena a = {0};
    for (uint64_t i = 0; i < n; i++) {
        size_t len;
        const char *s = gguf_get_arr_str(f, KEY("tokens"), i, &len);
        char empty[32];
        if (!s) {
            free(a.p);
            return llmfs_errorf(err, EINVAL, "tokenizer: token %llu is unreadable", (unsigned long long)i);
        }
        if (len == 0) { /* llama.cpp names empty tokens so that they stay distinct */
            len = (size_t)snprintf(empty, sizeof empty, "[EMPTY_%llu]", (unsigned long long)i);
            s = empty;
        }
        int rc = arena_add(&a, s, len, &t->off[i]);
        if (rc) {
            free(a.p);
            return llmfs_errorf(err, -rc, "tokenizer: out of memory for the token texts");
        }
        t->len[i] = (uint32_t)len;
        if ((int)len > t->max_len)
            t->max_len = (int)len;
        float sc = 0;
        if (scores)
            memcpy(&sc, (const char *)scores + i * 4, 4);
        t->score[i] = sc;
        int64_t ty = TOKT_NORMAL;
        if (ti >= 0 && !gguf_get_arr_i64(f, KEY("token_type"), i, &ty)) {
            free(a.p);
            return llmfs_errorf(err, EINVAL, "tokenizer: " KEY("token_type") " is not an integer array");
        }
        t->type[i] = ty >= TOKT_NORMAL && ty <= TOKT_BYTE ? (uint8_t)ty : 0;
    }
    t->text = a.p;

    /* A text that occurs twice maps to its last id, as in llama.cpp. */
    for (uint64_t i = 0; i < n; i++) {
        const char *s = t->text + t->off[i];
        uint32_t h = (uint32_t)tok_hash_bytes(s, t->len[i]) & t->by_text.mask;
        for (;; h = (h + 1) & t->by_text.mask) {
            int32_t id = t->by_text.slot[h];
            if (id < 0 || (t->len[id] == t->len[i] && memcmp(t->text + t->off[id], s, t->len[i]) == 0)) {
                t->by_text.slot[h] = (int32_t)i;
                break;
            }
        }
    }
    return 0;
}

static int load_merges(tokenizer *t, const gguf_file *f, llmfs_error *err)
{
    int ki = gguf_find_key(f, KEY("merges"));
    if (ki < 0)
        return llmfs_errorf(err, EINVAL, "tokenizer: BPE vocabulary without " KEY("merges"));
    if (gguf_kv_type(f, ki) != GGUF_T_ARRAY || gguf_kv_arr_type(f, ki) != GGUF_T_STRING)
        return llmfs_errorf(err, EINVAL, "tokenizer: " KEY("merges") " is not an array of strings");
    uint64_t n = gguf_kv_arr_n(f, ki);
    if (n > (1u << 30))
        return llmfs_errorf(err, EINVAL, "tokenizer: %llu merges", (unsigned long long)n);
    t->n_merges = (int)n;
    t->moff = malloc((n + 1) * sizeof *t->moff);
    t->mlen = malloc((n + 1) * sizeof *t->mlen);
    t->msplit = malloc((n + 1) * sizeof *t->msplit);
    if (!t->moff || !t->mlen || !t->msplit || hash_init(&t->by_merge, n))
        return llmfs_errorf(err, ENOMEM, "tokenizer: out of memory for %llu merges", (unsigned long long)n);
    arena a = {0};
    char *buf = NULL;
    size_t buf_cap = 0;
    int rc = 0;
    for (uint64_t r = 0; r < n && !rc; r++) {
        size_t len;
        const char *s = gguf_get_arr_str(f, KEY("merges"), r, &len);
        /* "left right": the separator is the first space after the first byte */
        const char *sp = s && len > 1 ? memchr(s + 1, ' ', len - 1) : NULL;
        if (!sp) {
            rc = llmfs_errorf(err, EINVAL, "tokenizer: merge %llu is not two parts separated by a space",
                              (unsigned long long)r);
            break;
        }
        size_t split = (size_t)(sp - s);
        if (len > buf_cap) {
            buf_cap = len * 2;
            char *nb = realloc(buf, buf_cap);
            if (!nb) {
                rc = llmfs_errorf(err, ENOMEM, "tokenizer: out of memory for the merges");
                break;
            }
            buf = nb;
        }
        memcpy(buf, s, split);
        memcpy(buf + split, sp + 1, len - split - 1);
        int arc = arena_add(&a, buf, len - 1, &t->moff[r]);
        if (arc) {
            rc = llmfs_errorf(err, -arc, "tokenizer: out of memory for the merges");
            break;
        }
        t->mlen[r] = (uint32_t)(len - 1);
        t->msplit[r] = (uint32_t)split;
        /* The first of two equal merges keeps its rank. */
        uint32_t h = (uint32_t)merge_hash(buf, split, len - 1) & t->by_merge.mask;
        for (;; h = (h + 1) & t->by_merge.mask) {
            int32_t o = t->by_merge.slot[h];
            if (o < 0) {
                t->by_merge.slot[h] = (int32_t)r;
                break;
            }
            if (t->mlen[o] == len - 1 && t->msplit[o] == split && memcmp(a.p + t->moff[o], buf, len - 1) == 0)
                break;
        }
    }
    free(buf);
    t->mtext = a.p;
    return rc;
}

static void set_id(const gguf_file *f, const char *key, int n_vocab, int32_t *id)
{
    uint32_t v;
    if (gguf_get_u32(f, key, &v) && v < (uint32_t)n_vocab)
        *id = (int32_t)v;
}

static void set_bool(const gguf_file *f, const char *key, bool *b)
{
    bool v;
    if (gguf_get_bool(f, key, &v))
        *b = v;
}

/* The first token whose text is in list (NULL-terminated), -1 if none. */
static int32_t find_any(const tokenizer *t, const char *const *list)
{
    for (; *list; list++) {
        int32_t id = tok_lookup(t, *list, strlen(*list));
        if (id >= 0)
            return id;
    }
    return -1;
}

/* llama.cpp recognises end-of-turn and fill-in-the-middle tokens by their text, makes
 * them control tokens, and ends generation on them. */
static void find_eog(tokenizer *t)
{
    static const char *const eot_texts[] = {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
        "<EOT>", "_<EOT>", "<\xef\xbd\x9c" "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
        "<end_of_utterance>", NULL};
    static const char *const eom_texts[] = {"<|eom_id|>", NULL};
    static const char *const fim_pad[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", NULL};
    static const char *const fim_rep[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>", NULL};
    static const char *const fim_sep[] = {"<|file_sep|>", NULL};
    static const char *const fim_pre[] = {
        "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\xef\xbd\x9c" "fim\xe2\x96\x81" "begin\xef\xbd\x9c>",
        "<PRE>", "\xe2\x96\x81<PRE>", "<|code_prefix|>", NULL};
    static const char *const fim_suf[] = {
        "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\xef\xbd\x9c" "fim\xe2\x96\x81hole\xef\xbd\x9c>",
        "<SUF>", "\xe2\x96\x81<SUF>", "<|code_suffix|>", NULL};
    static const char *const fim_mid[] = {
        "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\xef\xbd\x9c" "fim\xe2\x96\x81" "end\xef\xbd\x9c>",
        "<MID>", "\xe2\x96\x81<MID>", "<|code_middle|>", NULL};
    static const char *const eog_texts[] = {
        "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<end_of_turn>",
        "<|endoftext|>", "<|eom_id|>", "<EOT>", "_<EOT>", "<|end_of_text|>", "<end_of_utterance>", NULL};

    if (t->eot < 0)
        t->eot = find_any(t, eot_texts);
    if (t->eom < 0)
        t->eom = find_any(t, eom_texts);
    int32_t pad = find_any(t, fim_pad), rep = find_any(t, fim_rep), sep = find_any(t, fim_sep);
    int32_t marked[] = {t->eot, t->eom, pad, rep, sep};
    for (size_t i = 0; i < sizeof marked / sizeof marked[0]; i++)
        if (marked[i] >= 0)
            t->type[marked[i]] = TOKT_CONTROL;
    /* the prefix, suffix and middle tokens only become control tokens */
    int32_t fim[] = {find_any(t, fim_pre), find_any(t, fim_suf), find_any(t, fim_mid)};
    for (size_t i = 0; i < sizeof fim / sizeof fim[0]; i++)
        if (fim[i] >= 0)
            t->type[fim[i]] = TOKT_CONTROL;
    if (pad >= 0)
        t->eog[pad] = 1;
    if (rep >= 0)
        t->eog[rep] = 1;
    if (sep >= 0)
        t->eog[sep] = 1;
    for (const char *const *p = eog_texts; *p; p++) {
        int32_t id = tok_lookup(t, *p, strlen(*p));
        if (id >= 0) {
            t->eog[id] = 1;
            t->type[id] = TOKT_CONTROL;
        }
    }
    /* gpt-oss: these structure tokens are always shown */
    static const char *const shown[] = {"<|channel|>", "<|message|>", "<|start|>", "<|constrain|>", NULL};
    for (const char *const *p = shown; *p; p++) {
        int32_t id = tok_lookup(t, *p, strlen(*p));
        if (id >= 0)
            t->type[id] = TOKT_USER_DEFINED;
    }
    if (t->eos >= 0)
        t->eog[t->eos] = 1;
    if (t->eot >= 0)
        t->eog[t->eot] = 1;
    if (t->eom >= 0)
        t->eog[t->eom] = 1;
    /* gpt-oss (harmony): <|end|> ends a message, not the generation */
    int32_t ret = tok_lookup(t, "<|return|>", 10), call = tok_lookup(t, "<|call|>", 8);
    int32_t end = tok_lookup(t, "<|end|>", 7);
    if (ret >= 0 && call >= 0 && end >= 0 && t->eog[ret] && t->eog[call] && t->eog[end]) {
        t->eog[end] = 0;
        t->type[end] = TOKT_USER_DEFINED;
    }
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int build_special(tokenizer *t, const gguf_file *f)
{
    int n = 0;
    for (int i = 0; i < t->n_vocab; i++)
        n += t->type[i] == TOKT_CONTROL || t->type[i] == TOKT_USER_DEFINED || t->type[i] == TOKT_UNKNOWN;
    uint64_t *keys = malloc(((size_t)n + 1) * sizeof *keys);
    t->special = malloc(((size_t)n + 1) * sizeof *t->special);
    if (!keys || !t->special) {
        free(keys);
        return -ENOMEM;
    }
    /* longest text first, then lowest id */
    n = 0;
    for (int i = 0; i < t->n_vocab; i++)
        if (t->type[i] == TOKT_CONTROL || t->type[i] == TOKT_USER_DEFINED || t->type[i] == TOKT_UNKNOWN)
            keys[n++] = ((uint64_t)(UINT32_MAX - t->len[i]) << 32) | (uint32_t)i;
    qsort(keys, (size_t)n, sizeof *keys, cmp_u64);
    for (int i = 0; i < n; i++)
        t->special[i] = (int32_t)(keys[i] & 0xFFFFFFFFu);
    free(keys);
    t->n_special = n;

    /* Phi-3 models: llama.cpp strips the whitespace after their special tokens. */
    size_t nl;
    const char *name = gguf_get_str(f, "general.name", &nl);
    if (name) {
        char low[256];
        size_t k;
        for (k = 0; k < nl && k + 1 < sizeof low; k++)
            low[k] = (char)tolower((unsigned char)name[k]);
        low[k] = 0;
        if (strstr(low, "phi-3") || strstr(low, "phi3")) {
            for (int i = 0; i < n; i++)
                t->flags[t->special[i]] |= TOKF_RSTRIP;
            static const char *const on[] = {"</s>", NULL}, *const off[] = {"<unk>", "<s>", "<|endoftext|>", NULL};
            for (const char *const *p = on; *p; p++) {
                int32_t id = tok_lookup(t, *p, strlen(*p));
                if (id >= 0)
                    t->flags[id] |= TOKF_RSTRIP;
            }
            for (const char *const *p = off; *p; p++) {
                int32_t id = tok_lookup(t, *p, strlen(*p));
                if (id >= 0)
                    t->flags[id] &= (uint8_t)~TOKF_RSTRIP;
            }
        }
    }
    return 0;
}

tokenizer *tokenizer_load(const gguf_file *f, llmfs_error *err)
{
    size_t ml;
    const char *model = gguf_get_str(f, KEY("model"), &ml);
    if (!model) {
        llmfs_errorf(err, EINVAL, "tokenizer: no " KEY("model") " in the metadata");
        return NULL;
    }
    enum tok_kind kind;
    if (strcmp(model, "llama") == 0) {
        kind = TOK_SPM;
    } else if (strcmp(model, "gpt2") == 0) {
        kind = TOK_BPE;
    } else if (strcmp(model, "gemma4") == 0) {
        kind = TOK_SPM; /* pieces as SentencePiece spells them, merged by rank */
    } else {
        llmfs_errorf(err, EINVAL, "tokenizer: model '%.64s' is not supported (llama, gpt2 and gemma4 are)", model);
        return NULL;
    }
    tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        llmfs_errorf(err, ENOMEM, "tokenizer: out of memory");
        return NULL;
    }
    t->kind = kind;
    t->eot = t->eom = t->pad = -1;
    t->spm_merges = strcmp(model, "gemma4") == 0;
    if (kind == TOK_SPM) {
        t->bos = 1;
        t->eos = 2;
        t->unk = 0;
        t->add_space_prefix = true;
        t->add_bos = true;
    } else {
        size_t pl;
        const char *pre = gguf_get_str(f, KEY("pre"), &pl);
        int pk = pretok_from_name(pre);
        if (pk < 0) {
            llmfs_errorf(err, EINVAL, "tokenizer: pre-tokenizer '%.64s' is not supported", pre);
            goto fail;
        }
        t->pre = (enum pretok_kind)pk;
        t->bos = t->eos = 11; /* llama.cpp's BPE defaults (Falcon's <|endoftext|>) */
        t->unk = -1;
        if (t->pre == PRETOK_LLAMA3) {
            t->ignore_merges = true;
            t->add_bos = true;
        }
    }
    if (load_tokens(t, f, err))
        goto fail;
    if ((kind == TOK_BPE || t->spm_merges) && load_merges(t, f, err))
        goto fail;
    if (t->bos >= t->n_vocab)
        t->bos = -1;
    if (t->eos >= t->n_vocab)
        t->eos = -1;
    if (t->unk >= t->n_vocab)
        t->unk = -1;
    set_id(f, KEY("bos_token_id"), t->n_vocab, &t->bos);
    set_id(f, KEY("eos_token_id"), t->n_vocab, &t->eos);
    set_id(f, KEY("eot_token_id"), t->n_vocab, &t->eot);
    set_id(f, KEY("eom_token_id"), t->n_vocab, &t->eom);
    set_id(f, KEY("unknown_token_id"), t->n_vocab, &t->unk);
    set_id(f, KEY("padding_token_id"), t->n_vocab, &t->pad);
    set_bool(f, KEY("add_space_prefix"), &t->add_space_prefix);
    set_bool(f, KEY("add_bos_token"), &t->add_bos);
    set_bool(f, KEY("add_eos_token"), &t->add_eos);
    if (t->spm_merges) /* llama.cpp always adds Gemma 4's BOS, whatever the file says */
        t->add_bos = true;
    if (t->add_bos && t->bos < 0) {
        llmfs_errorf(err, EINVAL, "tokenizer: the vocabulary asks for a BOS token but has none");
        goto fail;
    }
    if (t->add_eos && t->eos < 0) {
        llmfs_errorf(err, EINVAL, "tokenizer: the vocabulary asks for an EOS token but has none");
        goto fail;
    }
    find_eog(t);
    if (build_special(t, f)) {
        llmfs_errorf(err, ENOMEM, "tokenizer: out of memory");
        goto fail;
    }
    return t;
fail:
    tokenizer_free(t);
    return NULL;
}

void tokenizer_free(tokenizer *t)
{
    if (!t)
        return;
    free(t->text);
    free(t->off);
    free(t->len);
    free(t->score);
    free(t->type);
    free(t->flags);
    free(t->eog);
    free(t->by_text.slot);
    free(t->mtext);
    free(t->moff);
    free(t->mlen);
    free(t->msplit);
    free(t->by_merge.slot);
    free(t->special);
    free(t);
}

/* ---- accessors ---- */

enum tok_kind tokenizer_kind(const tokenizer *t) { return t->kind; }
int tokenizer_n_vocab(const tokenizer *t) { return t->n_vocab; }
int32_t tokenizer_bos(const tokenizer *t) { return t->bos; }
int32_t tokenizer_eos(const tokenizer *t) { return t->eos; }
bool tokenizer_add_bos(const tokenizer *t) { return t->add_bos; }
bool tokenizer_add_eos(const tokenizer *t) { return t->add_eos; }
int tokenizer_max_piece(const tokenizer *t) { return t->max_len; }

bool tokenizer_is_eog(const tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab && t->eog[id];
}

int tokenizer_attr(const tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab ? t->type[id] : 0;
}

const char *tokenizer_text(const tokenizer *t, int32_t id)
{
    return id >= 0 && id < t->n_vocab ? t->text + t->off[id] : NULL;
}

int32_t tokenizer_find(const tokenizer *t, const char *text)
{
    return text ? tok_lookup(t, text, strlen(text)) : -1;
}

int tokenizer_set_pre(tokenizer *t, const char *name)
{
    int pk = pretok_from_name(name);
    if (t->kind != TOK_BPE || pk <= 0)
        return -EINVAL;
    t->pre = (enum pretok_kind)pk;
    return 0;
}

const char *tokenizer_pre_name(const tokenizer *t)
{
    return t->kind == TOK_BPE ? pretok_name(t->pre) : "spm";
}
