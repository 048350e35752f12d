/* cmdline.c — argument parsing and error reporting shared by the subcommands. */
#include "cmd.h"

#include "quant.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void vreport(const char *cmd, const char *fmt, va_list ap)
{
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    /* One line, always: a reason that came from elsewhere may carry a newline. */
    for (char *p = msg; *p; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';
    fflush(stdout);
    fprintf(stderr, "llmfs: %s: %s\n", cmd, msg);
}

int cmd_usage_error(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(cmd, fmt, ap);
    va_end(ap);
    return CMD_USAGE;
}

int cmd_fail(const char *cmd, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vreport(cmd, fmt, ap);
    va_end(ap);
    return CMD_FAIL;
}

bool cmd_opt_matches(const char *names, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = names; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, name, n) == 0)
            return true;
        if (!bar)
            break;
        p = bar + 1;
    }
    return false;
}

static bool parse_onoff(const char *v, bool *out)
{
    static const char *yes[] = {"on", "1", "true", "yes"}, *no[] = {"off", "0", "false", "no"};
    for (int i = 0; i < 4; i++) {
        if (strcasecmp(v, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(v, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

static int set_value(const char *cmd, const cmd_opt *o, const char *opt, const char *v)
{
    char *end;
    errno = 0;
    switch (o->kind) {
    case OPT_STR:
        *(const char **)o->dst = v;
        return 0;
    case OPT_INT: {
        long long x = strtoll(v, &end, 10);
        if (errno || end == v || *end || x < o->lo || x > o->hi)
            return cmd_usage_error(cmd, "%s wants an integer in %.0f..%.0f, not '%s'", opt, o->lo, o->hi, v);
        *(int *)o->dst = (int)x;
        return 0;
    }
    case OPT_FLOAT: {
        double x = strtod(v, &end);
        if (errno || end == v || *end || !isfinite(x) || x < o->lo || x > o->hi)
            return cmd_usage_error(cmd, "%s wants a number in %g..%g, not '%s'", opt, o->lo, o->hi, v);
        *(double *)o->dst = x;
        return 0;
    }
    case OPT_U64: {
        if (*v == '-')
            return cmd_usage_error(cmd, "%s wants a non-negative integer, not '%s'", opt, v);
        unsigned long long x = strtoull(v, &end, 0);
        if (errno || end == v || *end)
            return cmd_usage_error(cmd, "%s wants a non-negative integer, not '%s'", opt, v);
        *(uint64_t *)o->dst = (uint64_t)x;
        return 0;
    }
    case OPT_ONOFF:
        if (!parse_onoff(v, (bool *)o->dst))
            return cmd_usage_error(cmd, "%s wants on or off, not '%s'", opt, v);
        return 0;
    case OPT_FLAG:
        *(bool *)o->dst = true;
        return 0;
    }
    return CMD_USAGE;
}

int cmd_parse(const char *cmd, int argc, char **argv, const cmd_opt *opts, int n_opts, char **pos,
              int pos_cap)
{
    int n_pos = 0;
    bool opts_done = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool is_opt = !opts_done && a[0] == '-' && a[1] != 0;
        if (is_opt && strcmp(a, "--") == 0) {
            opts_done = true;
            continue;
        }
        if (!is_opt) {
            if (n_pos >= pos_cap)
                return cmd_usage_error(cmd, "unexpected argument '%s'", a), CMD_PARSE_ERROR;
            pos[n_pos++] = argv[i];
            continue;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            return CMD_PARSE_HELP;
        /* --name=value is accepted for long options. */
        char name[64];
        const char *inline_v = NULL;
        const char *eq = a[1] == '-' ? strchr(a, '=') : NULL;
        if (eq && (size_t)(eq - a) < sizeof name) {
            memcpy(name, a, (size_t)(eq - a));
            name[eq - a] = 0;
            inline_v = eq + 1;
        } else {
            snprintf(name, sizeof name, "%s", a);
        }
        const cmd_opt *o = NULL;
        for (int k = 0; k < n_opts && !o; k++)
            if (cmd_opt_matches(opts[k].names, name))
                o = &opts[k];
        if (!o)
            return cmd_usage_error(cmd, "unknown option '%s' (see 'llmfs %s --help')", a, cmd), CMD_PARSE_ERROR;
        if (o->kind == OPT_FLAG) {
            if (inline_v)
                return cmd_usage_error(cmd, "%s takes no value", name), CMD_PARSE_ERROR;
            *(bool *)o->dst = true;
            continue;
        }
        const char *v = inline_v;
        if (!v) {
            if (i + 1 >= argc)
                return cmd_usage_error(cmd, "%s needs a value", name), CMD_PARSE_ERROR;
            v = argv[++i];
        }
        if (set_value(cmd, o, name, v))
            return CMD_PARSE_ERROR;
    }
    return n_pos;
}

int cmd_kv_type(const char *name)
{
    int t = type_from_name(name);
    return t == T_F16 || t == T_Q8_0 || t == T_Q4_0 ? t : -1;
}

char *cmd_read_file(const char *path, size_t *len)
{
    FILE *f = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        if (n + 1 >= cap) {
            char *nb = cap < ((size_t)1 << 34) ? realloc(buf, cap * 2) : NULL;
            if (!nb) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - 1 - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) {
                free(buf);
                buf = NULL;
            }
            break;
        }
    }
    if (f != stdin)
        fclose(f);
    if (!buf)
        return NULL;
    buf[n] = 0;
    if (len)
        *len = n;
    return buf;
}

void cmd_print_escaped(FILE *f, const char *s, int n)
{
    for (int i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            fputs("\\n", f);
        else if (c == '\t')
            fputs("\\t", f);
        else if (c == '\r')
            fputs("\\r", f);
        else if (c == '\\')
            fputs("\\\\", f);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\x%02x", c);
        else
            fputc(c, f);
    }
}
