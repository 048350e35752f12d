/* conf.c — the INI configuration file (see conf.h). */
#include "conf.h"

#include <errno.h>
#include <ini.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct parse_state {
    fs_conf *c;
    char dir[4096]; /* the configuration file's folder, for relative model paths */
    char msg[512];
    bool oom;
} parse_state;

static bool push_str(char ***arr, int *n, const char *s)
{
    char **a = realloc(*arr, sizeof *a * (size_t)(*n + 1));
    if (!a)
        return false;
    *arr = a;
    a[*n] = strdup(s);
    if (!a[*n])
        return false;
    (*n)++;
    return true;
}

static conf_model *model_section(parse_state *ps, const char *name)
{
    fs_conf *c = ps->c;
    for (int i = 0; i < c->n_models; i++)
        if (strcmp(c->models[i].name, name) == 0)
            return &c->models[i];
    conf_model *m = realloc(c->models, sizeof *m * (size_t)(c->n_models + 1));
    if (!m)
        return NULL;
    c->models = m;
    m = &c->models[c->n_models];
    memset(m, 0, sizeof *m);
    m->name = strdup(name);
    if (!m->name)
        return NULL;
    c->n_models++;
    return m;
}

static int on_pair(void *user, const char *section, const char *name, const char *value)
{
    parse_state *ps = user;
    fs_conf *c = ps->c;
    if (strcmp(section, "llmfs") == 0) {
        char **k = realloc(c->keys, sizeof *k * (size_t)(c->n + 1));
        if (k)
            c->keys = k;
        char **v = k ? realloc(c->values, sizeof *v * (size_t)(c->n + 1)) : NULL;
        if (v)
            c->values = v;
        if (!v || !(k[c->n] = strdup(name)) || !(v[c->n] = strdup(value))) {
            if (v)
                free(k[c->n]);
            ps->oom = true;
            return 0;
        }
        c->n++;
        return 1;
    }
    if (strncmp(section, "model ", 6) != 0 || !section[6]) {
        snprintf(ps->msg, sizeof ps->msg, "unknown section [%s] (use [llmfs] or [model NAME])",
                 section);
        return 0;
    }
    const char *mname = section + 6;
    while (*mname == ' ')
        mname++;
    conf_model *m = model_section(ps, mname);
    if (!m) {
        ps->oom = true;
        return 0;
    }
    if (strcmp(name, "path") == 0) {
        free(m->path);
        if (value[0] == '/' || strncmp(value, "http://", 7) == 0 || strncmp(value, "https://", 8) == 0) {
            m->path = strdup(value); /* absolute, or a remote model's URL */
        } else {
            size_t n = strlen(ps->dir) + strlen(value) + 2;
            m->path = malloc(n);
            if (m->path)
                snprintf(m->path, n, "%s/%s", ps->dir, value);
        }
        if (!m->path) {
            ps->oom = true;
            return 0;
        }
        return 1;
    }
    size_t n = strlen(name) + strlen(value) + 2;
    char *kv = malloc(n);
    if (!kv) {
        ps->oom = true;
        return 0;
    }
    snprintf(kv, n, "%s=%s", name, value);
    bool ok = push_str(&m->settings, &m->n_settings, kv);
    free(kv);
    if (!ok)
        ps->oom = true;
    return ok;
}

/* inih reads lines of at most 199 bytes (its INI_MAX_LINE) and takes the rest of a
 * longer one as a line of its own; say so rather than report that piece as bad. */
#define INIH_MAX_LINE 200

static int long_line(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int line = 1, len = 0, c, found = 0;
    while (!found && (c = getc(f)) != EOF) {
        if (c == '\n') {
            line++;
            len = 0;
        } else if (++len >= INIH_MAX_LINE) {
            found = line;
        }
    }
    fclose(f);
    return found;
}

int conf_load(const char *path, fs_conf *c, char *msg, size_t cap)
{
    memset(c, 0, sizeof *c);
    parse_state ps = {.c = c};
    char *abs = realpath(path, NULL);
    if (!abs) {
        int e = errno;
        snprintf(msg, cap, "%s: %s", path, strerror(e));
        return -e;
    }
    snprintf(ps.dir, sizeof ps.dir, "%s", abs);
    char *slash = strrchr(ps.dir, '/');
    if (slash)
        *(slash == ps.dir ? slash + 1 : slash) = '\0';
    int line = long_line(abs);
    if (line > 0) {
        free(abs);
        snprintf(msg, cap, "%s:%d: line longer than %d bytes", path, line, INIH_MAX_LINE - 1);
        return -EINVAL;
    }
    line = ini_parse(abs, on_pair, &ps);
    free(abs);
    int rc = 0;
    if (line == -1) {
        rc = errno ? -errno : -EIO;
        snprintf(msg, cap, "%s: %s", path, strerror(-rc));
    } else if (line == -2 || ps.oom) {
        rc = -ENOMEM;
        snprintf(msg, cap, "%s: out of memory", path);
    } else if (line > 0) {
        rc = -EINVAL;
        snprintf(msg, cap, "%s:%d: %s", path, line,
                 ps.msg[0] ? ps.msg : "not a section, a key = value line or a comment");
    }
    for (int i = 0; rc == 0 && i < c->n_models; i++)
        if (!c->models[i].path) {
            rc = -EINVAL;
            snprintf(msg, cap, "%s: [model %s] has no path", path, c->models[i].name);
        }
    if (rc < 0)
        conf_free(c);
    return rc;
}

const char *conf_get(const fs_conf *c, const char *key)
{
    for (int i = c->n - 1; i >= 0; i--)
        if (strcmp(c->keys[i], key) == 0)
            return c->values[i];
    return NULL;
}

void conf_free(fs_conf *c)
{
    for (int i = 0; i < c->n; i++) {
        free(c->keys[i]);
        free(c->values[i]);
    }
    free(c->keys);
    free(c->values);
    for (int i = 0; i < c->n_models; i++) {
        conf_model *m = &c->models[i];
        for (int j = 0; j < m->n_settings; j++)
            free(m->settings[j]);
        free(m->settings);
        free(m->name);
        free(m->path);
    }
    free(c->models);
    memset(c, 0, sizeof *c);
}
