/* chat.c — rendering a conversation with the model's chat template.
 *
 * Every template goes through the Jinja-subset interpreter first, with the options a
 * template reads (reasoning_effort, the date of strftime_now), so the model's own
 * template decides the layout, gpt-oss's and Gemma 4's included. When a template of a
 * recognised family uses something outside the subset, the family's built-in renderer
 * produces the same layout instead. A template that rejects the conversation
 * (raise_exception) is never second-guessed. */
#include "chat.h"

#include "jinja.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *chat_template_name(const char *tmpl)
{
    if (!tmpl || !*tmpl)
        return "none";
    if (strstr(tmpl, "<|im_start|>"))
        return "chatml";
    if (strstr(tmpl, "<|start|>") && strstr(tmpl, "<|channel|>") && strstr(tmpl, "<|message|>"))
        return "harmony";
    if (strstr(tmpl, "<|start_header_id|>") && strstr(tmpl, "<|end_header_id|>"))
        return "llama3";
    if (strstr(tmpl, "<|turn>") && strstr(tmpl, "<turn|>"))
        return "gemma4";
    if (strstr(tmpl, "<start_of_turn>"))
        return "gemma";
    if (strstr(tmpl, "[INST]"))
        return strstr(tmpl, "<<SYS>>") ? "llama2" : "mistral";
    return "jinja";
}

/* ---- built-in renderers ---- */

typedef struct out {
    char *p;
    size_t n, cap;
    bool oom;
} out;

static void put_n(out *o, const char *s, size_t n)
{
    if (o->oom)
        return;
    if (o->n + n + 1 > o->cap) {
        size_t cap = o->cap ? o->cap : 256;
        while (cap < o->n + n + 1)
            cap *= 2;
        char *p = realloc(o->p, cap);
        if (!p) {
            o->oom = true;
            return;
        }
        o->p = p;
        o->cap = cap;
    }
    memcpy(o->p + o->n, s, n);
    o->n += n;
    o->p[o->n] = 0;
}

static void put(out *o, const char *s)
{
    put_n(o, s ? s : "", s ? strlen(s) : 0);
}

static bool ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* s without leading and trailing whitespace (Jinja's trim, Python's strip) */
static void put_trimmed(out *o, const char *s)
{
    if (!s)
        return;
    const char *e = s + strlen(s);
    while (s < e && ws(*s))
        s++;
    while (e > s && ws(e[-1]))
        e--;
    put_n(o, s, (size_t)(e - s));
}

static bool role_is(const chat_msg *m, const char *r)
{
    return m->role && strcmp(m->role, r) == 0;
}

static const char alternate_msg[] = "Conversation roles must alternate user/assistant/user/assistant/...";

static int render_chatml(out *o, const chat_msg *m, int n, bool gen, const char *bos, const char *eos,
                         llmfs_error *err)
{
    (void)bos, (void)eos, (void)err;
    for (int i = 0; i < n; i++) {
        put(o, "<|im_start|>");
        put(o, m[i].role);
        put(o, "\n");
        put(o, m[i].content);
        put(o, "<|im_end|>\n");
    }
    if (gen)
        put(o, "<|im_start|>assistant\n");
    return 0;
}

static int render_llama3(out *o, const chat_msg *m, int n, bool gen, const char *bos, const char *eos,
                         llmfs_error *err)
{
    (void)eos, (void)err;
    put(o, bos);
    for (int i = 0; i < n; i++) {
        put(o, "<|start_header_id|>");
        put(o, m[i].role);
        put(o, "<|end_header_id|>\n\n");
        put_trimmed(o, m[i].content);
        put(o, "<|eot_id|>");
    }
    if (gen)
        put(o, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return 0;
}

/* Meta's Llama 2 layout: the system prompt inside the first [INST] in <<SYS>>. */
static int render_llama2(out *o, const chat_msg *m, int n, bool gen, const char *bos, const char *eos,
                         llmfs_error *err)
{
    (void)gen;
    const char *sys = NULL;
    if (n > 0 && role_is(&m[0], "system")) {
        sys = m[0].content ? m[0].content : "";
        m++;
        n--;
    }
    for (int i = 0; i < n; i++) {
        if (role_is(&m[i], "user") != (i % 2 == 0))
            return llmfs_errorf(err, EINVAL, "chat template: %s", alternate_msg);
        out content = {0};
        if (i == 0 && sys) {
            put(&content, "<<SYS>>\n");
            put(&content, sys);
            put(&content, "\n<</SYS>>\n\n");
        }
        put(&content, m[i].content);
        if (content.oom) {
            free(content.p);
            return llmfs_errorf(err, ENOMEM, "chat template: out of memory");
        }
        if (role_is(&m[i], "user")) {
            put(o, bos);
            put(o, "[INST] ");
            put_trimmed(o, content.p);
            put(o, " [/INST]");
        } else if (role_is(&m[i], "assistant")) {
            put(o, " ");
            put_trimmed(o, content.p);
            put(o, " ");
            put(o, eos);
        }
        free(content.p);
    }
    return 0;
}

/* Mistral's [INST] layout; a system prompt goes in front of the first user message. */
static int render_mistral(out *o, const chat_msg *m, int n, bool gen, const char *bos, const char *eos,
                          llmfs_error *err)
{
    (void)gen;
    const char *sys = NULL;
    if (n > 0 && role_is(&m[0], "system")) {
        sys = m[0].content ? m[0].content : "";
        m++;
        n--;
    }
    put(o, bos);
    for (int i = 0; i < n; i++) {
        if (role_is(&m[i], "user") != (i % 2 == 0))
            return llmfs_errorf(err, EINVAL, "chat template: %s", alternate_msg);
        if (role_is(&m[i], "user")) {
            put(o, "[INST] ");
            if (i == 0 && sys) {
                put(o, sys);
                put(o, "\n\n");
            }
            put(o, m[i].content);
            put(o, " [/INST]");
        } else if (role_is(&m[i], "assistant")) {
            put(o, m[i].content);
            put(o, eos);
        } else {
            return llmfs_errorf(err, EINVAL, "chat template: Only user and assistant roles are supported!");
        }
    }
    return 0;
}

/* Gemma's turns: the assistant is "model", a system prompt opens the first turn. */
static int render_gemma(out *o, const chat_msg *m, int n, bool gen, const char *bos, const char *eos,
                        llmfs_error *err)
{
    (void)eos;
    const char *sys = NULL;
    if (n > 0 && role_is(&m[0], "system")) {
        sys = m[0].content ? m[0].content : "";
        m++;
        n--;
    }
    put(o, bos);
    for (int i = 0; i < n; i++) {
        if (role_is(&m[i], "user") != (i % 2 == 0))
            return llmfs_errorf(err, EINVAL, "chat template: %s", alternate_msg);
        put(o, "<start_of_turn>");
        put(o, role_is(&m[i], "assistant") ? "model" : m[i].role);
        put(o, "\n");
        if (i == 0 && sys) {
            put(o, sys);
            put(o, "\n\n");
        }
        put_trimmed(o, m[i].content);
        put(o, "<end_of_turn>\n");
    }
    if (gen)
        put(o, "<start_of_turn>model\n");
    return 0;
}

/* Gemma 4's text without the thinking channels <|channel>...<channel|> a model turn may
 * carry (its template's strip_thinking), trimmed. */
static void put_without_thinking(out *o, const char *s)
{
    char *buf = malloc(strlen(s) + 1);
    if (!buf) {
        o->oom = true;
        return;
    }
    size_t n = 0;
    for (const char *p = s; *p;) {
        const char *close = strstr(p, "<channel|>");
        const char *end = close ? close : p + strlen(p);
        /* the part before the close tag, up to its channel's opening */
        const char *open = NULL;
        for (const char *q = p; q + 10 <= end; q++)
            if (!memcmp(q, "<|channel>", 10)) {
                open = q;
                break;
            }
        const char *keep = open ? open : end;
        memcpy(buf + n, p, (size_t)(keep - p));
        n += (size_t)(keep - p);
        p = close ? close + 10 : end;
    }
    buf[n] = 0;
    put_trimmed(o, buf);
    free(buf);
}

/* Gemma 4's turns (<|turn>role ... <turn|>), the assistant being "model": a system or
 * developer message becomes a system turn, consecutive assistant messages one model
 * turn, and the generation prompt closes an empty thinking channel (thinking off, the
 * template's default). Tool calls and responses are the template's own business. */
static int render_gemma4(out *o, const chat_msg *m, int n, bool gen, const char *bos, const char *eos,
                         llmfs_error *err)
{
    (void)eos;
    (void)err;
    put(o, bos);
    if (n > 0 && (role_is(&m[0], "system") || role_is(&m[0], "developer"))) {
        put(o, "<|turn>system\n");
        put_trimmed(o, m[0].content ? m[0].content : "");
        put(o, "<turn|>\n");
        m++;
        n--;
    }
    const char *prev = NULL; /* role of the previous message other than a tool's */
    for (int i = 0; i < n; i++) {
        if (role_is(&m[i], "tool"))
            continue;
        const bool model = role_is(&m[i], "assistant");
        if (!(model && prev && !strcmp(prev, "assistant"))) {
            put(o, "<|turn>");
            put(o, model ? "model" : m[i].role);
            put(o, "\n");
        }
        if (model)
            put_without_thinking(o, m[i].content ? m[i].content : "");
        else
            put_trimmed(o, m[i].content);
        put(o, "<turn|>\n");
        prev = m[i].role;
    }
    if (gen)
        put(o, "<|turn>model\n<|channel>thought\n<channel|>");
    return o->oom ? llmfs_errorf(err, ENOMEM, "chat template: out of memory") : 0;
}

/* gpt-oss's harmony format, as its own template lays out a conversation without tools:
 * a system message with the date and the reasoning effort, a leading system or
 * developer message as the developer's instructions, then the turns. Earlier
 * assistant turns keep only their final answer; a closing assistant turn (no
 * generation prompt) ends with <|return|>, as in training. */
static int render_harmony(out *o, const chat_msg *m, int n, bool gen, const chat_opts *opts, llmfs_error *err)
{
    char today[32];
    const char *date = opts && opts->date ? opts->date : NULL;
    if (!date) {
        time_t now = time(NULL);
        struct tm tm;
        localtime_r(&now, &tm);
        strftime(today, sizeof today, "%Y-%m-%d", &tm);
        date = today;
    }
    const char *effort = opts && opts->reasoning_effort ? opts->reasoning_effort : "medium";
    put(o, "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
           "Knowledge cutoff: 2024-06\nCurrent date: ");
    put(o, date);
    put(o, "\n\nReasoning: ");
    put(o, effort);
    put(o, "\n\n# Valid channels: analysis, commentary, final. Channel must be included for every message."
           "<|end|>");
    if (n > 0 && (role_is(&m[0], "system") || role_is(&m[0], "developer"))) {
        if (m[0].content && *m[0].content) {
            put(o, "<|start|>developer<|message|># Instructions\n\n");
            put(o, m[0].content);
            put(o, "\n\n<|end|>");
        }
        m++;
        n--;
    }
    for (int i = 0; i < n; i++) {
        const char *c = m[i].content ? m[i].content : "";
        if (role_is(&m[i], "assistant")) {
            if (strstr(c, "<|channel|>analysis<|message|>") || strstr(c, "<|channel|>final<|message|>"))
                return llmfs_errorf(err, EINVAL, "chat template: an assistant message holds <|channel|> tags; "
                                                 "pass only its final answer");
            put(o, "<|start|>assistant<|channel|>final<|message|>");
            put(o, c);
            put(o, i == n - 1 && !gen ? "<|return|>" : "<|end|>");
        } else if (role_is(&m[i], "user")) {
            put(o, "<|start|>user<|message|>");
            put(o, c);
            put(o, "<|end|>");
        } else if (role_is(&m[i], "tool")) {
            return llmfs_errorf(err, EINVAL, "chat template: tool messages are not supported");
        }
        /* other roles: the template has no branch for them and drops them */
    }
    if (gen)
        put(o, "<|start|>assistant");
    return 0;
}

typedef int (*renderer)(out *, const chat_msg *, int, bool, const char *, const char *, llmfs_error *);

static const struct {
    const char *name;
    renderer fn;
} builtins[] = {
    {"chatml", render_chatml}, {"llama3", render_llama3}, {"llama2", render_llama2},
    {"mistral", render_mistral}, {"gemma", render_gemma}, {"gemma4", render_gemma4},
};

static char *render_builtin(const char *family, const chat_msg *msgs, int n_msgs, bool add_generation_prompt,
                            const char *bos_token, const char *eos_token, const chat_opts *opts, llmfs_error *err)
{
    if (n_msgs < 0 || (n_msgs && !msgs)) {
        llmfs_errorf(err, EINVAL, "chat template: bad message list");
        return NULL;
    }
    if (family && !strcmp(family, "harmony")) {
        out o = {0};
        put(&o, "");
        int rc = render_harmony(&o, msgs, n_msgs, add_generation_prompt, opts, err);
        if (!rc && o.oom)
            rc = llmfs_errorf(err, ENOMEM, "chat template: out of memory");
        if (rc) {
            free(o.p);
            return NULL;
        }
        return o.p;
    }
    for (size_t k = 0; k < sizeof builtins / sizeof builtins[0]; k++) {
        if (!family || strcmp(family, builtins[k].name) != 0)
            continue;
        out o = {0};
        put(&o, "");
        int rc = builtins[k].fn(&o, msgs, n_msgs, add_generation_prompt, bos_token ? bos_token : "",
                                eos_token ? eos_token : "", err);
        if (!rc && o.oom)
            rc = llmfs_errorf(err, ENOMEM, "chat template: out of memory");
        if (rc) {
            free(o.p);
            return NULL;
        }
        return o.p;
    }
    llmfs_errorf(err, ENOENT, "chat template: no built-in renderer for '%s'", family ? family : "(null)");
    return NULL;
}

char *chat_render_builtin(const char *family, const chat_msg *msgs, int n_msgs, bool add_generation_prompt,
                          const char *bos_token, const char *eos_token, llmfs_error *err)
{
    return render_builtin(family, msgs, n_msgs, add_generation_prompt, bos_token, eos_token, NULL, err);
}

char *chat_render(const char *tmpl, const chat_msg *msgs, int n_msgs, bool add_generation_prompt,
                  const char *bos_token, const char *eos_token, llmfs_error *err)
{
    return chat_render_opts(tmpl, msgs, n_msgs, add_generation_prompt, bos_token, eos_token, NULL, err);
}

char *chat_render_opts(const char *tmpl, const chat_msg *msgs, int n_msgs, bool add_generation_prompt,
                       const char *bos_token, const char *eos_token, const chat_opts *opts, llmfs_error *err)
{
    if (!tmpl || !*tmpl) {
        llmfs_errorf(err, ENOENT, "no chat template");
        return NULL;
    }
    if (n_msgs < 0 || (n_msgs && !msgs)) {
        llmfs_errorf(err, EINVAL, "chat template: bad message list");
        return NULL;
    }
    for (int i = 0; i < n_msgs; i++) {
        if (!msgs[i].role) {
            llmfs_errorf(err, EINVAL, "chat template: message %d has no role", i);
            return NULL;
        }
    }
    /* the template's options: the reasoning effort, and the day strftime_now gives */
    struct tm day = {0};
    jinja_input in = {msgs, n_msgs, add_generation_prompt, bos_token, eos_token, NULL, 0, NULL};
    if (opts && opts->reasoning_effort)
        in.reasoning_effort = opts->reasoning_effort;
    if (opts && opts->date) {
        int y, mo, d;
        char tail;
        if (sscanf(opts->date, "%d-%d-%d%c", &y, &mo, &d, &tail) != 3 || mo < 1 || mo > 12 || d < 1 || d > 31) {
            llmfs_errorf(err, EINVAL, "chat template: bad date '%.32s' (YYYY-MM-DD)", opts->date);
            return NULL;
        }
        day.tm_year = y - 1900;
        day.tm_mon = mo - 1;
        day.tm_mday = d;
        day.tm_hour = 12; /* midday: the weekday and day of the year come out right in any zone */
        day.tm_isdst = -1;
        mktime(&day);
        in.now = &day;
    }
    char *text = NULL;
    llmfs_error jerr = {0};
    int rc = jinja_render(tmpl, &in, &text, &jerr);
    if (rc == 0)
        return text;
    const char *family = chat_template_name(tmpl);
    /* outside the subset, or past the work budget (Gemma 4's template looks back over
     * the conversation for every message): a family's built-in renderer lays the same
     * conversation out in linear time */
    if ((rc == -ENOTSUP || rc == -ETIME) && strcmp(family, "jinja") != 0)
        return render_builtin(family, msgs, n_msgs, add_generation_prompt, bos_token, eos_token, opts, err);
    if (err) {
        *err = jerr;
        if (rc == -ENOTSUP || rc == -ETIME) /* and no family to fall back on */
            err->code = EINVAL;
    }
    return NULL;
}
