/* unicode.h — the little Unicode the tokenizers need: UTF-8 coding and character classes.
 *
 * The classes are the major general categories (letter, number, punctuation, mark,
 * symbol, separator, other), looked up in a range table generated from the Unicode
 * database by scripts/gen_unicode_data.py. Whitespace is the White_Space property.
 */
#ifndef LLMFS_UNICODE_H
#define LLMFS_UNICODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum uni_class {
    UNI_OTHER = 0, /* C*: control, format, private use, unassigned */
    UNI_LETTER = 1,
    UNI_NUMBER = 2,
    UNI_PUNCT = 3,
    UNI_MARK = 4,
    UNI_SYMBOL = 5,
    UNI_SEPARATOR = 6,
};

enum uni_class uni_class_of(uint32_t cp);
bool uni_is_space(uint32_t cp);
static inline bool uni_is_letter(uint32_t cp) { return uni_class_of(cp) == UNI_LETTER; }
static inline bool uni_is_number(uint32_t cp) { return uni_class_of(cp) == UNI_NUMBER; }
static inline bool uni_is_punct(uint32_t cp) { return uni_class_of(cp) == UNI_PUNCT; }

/* Length of the UTF-8 sequence a lead byte announces, 1 for continuation bytes (the way
 * SentencePiece and llama.cpp cut text into characters without validating it). */
static inline int utf8_seq_len(uint8_t lead)
{
    static const uint8_t len[16] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 3, 4};
    return len[lead >> 4];
}

/* Decodes one code point at s[*off] and advances *off. A malformed sequence yields
 * U+FFFD and advances one byte. Overlong forms are accepted, as llama.cpp does. */
uint32_t utf8_decode(const uint8_t *s, size_t n, size_t *off);
/* Writes cp (at most 0x10FFFF, else U+FFFD) as 1..4 bytes; returns the count. */
int utf8_encode(uint32_t cp, char *out);
/* Length of the longest prefix of s[0..n) that is well-formed UTF-8 (RFC 3629). */
size_t utf8_valid_prefix(const uint8_t *s, size_t n);

/* Generated table (unicode_data.c). */
extern const char unicode_data_version[];
extern const int unicode_class_ranges_n;
extern const uint32_t unicode_class_ranges[];

#endif
