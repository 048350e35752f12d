/* pretok.h — the pre-tokenizers of byte-level BPE vocabularies.
 *
 * A pre-tokenizer cuts text (as code points) into words before BPE merges run inside
 * each word. llama.cpp defines each one as a list of regular expressions applied in
 * turn, each splitting the pieces the previous one left; text a pattern does not match
 * stays a piece of its own. Here every pattern is a hand-written matcher with the same
 * leftmost-first semantics, and the classes \p{L}, \p{N}, \p{P} and \s come from
 * unicode.h.
 */
#ifndef LLMFS_PRETOK_H
#define LLMFS_PRETOK_H

#include <stddef.h>
#include <stdint.h>

enum pretok_kind {
    PRETOK_DEFAULT = 0,
    PRETOK_GPT2,
    PRETOK_LLAMA3,
    PRETOK_QWEN2,
    PRETOK_DEEPSEEK_CODER,
    PRETOK_FALCON,
    PRETOK_STARCODER,
    PRETOK_QWEN35,
    PRETOK_GPT4O,
};

/* The kind for a tokenizer.ggml.pre value (NULL or unknown names: PRETOK_DEFAULT, as
 * llama.cpp does); -1 for a name llama.cpp knows but that is not implemented here. */
int pretok_from_name(const char *name);
const char *pretok_name(enum pretok_kind kind);

/* Splits cps[0..n) into words. ends[] (room for n entries) receives each word's end
 * offset, in order; tmp[] is scratch of the same size. Returns the number of words. */
size_t pretok_split(enum pretok_kind kind, const uint32_t *cps, size_t n, size_t *ends, size_t *tmp);

#endif
