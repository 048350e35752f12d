/* jinja.h — a small Jinja interpreter for chat templates.
 *
 * The subset: {{ }}, {% %} and {# #} with whitespace control (-) and the trim_blocks /
 * lstrip_blocks settings Hugging Face renders chat templates with.
 *
 * Statements: for/in (also "for k, v in pairs"; loop.index, index0, first, last,
 * length, revindex, revindex0, previtem, nextitem), if/elif/else, set (also
 * "set ns.attr = ..." on a namespace), macro/endmacro with parameters and defaults
 * (called with positional and keyword arguments; a macro's text is its value; its
 * body sees its parameters and the top-level variables, as in Jinja, but unlike Jinja
 * not the loop variables of a loop it is defined in).
 *
 * Expressions: literals (strings, integers, true/false/none, lists, dicts); == != < >
 * <= >=, and/or/not, in, not in (substrings, list items, mapping keys), is [not] with
 * the tests defined, undefined, none, string, number, integer, boolean, true, false,
 * iterable, sequence, mapping, callable, even, odd, eq/equalto/ne(x); + - * % and ~,
 * x if c else y; attribute, index and slice access (with a step, as [::-1]).
 *
 * Filters: trim, length/count, lower, upper, capitalize, title, string, first, last,
 * default/d, safe, int, list, reverse, items, dictsort, join(sep, attribute=),
 * replace, map('filter', ...) / map(attribute=), selectattr / rejectattr(attr[, test,
 * arg]), and tojson (indent=, separators=, sort_keys=: Python's json.dumps with
 * ensure_ascii off, as Hugging Face's tojson).
 *
 * Methods: on strings strip, lstrip, rstrip, upper, lower, title, capitalize,
 * startswith, endswith, replace, split; on mappings items, keys, values, get.
 *
 * Functions: range([start,] stop[, step]), namespace(k=v, ...), dict(k=v, ...),
 * strftime_now(format) and raise_exception(message).
 *
 * Variables: messages (mappings with role and content; fields llmfs does not carry,
 * such as tool_calls, thinking or reasoning_content, are absent), add_generation_prompt,
 * bos_token, eos_token, and when given, reasoning_effort and enable_thinking. tools is
 * never defined.
 *
 * Limits: a render is bounded in work, memory, output (64 MiB) and nesting (expressions,
 * blocks and macro calls together), and ends with -EINVAL (or -EFBIG) and a reason
 * instead of taking the daemon's time, memory or stack.
 */
#ifndef LLMFS_JINJA_H
#define LLMFS_JINJA_H

#include "chat.h"

#include <time.h>

typedef struct jinja_input {
    const chat_msg *msgs;
    int n_msgs;
    bool add_generation_prompt;
    const char *bos_token; /* NULL: "" */
    const char *eos_token;
    const char *reasoning_effort; /* NULL: undefined (the template's default) */
    int enable_thinking;          /* 0: undefined (the template's default); 1: true; -1: false */
    const struct tm *now;         /* strftime_now's time; NULL: the current local time */
} jinja_input;

/* Renders tmpl into *out (malloc'd, NUL-terminated). Returns 0; -ENOTSUP when the
 * template uses something outside the subset (a statement, filter, test, method or
 * function it does not know); -EINVAL when it raises an exception (err->msg then holds
 * its message) or fails while rendering; -EFBIG when it would need too much memory or
 * render too much text; -ETIME when it runs past its work budget (a template whose
 * cost grows with the square of the conversation meets it on very long chats). */
int jinja_render(const char *tmpl, const jinja_input *in, char **out, llmfs_error *err);

#endif
