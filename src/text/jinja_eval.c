/* jinja_eval.c — running a parsed template against a conversation.
 *
 * Values are small structs copied by value; strings, lists and mappings live in the
 * render's arena. Variables sit on one stack: a for loop opens a scope that its end
 * discards, so a set inside a loop is not seen after it, as in Jinja. A macro call opens
 * a frame: its body sees its parameters, its own variables and the template's top-level
 * ones (the globals), never its caller's locals. Namespaces are the only values that
 * change after they are made ({% set ns.x = ... %}), so they are shared by reference. */
#include "jinja_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum vkind { V_UNDEF, V_NONE, V_BOOL, V_INT, V_STR, V_LIST, V_DICT, V_LOOP, V_MACRO };

typedef struct jdict jdict;

typedef struct jval {
    enum vkind k;
    long long i; /* V_BOOL, V_INT; V_LOOP: index0; V_LIST: nesting depth (1: no lists inside) */
    const char *s; /* V_STR */
    size_t n;      /* V_STR length; V_LIST, V_LOOP: item count */
    const struct jval *items; /* V_LIST; V_LOOP: the sequence looped over */
    jdict *d;                 /* V_DICT */
    const jstmt *fn;          /* V_MACRO */
    bool tuple;               /* V_LIST: a pair from items(), printed as Python's tuple */
} jval;

typedef struct jkv {
    jval key, val;
} jkv;

/* A mapping keeps its keys in insertion order, as Python's dict does. */
struct jdict {
    jkv *kv;
    size_t n, cap;
    bool ns;         /* a namespace(): its attributes may be assigned */
    long long depth; /* nesting of lists and mappings inside, as V_LIST's i */
};

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
/* Recursion of the evaluator (a chain like 1+1+...+1 nests without parentheses, blocks
 * nest in blocks, a macro calls itself) and of values (repr, == and tojson walk them),
 * kept well within a thread's stack. */
#define MAX_EVAL_DEPTH 200
#define MAX_LIST_DEPTH 64
#define MAX_ARGS 16

typedef struct ctx {
    jarena *a;
    llmfs_error *err;
    int rc;
    binding *vars;
    int n_vars;
    int frame;     /* where the running macro's variables start (0: none running) */
    int n_globals; /* the top-level variables: vars[0, n_globals) */
    char *out;
    size_t out_n, out_cap;
    long steps;
    int depth;
    const jinja_input *in;
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
        char msg[300];
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
        return fail(c, ETIME, line, "the template runs too long%s", "", 0);
    return 0;
}

static long long list_depth(const jval *v)
{
    if (v->k == V_DICT)
        return v->d->depth > 0 ? v->d->depth : 1;
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
    case V_DICT:
        return v->d->ns || v->d->n != 0;
    case V_LOOP:
    case V_MACRO:
        return true;
    default:
        return false;
    }
}

/* ---- mappings ---- */

static bool key_eq(const jval *a, const jval *b)
{
    if (a->k == V_STR && b->k == V_STR)
        return a->n == b->n && memcmp(a->s, b->s, a->n) == 0;
    bool an = a->k == V_INT || a->k == V_BOOL, bn = b->k == V_INT || b->k == V_BOOL;
    if (an && bn)
        return a->i == b->i;
    return a->k == b->k && (a->k == V_NONE);
}

static jval *dict_find(const jdict *d, const jval *key)
{
    for (size_t i = 0; i < d->n; i++)
        if (key_eq(&d->kv[i].key, key))
            return &d->kv[i].val;
    return NULL;
}

static jval *dict_find_str(const jdict *d, const char *s, size_t n)
{
    jval k = mk_str(s, n);
    return dict_find(d, &k);
}

static jdict *dict_new(ctx *c, size_t cap, int line)
{
    jdict *d = jalloc(c->a, sizeof *d);
    if (d) {
        d->cap = cap ? cap : 4;
        d->kv = jalloc(c->a, sizeof *d->kv * d->cap);
    }
    if (!d || !d->kv) {
        oom(c, line);
        return NULL;
    }
    return d;
}

/* Sets key to val, replacing an earlier value of the key. */
static int dict_set(ctx *c, jdict *d, jval key, jval val, int line)
{
    jval *old = dict_find(d, &key);
    if (old) {
        *old = val;
    } else {
        if (d->n == d->cap) {
            jkv *kv = jalloc(c->a, sizeof *kv * d->cap * 2);
            if (!kv)
                return oom(c, line);
            memcpy(kv, d->kv, sizeof *kv * d->n);
            d->kv = kv;
            d->cap *= 2;
        }
        d->kv[d->n++] = (jkv){key, val};
    }
    if (list_depth(&val) + 1 > d->depth)
        d->depth = list_depth(&val) + 1;
    return charge(c, 16 * d->n, line); /* each look-up walks the keys */
}

/* ---- output and strings ---- */

typedef struct sbuf {
    char *p;
    size_t n, cap;
    bool full; /* a text would have grown past MAX_OUTPUT */
    bool deep; /* a value nested past MAX_LIST_DEPTH (a namespace may hold itself) */
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
static void repr(const jval *v, sbuf *b, bool quoted, int depth)
{
    char num[32];
    if (depth > MAX_LIST_DEPTH) {
        b->deep = b->full = true;
        return;
    }
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
        sb_add(b, v->tuple ? "(" : "[", 1);
        for (size_t i = 0; i < v->n && !b->full; i++) {
            if (i)
                sb_add(b, ", ", 2);
            repr(&v->items[i], b, true, depth + 1);
        }
        sb_add(b, v->tuple ? ")" : "]", 1);
        break;
    case V_DICT:
        sb_add(b, v->d->ns ? "<Namespace {" : "{", v->d->ns ? 12 : 1);
        for (size_t i = 0; i < v->d->n && !b->full; i++) {
            if (i)
                sb_add(b, ", ", 2);
            repr(&v->d->kv[i].key, b, true, depth + 1);
            sb_add(b, ": ", 2);
            repr(&v->d->kv[i].val, b, true, depth + 1);
        }
        sb_add(b, v->d->ns ? "}>" : "}", v->d->ns ? 2 : 1);
        break;
    case V_LOOP:
        sb_add(b, "<loop>", 6);
        break;
    case V_MACRO:
        sb_add(b, "<macro>", 7);
        break;
    }
}

/* An sbuf's text into the arena as a string value (b->p is freed). */
static int sb_value(ctx *c, sbuf *b, int line, jval *out)
{
    if (b->deep || b->full || charge(c, b->n, line)) {
        free(b->p);
        if (b->deep)
            return fail(c, EINVAL, line, "values nested too deeply%s", "", 0);
        return b->full ? fail(c, EFBIG, line, "the rendered text is too long%s", "", 0) : c->rc;
    }
    char *s = jalloc(c->a, b->n + 1);
    if (!s) {
        free(b->p);
        return oom(c, line);
    }
    if (b->n)
        memcpy(s, b->p, b->n);
    free(b->p);
    *out = mk_str(s, b->n);
    return 0;
}

/* The value as a string in the arena. */
static int to_str(ctx *c, const jval *v, int line, jval *out)
{
    if (v->k == V_STR) {
        *out = *v;
        return 0;
    }
    sbuf b = {0};
    repr(v, &b, false, 0);
    return sb_value(c, &b, line, out);
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

static int new_list(ctx *c, size_t n, int line, jval *out)
{
    jval *items = jalloc(c->a, sizeof *items * (n ? n : 1));
    if (!items)
        return oom(c, line);
    *out = (jval){.k = V_LIST, .i = 1, .items = items, .n = n};
    return 0;
}

/* A list's depth from its items (after they are filled in). */
static int seal_list(ctx *c, jval *l, int line)
{
    long long depth = 1;
    for (size_t k = 0; k < l->n; k++)
        if (list_depth(&l->items[k]) + 1 > depth)
            depth = list_depth(&l->items[k]) + 1;
    if (depth > MAX_LIST_DEPTH)
        return fail(c, EINVAL, line, "lists nested too deeply%s", "", 0);
    l->i = depth;
    return 0;
}

/* ---- variables ---- */

static const jval *lookup(ctx *c, const char *name, size_t n)
{
    for (int i = c->n_vars - 1; i >= c->frame; i--)
        if (c->vars[i].n == n && memcmp(c->vars[i].name, name, n) == 0)
            return &c->vars[i].v;
    if (c->frame > 0) /* inside a macro: then the globals */
        for (int i = c->n_globals - 1; i >= 0; i--)
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
    if (base == 0) /* the top-level scope: no loop or macro is running */
        c->n_globals = c->n_vars;
    return 0;
}

/* ---- expressions ---- */

static int eval(ctx *c, const jexpr *e, jval *out);
static int run(ctx *c, const jstmt *s, int scope);

static bool name_is(const jexpr *e, const char *s)
{
    return strlen(s) == e->n && memcmp(e->s, s, e->n) == 0;
}

static bool str_is(const char *a, size_t n, const char *s)
{
    return strlen(s) == n && memcmp(a, s, n) == 0;
}

/* Lists may share sublists, so a comparison can visit far more items than were ever
 * built: every item visited is a step. */
static bool equal(ctx *c, const jval *x, const jval *y, int line, int depth)
{
    if (c->rc || charge(c, 16 + (x->k == V_STR ? x->n : 0), line))
        return false;
    if (depth > MAX_LIST_DEPTH) {
        fail(c, EINVAL, line, "values nested too deeply%s", "", 0);
        return false;
    }
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
            if (!equal(c, &x->items[i], &y->items[i], line, depth + 1))
                return false;
        return true;
    case V_DICT:
        if (x->d == y->d)
            return true;
        if (x->d->ns || y->d->ns || x->d->n != y->d->n)
            return false;
        for (size_t i = 0; i < x->d->n; i++) {
            const jval *o = dict_find(y->d, &x->d->kv[i].key);
            if (!o || !equal(c, &x->d->kv[i].val, o, line, depth + 1))
                return false;
        }
        return true;
    case V_LOOP:
        return x->i == y->i && x->n == y->n;
    case V_MACRO:
        return x->fn == y->fn;
    default: /* none, undefined */
        return true;
    }
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
    if (IS("previtem"))
        return i0 > 0 ? l->items[i0 - 1] : mk(V_UNDEF);
    if (IS("nextitem"))
        return i0 + 1 < len ? l->items[i0 + 1] : mk(V_UNDEF);
#undef IS
    return mk(V_UNDEF);
}

static jval attr(const jval *v, const char *key, size_t n)
{
    if (v->k == V_DICT) {
        const jval *x = dict_find_str(v->d, key, n);
        return x ? *x : mk(V_UNDEF);
    }
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

/* Python's slice bounds: lo, hi and step become a start and a count. */
static void slice_range(const jval *lo, const jval *hi, long long step, size_t len, long long *start,
                        size_t *count)
{
    long long n = (long long)len, a, b;
    bool has_lo = lo->k == V_INT, has_hi = hi->k == V_INT;
    /* a step longer than the sequence takes one item at most: cut it there, so that the
     * arithmetic below stays in range */
    if (step > n + 1)
        step = n + 1;
    if (step < -(n + 1))
        step = -(n + 1);
    if (step > 0) {
        a = has_lo ? lo->i : 0;
        b = has_hi ? hi->i : n;
        if (a < 0 && (a += n) < 0)
            a = 0;
        if (a > n)
            a = n;
        if (b < 0 && (b += n) < 0)
            b = 0;
        if (b > n)
            b = n;
        *count = b > a ? (size_t)((b - a + step - 1) / step) : 0;
    } else {
        a = has_lo ? lo->i : n - 1;
        b = has_hi ? hi->i : -1;
        if (has_lo && a < 0 && (a += n) < 0)
            a = -1;
        if (a >= n)
            a = n - 1;
        if (has_hi && b < 0 && (b += n) < 0)
            b = -1;
        if (b >= n)
            b = n - 1;
        *count = a > b ? (size_t)((a - b - step - 1) / -step) : 0;
    }
    *start = a;
}

static int utf8_count(const char *s, size_t n)
{
    int k = 0;
    for (size_t i = 0; i < n; i++)
        k += ((unsigned char)s[i] & 0xC0) != 0x80;
    return k;
}

static char up(char ch) { return ch >= 'a' && ch <= 'z' ? (char)(ch - 32) : ch; }
static char low(char ch) { return ch >= 'A' && ch <= 'Z' ? (char)(ch + 32) : ch; }
static bool alpha(char ch) { return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z'); }

enum casing { C_UPPER, C_LOWER, C_CAPITALIZE, C_TITLE_PY, C_TITLE_JINJA };

/* Case changes of ASCII letters: upper, lower, capitalize (first upper, the rest lower),
 * Python's str.title (a letter after a letter is lower, others upper) and Jinja's title
 * filter (a word starts after whitespace, '-', '(', '{', '[' or '<'). */
static int str_case(ctx *c, const jval *v, enum casing how, int line, jval *out)
{
    char *s = jalloc(c->a, v->n + 1);
    if (!s)
        return oom(c, line);
    for (size_t i = 0; i < v->n; i++) {
        char ch = v->s[i], prev = i ? v->s[i - 1] : ' ';
        bool start;
        switch (how) {
        case C_UPPER:
            start = true;
            break;
        case C_LOWER:
            start = false;
            break;
        case C_CAPITALIZE:
            start = i == 0;
            break;
        case C_TITLE_PY:
            start = !alpha(prev);
            break;
        default:
            start = i == 0 || is_space(prev) || strchr("-({[<", prev);
            break;
        }
        s[i] = start ? up(ch) : low(ch);
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

/* Evaluated arguments of a call, filter or test; kw[k] names a keyword argument. */
typedef struct jargs {
    int n;
    jval v[MAX_ARGS];
    const jexpr *kw[MAX_ARGS];
} jargs;

static int eval_args(ctx *c, const jexpr *e, jargs *a)
{
    a->n = e->n_args < MAX_ARGS ? e->n_args : MAX_ARGS;
    for (int i = 0; i < a->n; i++) {
        const jexpr *x = e->args[i];
        a->kw[i] = x->kind == JE_KWARG ? x : NULL;
        if (eval(c, x->kind == JE_KWARG ? x->a : x, &a->v[i]))
            return c->rc;
    }
    return 0;
}

/* The argument at position pos, or the keyword argument name (NULL: none). */
static const jval *arg(const jargs *a, int pos, const char *name)
{
    for (int i = 0; i < a->n; i++) {
        if (!a->kw[i] && pos-- == 0)
            return &a->v[i];
        if (a->kw[i] && name && name_is(a->kw[i], name))
            return &a->v[i];
    }
    return NULL;
}

/* Checks lo..hi positional arguments and keyword arguments among kws ("a,b,c"). */
static int need_args(ctx *c, const jargs *a, int lo, int hi, const char *kws, const char *what, int line)
{
    int pos = 0;
    for (int i = 0; i < a->n; i++) {
        if (!a->kw[i]) {
            pos++;
            continue;
        }
        const char *k = kws;
        bool ok = false;
        while (k && *k && !ok) {
            const char *e = strchr(k, ',');
            size_t kn = e ? (size_t)(e - k) : strlen(k);
            ok = a->kw[i]->n == kn && memcmp(a->kw[i]->s, k, kn) == 0;
            k = e ? e + 1 : NULL;
        }
        if (!ok)
            return fail(c, EINVAL, line, "unexpected keyword argument '%s'", a->kw[i]->s, a->kw[i]->n);
    }
    if (pos < lo || pos > hi)
        return fail(c, EINVAL, line, "wrong number of arguments to %s", what, strlen(what));
    return 0;
}

static int str_arg(ctx *c, const jval *v, const char *what, int line)
{
    if (!v || v->k != V_STR)
        return fail(c, EINVAL, line, "%s needs a string", what, strlen(what));
    return 0;
}

static int replace(ctx *c, const jval *obj, const jval *old, const jval *new, int line, jval *out)
{
    if (old->k != V_STR || new->k != V_STR || old->n == 0)
        return fail(c, EINVAL, line, "replace needs a non-empty string and a string%s", "", 0);
    sbuf b = {0};
    bool ok = sb_add(&b, "", 0);
    size_t from = 0; /* the text since the last match goes in whole */
    for (size_t i = 0; i < obj->n && ok;) {
        if (i + old->n <= obj->n && memcmp(obj->s + i, old->s, old->n) == 0) {
            if (charge(c, 16, line)) { /* each match is a step */
                free(b.p);
                return c->rc;
            }
            ok = sb_add(&b, obj->s + from, i - from) && sb_add(&b, new->s, new->n);
            i += old->n;
            from = i;
        } else {
            i++;
        }
    }
    ok = ok && sb_add(&b, obj->s + from, obj->n - from);
    if (!ok && !b.full) {
        free(b.p);
        return oom(c, line);
    }
    return sb_value(c, &b, line, out);
}

/* str.split(sep=None, maxsplit=-1) */
static int split(ctx *c, const jval *s, const jval *sep, long long maxsplit, int line, jval *out)
{
    size_t n = 0, cap = 8;
    jval *items = jalloc(c->a, sizeof *items * cap);
    if (!items)
        return oom(c, line);
    const char *p = s->s, *e = s->s + s->n;
    bool ws = !sep || sep->k == V_NONE;
    if (!ws && (sep->k != V_STR || sep->n == 0))
        return fail(c, EINVAL, line, "split needs a non-empty separator%s", "", 0);
    for (;;) {
        if (ws)
            while (p < e && is_space(*p))
                p++;
        if (ws && p == e)
            break;
        const char *q = NULL;
        if (maxsplit < 0 || (long long)n < maxsplit) {
            if (ws) {
                q = p;
                while (q < e && !is_space(*q))
                    q++;
                if (q == e)
                    q = NULL;
            } else {
                q = memmem(p, (size_t)(e - p), sep->s, sep->n);
            }
        }
        if (n == cap) {
            jval *more = jalloc(c->a, sizeof *more * cap * 2);
            if (!more)
                return oom(c, line);
            memcpy(more, items, sizeof *items * n);
            items = more;
            cap *= 2;
        }
        if (charge(c, 16, line))
            return c->rc;
        if (!q) {
            items[n++] = mk_str(p, (size_t)(e - p)); /* the rest, as Python keeps it */
            break;
        }
        items[n++] = mk_str(p, (size_t)(q - p));
        p = q + (ws ? 1 : sep->n);
    }
    *out = (jval){.k = V_LIST, .i = 1, .items = items, .n = n};
    return 0;
}

/* A mapping's items as a list of [key, value] pairs (Python's tuples). */
static int dict_items(ctx *c, const jdict *d, int what, int line, jval *out)
{
    if (new_list(c, d->n, line, out))
        return c->rc;
    jval *items = (jval *)out->items;
    for (size_t i = 0; i < d->n; i++) {
        if (what == 'k') {
            items[i] = d->kv[i].key;
        } else if (what == 'v') {
            items[i] = d->kv[i].val;
        } else {
            jval pair;
            if (new_list(c, 2, line, &pair))
                return c->rc;
            ((jval *)pair.items)[0] = d->kv[i].key;
            ((jval *)pair.items)[1] = d->kv[i].val;
            if (seal_list(c, &pair, line))
                return c->rc;
            pair.tuple = true;
            items[i] = pair;
        }
    }
    return seal_list(c, out, line);
}

static int call_method(ctx *c, const jexpr *e, jval *out)
{
    const jexpr *m = e->a;
    jval obj;
    jargs a;
    if (eval(c, m->a, &obj) || eval_args(c, e, &a))
        return c->rc;
    size_t work = obj.k == V_STR ? obj.n : 0;
    for (int i = 0; i < a.n; i++)
        work += a.v[i].k == V_STR ? a.v[i].n : 0;
    if (charge(c, work, e->line))
        return c->rc;
    if (obj.k == V_DICT) {
        if (name_is(m, "get")) {
            if (need_args(c, &a, 1, 2, "", "get", e->line))
                return c->rc;
            const jval *x = dict_find(obj.d, &a.v[0]);
            *out = x ? *x : a.n > 1 ? a.v[1] : mk(V_NONE);
            return 0;
        }
        if (name_is(m, "items") || name_is(m, "keys") || name_is(m, "values")) {
            if (need_args(c, &a, 0, 0, "", "items/keys/values", e->line))
                return c->rc;
            return dict_items(c, obj.d, name_is(m, "keys") ? 'k' : name_is(m, "values") ? 'v' : 'i', e->line, out);
        }
        return fail(c, EINVAL, e->line, "mappings have no method '%s'", m->s, m->n);
    }
    if (obj.k != V_STR)
        return fail(c, EINVAL, e->line, "method '%s' needs a string or a mapping", m->s, m->n);
    if (name_is(m, "strip") || name_is(m, "lstrip") || name_is(m, "rstrip")) {
        if (need_args(c, &a, 0, 1, "", "strip", e->line))
            return c->rc;
        const jval *chars = a.n && a.v[0].k == V_STR ? &a.v[0] : NULL;
        *out = strip(&obj, !name_is(m, "rstrip"), !name_is(m, "lstrip"), chars);
        return 0;
    }
    if (name_is(m, "upper") || name_is(m, "lower") || name_is(m, "title") || name_is(m, "capitalize")) {
        if (need_args(c, &a, 0, 0, "", "a case method", e->line))
            return c->rc;
        enum casing how = name_is(m, "upper") ? C_UPPER : name_is(m, "lower") ? C_LOWER
                          : name_is(m, "title") ? C_TITLE_PY : C_CAPITALIZE;
        return str_case(c, &obj, how, e->line, out);
    }
    if (name_is(m, "startswith") || name_is(m, "endswith")) {
        if (need_args(c, &a, 1, 1, "", "startswith/endswith", e->line) ||
            str_arg(c, &a.v[0], "startswith/endswith", e->line))
            return c->rc;
        bool ok = a.v[0].n <= obj.n &&
                  memcmp(name_is(m, "startswith") ? obj.s : obj.s + obj.n - a.v[0].n, a.v[0].s, a.v[0].n) == 0;
        *out = mk_bool(ok);
        return 0;
    }
    if (name_is(m, "split")) {
        if (need_args(c, &a, 0, 2, "sep,maxsplit", "split", e->line))
            return c->rc;
        const jval *ms = arg(&a, 1, "maxsplit");
        if (ms && ms->k != V_INT)
            return fail(c, EINVAL, e->line, "split's maxsplit must be a number%s", "", 0);
        return split(c, &obj, arg(&a, 0, "sep"), ms ? ms->i : -1, e->line, out);
    }
    if (name_is(m, "replace")) {
        if (need_args(c, &a, 2, 2, "", "replace", e->line))
            return c->rc;
        return replace(c, &obj, &a.v[0], &a.v[1], e->line, out);
    }
    return fail(c, EINVAL, e->line, "strings have no method '%s'", m->s, m->n);
}

/* ---- calls ---- */

static int raise(ctx *c, const jargs *a, int line)
{
    jval msg;
    if (a->n < 1 || to_str(c, &a->v[0], line, &msg))
        return c->rc ? c->rc : fail(c, EINVAL, line, "the template raised an exception%s", "", 0);
    llmfs_errorf(c->err, EINVAL, "chat template: %.*s", (int)(msg.n < 200 ? msg.n : 200), msg.s);
    if (c->err)
        for (char *p = c->err->msg; *p; p++)
            if ((unsigned char)*p < 0x20)
                *p = ' ';
    c->rc = -EINVAL;
    return c->rc;
}

/* range([start,] stop[, step]) */
static int range(ctx *c, const jargs *a, int line, jval *out)
{
    if (need_args(c, a, 1, 3, "", "range", line))
        return c->rc;
    for (int i = 0; i < a->n; i++)
        if (a->v[i].k != V_INT && a->v[i].k != V_BOOL)
            return fail(c, EINVAL, line, "range needs integers%s", "", 0);
    long long lo = a->n >= 2 ? a->v[0].i : 0, hi = a->n >= 2 ? a->v[1].i : a->v[0].i;
    long long step = a->n == 3 ? a->v[2].i : 1;
    if (step == 0)
        return fail(c, EINVAL, line, "range's step must not be zero%s", "", 0);
    /* the count in unsigned arithmetic: the bounds may be far apart */
    unsigned long long span = step > 0 ? (hi > lo ? (unsigned long long)hi - (unsigned long long)lo : 0)
                                       : (lo > hi ? (unsigned long long)lo - (unsigned long long)hi : 0);
    unsigned long long ustep = step > 0 ? (unsigned long long)step : 0 - (unsigned long long)step;
    unsigned long long n = span ? (span - 1) / ustep + 1 : 0;
    if (n > 1000000)
        return fail(c, EINVAL, line, "range too long%s", "", 0);
    if (new_list(c, (size_t)n, line, out))
        return c->rc;
    for (size_t i = 0; i < n; i++) /* in unsigned arithmetic: i * step may pass the bounds on its way */
        ((jval *)out->items)[i] =
            mk_int((long long)((unsigned long long)lo + (unsigned long long)i * (unsigned long long)step));
    return 0;
}

/* strftime_now(format): the render's time (jinja_input.now), or the current local time */
static int strftime_now(ctx *c, const jargs *a, int line, jval *out)
{
    if (need_args(c, a, 1, 1, "", "strftime_now", line) || str_arg(c, &a->v[0], "strftime_now", line))
        return c->rc;
    if (a->v[0].n > 64)
        return fail(c, EINVAL, line, "strftime_now's format is too long%s", "", 0);
    char fmt[80], buf[512];
    memcpy(fmt, a->v[0].s, a->v[0].n);
    fmt[a->v[0].n] = 0;
    struct tm tm;
    if (c->in->now) {
        tm = *c->in->now;
    } else {
        time_t t = time(NULL);
        localtime_r(&t, &tm);
    }
    size_t n = strftime(buf, sizeof buf, fmt, &tm);
    char *s = jalloc(c->a, n + 1);
    if (!s)
        return oom(c, line);
    memcpy(s, buf, n);
    *out = mk_str(s, n);
    return 0;
}

/* namespace(k=v, ...) and dict(k=v, ...) */
static int make_dict(ctx *c, const jargs *a, bool ns, int line, jval *out)
{
    for (int i = 0; i < a->n; i++)
        if (!a->kw[i])
            return fail(c, EINVAL, line, "%s takes keyword arguments only", ns ? "namespace" : "dict", ns ? 9 : 4);
    jdict *d = dict_new(c, (size_t)a->n, line);
    if (!d)
        return c->rc;
    d->ns = ns;
    for (int i = 0; i < a->n; i++)
        if (dict_set(c, d, mk_str(a->kw[i]->s, a->kw[i]->n), a->v[i], line))
            return c->rc;
    *out = (jval){.k = V_DICT, .d = d};
    return 0;
}

/* A macro's body rendered with its arguments, as a string. */
static int call_macro(ctx *c, const jstmt *m, const jargs *a, int line, jval *out)
{
    const int save_frame = c->frame, save_vars = c->n_vars;
    char *save_out = c->out;
    const size_t save_n = c->out_n, save_cap = c->out_cap;
    bool given[MAX_ARGS] = {0};
    int pos = 0;
    c->frame = c->n_vars;
    for (int i = 0; i < a->n && !c->rc; i++) {
        int k = pos;
        if (a->kw[i]) {
            for (k = 0; k < m->n_params; k++)
                if (m->param_n[k] == a->kw[i]->n && !memcmp(m->param_s[k], a->kw[i]->s, a->kw[i]->n))
                    break;
            if (k == m->n_params) {
                fail(c, EINVAL, line, "the macro has no parameter '%s'", a->kw[i]->s, a->kw[i]->n);
                break;
            }
            if (given[k]) {
                fail(c, EINVAL, line, "parameter '%s' given twice", a->kw[i]->s, a->kw[i]->n);
                break;
            }
        } else if (pos++ >= m->n_params) {
            fail(c, EINVAL, line, "too many arguments to macro '%s'", m->s, m->n);
            break;
        }
        given[k] = true;
        bind(c, c->frame, m->param_s[k], m->param_n[k], a->v[i], line);
    }
    /* defaults are evaluated at the call, in the macro's frame, as Jinja does */
    for (int k = 0; k < m->n_params && !c->rc; k++) {
        jval v = mk(V_UNDEF);
        if (!given[k] && (!m->param_default[k] || !eval(c, m->param_default[k], &v)))
            bind(c, c->frame, m->param_s[k], m->param_n[k], v, line);
    }
    c->out = NULL;
    c->out_n = c->out_cap = 0;
    if (!c->rc)
        run(c, m->body, c->frame);
    sbuf b = {c->out, c->out_n, c->out_cap, false, false};
    c->out = save_out;
    c->out_n = save_n;
    c->out_cap = save_cap;
    c->n_vars = save_vars;
    c->frame = save_frame;
    if (c->rc) {
        free(b.p);
        return c->rc;
    }
    return sb_value(c, &b, line, out);
}

static int call(ctx *c, const jexpr *e, jval *out)
{
    if (e->a->kind == JE_ATTR)
        return call_method(c, e, out);
    jargs a;
    if (eval_args(c, e, &a))
        return c->rc;
    const jexpr *f = e->a;
    const jval *v = lookup(c, f->s, f->n);
    if (v && v->k == V_MACRO) /* a macro may take a built-in's name */
        return call_macro(c, v->fn, &a, e->line, out);
    if (name_is(f, "raise_exception"))
        return raise(c, &a, e->line);
    if (name_is(f, "range"))
        return range(c, &a, e->line, out);
    if (name_is(f, "namespace") || name_is(f, "dict"))
        return make_dict(c, &a, name_is(f, "namespace"), e->line, out);
    if (name_is(f, "strftime_now"))
        return strftime_now(c, &a, e->line, out);
    /* the parser let the name through because a macro of that name exists somewhere */
    if (!v || v->k == V_UNDEF)
        return fail(c, EINVAL, e->line, "'%s' is undefined (a macro is called before its definition)", f->s, f->n);
    return fail(c, EINVAL, e->line, "'%s' is not callable", f->s, f->n);
}

/* ---- JSON (Hugging Face's tojson: Python's json.dumps with ensure_ascii off) ---- */

typedef struct jsonfmt {
    long long indent; /* < 0: all on one line */
    jval item_sep, key_sep;
    bool sort_keys;
} jsonfmt;

static void json_str(sbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    sb_add(b, "\"", 1);
    size_t from = 0;
    for (size_t i = 0; i < n && !b->full; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch >= 0x20 && ch != '"' && ch != '\\')
            continue;
        sb_add(b, s + from, i - from);
        from = i + 1;
        char esc[7] = {'\\', 0};
        switch (ch) {
        case '"': esc[1] = '"'; break;
        case '\\': esc[1] = '\\'; break;
        case '\n': esc[1] = 'n'; break;
        case '\r': esc[1] = 'r'; break;
        case '\t': esc[1] = 't'; break;
        case '\b': esc[1] = 'b'; break;
        case '\f': esc[1] = 'f'; break;
        default:
            memcpy(esc + 1, "u00", 3);
            esc[4] = hex[ch >> 4];
            esc[5] = hex[ch & 15];
            break;
        }
        sb_add(b, esc, strlen(esc));
    }
    sb_add(b, s + from, n - from);
    sb_add(b, "\"", 1);
}

static void json_newline(sbuf *b, const jsonfmt *f, int level)
{
    if (f->indent < 0)
        return;
    sb_add(b, "\n", 1);
    for (long long i = 0; i < f->indent * level && !b->full; i++)
        sb_add(b, " ", 1);
}

/* A key of a mapping as JSON has it: strings as they are, numbers and the rest as text. */
static bool json_key(sbuf *b, const jval *k)
{
    char num[32];
    switch (k->k) {
    case V_STR:
        json_str(b, k->s, k->n);
        return true;
    case V_INT:
        snprintf(num, sizeof num, "\"%lld\"", k->i);
        sb_add(b, num, strlen(num));
        return true;
    case V_BOOL:
        sb_add(b, k->i ? "\"true\"" : "\"false\"", k->i ? 6 : 7);
        return true;
    case V_NONE:
        sb_add(b, "\"null\"", 6);
        return true;
    default:
        return false;
    }
}

static int key_cmp(const jval *x, const jval *y)
{
    if (x->k == V_STR && y->k == V_STR) {
        int m = memcmp(x->s, y->s, x->n < y->n ? x->n : y->n);
        return m ? m : (x->n > y->n) - (x->n < y->n);
    }
    return (x->i > y->i) - (x->i < y->i);
}

/* Returns false for a value JSON has no form for. */
static bool json(ctx *c, sbuf *b, const jval *v, const jsonfmt *f, int level, int line)
{
    char num[32];
    if (level > MAX_LIST_DEPTH) {
        b->deep = b->full = true;
        return true;
    }
    if (charge(c, 16, line))
        return true;
    switch (v->k) {
    case V_NONE:
        sb_add(b, "null", 4);
        return true;
    case V_BOOL:
        sb_add(b, v->i ? "true" : "false", v->i ? 4 : 5);
        return true;
    case V_INT:
        sb_add(b, num, (size_t)snprintf(num, sizeof num, "%lld", v->i));
        return true;
    case V_STR:
        json_str(b, v->s, v->n);
        return true;
    case V_LIST:
        if (!v->n) {
            sb_add(b, "[]", 2);
            return true;
        }
        sb_add(b, "[", 1);
        for (size_t i = 0; i < v->n && !b->full && !c->rc; i++) {
            if (i)
                sb_add(b, f->item_sep.s, f->item_sep.n);
            json_newline(b, f, level + 1);
            if (!json(c, b, &v->items[i], f, level + 1, line))
                return false;
        }
        json_newline(b, f, level);
        sb_add(b, "]", 1);
        return true;
    case V_DICT: {
        if (v->d->ns)
            return false;
        if (!v->d->n) {
            sb_add(b, "{}", 2);
            return true;
        }
        /* the order: as inserted, or sorted (an index array, the mapping stays as it is) */
        size_t *order = malloc(sizeof *order * v->d->n);
        if (!order) {
            b->full = true;
            return true;
        }
        for (size_t i = 0; i < v->d->n; i++)
            order[i] = i;
        if (f->sort_keys) {
            if (charge(c, 16 * v->d->n * v->d->n, line)) {
                free(order);
                return true;
            }
            for (size_t i = 1; i < v->d->n; i++) /* insertion sort: stable, and mappings are small */
                for (size_t j = i; j > 0 && key_cmp(&v->d->kv[order[j - 1]].key, &v->d->kv[order[j]].key) > 0; j--) {
                    size_t t = order[j];
                    order[j] = order[j - 1];
                    order[j - 1] = t;
                }
        }
        bool ok = true;
        sb_add(b, "{", 1);
        for (size_t i = 0; i < v->d->n && ok && !b->full && !c->rc; i++) {
            const jkv *kv = &v->d->kv[order[i]];
            if (i)
                sb_add(b, f->item_sep.s, f->item_sep.n);
            json_newline(b, f, level + 1);
            ok = json_key(b, &kv->key);
            sb_add(b, f->key_sep.s, f->key_sep.n);
            ok = ok && json(c, b, &kv->val, f, level + 1, line);
        }
        free(order);
        if (!ok)
            return false;
        json_newline(b, f, level);
        sb_add(b, "}", 1);
        return true;
    }
    default:
        return false;
    }
}

static int tojson(ctx *c, const jval *v, const jargs *a, int line, jval *out)
{
    if (need_args(c, a, 0, 1, "indent,separators,sort_keys,ensure_ascii", "tojson", line))
        return c->rc;
    const jval *ind = arg(a, 0, "indent"), *seps = arg(a, -1, "separators"), *sort = arg(a, -1, "sort_keys");
    const jval *ascii = arg(a, -1, "ensure_ascii");
    jsonfmt f = {-1, mk_str(", ", 2), mk_str(": ", 2), sort && truthy(sort)};
    if (ascii && truthy(ascii))
        return fail(c, ENOTSUP, line, "tojson with ensure_ascii is not supported%s", "", 0);
    if (ind && ind->k != V_NONE) {
        if (ind->k != V_INT || ind->i < 0 || ind->i > 64)
            return fail(c, EINVAL, line, "tojson's indent must be a number from 0 to 64%s", "", 0);
        f.indent = ind->i;
        f.item_sep = mk_str(",", 1); /* json.dumps drops the space at line ends */
    }
    if (seps && seps->k != V_NONE) {
        if (seps->k != V_LIST || seps->n != 2 || seps->items[0].k != V_STR || seps->items[1].k != V_STR)
            return fail(c, EINVAL, line, "tojson's separators must be two strings%s", "", 0);
        f.item_sep = seps->items[0];
        f.key_sep = seps->items[1];
    }
    sbuf b = {0};
    sb_add(&b, "", 0);
    if (!json(c, &b, v, &f, 0, line)) {
        free(b.p);
        return fail(c, EINVAL, line, "a value with no JSON form given to tojson%s", "", 0);
    }
    if (c->rc) {
        free(b.p);
        return c->rc;
    }
    return sb_value(c, &b, line, out);
}

/* ---- filters and tests ---- */

static int apply_test(ctx *c, const char *name, size_t nn, const jval *v, const jargs *a, int line, bool *r)
{
#define IS(k) str_is(name, nn, k)
    if (IS("eq") || IS("equalto") || IS("ne")) {
        if (need_args(c, a, 1, 1, "", "eq/ne", line))
            return c->rc;
        bool eq = equal(c, v, &a->v[0], line, 0);
        *r = IS("ne") ? !eq : eq;
        return c->rc;
    }
    if (a->n)
        return fail(c, EINVAL, line, "test '%s' takes no arguments", name, nn);
    if (IS("defined"))
        *r = v->k != V_UNDEF;
    else if (IS("undefined"))
        *r = v->k == V_UNDEF;
    else if (IS("none"))
        *r = v->k == V_NONE;
    else if (IS("string"))
        *r = v->k == V_STR;
    else if (IS("number") || IS("integer"))
        *r = v->k == V_INT;
    else if (IS("boolean"))
        *r = v->k == V_BOOL;
    else if (IS("true") || IS("false"))
        *r = v->k == V_BOOL && v->i == IS("true");
    else if (IS("callable"))
        *r = v->k == V_MACRO;
    else if (IS("iterable"))
        *r = v->k == V_STR || v->k == V_LIST || v->k == V_DICT;
    else if (IS("sequence")) /* Jinja: anything with a length and items, mappings too */
        *r = v->k == V_STR || v->k == V_LIST || v->k == V_DICT;
    else if (IS("mapping"))
        *r = v->k == V_DICT;
    else if (v->k == V_INT || v->k == V_BOOL) /* even, odd */
        *r = (v->i % 2 == 0) == IS("even");
    else if (IS("even") || IS("odd"))
        return fail(c, EINVAL, line, "even/odd of a value that is not a number%s", "", 0);
    else
        return fail(c, ENOTSUP, line, "test '%s' is not supported", name, nn);
#undef IS
    return 0;
}

static int apply_filter(ctx *c, const char *name, size_t nn, jval v, const jargs *a, int line, jval *out);

/* The arguments after the first few (map's and selectattr's own), for the filter or
 * test they name. */
static void shift_args(const jargs *a, int skip, jargs *rest)
{
    rest->n = 0;
    for (int i = 0; i < a->n; i++) {
        if (!a->kw[i] && skip > 0) {
            skip--;
            continue;
        }
        rest->v[rest->n] = a->v[i];
        rest->kw[rest->n++] = a->kw[i];
    }
}

static int seq_items(ctx *c, const jval *v, const char *what, int line, jval *out)
{
    if (v->k == V_LIST) {
        *out = *v;
        return 0;
    }
    if (v->k == V_DICT)
        return dict_items(c, v->d, 'k', line, out);
    if (v->k == V_UNDEF || v->k == V_NONE)
        return new_list(c, 0, line, out);
    return fail(c, EINVAL, line, "%s needs a list", what, strlen(what));
}

/* map('filter', args...) / map(attribute='name', default=x) */
static int map_filter(ctx *c, const jval *v, const jargs *a, int line, jval *out)
{
    jval seq;
    if (seq_items(c, v, "map", line, &seq) || new_list(c, seq.n, line, out))
        return c->rc;
    const jval *at = arg(a, -1, "attribute"), *dflt = arg(a, -1, "default");
    const jval *fname = arg(a, 0, NULL);
    if (!at && (!fname || fname->k != V_STR))
        return fail(c, EINVAL, line, "map needs a filter name or an attribute%s", "", 0);
    jargs rest;
    shift_args(a, 1, &rest);
    for (size_t i = 0; i < seq.n && !c->rc; i++) {
        jval *dst = (jval *)&out->items[i];
        if (at) {
            if (at->k != V_STR)
                return fail(c, EINVAL, line, "map's attribute must be a string%s", "", 0);
            *dst = attr(&seq.items[i], at->s, at->n);
            if (dst->k == V_UNDEF && dflt)
                *dst = *dflt;
        } else {
            apply_filter(c, fname->s, fname->n, seq.items[i], &rest, line, dst);
        }
    }
    return c->rc ? c->rc : seal_list(c, out, line);
}

/* selectattr / rejectattr('attribute'[, 'test', args...]) */
static int select_attr(ctx *c, const jval *v, const jargs *a, bool keep, int line, jval *out)
{
    jval seq;
    if (seq_items(c, v, "selectattr", line, &seq) || new_list(c, seq.n, line, out))
        return c->rc;
    const jval *at = arg(a, 0, NULL), *test = arg(a, 1, NULL);
    if (!at || at->k != V_STR || (test && test->k != V_STR))
        return fail(c, EINVAL, line, "selectattr needs an attribute name and a test name%s", "", 0);
    jargs rest;
    shift_args(a, 2, &rest);
    size_t n = 0;
    for (size_t i = 0; i < seq.n && !c->rc; i++) {
        jval x = attr(&seq.items[i], at->s, at->n);
        bool r = truthy(&x);
        if (test && apply_test(c, test->s, test->n, &x, &rest, line, &r))
            return c->rc;
        if (r == keep)
            ((jval *)out->items)[n++] = seq.items[i];
    }
    out->n = n;
    return seal_list(c, out, line);
}

/* dictsort: the items sorted by key, without regard to case unless case_sensitive */
static int dictsort(ctx *c, const jval *v, const jargs *a, int line, jval *out)
{
    if (need_args(c, a, 0, 3, "case_sensitive,by,reverse", "dictsort", line))
        return c->rc;
    if (v->k != V_DICT)
        return fail(c, EINVAL, line, "dictsort needs a mapping%s", "", 0);
    const jval *cs = arg(a, 0, "case_sensitive"), *by = arg(a, 1, "by"), *rev = arg(a, 2, "reverse");
    bool sens = cs && truthy(cs), rv = rev && truthy(rev);
    int col = by && by->k == V_STR && str_is(by->s, by->n, "value") ? 1 : 0;
    if (dict_items(c, v->d, 'i', line, out) || charge(c, 16 * out->n * out->n, line))
        return c->rc;
    jval *it = (jval *)out->items;
    for (size_t i = 1; i < out->n; i++) {
        for (size_t j = i; j > 0; j--) {
            const jval *x = &it[j - 1].items[col], *y = &it[j].items[col];
            int cmp;
            if (x->k == V_STR && y->k == V_STR) {
                cmp = 0;
                for (size_t k = 0; k < x->n && k < y->n && !cmp; k++) {
                    char p = sens ? x->s[k] : low(x->s[k]), q = sens ? y->s[k] : low(y->s[k]);
                    cmp = (unsigned char)p - (unsigned char)q;
                }
                if (!cmp)
                    cmp = (x->n > y->n) - (x->n < y->n);
            } else if ((x->k == V_INT || x->k == V_BOOL) && (y->k == V_INT || y->k == V_BOOL)) {
                cmp = (x->i > y->i) - (x->i < y->i);
            } else {
                return fail(c, EINVAL, line, "dictsort cannot order these keys%s", "", 0);
            }
            if (rv ? cmp >= 0 : cmp <= 0)
                break;
            jval t = it[j];
            it[j] = it[j - 1];
            it[j - 1] = t;
        }
    }
    return 0;
}

static int join(ctx *c, const jval *v, const jargs *a, int line, jval *out)
{
    if (need_args(c, a, 0, 2, "d,attribute", "join", line))
        return c->rc;
    const jval *sep = arg(a, 0, "d"), *at = arg(a, 1, "attribute");
    jval seq;
    if (v->k == V_STR) {
        *out = *v;
        return 0;
    }
    if (seq_items(c, v, "join", line, &seq))
        return c->rc;
    jval s = mk_str("", 0);
    if (sep && to_str(c, sep, line, &s))
        return c->rc;
    sbuf b = {0};
    sb_add(&b, "", 0);
    for (size_t i = 0; i < seq.n && !c->rc && !b.full; i++) {
        jval x = seq.items[i], t;
        if (at && at->k == V_STR)
            x = attr(&x, at->s, at->n);
        if (to_str(c, &x, line, &t))
            break;
        if (i)
            sb_add(&b, s.s, s.n);
        sb_add(&b, t.s, t.n);
    }
    if (c->rc) {
        free(b.p);
        return c->rc;
    }
    return sb_value(c, &b, line, out);
}

/* the int filter: numbers as they are, text read as Python's int(), else the default */
static jval to_int(const jval *v, const jval *dflt)
{
    if (v->k == V_INT || v->k == V_BOOL)
        return mk_int(v->i);
    if (v->k == V_STR) {
        jval t = strip(v, true, true, NULL);
        size_t i = 0;
        bool neg = false;
        if (i < t.n && (t.s[i] == '+' || t.s[i] == '-'))
            neg = t.s[i++] == '-';
        long long x = 0;
        size_t digits = 0;
        for (; i < t.n && t.s[i] >= '0' && t.s[i] <= '9'; i++, digits++) {
            if (x > (LLONG_MAX - (t.s[i] - '0')) / 10)
                return dflt ? *dflt : mk_int(0);
            x = x * 10 + (t.s[i] - '0');
        }
        if (i < t.n && t.s[i] == '.') /* int(float(text)) */
            for (i++; i < t.n && t.s[i] >= '0' && t.s[i] <= '9'; i++)
                ;
        if (digits && i == t.n)
            return mk_int(neg ? -x : x);
    }
    return dflt ? *dflt : mk_int(0);
}

static int apply_filter(ctx *c, const char *name, size_t nn, jval v, const jargs *a, int line, jval *out)
{
#define IS(k) str_is(name, nn, k)
    if (charge(c, v.k == V_STR ? v.n : 0, line))
        return c->rc;
    if (IS("default") || IS("d")) {
        if (need_args(c, a, 0, 2, "default_value,boolean", "default", line))
            return c->rc;
        const jval *dv = arg(a, 0, "default_value"), *bo = arg(a, 1, "boolean");
        if (!dv)
            return fail(c, EINVAL, line, "default needs a value%s", "", 0);
        bool use = v.k == V_UNDEF || (bo && truthy(bo) && !truthy(&v));
        *out = use ? *dv : v;
        return 0;
    }
    if (IS("tojson"))
        return tojson(c, &v, a, line, out);
    if (IS("join"))
        return join(c, &v, a, line, out);
    if (IS("map"))
        return map_filter(c, &v, a, line, out);
    if (IS("selectattr") || IS("rejectattr"))
        return select_attr(c, &v, a, IS("selectattr"), line, out);
    if (IS("dictsort"))
        return dictsort(c, &v, a, line, out);
    if (IS("int")) {
        if (need_args(c, a, 0, 1, "default", "int", line))
            return c->rc;
        *out = to_int(&v, arg(a, 0, "default"));
        return 0;
    }
    if (IS("replace")) {
        if (need_args(c, a, 2, 2, "", "replace", line) || (v.k != V_STR && to_str(c, &v, line, &v)))
            return c->rc;
        return replace(c, &v, &a->v[0], &a->v[1], line, out);
    }
    if (need_args(c, a, 0, 0, "", "this filter", line))
        return c->rc;
    if (IS("safe")) { /* nothing is escaped: text is already safe */
        *out = v;
        return 0;
    }
    if (IS("string"))
        return to_str(c, &v, line, out);
    if (IS("length") || IS("count")) {
        if (v.k == V_STR)
            *out = mk_int(utf8_count(v.s, v.n));
        else if (v.k == V_LIST)
            *out = mk_int((long long)v.n);
        else if (v.k == V_DICT)
            *out = mk_int((long long)v.d->n);
        else
            return fail(c, EINVAL, line, "length of a value without one%s", "", 0);
        return 0;
    }
    if (IS("items")) {
        if (v.k == V_UNDEF || v.k == V_NONE)
            return new_list(c, 0, line, out);
        if (v.k != V_DICT)
            return fail(c, EINVAL, line, "items needs a mapping%s", "", 0);
        return dict_items(c, v.d, 'i', line, out);
    }
    if (IS("list") || IS("reverse")) {
        jval seq;
        if (v.k == V_STR) { /* one item per character */
            if (new_list(c, v.n, line, &seq))
                return c->rc;
            size_t n = 0;
            for (size_t i = 0; i < v.n;) {
                size_t j = i + 1;
                while (j < v.n && ((unsigned char)v.s[j] & 0xC0) == 0x80)
                    j++;
                ((jval *)seq.items)[n++] = mk_str(v.s + i, j - i);
                i = j;
            }
            seq.n = n;
        } else if (v.k == V_DICT || v.k == V_LIST) {
            if (seq_items(c, &v, "list", line, &seq))
                return c->rc;
        } else {
            return fail(c, EINVAL, line, "list of a value that is not a sequence%s", "", 0);
        }
        if (IS("list")) {
            *out = seq;
            return 0;
        }
        if (v.k == V_STR) { /* reversed text: the characters in reverse order */
            sbuf b = {0};
            sb_add(&b, "", 0);
            for (size_t i = seq.n; i-- > 0;)
                sb_add(&b, seq.items[i].s, seq.items[i].n);
            return sb_value(c, &b, line, out);
        }
        if (new_list(c, seq.n, line, out))
            return c->rc;
        for (size_t i = 0; i < seq.n; i++)
            ((jval *)out->items)[i] = seq.items[seq.n - 1 - i];
        out->i = seq.i;
        return 0;
    }
    if (IS("first") || IS("last")) {
        bool first = IS("first");
        if (v.k == V_LIST)
            *out = v.n ? v.items[first ? 0 : v.n - 1] : mk(V_UNDEF);
        else if (v.k == V_STR)
            *out = v.n ? mk_str(first ? v.s : v.s + v.n - 1, 1) : mk(V_UNDEF);
        else
            return fail(c, EINVAL, line, "first/last of a value that is not a sequence%s", "", 0);
        return 0;
    }
    if (v.k != V_STR && to_str(c, &v, line, &v))
        return c->rc;
    if (IS("trim")) {
        *out = strip(&v, true, true, NULL);
        return 0;
    }
    if (IS("upper") || IS("lower") || IS("capitalize") || IS("title"))
        return str_case(c, &v, IS("upper") ? C_UPPER : IS("lower") ? C_LOWER : IS("title") ? C_TITLE_JINJA
                                                                                         : C_CAPITALIZE,
                        line, out);
    return fail(c, ENOTSUP, line, "filter '%s' is not supported", name, nn);
#undef IS
}

static int filter(ctx *c, const jexpr *e, jval *out)
{
    jval v;
    jargs a;
    if (eval(c, e->a, &v) || eval_args(c, e, &a))
        return c->rc;
    return apply_filter(c, e->s, e->n, v, &a, e->line, out);
}

static int test(ctx *c, const jexpr *e, jval *out)
{
    jval v;
    jargs a;
    bool r = false;
    if (eval(c, e->a, &v) || eval_args(c, e, &a) || apply_test(c, e->s, e->n, &v, &a, e->line, &r))
        return c->rc;
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
            *r = equal(c, &hay->items[i], needle, line, 0);
        return c->rc;
    }
    if (hay->k == V_DICT) {
        *r = dict_find(hay->d, needle) != NULL;
        return charge(c, 16 * hay->d->n, line);
    }
    return fail(c, EINVAL, line, "'in' needs a string, a list or a mapping on the right%s", "", 0);
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
        *out = mk_bool(equal(c, &x, &y, e->line, 0));
        return c->rc;
    case JB_NE:
        *out = mk_bool(!equal(c, &x, &y, e->line, 0));
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
        return fail(c, ETIME, e->line, "the template runs too long%s", "", 0);
    c->depth++;
    int rc = eval_in(c, e, out);
    c->depth--;
    return rc;
}

static int eval_slice(ctx *c, const jexpr *e, jval *out)
{
    jval v, i = mk(V_NONE), j = mk(V_NONE), st = mk(V_NONE);
    if (eval(c, e->a, &v) || (e->b && eval(c, e->b, &i)) || (e->c && eval(c, e->c, &j)) ||
        (e->d && eval(c, e->d, &st)))
        return c->rc;
    if ((i.k != V_NONE && i.k != V_INT) || (j.k != V_NONE && j.k != V_INT) || (st.k != V_NONE && st.k != V_INT))
        return fail(c, EINVAL, e->line, "slice bounds must be numbers%s", "", 0);
    if (v.k != V_LIST && v.k != V_STR)
        return fail(c, EINVAL, e->line, "only lists and strings can be sliced%s", "", 0);
    long long step = st.k == V_INT ? st.i : 1, start;
    if (step == 0)
        return fail(c, EINVAL, e->line, "slice step cannot be zero%s", "", 0);
    size_t count;
    slice_range(&i, &j, step, v.n, &start, &count);
    if (step == 1) { /* a view: nothing is copied */
        if (v.k == V_LIST)
            *out = (jval){.k = V_LIST, .i = v.i, .items = v.items + start, .n = count};
        else
            *out = mk_str(v.s + start, count);
        return 0;
    }
    if (charge(c, count, e->line))
        return c->rc;
    if (v.k == V_LIST) {
        if (new_list(c, count, e->line, out))
            return c->rc;
        for (size_t k = 0; k < count; k++)
            ((jval *)out->items)[k] = v.items[start + (long long)k * step];
        out->i = v.i;
        return 0;
    }
    char *s = jalloc(c->a, count + 1); /* bytes, as the other string operations */
    if (!s)
        return oom(c, e->line);
    for (size_t k = 0; k < count; k++)
        s[k] = v.s[start + (long long)k * step];
    *out = mk_str(s, count);
    return 0;
}

static int eval_in(ctx *c, const jexpr *e, jval *out)
{
    jval v, i;
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
        if (new_list(c, (size_t)e->n_args, e->line, out))
            return c->rc;
        for (int k = 0; k < e->n_args; k++)
            if (eval(c, e->args[k], (jval *)&out->items[k]))
                return c->rc;
        return seal_list(c, out, e->line);
    }
    case JE_DICT: {
        jdict *d = dict_new(c, (size_t)e->n_args / 2, e->line);
        if (!d)
            return c->rc;
        for (int k = 0; k + 1 < e->n_args; k += 2) {
            jval key, val;
            if (eval(c, e->args[k], &key) || eval(c, e->args[k + 1], &val))
                return c->rc;
            if (key.k != V_STR && key.k != V_INT && key.k != V_BOOL && key.k != V_NONE)
                return fail(c, EINVAL, e->line, "mapping keys must be strings, numbers or none%s", "", 0);
            if (dict_set(c, d, key, val, e->line))
                return c->rc;
        }
        if (d->depth > MAX_LIST_DEPTH)
            return fail(c, EINVAL, e->line, "lists nested too deeply%s", "", 0);
        *out = (jval){.k = V_DICT, .d = d};
        return 0;
    }
    case JE_KWARG:
        return fail(c, EINVAL, e->line, "a keyword argument out of place%s", "", 0);
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
        if (v.k == V_DICT) {
            const jval *x = dict_find(v.d, &i);
            if (x)
                *out = *x;
        } else if (i.k == V_STR) {
            *out = attr(&v, i.s, i.n);
        } else if (i.k != V_INT && i.k != V_BOOL) {
            return fail(c, EINVAL, e->line, "index is neither a number nor a key%s", "", 0);
        } else if (v.k == V_LIST && norm_index(i.i, v.n, &k)) {
            *out = v.items[k];
        } else if (v.k == V_STR && norm_index(i.i, v.n, &k)) {
            *out = mk_str(v.s + k, 1);
        }
        return 0;
    }
    case JE_SLICE:
        return eval_slice(c, e, out);
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
    sbuf b = {c->out, c->out_n, c->out_cap, false, false};
    if (!sb_add(&b, s, n))
        return oom(c, line);
    c->out = b.p;
    c->out_n = b.n;
    c->out_cap = b.cap;
    return 0;
}

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
    if (seq.k == V_DICT && dict_items(c, seq.d, 'k', s->line, &seq)) /* a mapping: its keys */
        return c->rc;
    if (seq.k != V_LIST)
        return fail(c, EINVAL, s->line, "for needs a list%s", "", 0);
    int base = c->n_vars;
    for (size_t k = 0; k < seq.n && !c->rc; k++) {
        if (charge(c, 16, s->line))
            return c->rc;
        c->n_vars = base;
        jval loop = {.k = V_LOOP, .i = (long long)k, .n = seq.n, .items = seq.items};
        const jval *item = &seq.items[k];
        if (s->s2) { /* for a, b in pairs */
            if (item->k != V_LIST || item->n != 2)
                return fail(c, EINVAL, s->line, "cannot unpack an item into two loop variables%s", "", 0);
            if (bind(c, base, s->s, s->n, item->items[0], s->line) ||
                bind(c, base, s->s2, s->n2, item->items[1], s->line))
                break;
        } else if (bind(c, base, s->s, s->n, *item, s->line)) {
            break;
        }
        if (bind(c, base, "loop", 4, loop, s->line))
            break;
        run(c, s->body, base);
    }
    c->n_vars = base;
    return c->rc;
}

static int run_set(ctx *c, const jstmt *s, int scope)
{
    jval v;
    if (eval(c, s->e, &v))
        return c->rc;
    if (!s->s2)
        return bind(c, scope, s->s, s->n, v, s->line);
    const jval *ns = lookup(c, s->s, s->n); /* set ns.attr = v */
    if (!ns || ns->k != V_DICT || !ns->d->ns)
        return fail(c, EINVAL, s->line, "'%s' is not a namespace: only namespace() attributes can be set", s->s,
                    s->n);
    return dict_set(c, ns->d, mk_str(s->s2, s->n2), v, s->line);
}

static int run_in(ctx *c, const jstmt *s, int scope)
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
            run_set(c, s, scope);
            break;
        case JS_MACRO:
            bind(c, scope, s->s, s->n, (jval){.k = V_MACRO, .fn = s}, s->line);
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

/* Blocks inside blocks and macros calling macros share the evaluator's depth limit, so
 * that a macro calling itself ends with an error instead of taking the stack. */
static int run(ctx *c, const jstmt *s, int scope)
{
    if (c->rc)
        return c->rc;
    if (c->depth >= MAX_EVAL_DEPTH)
        return fail(c, EINVAL, s ? s->line : 0, "blocks or macro calls nested too deeply%s", "", 0);
    c->depth++;
    run_in(c, s, scope);
    c->depth--;
    return c->rc;
}

/* A message as the mapping templates read: role and content (None when absent). Fields
 * llmfs does not carry (tool_calls, thinking, reasoning_content) are absent: "in" is
 * false for them, .get() gives None and attribute access is undefined. */
static int message(ctx *c, const chat_msg *m, jval *out)
{
    jdict *d = dict_new(c, 2, 0);
    if (!d)
        return c->rc;
    const char *role = m->role ? m->role : "";
    if (dict_set(c, d, mk_str("role", 4), mk_str(role, strlen(role)), 0) ||
        dict_set(c, d, mk_str("content", 7), m->content ? mk_str(m->content, strlen(m->content)) : mk(V_NONE), 0))
        return c->rc;
    *out = (jval){.k = V_DICT, .d = d};
    return 0;
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
    ctx c = {.a = &a, .err = err, .in = in};
    c.vars = malloc(MAX_VARS * sizeof *c.vars);
    jval *msgs = jalloc(&a, sizeof *msgs * (size_t)(in->n_msgs + 1));
    if (!c.vars || !msgs) {
        free(c.vars);
        jarena_free(&a);
        return llmfs_errorf(err, ENOMEM, "chat template: out of memory");
    }
    for (int i = 0; i < in->n_msgs && !c.rc; i++)
        message(&c, &in->msgs[i], &msgs[i]);
    const char *bos = in->bos_token ? in->bos_token : "", *eos = in->eos_token ? in->eos_token : "";
    bind(&c, 0, "messages", 8, (jval){.k = V_LIST, .i = 2, .items = msgs, .n = (size_t)in->n_msgs}, 0);
    bind(&c, 0, "add_generation_prompt", 21, mk_bool(in->add_generation_prompt), 0);
    bind(&c, 0, "bos_token", 9, mk_str(bos, strlen(bos)), 0);
    bind(&c, 0, "eos_token", 9, mk_str(eos, strlen(eos)), 0);
    /* the template's own keyword arguments: absent unless given, so that its defaults hold */
    if (in->reasoning_effort)
        bind(&c, 0, "reasoning_effort", 16, mk_str(in->reasoning_effort, strlen(in->reasoning_effort)), 0);
    if (in->enable_thinking)
        bind(&c, 0, "enable_thinking", 15, mk_bool(in->enable_thinking > 0), 0);
    run(&c, body, 0);
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
