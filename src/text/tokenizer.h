/* tokenizer.h — text <-> token ids, from a GGUF file's tokenizer.ggml.* metadata.
 *
 * Two models: SentencePiece-style (tokenizer.ggml.model "llama": score-driven merges,
 * byte fallback, leading space) and byte-level BPE ("gpt2": rank-driven merges after a
 * pre-tokenizer chosen by tokenizer.ggml.pre: gpt-2, llama3/llama-bpe, qwen2,
 * deepseek-coder, falcon, ...). Special (control / user-defined) tokens are matched in
 * the text first when parse_special is set, as llama.cpp does by default. The defaults
 * and special-token rules follow llama.cpp's, so that text gives the same ids.
 *
 * A loaded tokenizer is read-only: any number of threads may use it at once.
 */
#ifndef LLMFS_TOKENIZER_H
#define LLMFS_TOKENIZER_H

#include "gguf.h"

typedef struct tokenizer tokenizer;

enum tok_kind { TOK_SPM = 1, TOK_BPE = 2 };
enum tok_attr { /* tokenizer.ggml.token_type values */
    TOKT_NORMAL = 1, TOKT_UNKNOWN = 2, TOKT_CONTROL = 3, TOKT_USER_DEFINED = 4,
    TOKT_UNUSED = 5, TOKT_BYTE = 6,
};

/* -EINVAL with a reason when the metadata is missing or inconsistent. */
tokenizer *tokenizer_load(const gguf_file *f, llmfs_error *err);
void tokenizer_free(tokenizer *t);

enum tok_kind tokenizer_kind(const tokenizer *t);
int tokenizer_n_vocab(const tokenizer *t);
int32_t tokenizer_bos(const tokenizer *t); /* -1 if none */
int32_t tokenizer_eos(const tokenizer *t); /* -1 if none */
bool tokenizer_add_bos(const tokenizer *t); /* from tokenizer.ggml.add_bos_token or the model's default */
bool tokenizer_add_eos(const tokenizer *t);
/* End of generation: eos, eot, eom and the like. */
bool tokenizer_is_eog(const tokenizer *t, int32_t id);
int tokenizer_attr(const tokenizer *t, int32_t id); /* enum tok_attr */
/* The token's text as stored in the vocab (NUL-terminated). */
const char *tokenizer_text(const tokenizer *t, int32_t id);
int32_t tokenizer_find(const tokenizer *t, const char *text); /* exact vocab entry, -1 if none */
/* An upper bound on tokenizer_piece's byte count for any token. */
int tokenizer_max_piece(const tokenizer *t);
/* The pre-tokenizer in use ("qwen2", "gpt-2", ...; "spm" for SentencePiece vocabularies). */
const char *tokenizer_pre_name(const tokenizer *t);
/* Replaces a byte-level BPE vocabulary's pre-tokenizer by the one llama.cpp calls
 * `name` (vectors for a pre-tokenizer whose vocabulary is stored once under another
 * one's name). 0, or -EINVAL for an unknown name or a SentencePiece vocabulary. */
int tokenizer_set_pre(tokenizer *t, const char *name);

/* Tokenizes len bytes of text. add_special: BOS (and EOS) as the vocab says;
 * parse_special: control token texts in the input become those tokens. User-defined
 * tokens (<think>, ...) are matched either way, as llama.cpp and Hugging Face do.
 * Malformed UTF-8 is read as U+FFFD by byte-level BPE (SentencePiece keeps the bytes).
 * Writes at most cap ids; returns the total count (> cap: call again with more room),
 * or a negative errno. */
int tokenizer_encode(const tokenizer *t, const char *text, size_t len, bool add_special,
                     bool parse_special, int32_t *out, int cap);

/* The bytes a token stands for (SPM: "▁" -> ' ', <0xNN> -> the byte; BPE: byte-level
 * unicode -> bytes). Control and unknown tokens give their text only if special is
 * true; user-defined tokens always do; unused tokens give nothing.
 * Returns the byte count (may exceed cap; nothing past cap is written). */
int tokenizer_piece(const tokenizer *t, int32_t id, bool special, char *buf, int cap);

/* The text of n ids: their pieces, without a leading BOS, and without the space
 * SentencePiece adds in front of the first word. Returns the byte count (may exceed
 * cap; nothing past cap is written) or -EINVAL. */
int tokenizer_decode(const tokenizer *t, const int32_t *ids, int n, bool special, char *buf, int cap);

/* Streaming detokenizer: holds back an incomplete UTF-8 sequence until it completes,
 * so a reader never sees half a character. */
typedef struct detok_state {
    char pending[8];
    int n_pending;
    bool special; /* render control tokens' text (set before the first push) */
} detok_state;
/* Appends the text for id to out (at most cap bytes; whole characters only, so give it
 * at least tokenizer_max_piece() + 8); returns the byte count written. Malformed
 * sequences come out as U+FFFD. */
int detok_push(const tokenizer *t, detok_state *st, int32_t id, char *out, int cap);
/* Whatever is still pending at the end (invalid sequences come out as U+FFFD). */
int detok_flush(detok_state *st, char *out, int cap);

#endif
