/* tok_internal.h — the tokenizer's data, shared by the tokenizer's source files
 * (tokenizer.c loads it, tok_encode.c, tok_spm.c and tok_bpe.c encode, detok.c decodes). */
#ifndef LLMFS_TOK_INTERNAL_H
#define LLMFS_TOK_INTERNAL_H

#include "pretok.h"
#include "tokenizer.h"

/* Attribute bits beyond the token type: llama.cpp strips whitespace around a few
 * special tokens of some models. */
enum { TOKF_LSTRIP = 1, TOKF_RSTRIP = 2 };

/* Open-addressing table of int32 ids (-1 empty), keyed by byte strings held elsewhere. */
typedef struct tok_hash {
    int32_t *slot;
    uint32_t mask;
} tok_hash;

struct tokenizer {
    enum tok_kind kind;
    enum pretok_kind pre;
    int n_vocab;

    /* token i's text is text + off[i], len[i] bytes, NUL-terminated */
    char *text;
    uint32_t *off;
    uint32_t *len;
    float *score;
    uint8_t *type;  /* enum tok_attr */
    uint8_t *flags; /* TOKF_* */
    uint8_t *eog;
    tok_hash by_text;
    int max_len;

    /* BPE merges: merge r is the concatenation mtext + moff[r] of its two halves,
     * mlen[r] bytes, the first msplit[r] of them being the left half. */
    int n_merges;
    char *mtext;
    uint32_t *moff, *mlen, *msplit;
    tok_hash by_merge;

    int32_t bos, eos, eot, eom, unk, pad;
    bool add_bos, add_eos, add_space_prefix, ignore_merges;
    /* Gemma 4 ("gemma4"): a SentencePiece vocabulary (U+2581 for spaces, <0xXX> byte
     * tokens) encoded by BPE merge ranks instead of piece scores */
    bool spm_merges;

    /* control, user-defined and unknown tokens, longest text first */
    int32_t *special;
    int n_special;
};

uint64_t tok_hash_bytes(const void *p, size_t n);
/* Token id with exactly this text, -1 if none. */
int32_t tok_lookup(const tokenizer *t, const char *s, size_t n);
/* Rank of the merge of s[0..split) with s[split..n), -1 if none. */
int32_t tok_merge_rank(const tokenizer *t, const char *s, size_t split, size_t n);

/* A growable id list. */
typedef struct tok_vec {
    int32_t *v;
    size_t n, cap;
} tok_vec;
int tok_vec_push(tok_vec *v, int32_t id);

/* Appends the ids for one stretch of plain text. add_prefix: SentencePiece's leading
 * space. 0 or -ENOMEM. */
int tok_spm_encode(const tokenizer *t, const char *s, size_t n, bool add_prefix, tok_vec *out);
int tok_bpe_encode(const tokenizer *t, const char *s, size_t n, tok_vec *out);
/* Gemma 4: spaces become U+2581, newline runs that are tokens are taken whole, the rest
 * is merged by rank over UTF-8 characters, pieces that are no token go byte by byte. */
int tok_spm_merges_encode(const tokenizer *t, const char *s, size_t n, tok_vec *out);

/* A symbol of the merge loop: bytes start..start+n of the text; n == 0 once merged
 * into its left neighbour. prev/next link the live symbols, -1 at the ends. */
typedef struct tok_sym {
    int32_t prev, next;
    uint32_t start, n;
} tok_sym;

/* A queued merge of adjacent symbols left and right, size bytes together. */
typedef struct tok_pair {
    double key;
    int32_t left, right;
    uint32_t size;
} tok_pair;

typedef struct tok_pair_heap {
    tok_pair *v;
    size_t n, cap;
} tok_pair_heap;

/* Whether s[0..split) and s[split..n) merge, and with which key (smaller merges first). */
typedef bool (*tok_merge_key)(const tokenizer *t, const char *s, uint32_t split, uint32_t n,
                              double *key);

/* Splits s[0..n) into one symbol per UTF-8 character in syms (room for n) and merges
 * them by key. Returns the symbol count (follow next from symbol 0 for the live ones) or
 * -ENOMEM. h is scratch the caller frees (h->v), reusable across calls. */
int32_t tok_merge_all(const tokenizer *t, const char *s, size_t n, tok_sym *syms, tok_merge_key key,
                      tok_pair_heap *h);

/* The GPT-2 byte <-> code point table of byte-level BPE. */
uint32_t tok_byte_to_cp(uint8_t b);
int tok_cp_to_byte(uint32_t cp); /* -1 if cp stands for no byte */

#endif
