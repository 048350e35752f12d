/* jinja_internal.h — the parsed form of a template, shared by the parser
 * (jinja_parse.c) and the evaluator (jinja_eval.c). */
#ifndef LLMFS_JINJA_INTERNAL_H
#define LLMFS_JINJA_INTERNAL_H

#include "jinja.h"

#include <stddef.h>

/* Everything of one render lives in one arena and goes at once. The arena holds at most
 * JINJA_MAX_ARENA bytes, so that no template can take the machine's memory. */
#define JINJA_MAX_ARENA ((size_t)256 << 20)
typedef struct jarena {
    struct jchunk *head;
    size_t total;
    bool over; /* a request was refused for the limit, not for want of memory */
} jarena;
void *jalloc(jarena *a, size_t n); /* zeroed; NULL when out of memory or over the limit */
void jarena_free(jarena *a);

enum jexpr_kind {
    JE_STR, JE_INT, JE_TRUE, JE_FALSE, JE_NONE, JE_LIST,
    JE_NAME, JE_ATTR, JE_INDEX, JE_SLICE, JE_CALL, JE_FILTER, JE_TEST,
    JE_BIN, JE_NOT, JE_NEG, JE_COND,
    JE_DICT,  /* args: key, value, key, value, ... (n_args counts both) */
    JE_KWARG, /* a keyword argument of a call, filter or test: s = name, a = value */
};

enum jbin_op {
    JB_OR, JB_AND, JB_EQ, JB_NE, JB_LT, JB_GT, JB_LE, JB_GE, JB_IN, JB_NOT_IN,
    JB_ADD, JB_SUB, JB_MUL, JB_MOD, JB_CONCAT,
};

typedef struct jexpr {
    enum jexpr_kind kind;
    int line;
    const char *s; /* JE_STR value; JE_NAME, JE_ATTR, JE_FILTER, JE_TEST name */
    size_t n;
    long long i;    /* JE_INT */
    int op;         /* JE_BIN: enum jbin_op; JE_TEST: 1 when negated */
    struct jexpr *a, *b, *c; /* operands: object/left/condition, index/right, slice end */
    struct jexpr *d;          /* JE_SLICE step */
    struct jexpr **args;     /* JE_CALL, JE_FILTER arguments; JE_LIST items */
    int n_args;
} jexpr;

enum jstmt_kind { JS_TEXT, JS_OUT, JS_IF, JS_FOR, JS_SET, JS_MACRO };

typedef struct jstmt {
    enum jstmt_kind kind;
    int line;
    const char *s; /* JS_TEXT text; JS_SET, JS_FOR variable name; JS_MACRO name */
    size_t n;
    const char *s2; /* JS_FOR second variable (for k, v in ...); JS_SET attribute (set ns.x) */
    size_t n2;
    /* JS_MACRO parameters: names, and default values (NULL where none) */
    const char **param_s;
    size_t *param_n;
    jexpr **param_default;
    int n_params;
    jexpr *e;      /* JS_OUT value; JS_SET value; JS_FOR sequence */
    struct jstmt *body; /* JS_FOR, JS_MACRO */
    /* JS_IF: n_branches conditions with their bodies, then else_body */
    jexpr **conds;
    struct jstmt **bodies;
    int n_branches;
    struct jstmt *else_body;
    struct jstmt *next;
} jstmt;

/* Parses tmpl; NULL with err set (-ENOTSUP for constructs outside the subset, -EINVAL
 * for malformed templates, -ENOMEM). */
jstmt *jinja_parse(const char *tmpl, jarena *a, llmfs_error *err, int *rc);

#endif
