/* jinja_parse.c — template text to statements and expressions.
 *
 * First the text is cut into segments (text, {{ }}, {% %}, {# #}) and the whitespace
 * rules are applied to the text between tags; then a recursive-descent parser reads the
 * tags, with Jinja's operator precedence (filters and tests bind tightest, then * %,
 * then ~, then + -, then comparisons, not, and, or, and x if c else y last). */
#include "jinja_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- arena ---- */

struct jchunk {
    struct jchunk *next;
    size_t used, cap;
    _Alignas(16) unsigned char data[];
};

void *jalloc(jarena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    struct jchunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        size_t cap = n > 16384 ? n : 16384;
        if (cap > JINJA_MAX_ARENA - a->total) {
            a->over = true;
            return NULL;
        }
        c = malloc(sizeof *c + cap);
        if (!c)
            return NULL;
        a->total += cap;
        c->next = a->head;
        c->used = 0;
        c->cap = cap;
        a->head = c;
    }
    void *p = c->data + c->used;
    c->used += n;
    memset(p, 0, n);
    return p;
}

void jarena_free(jarena *a)
{
    struct jchunk *c = a->head;
    while (c) {
        struct jchunk *n = c->next;
        free(c);
        c = n;
    }
    a->head = NULL;
    a->total = 0;
}

/* ---- segments ---- */

enum seg_kind { SEG_TEXT, SEG_EXPR, SEG_STMT, SEG_COMMENT };

typedef struct seg {
    enum seg_kind kind;
    const char *p;
    size_t n;
    int line;
    bool strip_before, strip_after; /* '-' inside the delimiters */
    bool keep_before, keep_after;   /* '+': no lstrip_blocks / trim_blocks */
} seg;

typedef struct parser {
    jarena *a;
    llmfs_error *err;
    int rc;
    const char *tmpl;
    seg *segs;
    int n_segs, cur;
    /* the tag being read */
    const char *p, *end;
    int line;
    int depth; /* nesting of expressions and blocks, bounded to keep the stack small */
    /* Names called as functions and names of macros: a call of a name that is neither a
     * built-in function nor a macro of this template is outside the subset, found once
     * the whole template is read (a macro may be defined after its first caller). */
    struct jname *called, *macros;
} parser;

typedef struct jname {
    struct jname *next;
    const char *s;
    size_t n;
    int line;
} jname;

static bool remember(parser *ps, jname **list, const char *s, size_t n)
{
    jname *x = jalloc(ps->a, sizeof *x);
    if (!x)
        return false;
    *x = (jname){*list, s, n, ps->line};
    *list = x;
    return true;
}

#define MAX_DEPTH 200

static int fail(parser *ps, int code, const char *fmt, const char *what, size_t n)
{
    if (!ps->rc) {
        char w[64];
        size_t k = n < sizeof w - 1 ? n : sizeof w - 1;
        memcpy(w, what, k);
        w[k] = 0;
        for (size_t i = 0; i < k; i++) /* reasons are one line */
            if ((unsigned char)w[i] < 0x20)
                w[i] = ' ';
        char msg[200];
        snprintf(msg, sizeof msg, fmt, w);
        llmfs_errorf(ps->err, code, "chat template, line %d: %s", ps->line, msg);
        ps->rc = -code;
    }
    return ps->rc;
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* The end of a tag whose body starts at p: the closing delimiter outside string
 * literals and brackets (as Jinja's lexer balances them, so that {{ {'a': {}} }} ends
 * at the last }}), or NULL. */
static const char *find_close(const char *p, const char *end, char close)
{
    char quote = 0;
    long depth = 0;
    for (; p + 1 < end; p++) {
        if (quote) {
            if (*p == '\\')
                p++;
            else if (*p == quote)
                quote = 0;
        } else if (*p == '\'' || *p == '"') {
            quote = *p;
        } else if (*p == close && p[1] == '}' && depth <= 0) {
            return p;
        } else if (*p == '{' || *p == '[' || *p == '(') {
            depth++;
        } else if (*p == '}' || *p == ']' || *p == ')') {
            depth--;
        }
    }
    return NULL;
}

static int count_lines(const char *from, const char *to)
{
    int n = 0;
    for (; from < to; from++)
        n += *from == '\n';
    return n;
}

static int segment(parser *ps)
{
    const char *t = ps->tmpl, *end = t + strlen(t);
    if (end > t && end[-1] == '\n') /* Jinja drops one trailing newline */
        end--;
    int cap = 16, n = 0, line = 1;
    seg *v = malloc((size_t)cap * sizeof *v);
    if (!v)
        return fail(ps, ENOMEM, "out of memory%s", "", 0);
    const char *p = t;
    while (p < end) {
        const char *o = p;
        while (o + 1 < end && !(o[0] == '{' && (o[1] == '{' || o[1] == '%' || o[1] == '#')))
            o++;
        if (o + 1 >= end)
            o = end;
        if (n + 2 > cap) {
            cap *= 2;
            seg *nv = realloc(v, (size_t)cap * sizeof *nv);
            if (!nv) {
                free(v);
                return fail(ps, ENOMEM, "out of memory%s", "", 0);
            }
            v = nv;
        }
        if (o > p)
            v[n++] = (seg){SEG_TEXT, p, (size_t)(o - p), line, 0, 0, 0, 0};
        line += count_lines(p, o);
        if (o == end)
            break;
        seg s = {0};
        s.line = line;
        char close = o[1] == '{' ? '}' : o[1];
        s.kind = o[1] == '{' ? SEG_EXPR : o[1] == '%' ? SEG_STMT : SEG_COMMENT;
        const char *body = o + 2;
        if (body < end && *body == '-') {
            s.strip_before = true;
            body++;
        } else if (body < end && *body == '+') {
            s.keep_before = true;
            body++;
        }
        const char *c;
        if (s.kind == SEG_COMMENT) {
            c = body;
            while (c + 1 < end && !(c[0] == '#' && c[1] == '}'))
                c++;
            if (c + 1 >= end)
                c = NULL;
        } else {
            c = find_close(body, end, close);
        }
        if (!c) {
            ps->line = line;
            free(v);
            return fail(ps, EINVAL, "unclosed %s tag", s.kind == SEG_EXPR ? "{{" : s.kind == SEG_STMT ? "{%" : "{#", 2);
        }
        const char *bend = c;
        if (bend > body && bend[-1] == '-') {
            s.strip_after = true;
            bend--;
        } else if (bend > body && bend[-1] == '+') {
            s.keep_after = true;
            bend--;
        }
        s.p = body;
        s.n = (size_t)(bend - body);
        v[n++] = s;
        line += count_lines(o, c + 2);
        p = c + 2;
    }
    /* whitespace control on the text between tags */
    for (int i = 0; i < n; i++) {
        if (v[i].kind != SEG_TEXT)
            continue;
        const char *s = v[i].p, *e = s + v[i].n;
        const seg *next = i + 1 < n ? &v[i + 1] : NULL, *prev = i > 0 ? &v[i - 1] : NULL;
        bool next_block = next && (next->kind == SEG_STMT || next->kind == SEG_COMMENT);
        bool prev_block = prev && (prev->kind == SEG_STMT || prev->kind == SEG_COMMENT);
        if (next && next->strip_before) {
            while (e > s && is_ws(e[-1]))
                e--;
        } else if (next_block && !next->keep_before) { /* lstrip_blocks */
            const char *q = e;
            while (q > s && (q[-1] == ' ' || q[-1] == '\t'))
                q--;
            if ((q > s && q[-1] == '\n') || (q == s && s == t))
                e = q;
        }
        if (prev && prev->strip_after) {
            while (s < e && is_ws(*s))
                s++;
        } else if (prev_block && !prev->keep_after) { /* trim_blocks */
            if (s < e && *s == '\n')
                s++;
            else if (s + 1 < e && s[0] == '\r' && s[1] == '\n')
                s += 2;
        }
        v[i].p = s;
        v[i].n = e > s ? (size_t)(e - s) : 0;
    }
    ps->segs = v;
    ps->n_segs = n;
    return 0;
}

/* ---- tokens inside a tag ---- */

enum tok_kind { T_END, T_NAME, T_STR, T_INT, T_OP };

typedef struct tok {
    enum tok_kind k;
    const char *s; /* T_NAME, T_OP: the source; T_STR: the unescaped value */
    size_t n;
    long long i;
} tok;

static bool name_start(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool name_char(char c) { return name_start(c) || (c >= '0' && c <= '9'); }

/* Reads the next token at ps->p without consuming it when peek. */
static int next_tok(parser *ps, tok *t, bool peek)
{
    const char *p = ps->p;
    while (p < ps->end && is_ws(*p)) {
        if (*p == '\n')
            ps->line++;
        p++;
    }
    memset(t, 0, sizeof *t);
    if (p >= ps->end) {
        t->k = T_END;
    } else if (name_start(*p)) {
        const char *q = p;
        while (q < ps->end && name_char(*q))
            q++;
        *t = (tok){T_NAME, p, (size_t)(q - p), 0};
        p = q;
    } else if (*p >= '0' && *p <= '9') {
        long long v = 0;
        const char *q = p;
        while (q < ps->end && *q >= '0' && *q <= '9') {
            if (v > (LLONG_MAX - (*q - '0')) / 10)
                return fail(ps, EINVAL, "number too large%s", "", 0);
            v = v * 10 + (*q - '0');
            q++;
        }
        if (q < ps->end && (*q == '.' || name_start(*q)))
            return fail(ps, ENOTSUP, "number '%s' is not supported (integers only)", p, (size_t)(q - p) + 1);
        *t = (tok){T_INT, p, (size_t)(q - p), v};
        p = q;
    } else if (*p == '\'' || *p == '"') {
        char quote = *p++;
        /* room for this literal only: the rest of the tag may hold many more */
        const char *q = p;
        while (q < ps->end && *q != quote)
            q += *q == '\\' && q + 1 < ps->end ? 2 : 1;
        char *out = jalloc(ps->a, (size_t)(q - p) + 1);
        if (!out)
            return fail(ps, ENOMEM, "out of memory%s", "", 0);
        size_t n = 0;
        while (p < ps->end && *p != quote) {
            char c = *p++;
            if (c == '\\' && p < ps->end) {
                char e = *p++;
                switch (e) {
                case 'n': c = '\n'; break;
                case 't': c = '\t'; break;
                case 'r': c = '\r'; break;
                case '0': c = '\0'; break;
                case '\\': case '\'': case '"': c = e; break;
                default: out[n++] = '\\'; c = e; break;
                }
            }
            out[n++] = c;
        }
        if (p >= ps->end)
            return fail(ps, EINVAL, "unterminated string%s", "", 0);
        p++;
        *t = (tok){T_STR, out, n, 0};
    } else {
        static const char *const two[] = {"==", "!=", "<=", ">=", "//", "**"};
        size_t n = 1;
        for (size_t k = 0; k < sizeof two / sizeof two[0]; k++)
            if (p + 1 < ps->end && p[0] == two[k][0] && p[1] == two[k][1])
                n = 2;
        if (n == 1 && !strchr("+-*/%~()[]{}.,:|=<>", *p))
            return fail(ps, EINVAL, "unexpected character '%s'", p, 1);
        *t = (tok){T_OP, p, n, 0};
        p += n;
    }
    if (!peek)
        ps->p = p;
    return 0;
}

static bool tok_is(const tok *t, enum tok_kind k, const char *s)
{
    return t->k == k && strlen(s) == t->n && memcmp(t->s, s, t->n) == 0;
}

/* Consumes the next token if it is (k, s). */
static bool accept(parser *ps, enum tok_kind k, const char *s)
{
    tok t;
    const char *save = ps->p;
    int line = ps->line;
    if (next_tok(ps, &t, false))
        return false;
    if (tok_is(&t, k, s))
        return true;
    ps->p = save;
    ps->line = line;
    return false;
}

static int expect(parser *ps, enum tok_kind k, const char *s)
{
    if (ps->rc || accept(ps, k, s))
        return ps->rc;
    tok t;
    next_tok(ps, &t, true);
    if (t.k == T_END)
        return fail(ps, EINVAL, "expected '%s' before the end of the tag", s, strlen(s));
    return fail(ps, EINVAL, "expected something else before '%s'", t.s, t.n);
}

/* ---- expressions ---- */

static jexpr *new_expr(parser *ps, enum jexpr_kind k)
{
    jexpr *e = jalloc(ps->a, sizeof *e);
    if (!e) {
        fail(ps, ENOMEM, "out of memory%s", "", 0);
        return NULL;
    }
    e->kind = k;
    e->line = ps->line;
    return e;
}

static jexpr *bin(parser *ps, int op, jexpr *l, jexpr *r)
{
    if (!l || !r)
        return NULL;
    jexpr *e = new_expr(ps, JE_BIN);
    if (e) {
        e->op = op;
        e->a = l;
        e->b = r;
    }
    return e;
}

static jexpr *parse_expr(parser *ps);
static jexpr *parse_or(parser *ps);
static jexpr *parse_unary(parser *ps);
static bool enter(parser *ps);

static bool name_in(const char *s, size_t n, const char *const *list)
{
    for (; *list; list++)
        if (strlen(*list) == n && memcmp(*list, s, n) == 0)
            return true;
    return false;
}

static const char *const filters[] = {"trim", "length", "count", "lower", "upper", "string", "first",
                                      "last", "default", "d", "tojson", "join", "map", "selectattr",
                                      "rejectattr", "items", "list", "int", "safe", "capitalize", "replace",
                                      "title", "dictsort", "reverse", NULL};
static const char *const tests[] = {"defined", "undefined", "none", "string", "number", "integer",
                                    "iterable", "mapping", "sequence", "boolean", "even", "odd", "true",
                                    "false", "callable", "eq", "equalto", "ne", NULL};
/* The built-in functions; jinja_eval.c's call() knows the same names. */
static const char *const functions[] = {"raise_exception", "range", "namespace", "strftime_now", "dict", NULL};
static const char *const methods[] = {"strip", "lstrip", "rstrip", "upper", "lower", "startswith",
                                      "endswith", "replace", "split", "title", "capitalize", "items",
                                      "keys", "values", "get", NULL};

/* Comma-separated arguments up to ')', the '(' already read. */
static int parse_args(parser *ps, jexpr *e)
{
    jexpr *args[16];
    int n = 0;
    if (!accept(ps, T_OP, ")")) {
        do {
            tok t, t2;
            const char *save = ps->p;
            next_tok(ps, &t, false);
            next_tok(ps, &t2, true);
            ps->p = save;
            if (n == 16)
                return fail(ps, EINVAL, "too many arguments%s", "", 0);
            if (t.k == T_NAME && tok_is(&t2, T_OP, "=")) { /* name=value */
                next_tok(ps, &t, false);
                next_tok(ps, &t2, false);
                jexpr *k = new_expr(ps, JE_KWARG);
                if (!k)
                    return ps->rc;
                k->s = t.s;
                k->n = t.n;
                if (!(k->a = parse_expr(ps)))
                    return ps->rc;
                args[n++] = k;
                continue;
            }
            for (int k = 0; k < n; k++)
                if (args[k]->kind == JE_KWARG)
                    return fail(ps, EINVAL, "a positional argument follows a keyword argument%s", "", 0);
            args[n] = parse_expr(ps);
            if (!args[n++])
                return ps->rc;
        } while (accept(ps, T_OP, ","));
        if (expect(ps, T_OP, ")"))
            return ps->rc;
    }
    e->args = jalloc(ps->a, sizeof *e->args * (size_t)(n ? n : 1));
    if (!e->args)
        return fail(ps, ENOMEM, "out of memory%s", "", 0);
    memcpy(e->args, args, sizeof *args * (size_t)n);
    e->n_args = n;
    return 0;
}

static jexpr *parse_primary(parser *ps)
{
    tok t;
    if (next_tok(ps, &t, false))
        return NULL;
    jexpr *e;
    switch (t.k) {
    case T_STR:
        e = new_expr(ps, JE_STR);
        if (e) {
            e->s = t.s;
            e->n = t.n;
        }
        return e;
    case T_INT:
        e = new_expr(ps, JE_INT);
        if (e)
            e->i = t.i;
        return e;
    case T_NAME:
        if (tok_is(&t, T_NAME, "true") || tok_is(&t, T_NAME, "True"))
            return new_expr(ps, JE_TRUE);
        if (tok_is(&t, T_NAME, "false") || tok_is(&t, T_NAME, "False"))
            return new_expr(ps, JE_FALSE);
        if (tok_is(&t, T_NAME, "none") || tok_is(&t, T_NAME, "None"))
            return new_expr(ps, JE_NONE);
        e = new_expr(ps, JE_NAME);
        if (e) {
            e->s = t.s;
            e->n = t.n;
        }
        return e;
    case T_OP:
        if (tok_is(&t, T_OP, "(")) {
            e = parse_expr(ps);
            if (e && accept(ps, T_OP, ","))
                fail(ps, ENOTSUP, "tuples are not supported%s", "", 0);
            if (expect(ps, T_OP, ")"))
                return NULL;
            return e;
        }
        if (tok_is(&t, T_OP, "[")) {
            e = new_expr(ps, JE_LIST);
            if (!e)
                return NULL;
            jexpr *items[64];
            int n = 0;
            if (!accept(ps, T_OP, "]")) {
                do {
                    if (n == 64) {
                        fail(ps, EINVAL, "list literal too long%s", "", 0);
                        return NULL;
                    }
                    if (!(items[n++] = parse_expr(ps)))
                        return NULL;
                } while (accept(ps, T_OP, ","));
                if (expect(ps, T_OP, "]"))
                    return NULL;
            }
            e->args = jalloc(ps->a, sizeof *e->args * (size_t)(n ? n : 1));
            if (!e->args) {
                fail(ps, ENOMEM, "out of memory%s", "", 0);
                return NULL;
            }
            memcpy(e->args, items, sizeof *items * (size_t)n);
            e->n_args = n;
            return e;
        }
        if (tok_is(&t, T_OP, "{")) {
            e = new_expr(ps, JE_DICT);
            if (!e)
                return NULL;
            jexpr *kv[128];
            int n = 0;
            if (!accept(ps, T_OP, "}")) {
                do {
                    if (n == 128) {
                        fail(ps, EINVAL, "dict literal too long%s", "", 0);
                        return NULL;
                    }
                    if (!(kv[n++] = parse_expr(ps)) || expect(ps, T_OP, ":") || !(kv[n++] = parse_expr(ps)))
                        return NULL;
                } while (accept(ps, T_OP, ","));
                if (expect(ps, T_OP, "}"))
                    return NULL;
            }
            e->args = jalloc(ps->a, sizeof *e->args * (size_t)(n ? n : 1));
            if (!e->args) {
                fail(ps, ENOMEM, "out of memory%s", "", 0);
                return NULL;
            }
            memcpy(e->args, kv, sizeof *kv * (size_t)n);
            e->n_args = n;
            return e;
        }
        fail(ps, EINVAL, "unexpected '%s'", t.s, t.n);
        return NULL;
    default:
        fail(ps, EINVAL, "expression expected%s", "", 0);
        return NULL;
    }
}

static jexpr *parse_postfix(parser *ps, jexpr *e)
{
    while (e && !ps->rc) {
        if (accept(ps, T_OP, ".")) {
            tok t;
            if (next_tok(ps, &t, false))
                return NULL;
            if (t.k != T_NAME) {
                fail(ps, EINVAL, "attribute name expected%s", "", 0);
                return NULL;
            }
            jexpr *a = new_expr(ps, JE_ATTR);
            if (!a)
                return NULL;
            a->a = e;
            a->s = t.s;
            a->n = t.n;
            e = a;
        } else if (accept(ps, T_OP, "[")) {
            jexpr *lo = NULL, *hi = NULL;
            bool slice = false;
            if (!accept(ps, T_OP, ":")) {
                lo = parse_expr(ps);
                if (!lo)
                    return NULL;
                slice = accept(ps, T_OP, ":");
            } else {
                slice = true;
            }
            if (slice) {
                tok t;
                next_tok(ps, &t, true);
                if (!tok_is(&t, T_OP, "]") && !tok_is(&t, T_OP, ":")) {
                    hi = parse_expr(ps);
                    if (!hi)
                        return NULL;
                }
            }
            jexpr *step = NULL;
            if (slice && accept(ps, T_OP, ":")) {
                tok t;
                next_tok(ps, &t, true);
                if (!tok_is(&t, T_OP, "]") && !(step = parse_expr(ps)))
                    return NULL;
            }
            if (expect(ps, T_OP, "]"))
                return NULL;
            jexpr *x = new_expr(ps, slice ? JE_SLICE : JE_INDEX);
            if (!x)
                return NULL;
            x->a = e;
            x->b = lo;
            x->c = hi;
            x->d = step;
            e = x;
        } else if (accept(ps, T_OP, "(")) {
            if (e->kind == JE_NAME && !name_in(e->s, e->n, functions) && !remember(ps, &ps->called, e->s, e->n)) {
                fail(ps, ENOMEM, "out of memory%s", "", 0);
                return NULL;
            }
            if (e->kind == JE_ATTR && !name_in(e->s, e->n, methods)) {
                fail(ps, ENOTSUP, "method '%s' is not supported", e->s, e->n);
                return NULL;
            }
            if (e->kind != JE_NAME && e->kind != JE_ATTR) {
                fail(ps, ENOTSUP, "calling an expression is not supported%s", "", 0);
                return NULL;
            }
            jexpr *c = new_expr(ps, JE_CALL);
            if (!c)
                return NULL;
            c->a = e;
            if (parse_args(ps, c))
                return NULL;
            e = c;
        } else {
            break;
        }
    }
    return e;
}

/* filters (x | f, x | f(args)) and tests (x is [not] t) after a primary */
static jexpr *parse_filters(parser *ps, jexpr *e)
{
    while (e && !ps->rc) {
        bool is_filter = accept(ps, T_OP, "|");
        if (!is_filter && !accept(ps, T_NAME, "is"))
            break;
        bool negate = !is_filter && accept(ps, T_NAME, "not");
        tok t;
        if (next_tok(ps, &t, false))
            return NULL;
        if (t.k != T_NAME) {
            fail(ps, EINVAL, "%s name expected", is_filter ? "filter" : "test", is_filter ? 6 : 4);
            return NULL;
        }
        if (!name_in(t.s, t.n, is_filter ? filters : tests)) {
            fail(ps, ENOTSUP, is_filter ? "filter '%s' is not supported" : "test '%s' is not supported", t.s, t.n);
            return NULL;
        }
        jexpr *f = new_expr(ps, is_filter ? JE_FILTER : JE_TEST);
        if (!f)
            return NULL;
        f->a = e;
        f->s = t.s;
        f->n = t.n;
        f->op = negate;
        if (accept(ps, T_OP, "(") && parse_args(ps, f))
            return NULL;
        e = f;
    }
    return e;
}

static jexpr *parse_unary_in(parser *ps)
{
    if (accept(ps, T_OP, "-")) {
        jexpr *e = new_expr(ps, JE_NEG);
        if (e && !(e->a = parse_unary(ps)))
            return NULL;
        return e;
    }
    if (accept(ps, T_OP, "+"))
        return parse_unary(ps);
    return parse_filters(ps, parse_postfix(ps, parse_primary(ps)));
}

static bool enter(parser *ps)
{
    if (++ps->depth > MAX_DEPTH) {
        fail(ps, EINVAL, "nested too deeply%s", "", 0);
        return false;
    }
    return true;
}

static jexpr *parse_unary(parser *ps)
{
    jexpr *e = enter(ps) ? parse_unary_in(ps) : NULL;
    ps->depth--;
    return e;
}

static jexpr *parse_mul(parser *ps)
{
    jexpr *e = parse_unary(ps);
    while (e && !ps->rc) {
        if (accept(ps, T_OP, "*"))
            e = bin(ps, JB_MUL, e, parse_unary(ps));
        else if (accept(ps, T_OP, "%"))
            e = bin(ps, JB_MOD, e, parse_unary(ps));
        else if (accept(ps, T_OP, "/") || accept(ps, T_OP, "//") || accept(ps, T_OP, "**")) {
            fail(ps, ENOTSUP, "division and powers are not supported%s", "", 0);
            return NULL;
        } else
            break;
    }
    return e;
}

static jexpr *parse_concat(parser *ps)
{
    jexpr *e = parse_mul(ps);
    while (e && !ps->rc && accept(ps, T_OP, "~"))
        e = bin(ps, JB_CONCAT, e, parse_mul(ps));
    return e;
}

static jexpr *parse_add(parser *ps)
{
    jexpr *e = parse_concat(ps);
    while (e && !ps->rc) {
        if (accept(ps, T_OP, "+"))
            e = bin(ps, JB_ADD, e, parse_concat(ps));
        else if (accept(ps, T_OP, "-"))
            e = bin(ps, JB_SUB, e, parse_concat(ps));
        else
            break;
    }
    return e;
}

static jexpr *parse_compare(parser *ps)
{
    static const struct {
        const char *op;
        int code;
    } ops[] = {{"==", JB_EQ}, {"!=", JB_NE}, {"<=", JB_LE}, {">=", JB_GE}, {"<", JB_LT}, {">", JB_GT}};
    jexpr *e = parse_add(ps);
    while (e && !ps->rc) {
        int code = -1;
        for (size_t k = 0; k < sizeof ops / sizeof ops[0] && code < 0; k++)
            if (accept(ps, T_OP, ops[k].op))
                code = ops[k].code;
        if (code < 0 && accept(ps, T_NAME, "in"))
            code = JB_IN;
        if (code < 0) {
            const char *save = ps->p;
            int line = ps->line;
            if (accept(ps, T_NAME, "not")) {
                if (accept(ps, T_NAME, "in")) {
                    code = JB_NOT_IN;
                } else {
                    ps->p = save;
                    ps->line = line;
                }
            }
        }
        if (code < 0)
            break;
        e = bin(ps, code, e, parse_add(ps));
    }
    return e;
}

static jexpr *parse_not(parser *ps)
{
    if (accept(ps, T_NAME, "not")) {
        jexpr *e = new_expr(ps, JE_NOT);
        if (!e || !enter(ps))
            return NULL;
        e->a = parse_not(ps);
        ps->depth--;
        return e->a ? e : NULL;
    }
    return parse_compare(ps);
}

static jexpr *parse_and(parser *ps)
{
    jexpr *e = parse_not(ps);
    while (e && !ps->rc && accept(ps, T_NAME, "and"))
        e = bin(ps, JB_AND, e, parse_not(ps));
    return e;
}

static jexpr *parse_or(parser *ps)
{
    jexpr *e = parse_and(ps);
    while (e && !ps->rc && accept(ps, T_NAME, "or"))
        e = bin(ps, JB_OR, e, parse_and(ps));
    return e;
}

static jexpr *parse_expr_in(parser *ps)
{
    jexpr *e = parse_or(ps);
    while (e && !ps->rc && accept(ps, T_NAME, "if")) {
        jexpr *c = new_expr(ps, JE_COND);
        if (!c)
            return NULL;
        c->b = e;
        if (!(c->a = parse_or(ps)))
            return NULL;
        if (accept(ps, T_NAME, "else") && !(c->c = parse_expr(ps)))
            return NULL;
        e = c;
    }
    return ps->rc ? NULL : e;
}

static jexpr *parse_expr(parser *ps)
{
    jexpr *e = enter(ps) ? parse_expr_in(ps) : NULL;
    ps->depth--;
    return e;
}

/* ---- statements ---- */

static void open_tag(parser *ps, const seg *s)
{
    ps->p = s->p;
    ps->end = s->p + s->n;
    ps->line = s->line;
}

static int end_of_tag(parser *ps)
{
    tok t;
    if (ps->rc || next_tok(ps, &t, true))
        return ps->rc;
    if (t.k != T_END)
        return fail(ps, EINVAL, "unexpected '%s' at the end of the tag", t.s, t.n ? t.n : 1);
    return 0;
}

static jstmt *new_stmt(parser *ps, enum jstmt_kind k)
{
    jstmt *s = jalloc(ps->a, sizeof *s);
    if (!s)
        fail(ps, ENOMEM, "out of memory%s", "", 0);
    else {
        s->kind = k;
        s->line = ps->line;
    }
    return s;
}

/* Statements up to a {% name %} in stop (NULL-terminated), returned in *stopped
 * (NULL at the end of the template). */
static jstmt *parse_body(parser *ps, const char *const *stop, tok *stopped);

static jstmt *parse_if(parser *ps)
{
    jstmt *s = new_stmt(ps, JS_IF);
    if (!s)
        return NULL;
    static const char *const stop[] = {"elif", "else", "endif", NULL};
    jexpr *conds[64];
    jstmt *bodies[64];
    int n = 0;
    jexpr *c = parse_expr(ps);
    for (;;) {
        if (!c || end_of_tag(ps))
            return NULL;
        if (n == 64) {
            fail(ps, EINVAL, "too many elif branches%s", "", 0);
            return NULL;
        }
        tok kw;
        conds[n] = c;
        bodies[n++] = parse_body(ps, stop, &kw);
        if (ps->rc)
            return NULL;
        if (tok_is(&kw, T_NAME, "elif")) {
            c = parse_expr(ps);
            continue;
        }
        if (tok_is(&kw, T_NAME, "else")) {
            static const char *const stop_else[] = {"endif", NULL};
            if (end_of_tag(ps))
                return NULL;
            s->else_body = parse_body(ps, stop_else, &kw);
            if (ps->rc)
                return NULL;
        }
        break;
    }
    if (end_of_tag(ps))
        return NULL;
    s->conds = jalloc(ps->a, sizeof *s->conds * (size_t)n);
    s->bodies = jalloc(ps->a, sizeof *s->bodies * (size_t)n);
    if (!s->conds || !s->bodies) {
        fail(ps, ENOMEM, "out of memory%s", "", 0);
        return NULL;
    }
    memcpy(s->conds, conds, sizeof *conds * (size_t)n);
    memcpy(s->bodies, bodies, sizeof *bodies * (size_t)n);
    s->n_branches = n;
    return s;
}

static jstmt *parse_for(parser *ps)
{
    jstmt *s = new_stmt(ps, JS_FOR);
    tok t;
    if (!s || next_tok(ps, &t, false))
        return NULL;
    if (t.k != T_NAME) {
        fail(ps, EINVAL, "loop variable expected%s", "", 0);
        return NULL;
    }
    s->s = t.s;
    s->n = t.n;
    if (accept(ps, T_OP, ",")) { /* for key, value in ... */
        if (next_tok(ps, &t, false))
            return NULL;
        if (t.k != T_NAME) {
            fail(ps, EINVAL, "loop variable expected%s", "", 0);
            return NULL;
        }
        s->s2 = t.s;
        s->n2 = t.n;
        if (accept(ps, T_OP, ",")) {
            fail(ps, ENOTSUP, "unpacking into more than two loop variables is not supported%s", "", 0);
            return NULL;
        }
    }
    if (expect(ps, T_NAME, "in") || !(s->e = parse_or(ps)))
        return NULL;
    if (accept(ps, T_NAME, "if")) {
        fail(ps, ENOTSUP, "loop filters (for ... if ...) are not supported%s", "", 0);
        return NULL;
    }
    if (accept(ps, T_NAME, "recursive")) {
        fail(ps, ENOTSUP, "recursive loops are not supported%s", "", 0);
        return NULL;
    }
    if (end_of_tag(ps))
        return NULL;
    static const char *const stop[] = {"endfor", "else", NULL};
    tok kw;
    s->body = parse_body(ps, stop, &kw);
    if (ps->rc)
        return NULL;
    if (tok_is(&kw, T_NAME, "else")) {
        fail(ps, ENOTSUP, "for ... else is not supported%s", "", 0);
        return NULL;
    }
    if (end_of_tag(ps))
        return NULL;
    return s;
}

static jstmt *parse_set(parser *ps)
{
    jstmt *s = new_stmt(ps, JS_SET);
    tok t;
    if (!s || next_tok(ps, &t, false))
        return NULL;
    if (t.k != T_NAME) {
        fail(ps, EINVAL, "variable name expected after set%s", "", 0);
        return NULL;
    }
    s->s = t.s;
    s->n = t.n;
    if (accept(ps, T_OP, ".")) { /* set ns.attr = ... */
        if (next_tok(ps, &t, false))
            return NULL;
        if (t.k != T_NAME) {
            fail(ps, EINVAL, "attribute name expected after set%s", "", 0);
            return NULL;
        }
        s->s2 = t.s;
        s->n2 = t.n;
    }
    if (accept(ps, T_OP, ",")) {
        fail(ps, ENOTSUP, "unpacking assignments are not supported%s", "", 0);
        return NULL;
    }
    tok x;
    if (next_tok(ps, &x, true))
        return NULL;
    if (x.k == T_END) {
        fail(ps, ENOTSUP, "block assignments ({%% set x %%}...{%% endset %%}) are not supported%s", "", 0);
        return NULL;
    }
    if (expect(ps, T_OP, "=") || !(s->e = parse_expr(ps)) || end_of_tag(ps))
        return NULL;
    return s;
}

static jstmt *parse_body_in(parser *ps, const char *const *stop, tok *stopped);

/* {% macro name(p1, p2=default, ...) %} body {% endmacro %} */
static jstmt *parse_macro(parser *ps)
{
    jstmt *s = new_stmt(ps, JS_MACRO);
    tok t;
    if (!s || next_tok(ps, &t, false))
        return NULL;
    if (t.k != T_NAME) {
        fail(ps, EINVAL, "macro name expected%s", "", 0);
        return NULL;
    }
    s->s = t.s;
    s->n = t.n;
    if (!remember(ps, &ps->macros, t.s, t.n)) {
        fail(ps, ENOMEM, "out of memory%s", "", 0);
        return NULL;
    }
    enum { MAX_PARAMS = 16 };
    s->param_s = jalloc(ps->a, sizeof *s->param_s * MAX_PARAMS);
    s->param_n = jalloc(ps->a, sizeof *s->param_n * MAX_PARAMS);
    s->param_default = jalloc(ps->a, sizeof *s->param_default * MAX_PARAMS);
    if (!s->param_s || !s->param_n || !s->param_default) {
        fail(ps, ENOMEM, "out of memory%s", "", 0);
        return NULL;
    }
    if (expect(ps, T_OP, "("))
        return NULL;
    if (!accept(ps, T_OP, ")")) {
        do {
            if (next_tok(ps, &t, false))
                return NULL;
            if (t.k != T_NAME) {
                fail(ps, EINVAL, "parameter name expected%s", "", 0);
                return NULL;
            }
            if (s->n_params == MAX_PARAMS) {
                fail(ps, EINVAL, "too many macro parameters%s", "", 0);
                return NULL;
            }
            int k = s->n_params++;
            s->param_s[k] = t.s;
            s->param_n[k] = t.n;
            if (accept(ps, T_OP, "=") && !(s->param_default[k] = parse_expr(ps)))
                return NULL;
        } while (accept(ps, T_OP, ","));
        if (expect(ps, T_OP, ")"))
            return NULL;
    }
    if (end_of_tag(ps))
        return NULL;
    static const char *const stop[] = {"endmacro", NULL};
    tok kw;
    s->body = parse_body(ps, stop, &kw);
    if (ps->rc || end_of_tag(ps))
        return NULL;
    return s;
}

static jstmt *parse_body(parser *ps, const char *const *stop, tok *stopped)
{
    memset(stopped, 0, sizeof *stopped);
    jstmt *b = enter(ps) ? parse_body_in(ps, stop, stopped) : NULL;
    ps->depth--;
    return b;
}

static jstmt *parse_body_in(parser *ps, const char *const *stop, tok *stopped)
{
    jstmt *head = NULL, **tail = &head;
    memset(stopped, 0, sizeof *stopped);
    while (ps->cur < ps->n_segs && !ps->rc) {
        const seg *sg = &ps->segs[ps->cur++];
        jstmt *s = NULL;
        if (sg->kind == SEG_COMMENT)
            continue;
        if (sg->kind == SEG_TEXT) {
            if (!sg->n)
                continue;
            s = new_stmt(ps, JS_TEXT);
            if (!s)
                return NULL;
            s->s = sg->p;
            s->n = sg->n;
        } else if (sg->kind == SEG_EXPR) {
            open_tag(ps, sg);
            s = new_stmt(ps, JS_OUT);
            if (!s || !(s->e = parse_expr(ps)) || end_of_tag(ps))
                return NULL;
        } else {
            open_tag(ps, sg);
            tok kw;
            if (next_tok(ps, &kw, false))
                return NULL;
            if (kw.k != T_NAME) {
                fail(ps, EINVAL, "statement name expected%s", "", 0);
                return NULL;
            }
            if (stop && name_in(kw.s, kw.n, stop)) {
                *stopped = kw;
                return head;
            }
            if (tok_is(&kw, T_NAME, "if"))
                s = parse_if(ps);
            else if (tok_is(&kw, T_NAME, "for"))
                s = parse_for(ps);
            else if (tok_is(&kw, T_NAME, "set"))
                s = parse_set(ps);
            else if (tok_is(&kw, T_NAME, "macro"))
                s = parse_macro(ps);
            else if (name_in(kw.s, kw.n, (const char *const[]){"elif", "else", "endif", "endfor", "endmacro", NULL}))
                fail(ps, EINVAL, "'%s' without a matching opening tag", kw.s, kw.n);
            else
                fail(ps, ENOTSUP, "'{%% %s %%}' is not supported", kw.s, kw.n);
            if (!s)
                return NULL;
        }
        *tail = s;
        tail = &s->next;
    }
    if (stop && !ps->rc) {
        ps->line = ps->n_segs ? ps->segs[ps->n_segs - 1].line : 1;
        const char *const *want = stop;
        while (want[1] && strncmp(*want, "end", 3) != 0)
            want++;
        fail(ps, EINVAL, "missing {%% %s %%}", *want, strlen(*want));
    }
    return head;
}

jstmt *jinja_parse(const char *tmpl, jarena *a, llmfs_error *err, int *rc)
{
    parser ps = {.a = a, .err = err, .tmpl = tmpl, .line = 1};
    jstmt *body = NULL;
    if (segment(&ps) == 0) {
        tok stopped;
        body = parse_body(&ps, NULL, &stopped);
    }
    for (const jname *c = ps.called; c && !ps.rc; c = c->next) {
        const jname *m = ps.macros;
        while (m && !(m->n == c->n && memcmp(m->s, c->s, c->n) == 0))
            m = m->next;
        if (!m) {
            ps.line = c->line;
            fail(&ps, ENOTSUP, "function '%s' is not supported", c->s, c->n);
        }
    }
    free(ps.segs);
    *rc = ps.rc;
    return ps.rc ? NULL : body;
}
