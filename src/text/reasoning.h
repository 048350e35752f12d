/* reasoning.h — a reply's reasoning told apart from its answer, as the text streams.
 *
 * gpt-oss (harmony) writes messages on channels: "<|channel|>analysis<|message|>...<|end|>"
 * is its reasoning, "<|start|>assistant<|channel|>final<|message|>..." the answer.
 * Qwen3 writes "<think>...</think>" before the answer, Gemma 4 "<|channel>thought\n...
 * <channel|>" (the channel's name up to the newline). The splitter routes each byte of
 * the detokenized reply to the answer or to the reasoning and drops the markers and
 * message headers; a marker split across chunks is held until it is whole.
 */
#ifndef LLMFS_REASONING_H
#define LLMFS_REASONING_H

#include <stdbool.h>
#include <stddef.h>

typedef enum { REASON_NONE, REASON_HARMONY, REASON_THINK, REASON_GEMMA4 } reason_mode;

typedef struct reason_split {
    reason_mode mode;
    bool to_reasoning;   /* where message text goes now */
    bool in_header;      /* between <|start|>/<|channel|> and <|message|> (harmony), between
                          * <|channel> and the end of its line (Gemma 4) */
    bool trim;           /* drop whitespace before the answer (after </think>) */
    char header[64];     /* the header so far (its channel name) */
    size_t n_header;
    char hold[16];       /* the start of what may be a marker */
    size_t n_hold;
} reason_split;

/* Receives the bytes for the answer (reasoning false) or the reasoning. */
typedef void (*reason_emit)(void *arg, bool reasoning, const char *text, size_t n);

/* The mode a chat template implies: harmony, <think> tags, or none. */
reason_mode reason_mode_of(const char *chat_template);
void reason_split_init(reason_split *r, reason_mode mode);
void reason_split_push(reason_split *r, const char *text, size_t n, reason_emit emit, void *arg);
/* At the end of the reply: a held partial marker is text after all. */
void reason_split_flush(reason_split *r, reason_emit emit, void *arg);

#endif
