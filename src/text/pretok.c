#include "pretok.h"

#include "unicode.h"

#include <stdbool.h>
#include <string.h>

/* A matcher returns the length of the match at pos inside [pos, end), 0 for none. The
 * fragment end is the end of the subject: a lookahead there sees end of input. */
typedef size_t (*matcher)(const uint32_t *c, size_t pos, size_t end);

static bool is_l(uint32_t cp) { return uni_is_letter(cp); }
static bool is_n(uint32_t cp) { return uni_is_number(cp); }
static bool is_s(uint32_t cp) { return uni_is_space(cp); }
static bool is_crlf(uint32_t cp) { return cp == '\r' || cp == '\n'; }
static uint32_t ascii_lower(uint32_t cp) { return cp >= 'A' && cp <= 'Z' ? cp + 32 : cp; }

/* 's 't 're 've 'm 'll 'd, case-sensitive or not. */
static size_t contraction(const uint32_t *c, size_t p, size_t e, bool fold)
{
    if (c[p] != '\'' || p + 1 >= e)
        return 0;
    uint32_t a = fold ? ascii_lower(c[p + 1]) : c[p + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd')
        return 2;
    if (p + 2 >= e)
        return 0;
    uint32_t b = fold ? ascii_lower(c[p + 2]) : c[p + 2];
    if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l'))
        return 3;
    return 0;
}

/* The run of whitespace at p: \s+(?!\S) backs off one character before a non-space;
 * with `crlf`, \s*[\r\n]+ first takes everything up to the last CR/LF of the run. */
static size_t space_run(const uint32_t *c, size_t p, size_t e, bool crlf)
{
    size_t q = p, last_nl = 0;
    while (q < e && is_s(c[q])) {
        if (is_crlf(c[q]))
            last_nl = q + 1;
        q++;
    }
    size_t n = q - p;
    if (crlf && last_nl)
        return last_nl - p;
    if (n > 1 && q < e)
        return n - 1;
    return n;
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S) */
static size_t m_gpt2(const uint32_t *c, size_t p, size_t e)
{
    size_t n = contraction(c, p, e, false);
    if (n)
        return n;
    size_t s = c[p] == ' ' ? p + 1 : p;
    if (s < e) {
        uint32_t x = c[s];
        size_t q = s + 1;
        if (is_l(x)) {
            while (q < e && is_l(c[q]))
                q++;
            return q - p;
        }
        if (is_n(x)) {
            while (q < e && is_n(c[q]))
                q++;
            return q - p;
        }
        if (!is_s(x)) {
            while (q < e && !is_s(c[q]) && !is_l(c[q]) && !is_n(c[q]))
                q++;
            return q - p;
        }
    }
    return space_run(c, p, e, false);
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}|
 *  ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t m_llama3_like(const uint32_t *c, size_t p, size_t e, size_t max_digits)
{
    size_t n = contraction(c, p, e, true);
    if (n)
        return n;
    uint32_t x = c[p];
    if (!is_crlf(x) && !is_n(x) && (is_l(x) || (p + 1 < e && is_l(c[p + 1])))) {
        size_t q = p + 1;
        while (q < e && is_l(c[q]))
            q++;
        return q - p;
    }
    if (is_n(x)) {
        size_t q = p + 1;
        while (q < e && q - p < max_digits && is_n(c[q]))
            q++;
        return q - p;
    }
    size_t s = x == ' ' ? p + 1 : p;
    if (s < e && !is_s(c[s]) && !is_l(c[s]) && !is_n(c[s])) {
        size_t q = s + 1;
        while (q < e && !is_s(c[q]) && !is_l(c[q]) && !is_n(c[q]))
            q++;
        while (q < e && is_crlf(c[q]))
            q++;
        return q - p;
    }
    return space_run(c, p, e, true);
}

static size_t m_llama3(const uint32_t *c, size_t p, size_t e) { return m_llama3_like(c, p, e, 3); }
static size_t m_qwen2(const uint32_t *c, size_t p, size_t e) { return m_llama3_like(c, p, e, 1); }

static bool is_lm(uint32_t cp)
{
    int k = uni_class_of(cp);
    return k == UNI_LETTER || k == UNI_MARK;
}

/* Qwen3.5: qwen2's pattern where letter runs also take combining marks and punctuation
 * runs no longer do:
 * (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}|
 *  ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t m_qwen35(const uint32_t *c, size_t p, size_t e)
{
    size_t n = contraction(c, p, e, true);
    if (n)
        return n;
    uint32_t x = c[p];
    /* a mark may also be the optional first character; the match is the same run */
    if (!is_crlf(x) && !is_n(x) && (is_lm(x) || (p + 1 < e && is_lm(c[p + 1])))) {
        size_t q = p + 1;
        while (q < e && is_lm(c[q]))
            q++;
        return q - p;
    }
    if (is_n(x))
        return 1;
    size_t s = x == ' ' ? p + 1 : p;
    if (s < e && !is_s(c[s]) && !is_lm(c[s]) && !is_n(c[s])) {
        size_t q = s + 1;
        while (q < e && !is_s(c[q]) && !is_lm(c[q]) && !is_n(c[q]))
            q++;
        while (q < e && is_crlf(c[q]))
            q++;
        return q - p;
    }
    return space_run(c, p, e, true);
}

/* gpt-4o (o200k) as llama.cpp rewrites it: the case classes become "a letter that is not
 * a-z" (U) and "a letter that is not A-Z" (W), so only ASCII letters have a case;
 * every other letter is both.
 *   [^\r\n\p{L}\p{N}]?U*W+C?|[^\r\n\p{L}\p{N}]?U+W*C?|\p{N}{1,3}|
 *    ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+
 * with C the contractions 's 't 're 've 'm 'll 'd in either case. */
static bool is_u(uint32_t cp) { return is_l(cp) && !(cp >= 'a' && cp <= 'z'); }
static bool is_w(uint32_t cp) { return is_l(cp) && !(cp >= 'A' && cp <= 'Z'); }

static size_t m_gpt4o(const uint32_t *c, size_t p, size_t e)
{
    uint32_t x = c[p];
    size_t s = p;
    if (!is_l(x) && !is_n(x) && !is_crlf(x) && p + 1 < e && is_l(c[p + 1]))
        s = p + 1; /* the one-character prefix; only a letter can follow it */
    if (is_l(c[s])) {
        /* U* takes the longest run of U; W+ must then match. Backtracking gives U*
         * back one character at a time until a W is found: after a run of U the next
         * character is a W only when it is a-z; otherwise the last non-ASCII letter of
         * the run starts W+, which the capitals after it end. Failing both, U+W* is the
         * run of U (W* is empty: the next character is no W). */
        size_t u = s;
        while (u < e && is_u(c[u]))
            u++;
        size_t end;
        if (u < e && is_w(c[u])) {
            end = u;
            while (end < e && is_w(c[end]))
                end++;
        } else {
            size_t j = u;
            while (j > s && !is_w(c[j - 1]))
                j--;
            end = j > s ? j : u;
        }
        return end - p + contraction(c, end, e, true);
    }
    if (is_n(x)) {
        size_t q = p + 1;
        while (q < e && q - p < 3 && is_n(c[q]))
            q++;
        return q - p;
    }
    s = x == ' ' ? p + 1 : p;
    if (s < e && !is_s(c[s]) && !is_l(c[s]) && !is_n(c[s])) {
        size_t q = s + 1;
        while (q < e && !is_s(c[q]) && !is_l(c[q]) && !is_n(c[q]))
            q++;
        while (q < e && (is_crlf(c[q]) || c[q] == '/'))
            q++;
        return q - p;
    }
    return space_run(c, p, e, true);
}

/* [\p{P}\$\+<=>\^~\|]+ (and ` for falcon) */
static bool is_default_punct(uint32_t cp)
{
    return uni_is_punct(cp) || (cp < 0x80 && cp && strchr("$+<=>^~|", (int)cp));
}
static size_t m_punct_default(const uint32_t *c, size_t p, size_t e)
{
    size_t q = p;
    while (q < e && is_default_punct(c[q]))
        q++;
    return q - p;
}
static size_t m_punct_falcon(const uint32_t *c, size_t p, size_t e)
{
    size_t q = p;
    while (q < e && (is_default_punct(c[q]) || c[q] == '`'))
        q++;
    return q - p;
}

/* \p{N}+ */
static size_t m_numbers(const uint32_t *c, size_t p, size_t e)
{
    size_t q = p;
    while (q < e && is_n(c[q]))
        q++;
    return q - p;
}

/* \p{N} */
static size_t m_number(const uint32_t *c, size_t p, size_t e)
{
    (void)e;
    return is_n(c[p]) ? 1 : 0;
}

/* [0-9][0-9][0-9] */
static size_t m_digits3(const uint32_t *c, size_t p, size_t e)
{
    if (p + 3 > e)
        return 0;
    for (int k = 0; k < 3; k++)
        if (c[p + k] < '0' || c[p + k] > '9')
            return 0;
    return 3;
}

/* [\r\n] */
static size_t m_newline(const uint32_t *c, size_t p, size_t e)
{
    (void)e;
    return is_crlf(c[p]) ? 1 : 0;
}

/* \s?X+ for a class X */
static size_t space_opt_run(const uint32_t *c, size_t p, size_t e, bool (*cls)(uint32_t))
{
    size_t s = p;
    if (is_s(c[p]) && p + 1 < e && cls(c[p + 1]))
        s = p + 1;
    size_t q = s;
    while (q < e && cls(c[q]))
        q++;
    return q > s ? q - p : 0;
}
static size_t m_space_letters(const uint32_t *c, size_t p, size_t e) { return space_opt_run(c, p, e, is_l); }
static size_t m_space_punct(const uint32_t *c, size_t p, size_t e) { return space_opt_run(c, p, e, uni_is_punct); }

/* [一-龥ࠀ-一가-퟿]+, i.e. U+0800..U+9FA5 and U+AC00..U+D7FF. llama.cpp matches this
 * pattern on the code points with non-ASCII whitespace replaced by \v, so the
 * whitespace inside those ranges (U+1680, U+2000..U+200A, U+3000, ...) is left out. */
static bool is_deepseek_cjk(uint32_t cp)
{
    return ((cp >= 0x0800 && cp <= 0x9FA5) || (cp >= 0xAC00 && cp <= 0xD7FF)) && !is_s(cp);
}
static size_t m_cjk(const uint32_t *c, size_t p, size_t e)
{
    size_t q = p;
    while (q < e && is_deepseek_cjk(c[q]))
        q++;
    return q - p;
}

#define MAX_PASSES 5
static const struct pretok_def {
    const char *name;
    matcher passes[MAX_PASSES];
} defs[] = {
    [PRETOK_DEFAULT] = {"default", {m_punct_default, m_gpt2, m_numbers, m_digits3}},
    [PRETOK_GPT2] = {"gpt-2", {m_gpt2}},
    [PRETOK_LLAMA3] = {"llama3", {m_llama3}},
    [PRETOK_QWEN2] = {"qwen2", {m_qwen2}},
    [PRETOK_QWEN35] = {"qwen35", {m_qwen35}},
    [PRETOK_DEEPSEEK_CODER] = {"deepseek-coder", {m_newline, m_space_letters, m_space_punct, m_cjk, m_number}},
    [PRETOK_FALCON] = {"falcon", {m_punct_falcon, m_gpt2, m_digits3}},
    [PRETOK_STARCODER] = {"starcoder", {m_number, m_gpt2}},
    [PRETOK_GPT4O] = {"gpt-4o", {m_gpt4o}},
};

static const struct {
    const char *name;
    int kind;
} names[] = {
    {"default", PRETOK_DEFAULT},
    {"llama3", PRETOK_LLAMA3}, {"llama-v3", PRETOK_LLAMA3}, {"llama-bpe", PRETOK_LLAMA3},
    {"falcon3", PRETOK_LLAMA3}, {"falcon-h1", PRETOK_LLAMA3}, {"pixtral", PRETOK_LLAMA3},
    {"midm-2.0", PRETOK_LLAMA3}, {"lfm2", PRETOK_LLAMA3},
    {"deepseek-coder", PRETOK_DEEPSEEK_CODER},
    {"falcon", PRETOK_FALCON},
    {"gpt-2", PRETOK_GPT2}, {"phi-2", PRETOK_GPT2}, {"jina-es", PRETOK_GPT2}, {"jina-de", PRETOK_GPT2},
    {"gigachat", PRETOK_GPT2}, {"jina-v2-es", PRETOK_GPT2}, {"jina-v2-de", PRETOK_GPT2},
    {"a.x-4.0", PRETOK_GPT2}, {"mellum", PRETOK_GPT2}, {"jina-v1-en", PRETOK_GPT2},
    {"jina-v2-code", PRETOK_GPT2}, {"roberta-bpe", PRETOK_GPT2}, {"mpt", PRETOK_GPT2},
    {"olmo", PRETOK_GPT2}, {"jais", PRETOK_GPT2}, {"exaone4", PRETOK_GPT2},
    {"trillion", PRETOK_GPT2}, {"granite-docling", PRETOK_GPT2},
    {"qwen2", PRETOK_QWEN2}, {"deepseek-r1-qwen", PRETOK_QWEN2}, {"kormo", PRETOK_QWEN2},
    {"stablelm2", PRETOK_QWEN2}, {"megrez", PRETOK_QWEN2}, {"hunyuan", PRETOK_QWEN2},
    {"grok-2", PRETOK_QWEN2}, {"qwen35", PRETOK_QWEN35},
    {"starcoder", PRETOK_STARCODER}, {"refact", PRETOK_STARCODER}, {"command-r", PRETOK_STARCODER},
    {"smollm", PRETOK_STARCODER}, {"codeshell", PRETOK_STARCODER}, {"exaone", PRETOK_STARCODER},
    {"minerva-7b", PRETOK_STARCODER},
    {"gpt-4o", PRETOK_GPT4O}, {"minimax-m2", PRETOK_GPT4O},
    /* Known to llama.cpp with rules of their own that are not implemented here. */
    {"deepseek-llm", -1}, {"deepseek-v3", -1}, {"hunyuan-dense", -1}, {"dbrx", -1},
    {"smaug-bpe", -1}, {"poro-chat", -1}, {"glm4", -1}, {"chatglm-bpe", -1}, {"viking", -1},
    {"tekken", -1}, {"bloom", -1}, {"gpt3-finnish", -1}, {"chameleon", -1},
    {"llama4", -1}, {"superbpe", -1}, {"bailingmoe", -1}, {"bailingmoe2", -1}, {"llada-moe", -1},
    {"seed-coder", -1}, {"kimi-k2", -1}, {"afmoe", -1},
};

int pretok_from_name(const char *name)
{
    if (!name || !*name)
        return PRETOK_DEFAULT;
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (strcmp(names[i].name, name) == 0)
            return names[i].kind;
    return PRETOK_DEFAULT;
}

const char *pretok_name(enum pretok_kind kind)
{
    if ((unsigned)kind >= sizeof defs / sizeof defs[0])
        return "?";
    return defs[kind].name;
}

/* One pattern over every fragment: matches and the unmatched stretches between them
 * all become fragments. */
static size_t split_pass(matcher m, const uint32_t *c, const size_t *in, size_t n_in, size_t *out)
{
    size_t n_out = 0, start = 0;
    for (size_t i = 0; i < n_in; i++) {
        size_t end = in[i], pos = start, gap = start;
        while (pos < end) {
            size_t len = m(c, pos, end);
            if (!len) {
                pos++;
                continue;
            }
            if (gap < pos)
                out[n_out++] = pos;
            pos += len;
            out[n_out++] = pos;
            gap = pos;
        }
        if (gap < end)
            out[n_out++] = end;
        start = end;
    }
    return n_out;
}

size_t pretok_split(enum pretok_kind kind, const uint32_t *cps, size_t n, size_t *ends, size_t *tmp)
{
    if (n == 0)
        return 0;
    if ((unsigned)kind >= sizeof defs / sizeof defs[0])
        kind = PRETOK_DEFAULT;
    const struct pretok_def *d = &defs[kind];
    size_t *cur = ends, *next = tmp;
    size_t count = 1;
    cur[0] = n;
    for (int i = 0; i < MAX_PASSES && d->passes[i]; i++) {
        count = split_pass(d->passes[i], cps, cur, count, next);
        size_t *t = cur;
        cur = next;
        next = t;
    }
    if (cur != ends)
        memcpy(ends, cur, count * sizeof *ends);
    return count;
}
