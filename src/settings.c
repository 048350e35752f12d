/* settings.c — parsing, printing and checking settings, all driven by SETTINGS_LIST. */
#include "settings.h"
#include "cpuset.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum set_type { T_INT, T_I64, T_OCTAL, T_FLOAT, T_BOOL, T_ENUM, T_STRING, T_TEXT, T_PROFILE, T_CPUS };

typedef struct setting_def {
    const char *name;
    enum set_type type;
    int home;
    enum setting_applies applies;
    double min, max;
    const char *choices;
    const char *def;
    const char *help;
    size_t offset;
} setting_def;

#define SETTINGS_DEF_(nm, ty, sc, ap, mn, mx, ch, df, hp) \
    {#nm, T_##ty, sc, ap, mn, mx, ch, df, hp, offsetof(llmfs_settings, nm)},
static const setting_def defs[SETTINGS_N] = {SETTINGS_LIST(SETTINGS_DEF_)};

static const struct {
    const char *alias, *name;
} aliases[] = {
    {"ctk", "cache_type_k"},
    {"ctv", "cache_type_v"},
};

/* Presets: space-separated key=value pairs, applied in order. */
static const struct {
    const char *name, *pairs;
} profiles[] = {
    {"text-12gb", "fit_target=512 ctx=65536 cache_type_k=q8_0 cache_type_v=q8_0 parallel=1 batch=1024"},
    {"text-24gb", "fit_target=768 ctx=131072 cache_type_k=q8_0 cache_type_v=q8_0 parallel=2 batch=1024"},
    {"vision-12gb",
     "fit_target=2048 ctx=65536 cache_type_k=q8_0 cache_type_v=q8_0 parallel=1 batch=256 ubatch=512"},
    {"mtp", "fit_target=512 ctx=65536 cache_type_k=f16 cache_type_v=f16 parallel=1 batch=1024"},
};

static llmfs_setting_info infos[SETTINGS_N];
static char ranges[SETTINGS_N][320];
static char profile_choices[256];
static pthread_once_t infos_once = PTHREAD_ONCE_INIT;

static const char *const applies_names[] = {
    [A_NOW] = "now", [A_KV] = "kv", [A_SCRATCH] = "scratch", [A_LOAD] = "load"};

static const char *type_names[] = {
    [T_INT] = "int",       [T_I64] = "int",   [T_OCTAL] = "octal", [T_FLOAT] = "float",
    [T_BOOL] = "bool",     [T_ENUM] = "enum", [T_STRING] = "string", [T_TEXT] = "text",
    [T_PROFILE] = "enum",  [T_CPUS] = "cpus",
};

static void infos_build(void)
{
    size_t o = 0;
    for (size_t i = 0; i < sizeof profiles / sizeof profiles[0]; i++)
        o += (size_t)snprintf(profile_choices + o, sizeof profile_choices - o, "%s%s", i ? "|" : "",
                              profiles[i].name);
    for (int i = 0; i < SETTINGS_N; i++) {
        const setting_def *d = &defs[i];
        llmfs_setting_info *in = &infos[i];
        in->name = d->name;
        in->type = type_names[d->type];
        in->def = d->def;
        in->help = d->help;
        in->applies = applies_names[d->applies];
        in->scope = d->home == LLMFS_SCOPE_SESSION ? 7 : d->home == LLMFS_SCOPE_MODEL ? 3 : 1;
        switch (d->type) {
        case T_INT:
        case T_I64:
            snprintf(ranges[i], sizeof ranges[i], "%.0f..%.0f", d->min, d->max);
            break;
        case T_OCTAL:
            snprintf(ranges[i], sizeof ranges[i], "0..%04o", (unsigned)d->max);
            break;
        case T_FLOAT:
            snprintf(ranges[i], sizeof ranges[i], "%g..%g", d->min, d->max);
            break;
        case T_BOOL:
            snprintf(ranges[i], sizeof ranges[i], "on|off");
            break;
        case T_ENUM:
            snprintf(ranges[i], sizeof ranges[i], "%s", d->choices);
            break;
        case T_PROFILE:
            snprintf(ranges[i], sizeof ranges[i], "%s", profile_choices);
            break;
        case T_CPUS:
            snprintf(ranges[i], sizeof ranges[i], "cpu list|p-cores|e-cores");
            break;
        case T_STRING:
        case T_TEXT:
            ranges[i][0] = 0;
            break;
        }
        in->range = ranges[i];
    }
}

int llmfs_settings_table(const llmfs_setting_info **out)
{
    pthread_once(&infos_once, infos_build);
    *out = infos;
    return SETTINGS_N;
}

const llmfs_setting_info *settings_info(int idx)
{
    pthread_once(&infos_once, infos_build);
    return idx >= 0 && idx < SETTINGS_N ? &infos[idx] : NULL;
}

int settings_home_scope(int idx)
{
    return idx >= 0 && idx < SETTINGS_N ? defs[idx].home : 0;
}

enum setting_applies settings_applies(int idx)
{
    return idx >= 0 && idx < SETTINGS_N ? defs[idx].applies : A_NOW;
}

const char *llmfs_profile(const char *name)
{
    for (size_t i = 0; name && i < sizeof profiles / sizeof profiles[0]; i++)
        if (strcmp(profiles[i].name, name) == 0)
            return profiles[i].pairs;
    return NULL;
}

int settings_find(const char *name)
{
    if (!name)
        return -1;
    for (int i = 0; i < SETTINGS_N; i++)
        if (strcmp(defs[i].name, name) == 0)
            return i;
    for (size_t a = 0; a < sizeof aliases / sizeof aliases[0]; a++)
        if (strcmp(aliases[a].alias, name) == 0)
            return settings_find(aliases[a].name);
    return -1;
}

static void *field(llmfs_settings *s, int i)
{
    return (char *)s + defs[i].offset;
}

static const void *cfield(const llmfs_settings *s, int i)
{
    return (const char *)s + defs[i].offset;
}

static bool is_string_type(enum set_type t)
{
    return t == T_STRING || t == T_TEXT || t == T_PROFILE || t == T_CPUS;
}

/* ---- value parsing ---- */

/* The parsed form of one value, before it is stored. */
typedef struct parsed {
    int64_t i;
    float f;
    bool b;
    char *str;
} parsed;

static int enum_index(const char *choices, const char *v)
{
    size_t vl = strlen(v);
    int idx = 0;
    for (const char *p = choices;; idx++) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == vl && strncasecmp(p, v, n) == 0)
            return idx;
        if (!bar)
            return -1;
        p = bar + 1;
    }
}

static int enum_name(const char *choices, int idx, char *buf, size_t cap)
{
    const char *p = choices;
    for (int i = 0; i < idx && p; i++) {
        p = strchr(p, '|');
        if (p)
            p++;
    }
    if (!p)
        return snprintf(buf, cap, "?");
    const char *bar = strchr(p, '|');
    int n = bar ? (int)(bar - p) : (int)strlen(p);
    return snprintf(buf, cap, "%.*s", n, p);
}

/* "\n" -> newline, "\\" -> backslash; other escapes are kept as written. */
static char *unescape(const char *v)
{
    size_t n = strlen(v);
    char *o = malloc(n + 1);
    if (!o)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] == '\\' && (v[i + 1] == 'n' || v[i + 1] == '\\')) {
            o[j++] = v[i + 1] == 'n' ? '\n' : '\\';
            i++;
        } else {
            o[j++] = v[i];
        }
    }
    o[j] = 0;
    return o;
}

static int escape_to(const char *v, char *buf, size_t cap)
{
    size_t o = 0;
    for (const char *p = v; *p; p++) {
        char c[3] = {*p, 0, 0};
        if (*p == '\n') {
            c[0] = '\\';
            c[1] = 'n';
        } else if (*p == '\\') {
            c[0] = '\\';
            c[1] = '\\';
        }
        for (int k = 0; c[k]; k++, o++)
            if (o + 1 < cap)
                buf[o] = c[k];
    }
    if (cap)
        buf[o < cap ? o : cap - 1] = 0;
    return (int)o;
}

static int parse_bool(const char *v, bool *out)
{
    static const char *yes[] = {"on", "true", "yes", "1"}, *no[] = {"off", "false", "no", "0"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return 0;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return 0;
        }
    }
    return -1;
}

static int parse_value(int i, const char *v, parsed *p, llmfs_error *err)
{
    const setting_def *d = &defs[i];
    memset(p, 0, sizeof *p);
    switch (d->type) {
    case T_INT:
    case T_I64:
    case T_OCTAL: {
        char *end;
        errno = 0;
        long long x = strtoll(v, &end, d->type == T_OCTAL ? 8 : 10);
        if (end == v || *end || errno)
            return llmfs_errorf(err, EINVAL, "%s: '%s' is not %s", d->name, v,
                                d->type == T_OCTAL ? "an octal number" : "an integer");
        if ((double)x < d->min || (double)x > d->max)
            return llmfs_errorf(err, EINVAL, "%s: %s is out of range %s", d->name, v, infos[i].range);
        p->i = x;
        return 0;
    }
    case T_FLOAT: {
        char *end;
        errno = 0;
        double x = strtod(v, &end);
        if (end == v || *end || errno || !isfinite(x))
            return llmfs_errorf(err, EINVAL, "%s: '%s' is not a number", d->name, v);
        if (x < d->min || x > d->max)
            return llmfs_errorf(err, EINVAL, "%s: %s is out of range %s", d->name, v, infos[i].range);
        p->f = (float)x;
        return 0;
    }
    case T_BOOL:
        if (parse_bool(v, &p->b) < 0)
            return llmfs_errorf(err, EINVAL, "%s: '%s' is not on or off", d->name, v);
        return 0;
    case T_ENUM: {
        int k = enum_index(d->choices, v);
        if (k < 0)
            return llmfs_errorf(err, EINVAL, "%s: '%s' is not one of %s", d->name, v, d->choices);
        p->i = k;
        return 0;
    }
    case T_CPUS: {
        llmfs_error e = {0};
        if (cpu_affinity_check(v, &e) < 0)
            return llmfs_errorf(err, EINVAL, "%s", e.msg);
        p->str = strdup(v);
        if (!p->str)
            return llmfs_errorf(err, ENOMEM, "%s: out of memory", d->name);
        return 0;
    }
    case T_PROFILE:
        if (*v && !llmfs_profile(v))
            return llmfs_errorf(err, EINVAL, "profile: no profile '%s' (have %s)", v, profile_choices);
        /* fall through */
    case T_STRING:
    case T_TEXT:
        p->str = d->type == T_PROFILE ? strdup(v) : unescape(v);
        if (!p->str)
            return llmfs_errorf(err, ENOMEM, "%s: out of memory", d->name);
        if (d->type == T_STRING && strchr(p->str, '\n')) { /* written as is, or as \n */
            free(p->str);
            p->str = NULL;
            return llmfs_errorf(err, EINVAL, "%s: value has a newline", d->name);
        }
        return 0;
    }
    return llmfs_errorf(err, EINVAL, "%s: unsupported type", d->name);
}

static void store_value(llmfs_settings *s, int i, parsed *p)
{
    void *f = field(s, i);
    switch (defs[i].type) {
    case T_INT:
    case T_OCTAL:
    case T_ENUM:
        *(int *)f = (int)p->i;
        break;
    case T_I64:
        *(int64_t *)f = p->i;
        break;
    case T_FLOAT:
        *(float *)f = p->f;
        break;
    case T_BOOL:
        *(bool *)f = p->b;
        break;
    case T_STRING:
    case T_TEXT:
    case T_PROFILE:
    case T_CPUS:
        free(*(char **)f);
        *(char **)f = p->str;
        p->str = NULL;
        break;
    }
}

/* ---- lifetime ---- */

void settings_init(llmfs_settings *s)
{
    pthread_once(&infos_once, infos_build);
    memset(s, 0, sizeof *s);
    for (int i = 0; i < SETTINGS_N; i++) {
        parsed p;
        if (parse_value(i, defs[i].def, &p, NULL) == 0) {
            store_value(s, i, &p);
        } else if (is_string_type(defs[i].type)) {
            *(char **)field(s, i) = strdup("");
        }
    }
}

void settings_clear(llmfs_settings *s)
{
    for (int i = 0; i < SETTINGS_N; i++)
        if (is_string_type(defs[i].type)) {
            free(*(char **)field(s, i));
            *(char **)field(s, i) = NULL;
        }
}

void settings_copy(llmfs_settings *dst, const llmfs_settings *src)
{
    memcpy(dst, src, sizeof *dst);
    for (int i = 0; i < SETTINGS_N; i++)
        if (is_string_type(defs[i].type)) {
            const char *v = *(char *const *)cfield(src, i);
            *(char **)field(dst, i) = strdup(v ? v : "");
        }
}

/* ---- setting ---- */

static int set_index(llmfs_settings *s, int i, const char *value, bool mark, llmfs_error *err);

/* Applies a preset to a copy so a bad pair leaves s unchanged. */
static int apply_profile(llmfs_settings *s, int i, const char *name, llmfs_error *err)
{
    const char *pairs = llmfs_profile(name);
    llmfs_settings tmp;
    settings_copy(&tmp, s);
    int rc = 0;
    for (const char *p = pairs; p && *p && rc == 0;) {
        while (*p == ' ')
            p++;
        const char *eq = strchr(p, '=');
        const char *sp = strchr(p, ' ');
        if (!sp)
            sp = p + strlen(p);
        if (!eq || eq > sp)
            break;
        char key[64], val[64];
        snprintf(key, sizeof key, "%.*s", (int)(eq - p), p);
        snprintf(val, sizeof val, "%.*s", (int)(sp - eq - 1), eq + 1);
        int k = settings_find(key);
        rc = k < 0 ? llmfs_errorf(err, EINVAL, "profile %s: unknown key %s", name, key)
                   : set_index(&tmp, k, val, true, err);
        p = sp;
    }
    if (rc == 0) {
        parsed pv = {.str = strdup(name)};
        if (!pv.str)
            rc = llmfs_errorf(err, ENOMEM, "profile: out of memory");
        else {
            store_value(&tmp, i, &pv);
            tmp.explicit_set[i] = 1;
        }
    }
    if (rc == 0) {
        settings_clear(s);
        *s = tmp;
    } else {
        settings_clear(&tmp);
    }
    return rc;
}

static int set_index(llmfs_settings *s, int i, const char *value, bool mark, llmfs_error *err)
{
    if (defs[i].type == T_PROFILE && *value) {
        if (!llmfs_profile(value))
            return llmfs_errorf(err, EINVAL, "profile: no profile '%s' (have %s)", value,
                                profile_choices);
        return apply_profile(s, i, value, err);
    }
    parsed p;
    int rc = parse_value(i, value, &p, err);
    if (rc < 0)
        return rc;
    store_value(s, i, &p);
    if (mark)
        s->explicit_set[i] = 1;
    return 0;
}

static int scope_check(int i, int scope_mask, llmfs_error *err)
{
    pthread_once(&infos_once, infos_build);
    if (infos[i].scope & scope_mask)
        return 0;
    const char *where = defs[i].home == LLMFS_SCOPE_DAEMON ? "daemon (root ctl)"
                        : defs[i].home == LLMFS_SCOPE_MODEL ? "model"
                                                            : "session";
    return llmfs_errorf(err, EINVAL, "%s is a %s setting and cannot be set here", defs[i].name, where);
}

int settings_set(llmfs_settings *s, int scope_mask, const char *key, const char *value,
                 llmfs_error *err)
{
    pthread_once(&infos_once, infos_build);
    int i = settings_find(key);
    if (i < 0)
        return llmfs_errorf(err, ENOENT, "unknown setting '%s'", key ? key : "");
    int rc = scope_check(i, scope_mask, err);
    if (rc < 0)
        return rc;
    return set_index(s, i, value ? value : "", true, err);
}

int settings_set_default(llmfs_settings *s, const char *key, const char *value)
{
    pthread_once(&infos_once, infos_build);
    int i = settings_find(key);
    if (i < 0)
        return -ENOENT;
    return set_index(s, i, value, false, NULL);
}

const char *settings_split_line(const char *line, char *key, size_t cap, size_t *value_len)
{
    const char *p = line;
    while (*p == ' ' || *p == '\t')
        p++;
    if (!*p || *p == '\n' || *p == '\r' || *p == '#')
        return NULL;
    const char *k = p;
    while (*p && *p != ' ' && *p != '\t' && *p != '=' && *p != '\n' && *p != '\r')
        p++;
    size_t kl = (size_t)(p - k);
    if (cap) {
        size_t n = kl < cap - 1 ? kl : cap - 1;
        memcpy(key, k, n);
        key[n] = 0;
    }
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p == '=') {
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
    }
    size_t vl = strlen(p);
    while (vl && (p[vl - 1] == '\n' || p[vl - 1] == '\r' || p[vl - 1] == ' ' || p[vl - 1] == '\t'))
        vl--;
    if (value_len)
        *value_len = vl;
    return p;
}

int settings_set_line(llmfs_settings *s, int scope_mask, const char *line, llmfs_error *err)
{
    char key[64];
    size_t vl;
    const char *v = settings_split_line(line, key, sizeof key, &vl);
    if (!v)
        return 0;
    if (memchr(v, '\n', vl))
        return llmfs_errorf(err, EINVAL, "%s: one setting per line", key);
    char *val = strndup(v, vl);
    if (!val)
        return llmfs_errorf(err, ENOMEM, "out of memory");
    int rc = settings_set(s, scope_mask, key, val, err);
    free(val);
    return rc;
}

/* ---- printing ---- */

static int value_text(const llmfs_settings *s, int i, char *buf, size_t cap)
{
    const void *f = cfield(s, i);
    switch (defs[i].type) {
    case T_INT:
        return snprintf(buf, cap, "%d", *(const int *)f);
    case T_OCTAL:
        return snprintf(buf, cap, "%04o", (unsigned)*(const int *)f);
    case T_I64:
        return snprintf(buf, cap, "%lld", (long long)*(const int64_t *)f);
    case T_FLOAT: {
        /* the shortest text that reads back as the same float (%.9g always does) */
        float x = *(const float *)f;
        char t[32];
        for (int prec = 6; prec <= 9; prec++) {
            snprintf(t, sizeof t, "%.*g", prec, (double)x);
            if (strtof(t, NULL) == x)
                break;
        }
        return snprintf(buf, cap, "%s", t);
    }
    case T_BOOL:
        return snprintf(buf, cap, "%s", *(const bool *)f ? "on" : "off");
    case T_ENUM:
        return enum_name(defs[i].choices, *(const int *)f, buf, cap);
    case T_STRING:
    case T_TEXT:
    case T_PROFILE:
    case T_CPUS: {
        const char *v = *(char *const *)f;
        return escape_to(v ? v : "", buf, cap);
    }
    }
    return snprintf(buf, cap, "?");
}

int settings_get(const llmfs_settings *s, const char *key, char *buf, size_t cap)
{
    int i = settings_find(key);
    if (i < 0)
        return -ENOENT;
    return value_text(s, i, buf, cap);
}

bool settings_is_explicit(const llmfs_settings *s, const char *key)
{
    int i = settings_find(key);
    return i >= 0 && s->explicit_set[i];
}

int settings_text(const llmfs_settings *s, int scope_mask, char *buf, size_t cap)
{
    size_t o = 0;
    for (int i = 0; i < SETTINGS_N; i++) {
        if (!(defs[i].home & scope_mask))
            continue;
        /* "key =x" would read back as x: a value that starts with '=' needs the '=' form */
        const char *sep = " ";
        if (is_string_type(defs[i].type)) {
            const char *v = *(char *const *)cfield(s, i);
            if (v && v[0] == '=')
                sep = " = ";
        }
        o += (size_t)snprintf(o < cap ? buf + o : NULL, o < cap ? cap - o : 0, "%s%s", defs[i].name, sep);
        o += (size_t)value_text(s, i, o < cap ? buf + o : NULL, o < cap ? cap - o : 0);
        o += (size_t)snprintf(o < cap ? buf + o : NULL, o < cap ? cap - o : 0, "\n");
    }
    if (cap && o >= cap)
        buf[cap - 1] = 0;
    return (int)o;
}

int settings_markdown(char *buf, size_t cap)
{
    pthread_once(&infos_once, infos_build);
    size_t o = 0;
#define OUT(...) o += (size_t)snprintf(o < cap ? buf + o : NULL, o < cap ? cap - o : 0, __VA_ARGS__)
    OUT("| setting | scope | applies | type | range | default | meaning |\n"
        "|---|---|---|---|---|---|---|\n");
    for (int i = 0; i < SETTINGS_N; i++) {
        const char *sc = defs[i].home == LLMFS_SCOPE_DAEMON ? "daemon"
                         : defs[i].home == LLMFS_SCOPE_MODEL ? "model"
                                                             : "session";
        char range[256];
        size_t r = 0;
        for (const char *c = infos[i].range; *c && r + 3 < sizeof range; c++) {
            if (*c == '|')
                range[r++] = '\\';
            range[r++] = *c;
        }
        range[r] = 0;
        OUT("| `%s` | %s | %s | %s | %s | %s | %s |\n", defs[i].name, sc, infos[i].applies, infos[i].type, range,
            defs[i].def[0] ? defs[i].def : "(empty)", defs[i].help);
    }
#undef OUT
    if (cap && o >= cap)
        buf[cap - 1] = 0;
    return (int)o;
}

int llmfs_settings_markdown(char *buf, size_t cap)
{
    return settings_markdown(buf, cap);
}
