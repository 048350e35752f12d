/* chat.h — turning a conversation into prompt text with the model's chat template.
 *
 * The template in tokenizer.chat_template is recognised as one of the common families
 * (ChatML/Qwen, Llama 3, Llama 2, Mistral, Gemma) or else interpreted with a small Jinja
 * subset (for loops over messages, if/elif/else, comparisons, string concatenation,
 * loop.first/last, raise_exception, bos_token/eos_token, add_generation_prompt).
 */
#ifndef LLMFS_CHAT_H
#define LLMFS_CHAT_H

#include "llmfs.h"

typedef struct chat_msg {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
} chat_msg;

/* Short name of the family a template belongs to: "chatml", "llama3", "llama2",
 * "mistral", "gemma", "jinja" (interpreted), or "none" for NULL/empty. */
const char *chat_template_name(const char *tmpl);

/* Renders msgs with tmpl (NULL or "" -> -ENOENT). Returns a malloc'd string, or NULL
 * with err filled (-EINVAL: template error, with the reason). */
char *chat_render(const char *tmpl, const chat_msg *msgs, int n_msgs, bool add_generation_prompt,
                  const char *bos_token, const char *eos_token, llmfs_error *err);

#endif
