/* chat.h — turning a conversation into prompt text with the model's chat template.
 *
 * The template in tokenizer.chat_template is interpreted with a Jinja subset (loops,
 * conditions, set, macros, namespaces, mappings, the usual filters and tests, tojson,
 * strftime_now, raise_exception; see jinja.h) that covers the real templates of
 * gpt-oss (harmony), Gemma 4 and Qwen. The common families (ChatML/Qwen, Llama 3,
 * Llama 2, Mistral, Gemma, Gemma 4, harmony) are also recognised by their distinctive
 * markers and have built-in renderers for templates that go beyond the subset.
 */
#ifndef LLMFS_CHAT_H
#define LLMFS_CHAT_H

#include "llmfs.h"

typedef struct chat_msg {
    const char *role;    /* "system", "user", "assistant" */
    const char *content;
} chat_msg;

/* What a template may read besides the conversation. */
typedef struct chat_opts {
    const char *reasoning_effort;  /* "low", "medium", "high"; NULL: the template's default */
    const char *date;              /* strftime_now's date "YYYY-MM-DD" (the time: midday); NULL: now */
} chat_opts;

/* Short name of the family a template belongs to: "chatml", "llama3", "llama2",
 * "mistral", "gemma", "harmony" (gpt-oss), "jinja" (interpreted), or "none" for NULL/empty. */
const char *chat_template_name(const char *tmpl);

/* Renders msgs with tmpl (NULL or "" -> -ENOENT). Returns a malloc'd string, or NULL
 * with err filled (-EINVAL: template error, with the reason; a template that rejects
 * the conversation with raise_exception gives its message). The template is
 * interpreted (see jinja.h for the subset); a template of a recognised family that
 * goes beyond the subset is rendered by that family's built-in renderer. */
char *chat_render(const char *tmpl, const chat_msg *msgs, int n_msgs, bool add_generation_prompt,
                  const char *bos_token, const char *eos_token, llmfs_error *err);

/* chat_render with options (NULL: none). */
char *chat_render_opts(const char *tmpl, const chat_msg *msgs, int n_msgs, bool add_generation_prompt,
                       const char *bos_token, const char *eos_token, const chat_opts *opts, llmfs_error *err);

/* A family's built-in renderer ("chatml", "llama3", "llama2", "mistral", "gemma", "harmony");
 * NULL with -ENOENT for other names. */
char *chat_render_builtin(const char *family, const chat_msg *msgs, int n_msgs, bool add_generation_prompt,
                          const char *bos_token, const char *eos_token, llmfs_error *err);

#endif
