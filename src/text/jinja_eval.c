/* jinja_eval.c — running a parsed template against a conversation.
 *
 * Values are small structs copied by value; strings and lists live in the render's
 * arena. Variables sit on one stack: a for loop opens a scope that its end discards,
 * so a set inside a loop is not seen after it, as in Jinja. */
#include "jinja_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum vkind { V_UNDEF, V_NONE, V_BOOL, V_INT, V_STR, V_LIST, V_MSG, V_LOOP };

typedef struct jval {
    enum vkind k;
    long long i; /* V_BOOL, V_INT; V_LOOP: index0; V_LIST: nesting depth (1: no lists inside) */
    const char *s; /* V_STR */
    size_t n;      /* V_STR length; V_LIST, V_LOOP: item count */
    const struct jval *items; /* V_LIST */
    const chat_msg *msg;      /* V_MSG */
} jval;

typedef struct binding {
    const char *name;
    size_t n;
    jval v;
} binding;

#define MAX_OUTPUT (64u << 20)
/* The work of one render: loop iterations, expressions, blocks of text work, and the
 * memory taken (a step per 32 bytes, so that a template that allocates in a loop runs out
 * of steps before the arena's limit). */
#define MAX_STEPS 10000000
#define MAX_VARS 4096
/* Recursion of the evaluator (a chain like 1+1+...+1 nests without parentheses) and of
 * list values (repr and == walk them), kept well within a thread's stack. */
#define MAX_EVAL_DEPTH 200
#define MAX_LIST_DEPTH 64

typedef struct ctx {
    jarena *a;
    llmfs_error *err;
    int rc;
    binding *vars;
    int n_vars;
    char *out;
    size_t out_n, out_cap;
    long steps;
    int depth;
} ctx;

static int fail(ctx *c, int code, int line, const char *fmt, const char *what, size_t n)
{
    if (!c->rc) {
        char w[160];
        size_t k = n < sizeof w - 1 ? n : sizeof w - 1;
        memcpy(w, what, k);
        w[k] = 0;
        for (size_t i = 0; i < k; i++) /* reasons are one line */
            if ((unsigned char)w[i] < 0x20)
                w[i] = ' ';
        char msg[220];
        snprintf(msg, sizeof msg, fmt, w);
        llmfs_errorf(c->err, code, "chat template, line %d: %s", line, msg);
        c->rc = -code;
    }
    return c->rc;
}

static int oom(ctx *c, int line)
{
    if (c->a->over)
        return fail(c, EFBIG, line, "the template needs too much memory%s", "", 0);
    return fail(c, ENOMEM, line, "out of memory%s", "", 0);
}

static bool spent(const ctx *c)
{
    return c->steps > MAX_STEPS - (long)(c->a->total / 32);
}

/* Work on long strings and lists counts against the same budget as loop iterations:
 * a step per 16 bytes or items. */
static int charge(ctx *c, size_t bytes, int line)
{
    c->steps += (long)(bytes / 16);
    if (spent(c))
        return fail(c, EINVAL, line, "the template runs too long%s", "", 0);
    return 0;
}

static long long list_depth(const jval *v)
{
    return v->k == V_LIST ? (v->i > 0 ? v->i : 1) : 0;
}

static jval mk(enum vkind k) { return (jval){.k = k}; }
static jval mk_int(long long i) { return (jval){.k = V_INT, .i = i}; }
static jval mk_bool(bool b) { return (jval){.k = V_BOOL, .i = b}; }
static jval mk_str(const char *s, size_t n) { return (jval){.k = V_STR, .s = s, .n = n}; }

static bool truthy(const jval *v)
{
    switch (v->k) {
    case V_BOOL:
    case V_INT:
        return v->i != 0;
    case V_STR:
    case V_LIST:
        return v->n != 0;
    case V_MSG:
    case V_LOOP:
        return true;
    default:
        return false;
    }
}

/* ---- output and strings ---- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool full; /* a text would have grown past MAX_OUTPUT */
} sbuf;

static bool sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->full || b->n + n > MAX_OUTPUT) {
        b->full = true;
        return false;
    }
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return false;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
    return true;
}

static bool is_space(char ch)
{
    return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r' || ch == '\v' || ch == '\f';
}

static void repr(const jval *v, sbuf *b, bool quoted);

static void repr_str(const char *s, size_t n, sbuf *b, bool quoted)
{
    if (!quoted) {
        sb_add(b, s, n);
        return;
    }
    sb_add(b, "'", 1);
    size_t from = 0; /* plain runs go in whole */
    for (size_t i = 0; i < n && !b->full; i++) {
        if (s[i] == '\'' || s[i] == '\\' || s[i] == '\n') {
            sb_add(b, s + from, i - from);
            sb_add(b, s[i] == '\n' ? "\\n" : s[i] == '\'' ? "\\'" : "\\\\", 2);
            from = i + 1;
        }
    }
    sb_add(b, s + from, n - from);
    sb_add(b, "'", 1);
}

/* The text Jinja (Python) prints for a value. */
static void repr(const jval *v, sbuf *b, bool quoted)
{
    char num[32];
    switch (v->k) {
    case V_UNDEF:
        break;
    case V_NONE:
        sb_add(b, "None", 4);
        break;
    case V_BOOL:
        sb_add(b, v->i ? "True" : "False", v->i ? 4 : 5);
        break;
    case V_INT:
        sb_add(b, num, (size_t)snprintf(num, sizeof num, "%lld", v->i));
        break;
    case V_STR:
        repr_str(v->s, v->n, b, quoted);
        break;
    case V_LIST:
        sb_add(b, "[", 1);
        for (size_t i = 0; i < v->n && !b->full; i++) {
            if (i)
                sb_add(b, ", ", 2);
            repr(&v->items[i], b, true);
        }
        sb_add(b, "]", 1);
        break;
    case V_MSG:
        sb_add(b, "{'role': ", 9);
        repr_str(v->msg->role ? v->msg->role : "", v->msg->role ? strlen(v->msg->role) : 0, b, true);
        sb_add(b, ", 'content': ", 13);
        repr_str(v->msg->content ? v->msg->content : "", v->msg->content ? strlen(v->msg->content) : 0, b,
                 true);
        sb_add(b, "}", 1);
        break;
    case V_LOOP:
        sb_add(b, "<loop>", 6);
        break;
    }
}

/* The value as a string in the arena. */
static int to_str(ctx *c, const jval *v, int line, jval *out)
{
    if (v->k == V_STR) {
        *out = *v;
        return 0;
    }
    sbuf b = {0};
    repr(v, &b, false);
    if (b.full || charge(c, b.n, line)) {
        free(b.p);
        return b.full ? fail(c, EFBIG, line, "the rendered text is too long%s", "", 0) : c->rc;
    }
    char *s = jalloc(c->a, b.n + 1);
    if (!s) {
        free(b.p);
        return oom(c, line);
    }
    if (b.n)
        memcpy(s, b.p, b.n);
    free(b.p);
    *out = mk_str(s, b.n);
    return 0;
}

static int concat(ctx *c, const jval *x, const jval *y, int line, jval *out)
{
    char *s = jalloc(c->a, x->n + y->n + 1);
    if (!s)
        return oom(c, line);
    memcpy(s, x->s, x->n);
    memcpy(s + x->n, y->s, y->n);
    *out = mk_str(s, x->n + y->n);
    return 0;
}

/* ---- variables ---- */

static const jval *lookup(ctx *c, const char *name, size_t n)
{
    for (int i = c->n_vars - 1; i >= 0; i--)
        if (c->vars[i].n == n && memcmp(c->vars[i].name, name, n) == 0)
            return &c->vars[i].v;
    return NULL;
}

/* Binds name in the scope that starts at index base. */
static int bind(ctx *c, int base, const char *name, size_t n, jval v, int line)
{
    for (int i = c->n_vars - 1; i >= base; i--) {
        if (c->vars[i].n == n && memcmp(c->vars[i].name, name, n) == 0) {
            c->vars[i].v = v;
            return 0;
        }
    }
    if (c->n_vars == MAX_VARS)
        return fail(c, EINVAL, line, "too many variables%s", "", 0);
    c->vars[c->n_vars++] = (binding){name, n, v};
    return 0;
}

/* ---- expressions ---- */

static int eval(ctx *c, const jexpr *e, jval *out);

static bool name_is(const jexpr *e, const char *s)
{
    return strlen(s) == e->n && memcmp(e->s, s, e->n) == 0;
}

/* Lists may share sublists, so a comparison can visit far more items than were ever
 * built: every item visited is a step. */
static bool equal(ctx *c, const jval *x, const jval *y, int line)
{
    if (c->rc || charge(c, 16 + (x->k == V_STR ? x->n : 0), line))
        return false;
    bool xn = x->k == V_BOOL || x->k == V_INT, yn = y->k == V_BOOL || y->k == V_INT;
    if (xn && yn)
        return x->i == y->i;
    if (x->k != y->k)
        return false;
    switch (x->k) {
    case V_STR:
        return x->n == y->n && memcmp(x->s, y->s, x->n) == 0;
    case V_LIST:
        if (x->n != y->n)
            return false;
        for (size_t i = 0; i < x->n; i++)
            if (!equal(c, &x->items[i], &y->items[i], line))
                return false;
        return true;
    case V_MSG:
        return x->msg == y->msg;
    case V_LOOP:
        return x->i == y->i && x->n == y->n;
    default: /* none, undefined */
        return true;
    }
}

static jval msg_field(const chat_msg *m, const char *key, size_t n)
{
    const char *v = NULL;
    if (n == 4 && memcmp(key, "role", 4) == 0)
        v = m->role;
    else if (n == 7 && memcmp(key, "content", 7) == 0)
        v = m->content;
    else
        return mk(V_UNDEF);
    return v ? mk_str(v, strlen(v)) : mk(V_NONE);
}

static jval loop_field(const jval *l, const char *key, size_t n)
{
    long long i0 = l->i, len = (long long)l->n;
#define IS(k) (n == strlen(k) && memcmp(key, k, n) == 0)
    if (IS("index"))
        return mk_int(i0 + 1);
    if (IS("index0"))
        return mk_int(i0);
    if (IS("first"))
        return mk_bool(i0 == 0);
    if (IS("last"))
        return mk_bool(i0 == len - 1);
    if (IS("length"))
        return mk_int(len);
    if (IS("revindex"))
        return mk_int(len - i0);
    if (IS("revindex0"))
        return mk_int(len - i0 - 1);
#undef IS
    return mk(V_UNDEF);
}

static jval attr(const jval *v, const char *key, size_t n)
{
    if (v->k == V_MSG)
        return msg_field(v->msg, key, n);
    if (v->k == V_LOOP)
        return loop_field(v, key, n);
    return mk(V_UNDEF);
}

/* Python's index rules: negative counts from the end. */
static bool norm_index(long long i, size_t len, size_t *out)
{
    if (i < 0)
        i += (long long)len;
    if (i < 0 || (size_t)i >= len)
        return false;
    *out = (size_t)i;
    return true;
}

static size_t clamp_slice(const jval *bound, size_t len, size_t dflt)
{
    if (!bound || bound->k == V_NONE || bound->k == V_UNDEF)
        return dflt;
    long long i = bound->i;
    if (i < 0)
        i += (long long)len;
    if (i < 0)
        return 0;
    return (size_t)i > len ? len : (size_t)i;
}

static int utf8_count(const char *s, size_t n)
{
    int k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

static int str_case(ctx *c, const jval *v, bool upper, int line, jval *out)
{
    char *s = jalloc(c->a, v->n + 1);
    if (!s)
        return oom(c, line);
    for (size_t i = 0; i < v->n; i++) {
        char ch = v->s[i];
        if (upper && ch >= 'a' && ch <= 'z')
            ch = (char)(ch - 32);
        else if (!upper && ch >= 'A' && ch <= 'Z')
            ch = (char)(ch + 32);
        s[i] = ch;
    }
    *out = mk_str(s, v->n);
    return 0;
}

/* str.strip / lstrip / rstrip, of whitespace or of the characters in chars */
static jval strip(const jval *v, bool left, bool right, const jval *chars)
{
    bool drop[256]; /* one look-up per byte, however long chars is */
    for (int k = 0; k < 256; k++)
        drop[k] = !chars && is_space((char)k);
    for (size_t k = 0; chars && k < chars->n; k++)
        drop[(unsigned char)chars->s[k]] = true;
    const char *s = v->s, *e = v->s + v->n;
    while (left && s < e && drop[(unsigned char)*s])
        s++;
    while (right && e > s && drop[(unsigned char)e[-1]])
        e--;
    return mk_str(s, (size_t)(e - s));
}

static int need_args(ctx *c, const jexpr *e, int lo, int hi, const char *what)
{
    if (e->n_args < lo || e->n_args > hi)
        return fail(c, EINVAL, e->line, "wrong number of arguments to %s", what, strlen(what));
    return 0;
}

static int eval_args(ctx *c, const jexpr *e, jval *args)
{
    for (int i = 0; i < e->n_args && i < 4; i++)
        if (eval(c, e->args[i], &args[i]))
            return c->rc;
    return 0;
}

static int call_method(ctx *c, const jexpr *e, jval *out)
{
    const jexpr *m = e->a;
    jval obj, args[4];
    if (eval(c, m->a, &obj) || eval_args(c, e, args))
        return c->rc;
    size_t work = obj.n;
    for (int i = 0; i < e->n_args && i < 4; i++)
        work += args[i].n;
    if (charge(c, work, e->line))
        return c->rc;
    if (obj.k != V_STR) {
        return fail(c, ENOTSUP, e->line, "method '%s' is only supported on strings", m->s, m->n);
    }
    if (name_is(m, "strip") || name_is(m, "lstrip") || name_is(m, "rstrip")) {
        if (need_args(c, e, 0, 1, "strip"))
            return c->rc;
        const jval *chars = e->n_args && args[0].k == V_STR ? &args[0] : NULL;
        *out = strip(&obj, !name_is(m, "rstrip"), !name_is(m, "lstrip"), chars);
        return 0;
    }
    if (name_is(m, "upper") || name_is(m, "lower")) {
        if (need_args(c, e, 0, 0, "upper/lower"))
            return c->rc;
        return str_case(c, &obj, name_is(m, "upper"), e->line, out);
    }
    if (name_is(m, "startswith") || name_is(m, "endswith")) {
        if (need_args(c, e, 1, 1, "startswith/endswith"))
            return c->rc;
        if (args[0].k != V_STR)
            return fail(c, EINVAL, e->line, "%s needs a string", m->s, m->n);
        bool ok = args[0].n <= obj.n &&
                  memcmp(name_is(m, "startswith") ? obj.s : obj.s + obj.n - args[0].n, args[0].s, args[0].n) == 0;
        *out = mk_bool(ok);
        return 0;
    }
    /* replace(old, new) */
    if (need_args(c, e, 2, 2, "replace"))
        return c->rc;
    if (args[0].k != V_STR || args[1].k != V_STR || args[0].n == 0)
        return fail(c, EINVAL, e->line, "replace needs a non-empty string and a string%s", "", 0);
    sbuf b = {0};
    bool ok = sb_add(&b, "", 0);
    size_t from = 0; /* the text since the last match goes in whole */
    for (size_t i = 0; i < obj.n && ok;) {
        if (i + args[0].n <= obj.n && memcmp(obj.s + i, args[0].s, args[0].n) == 0) {
            if (charge(c, 16, e->line)) { /* each match is a step */
                free(b.p);
                return c->rc;
            }
            ok = sb_add(&b, obj.s + from, i - from) && sb_add(&b, args[1].s, args[1].n);
            i += args[0].n;
            from = i;
        } else {
            i++;
        }
    }
    ok = ok && sb_add(&b, obj.s + from, obj.n - from);
    char *s = ok ? jalloc(c->a, b.n + 1) : NULL;
    if (!s) {
        free(b.p);
        return b.full ? fail(c, EFBIG, e->line, "the rendered text is too long%s", "", 0) : oom(c, e->line);
    }
    memcpy(s, b.p, b.n);
    free(b.p);
    *out = mk_str(s, b.n);
    return 0;
}

static int call(ctx *c, const jexpr *e, jval *out)
{
    if (e->a->kind == JE_ATTR)
        return call_method(c, e, out);
    jval args[4];
    if (eval_args(c, e, args))
        return c->rc;
    if (name_is(e->a, "raise_exception")) {
        jval msg;
        if (e->n_args < 1 || to_str(c, &args[0], e->line, &msg))
            return c->rc ? c->rc : fail(c, EINVAL, e->line, "the template raised an exception%s", "", 0);
        llmfs_errorf(c->err, EINVAL, "chat template: %.*s", (int)(msg.n < 200 ? msg.n : 200), msg.s);
        if (c->err)
            for (char *p = c->err->msg; *p; p++)
                if ((unsigned char)*p < 0x20)
                    *p = ' ';
        c->rc = -EINVAL;
        return c->rc;
    }
    /* range([start,] stop) */
    if (need_args(c, e, 1, 2, "range"))
        return c->rc;
    for (int i = 0; i < e->n_args; i++)
        if (args[i].k != V_INT)
            return fail(c, EINVAL, e->line, "range needs integers%s", "", 0);
    long long lo = e->n_args == 2 ? args[0].i : 0, hi = e->n_args == 2 ? args[1].i : args[0].i;
    size_t n = hi > lo ? (size_t)((unsigned long long)hi - (unsigned long long)lo) : 0;
    if (n > 1000000)
        return fail(c, EINVAL, e->line, "range too long%s", "", 0);
    jval *items = jalloc(c->a, sizeof *items * (n ? n : 1));
    if (!items)
        return oom(c, e->line);
    for (size_t i = 0; i < n; i++)
        items[i] = mk_int(lo + (long long)i);
    *out = (jval){.k = V_LIST, .i = 1, .items = items, .n = n};
    return 0;
}

static int filter(ctx *c, const jexpr *e, jval *out)
{
    jval v, args[4];
    if (eval(c, e->a, &v) || eval_args(c, e, args) || charge(c, v.n, e->line))
        return c->rc;
    if (name_is(e, "default") || name_is(e, "d")) {
        if (need_args(c, e, 1, 2, "default"))
            return c->rc;
        bool use = v.k == V_UNDEF || (e->n_args == 2 && truthy(&args[1]) && !truthy(&v));
        *out = use ? args[0] : v;
        return 0;
    }
    if (need_args(c, e, 0, 0, "this filter"))
        return c->rc;
    if (name_is(e, "string"))
        return to_str(c, &v, e->line, out);
    if (name_is(e, "length") || name_is(e, "count")) {
        if (v.k == V_STR)
            *out = mk_int(utf8_count(v.s, v.n));
        else if (v.k == V_LIST)
            *out = mk_int((long long)v.n);
        else if (v.k == V_MSG)
            *out = mk_int(2);
        else
            return fail(c, EINVAL, e->line, "length of a value without one%s", "", 0);
        return 0;
    }
    if (name_is(e, "first") || name_is(e, "last")) {
        bool first = name_is(e, "first");
        if (v.k == V_LIST)
            *out = v.n ? v.items[first ? 0 : v.n - 1] : mk(V_UNDEF);
        else if (v.k == V_STR)
            *out = v.n ? mk_str(first ? v.s : v.s + v.n - 1, 1) : mk(V_UNDEF);
        else
            return fail(c, EINVAL, e->line, "first/last of a value that is not a sequence%s", "", 0);
        return 0;
    }
    if (v.k != V_STR && to_str(c, &v, e->line, &v))
        return c->rc;
    if (name_is(e, "trim")) {
        *out = strip(&v, true, true, NULL);
        return 0;
    }
    return str_case(c, &v, name_is(e, "upper"), e->line, out);
}

static int test(ctx *c, const jexpr *e, jval *out)
{
    jval v;
    if (eval(c, e->a, &v))
        return c->rc;
    if (e->n_args)
        return fail(c, ENOTSUP, e->line, "test '%s' with arguments is not supported", e->s, e->n);
    bool r;
    if (name_is(e, "defined"))
        r = v.k != V_UNDEF;
    else if (name_is(e, "undefined"))
        r = v.k == V_UNDEF;
    else if (name_is(e, "none"))
        r = v.k == V_NONE;
    else if (name_is(e, "string"))
        r = v.k == V_STR;
    else if (name_is(e, "number") || name_is(e, "integer"))
        r = v.k == V_INT;
    else if (name_is(e, "boolean"))
        r = v.k == V_BOOL;
    else if (name_is(e, "iterable"))
        r = v.k == V_STR || v.k == V_LIST || v.k == V_MSG;
    else if (name_is(e, "sequence"))
        r = v.k == V_STR || v.k == V_LIST;
    else if (name_is(e, "mapping"))
        r = v.k == V_MSG;
    else if (v.k == V_INT || v.k == V_BOOL) /* even, odd */
        r = (v.i % 2 == 0) == name_is(e, "even");
    else
        return fail(c, EINVAL, e->line, "even/odd of a value that is not a number%s", "", 0);
    *out = mk_bool(e->op ? !r : r);
    return 0;
}

static int contains(ctx *c, const jval *hay, const jval *needle, int line, bool *r)
{
    if (hay->k == V_STR) {
        if (needle->k != V_STR)
            return fail(c, EINVAL, line, "'in <string>' needs a string on the left%s", "", 0);
        *r = needle->n == 0 || memmem(hay->s, hay->n, needle->s, needle->n) != NULL;
        return 0;
    }
    if (hay->k == V_LIST) {
        *r = false;
        for (size_t i = 0; i < hay->n && !*r && !c->rc; i++)
            *r = equal(c, &hay->items[i], needle, line);
        return c->rc;
    }
    if (hay->k == V_MSG) {
        *r = needle->k == V_STR && msg_field(hay->msg, needle->s, needle->n).k != V_UNDEF;
        return 0;
    }
    return fail(c, EINVAL, line, "'in' needs a string, a list or a message on the right%s", "", 0);
}

static int binop(ctx *c, const jexpr *e, jval *out)
{
    jval x, y;
    if (eval(c, e->a, &x))
        return c->rc;
    if (e->op == JB_AND || e->op == JB_OR) { /* Python returns the deciding operand */
        if (truthy(&x) == (e->op == JB_OR)) {
            *out = x;
            return 0;
        }
        return eval(c, e->b, out);
    }
    if (eval(c, e->b, &y) || charge(c, x.n + y.n, e->line))
        return c->rc;
    bool xi = x.k == V_INT || x.k == V_BOOL, yi = y.k == V_INT || y.k == V_BOOL;
    switch (e->op) {
    case JB_EQ:
        *out = mk_bool(equal(c, &x, &y, e->line));
        return c->rc;
    case JB_NE:
        *out = mk_bool(!equal(c, &x, &y, e->line));
        return c->rc;
    case JB_LT: case JB_GT: case JB_LE: case JB_GE: {
        int cmp;
        if (xi && yi) {
            cmp = (x.i > y.i) - (x.i < y.i);
        } else if (x.k == V_STR && y.k == V_STR) {
            int m = memcmp(x.s, y.s, x.n < y.n ? x.n : y.n);
            cmp = m ? (m > 0) - (m < 0) : (x.n > y.n) - (x.n < y.n);
        } else {
            return fail(c, EINVAL, e->line, "cannot order these values%s", "", 0);
        }
        bool r = e->op == JB_LT ? cmp < 0 : e->op == JB_GT ? cmp > 0 : e->op == JB_LE ? cmp <= 0 : cmp >= 0;
        *out = mk_bool(r);
        return 0;
    }
    case JB_IN:
    case JB_NOT_IN: {
        bool r = false;
        if (contains(c, &y, &x, e->line, &r))
            return c->rc;
        *out = mk_bool(e->op == JB_IN ? r : !r);
        return 0;
    }
    case JB_CONCAT:
        if (to_str(c, &x, e->line, &x) || to_str(c, &y, e->line, &y))
            return c->rc;
        return concat(c, &x, &y, e->line, out);
    case JB_ADD:
        if (x.k == V_STR && y.k == V_STR)
            return concat(c, &x, &y, e->line, out);
        if (x.k == V_LIST && y.k == V_LIST) {
            jval *items = jalloc(c->a, sizeof *items * (x.n + y.n + 1));
            if (!items)
                return oom(c, e->line);
            memcpy(items, x.items, sizeof *items * x.n);
            memcpy(items + x.n, y.items, sizeof *items * y.n);
            *out = (jval){.k = V_LIST, .i = list_depth(&x) > list_depth(&y) ? list_depth(&x) : list_depth(&y),
                          .items = items, .n = x.n + y.n};
            return 0;
        }
        /* fall through */
    case JB_SUB: case JB_MUL: case JB_MOD:
        if (!xi || !yi)
            return fail(c, EINVAL, e->line, "'+' needs two strings or two numbers (use ~ to join text)%s",
                        "", 0);
        long long r;
        bool over;
        if (e->op == JB_ADD)
            over = __builtin_add_overflow(x.i, y.i, &r);
        else if (e->op == JB_SUB)
            over = __builtin_sub_overflow(x.i, y.i, &r);
        else if (e->op == JB_MUL)
            over = __builtin_mul_overflow(x.i, y.i, &r);
        else if (y.i == 0)
            return fail(c, EINVAL, e->line, "modulo by zero%s", "", 0);
        else if (y.i == -1)
            over = false, r = 0;
        else /* Python's modulo takes the divisor's sign */
            over = false, r = x.i % y.i, r = (r != 0 && (r < 0) != (y.i < 0)) ? r + y.i : r;
        if (over)
            return fail(c, EINVAL, e->line, "integer overflow%s", "", 0);
        *out = mk_int(r);
        return 0;
    default:
        return fail(c, EINVAL, e->line, "unknown operator%s", "", 0);
    }
}

static int eval_in(ctx *c, const jexpr *e, jval *out);

static int eval(ctx *c, const jexpr *e, jval *out)
{
    if (c->rc)
        return c->rc;
    if (c->depth >= MAX_EVAL_DEPTH)
        return fail(c, EINVAL, e->line, "expression nested too deeply%s", "", 0);
    c->steps++;
    if (spent(c))
        return fail(c, EINVAL, e->line, "the template runs too long%s", "", 0);
    c->depth++;
    int rc = eval_in(c, e, out);
    c->depth--;
    return rc;
}

static int eval_in(ctx *c, const jexpr *e, jval *out)
{
    jval v, i, j;
    switch (e->kind) {
    case JE_STR:
        *out = mk_str(e->s, e->n);
        return 0;
    case JE_INT:
        *out = mk_int(e->i);
        return 0;
    case JE_TRUE:
    case JE_FALSE:
        *out = mk_bool(e->kind == JE_TRUE);
        return 0;
    case JE_NONE:
        *out = mk(V_NONE);
        return 0;
    case JE_LIST: {
        jval *items = jalloc(c->a, sizeof *items * (size_t)(e->n_args ? e->n_args : 1));
        if (!items)
            return oom(c, e->line);
        long long depth = 1;
        for (int k = 0; k < e->n_args; k++) {
            if (eval(c, e->args[k], &items[k]))
                return c->rc;
            if (list_depth(&items[k]) + 1 > depth)
                depth = list_depth(&items[k]) + 1;
        }
        if (depth > MAX_LIST_DEPTH)
            return fail(c, EINVAL, e->line, "lists nested too deeply%s", "", 0);
        *out = (jval){.k = V_LIST, .i = depth, .items = items, .n = (size_t)e->n_args};
        return 0;
    }
    case JE_NAME: {
        const jval *b = lookup(c, e->s, e->n);
        *out = b ? *b : mk(V_UNDEF);
        return 0;
    }
    case JE_ATTR:
        if (eval(c, e->a, &v))
            return c->rc;
        *out = attr(&v, e->s, e->n);
        return 0;
    case JE_INDEX: {
        if (eval(c, e->a, &v) || eval(c, e->b, &i))
            return c->rc;
        size_t k;
        *out = mk(V_UNDEF);
        if (i.k == V_STR)
            *out = attr(&v, i.s, i.n);
        else if (i.k != V_INT && i.k != V_BOOL)
            return fail(c, EINVAL, e->line, "index is neither a number nor a key%s", "", 0);
        else if (v.k == V_LIST && norm_index(i.i, v.n, &k))
            *out = v.items[k];
        else if (v.k == V_STR && norm_index(i.i, v.n, &k))
            *out = mk_str(v.s + k, 1);
        return 0;
    }
    case JE_SLICE: {
        if (eval(c, e->a, &v))
            return c->rc;
        i = mk(V_NONE);
        j = mk(V_NONE);
        if ((e->b && eval(c, e->b, &i)) || (e->c && eval(c, e->c, &j)))
            return c->rc;
        if ((i.k != V_NONE && i.k != V_INT) || (j.k != V_NONE && j.k != V_INT))
            return fail(c, EINVAL, e->line, "slice bounds must be numbers%s", "", 0);
        if (v.k != V_LIST && v.k != V_STR)
            return fail(c, EINVAL, e->line, "only lists and strings can be sliced%s", "", 0);
        size_t lo = clamp_slice(&i, v.n, 0), hi = clamp_slice(&j, v.n, v.n);
        if (hi < lo)
            hi = lo;
        if (v.k == V_LIST)
            *out = (jval){.k = V_LIST, .i = v.i, .items = v.items + lo, .n = hi - lo};
        else
            *out = mk_str(v.s + lo, hi - lo);
        return 0;
    }
    case JE_CALL:
        return call(c, e, out);
    case JE_FILTER:
        return filter(c, e, out);
    case JE_TEST:
        return test(c, e, out);
    case JE_BIN:
        return binop(c, e, out);
    case JE_NOT:
        if (eval(c, e->a, &v))
            return c->rc;
        *out = mk_bool(!truthy(&v));
        return 0;
    case JE_NEG:
        if (eval(c, e->a, &v))
            return c->rc;
        if (v.k != V_INT && v.k != V_BOOL)
            return fail(c, EINVAL, e->line, "'-' needs a number%s", "", 0);
        if (v.i == LLONG_MIN)
            return fail(c, EINVAL, e->line, "integer overflow%s", "", 0);
        *out = mk_int(-v.i);
        return 0;
    case JE_COND:
        if (eval(c, e->a, &v))
            return c->rc;
        if (truthy(&v))
            return eval(c, e->b, out);
        if (e->c)
            return eval(c, e->c, out);
        *out = mk(V_UNDEF);
        return 0;
    }
    return fail(c, EINVAL, e->line, "unknown expression%s", "", 0);
}

/* ---- statements ---- */

static int emit(ctx *c, const char *s, size_t n, int line)
{
    if (c->out_n + n > MAX_OUTPUT)
        return fail(c, EFBIG, line, "the rendered text is too long%s", "", 0);
    sbuf b = {c->out, c->out_n, c->out_cap, false};
    if (!sb_add(&b, s, n))
        return oom(c, line);
    c->out = b.p;
    c->out_n = b.n;
    c->out_cap = b.cap;
    return 0;
}

static int run(ctx *c, const jstmt *s, int scope);

static int run_for(ctx *c, const jstmt *s)
{
    jval seq;
    if (eval(c, s->e, &seq))
        return c->rc;
    if (seq.k == V_STR) {
        return fail(c, ENOTSUP, s->line, "looping over a string is not supported%s", "", 0);
    }
    if (seq.k == V_UNDEF || seq.k == V_NONE)
        seq = (jval){.k = V_LIST, .n = 0};
    if (seq.k != V_LIST)
        return fail(c, EINVAL, s->line, "for needs a list%s", "", 0);
    int base = c->n_vars;
    for (size_t k = 0; k < seq.n && !c->rc; k++) {
        if (charge(c, 16, s->line))
            return c->rc;
        c->n_vars = base;
        jval loop = {.k = V_LOOP, .i = (long long)k, .n = seq.n};
        if (bind(c, base, s->s, s->n, seq.items[k], s->line) || bind(c, base, "loop", 4, loop, s->line))
            break;
        run(c, s->body, base);
    }
    c->n_vars = base;
    return c->rc;
}

static int run(ctx *c, const jstmt *s, int scope)
{
    for (; s && !c->rc; s = s->next) {
        jval v;
        switch (s->kind) {
        case JS_TEXT:
            emit(c, s->s, s->n, s->line);
            break;
        case JS_OUT: {
            if (eval(c, s->e, &v) || to_str(c, &v, s->line, &v))
                break;
            emit(c, v.s, v.n, s->line);
            break;
        }
        case JS_SET:
            if (!eval(c, s->e, &v))
                bind(c, scope, s->s, s->n, v, s->line);
            break;
        case JS_IF: {
            const jstmt *body = s->else_body;
            for (int k = 0; k < s->n_branches; k++) {
                if (eval(c, s->conds[k], &v))
                    return c->rc;
                if (truthy(&v)) {
                    body = s->bodies[k];
                    break;
                }
            }
            run(c, body, scope);
            break;
        }
        case JS_FOR:
            run_for(c, s);
            break;
        }
    }
    return c->rc;
}

int jinja_render(const char *tmpl, const jinja_input *in, char **out, llmfs_error *err)
{
    *out = NULL;
    if (!tmpl || !in || in->n_msgs < 0 || (in->n_msgs && !in->msgs))
        return llmfs_errorf(err, EINVAL, "chat template: bad arguments");
    jarena a = {0};
    int rc;
    jstmt *body = jinja_parse(tmpl, &a, err, &rc);
    if (rc) {
        jarena_free(&a);
        return rc;
    }
    ctx c = {.a = &a, .err = err};
    c.vars = malloc(MAX_VARS * sizeof *c.vars);
    jval *msgs = jalloc(&a, sizeof *msgs * (size_t)(in->n_msgs + 1));
    if (!c.vars || !msgs) {
        free(c.vars);
        jarena_free(&a);
        return llmfs_errorf(err, ENOMEM, "chat template: out of memory");
    }
    for (int i = 0; i < in->n_msgs; i++)
        msgs[i] = (jval){.k = V_MSG, .msg = &in->msgs[i]};
    const char *bos = in->bos_token ? in->bos_token : "", *eos = in->eos_token ? in->eos_token : "";
    bind(&c, 0, "messages", 8, (jval){.k = V_LIST, .i = 1, .items = msgs, .n = (size_t)in->n_msgs}, 0);
    bind(&c, 0, "add_generation_prompt", 21, mk_bool(in->add_generation_prompt), 0);
    bind(&c, 0, "bos_token", 9, mk_str(bos, strlen(bos)), 0);
    bind(&c, 0, "eos_token", 9, mk_str(eos, strlen(eos)), 0);
    run(&c, body, c.n_vars);
    if (!c.rc && !c.out && emit(&c, "", 0, 0) == 0 && !c.out)
        c.rc = llmfs_errorf(err, ENOMEM, "chat template: out of memory");
    free(c.vars);
    jarena_free(&a);
    if (c.rc) {
        free(c.out);
        return c.rc;
    }
    *out = c.out;
    return 0;
}
