/* jinja.h — a small Jinja interpreter for chat templates.
 *
 * The subset: {{ }}, {% %} and {# #} with whitespace control (-) and the trim_blocks /
 * lstrip_blocks settings Hugging Face renders chat templates with; for/in (loop.index,
 * index0, first, last, length, revindex), if/elif/else, set; literals (strings, integers,
 * true/false/none, lists); == != < > <= >=, and/or/not, in, not in, is [not] (defined,
 * none, string, number, iterable, mapping), + - * % and ~, x if c else y; attribute,
 * index and slice access; the filters trim, length, lower, upper, string, first, last,
 * default; the string methods strip, lstrip, rstrip, upper, lower, startswith, endswith,
 * replace; range() and raise_exception(). The variables are messages (each with role
 * and content), add_generation_prompt, bos_token and eos_token.
 */
#ifndef LLMFS_JINJA_H
#define LLMFS_JINJA_H

#include "chat.h"

typedef struct jinja_input {
    const chat_msg *msgs;
    int n_msgs;
    bool add_generation_prompt;
    const char *bos_token; /* NULL: "" */
    const char *eos_token;
} jinja_input;

/* Renders tmpl into *out (malloc'd, NUL-terminated). Returns 0; -ENOTSUP when the
 * template uses something outside the subset; -EINVAL when it raises an exception
 * (err->msg then holds its message) or fails while rendering. */
int jinja_render(const char *tmpl, const jinja_input *in, char **out, llmfs_error *err);

#endif
