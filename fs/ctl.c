/* ctl.c — ctl lines for the root, models and sessions (see ctl.h). */
#include "ctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_WORDS 256

static const char *const root_files[] = {"ctl", "models", "stats", "metrics", "error"};
static const char *const profile_names[] = {"text-12gb", "text-24gb", "vision-12gb", "mtp"};

bool ctl_model_name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > 63 || name[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == '-';
        if (!ok)
            return false;
    }
    for (size_t i = 0; i < sizeof root_files / sizeof root_files[0]; i++)
        if (strcmp(name, root_files[i]) == 0)
            return false;
    return true;
}

/* Splits a line into words at blanks; "double quotes" group, and inside them \" and \\
 * stand for themselves. Words are written into `store` (at least strlen(line)+1 bytes).
 * Returns the count, or -EINVAL for an unterminated quote or too many words. */
static int split_words(const char *line, char *store, char **words, int cap)
{
    int n = 0;
    const char *p = line;
    char *o = store;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            return n;
        if (n == cap)
            return -EINVAL;
        words[n++] = o;
        bool quoted = false;
        for (; *p && (quoted || (*p != ' ' && *p != '\t')); p++) {
            if (*p == '"') {
                quoted = !quoted;
            } else if (quoted && *p == '\\' && (p[1] == '"' || p[1] == '\\')) {
                *o++ = *++p;
            } else {
                *o++ = *p;
            }
        }
        if (quoted)
            return -EINVAL;
        *o++ = '\0';
    }
}

int ctl_load(llmfs *lf, const char *name, const char *path, const char *const *settings,
             int n_settings, llmfs_error *err)
{
    if (!ctl_model_name_ok(name))
        return llmfs_errorf(err, EINVAL,
                            "load: bad model name '%s' (1-63 of A-Z a-z 0-9 . _ -, not "
                            "starting with '.', not a root file name)",
                            name);
    if (path[0] != '/')
        return llmfs_errorf(err, EINVAL, "load %s: the path must be absolute: %s", name, path);
    for (int i = 0; i < n_settings; i++)
        if (!strchr(settings[i], '='))
            return llmfs_errorf(err, EINVAL, "load %s: setting '%s' is not key=value", name,
                                settings[i]);
    return llmfs_model_load(lf, name, path, settings, n_settings, err);
}

static int root_command(const ctl_target *t, const char *line, llmfs_error *err)
{
    size_t len = strlen(line);
    char *store = malloc(len + 1);
    char **words = malloc(sizeof *words * MAX_WORDS);
    int rc;
    if (!store || !words) {
        rc = llmfs_errorf(err, ENOMEM, "out of memory");
        goto out;
    }
    int n = split_words(line, store, words, MAX_WORDS);
    if (n < 0) {
        rc = llmfs_errorf(err, EINVAL, "unterminated quote or too many words: %s", line);
        goto out;
    }
    if (strcmp(words[0], "load") == 0) {
        if (n < 3)
            rc = llmfs_errorf(err, EINVAL, "usage: load NAME PATH [key=value ...]");
        else
            rc = ctl_load(t->lf, words[1], words[2], (const char *const *)words + 3, n - 3, err);
    } else {
        if (n != 2)
            rc = llmfs_errorf(err, EINVAL, "usage: unload NAME");
        else
            rc = llmfs_model_unload(t->lf, words[1], err);
    }
out:
    free(store);
    free(words);
    return rc;
}

/* A daemon-wide default. Daemon-only settings (model_dirs, modes, limits) are for the
 * configuration file and the command line: a writer of the mounted ctl must not widen
 * where models may be loaded from. */
static int root_setting(const ctl_target *t, const char *key, const char *value,
                        llmfs_error *err)
{
    const llmfs_setting_info *table;
    int n = llmfs_settings_table(&table);
    for (int i = 0; i < n; i++)
        if (strcmp(table[i].name, key) == 0 && table[i].scope == LLMFS_SCOPE_DAEMON &&
            !t->trusted)
            return llmfs_errorf(err, EPERM,
                                "%s is a daemon setting: set it in the configuration file "
                                "or on the command line",
                                key);
    return llmfs_set(t->lf, key, value, err);
}

int ctl_line(const ctl_target *t, const char *line, llmfs_error *err)
{
    while (*line == ' ' || *line == '\t')
        line++;
    size_t len = strlen(line);
    while (len && (line[len - 1] == ' ' || line[len - 1] == '\t' || line[len - 1] == '\r'))
        len--;
    if (len == 0 || line[0] == '#')
        return 0;
    char *l = strndup(line, len);
    if (!l)
        return llmfs_errorf(err, ENOMEM, "out of memory");
    int rc;
    if (t->kind == CTL_MODEL && strcmp(l, "reset") == 0) {
        /* The model folder's prompt and output are its default session's. */
        rc = llmfs_session_ctl(t->s, l, err);
    } else if (t->kind == CTL_MODEL) {
        rc = llmfs_model_ctl(t->m, l, err);
    } else if (t->kind == CTL_SESSION) {
        rc = llmfs_session_ctl(t->s, l, err);
    } else {
        size_t klen = strcspn(l, " \t");
        if ((klen == 4 && strncmp(l, "load", 4) == 0) ||
            (klen == 6 && strncmp(l, "unload", 6) == 0)) {
            rc = root_command(t, l, err);
        } else {
            char *value = l + klen;
            if (*value)
                *value++ = '\0';
            while (*value == ' ' || *value == '\t')
                value++;
            rc = root_setting(t, l, value, err);
        }
    }
    free(l);
    return rc;
}

int ctl_set(const ctl_target *t, const char *key, const char *value, llmfs_error *err)
{
    size_t n = strlen(key) + strlen(value) + 2;
    char *line = malloc(n);
    if (!line)
        return llmfs_errorf(err, ENOMEM, "out of memory");
    snprintf(line, n, "%s %s", key, value);
    int rc = ctl_line(t, line, err);
    free(line);
    return rc;
}

int ctl_write(const ctl_target *t, const char *buf, size_t len, size_t max_line,
              llmfs_error *err)
{
    if (memchr(buf, '\0', len))
        return llmfs_errorf(err, EINVAL, "ctl lines are text: the write holds a NUL byte");
    size_t i = 0;
    while (i < len) {
        const char *nl = memchr(buf + i, '\n', len - i);
        size_t n = nl ? (size_t)(nl - (buf + i)) : len - i;
        if (n > max_line)
            return llmfs_errorf(err, E2BIG, "ctl line of %zu bytes is longer than max_ctl_line %zu",
                                n, max_line);
        char *line = strndup(buf + i, n);
        if (!line)
            return llmfs_errorf(err, ENOMEM, "out of memory");
        int rc = ctl_line(t, line, err);
        free(line);
        if (rc < 0)
            return rc;
        i += n + (nl != NULL);
    }
    return 0;
}

static void put_quoted(fs_text *out, const char *s)
{
    if (s[strcspn(s, " \t\"\\")] == '\0') {
        text_puts(out, s);
        return;
    }
    text_puts(out, "\"");
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            text_puts(out, "\\");
        text_put(out, s, 1);
    }
    text_puts(out, "\"");
}

int ctl_root_text(llmfs *lf, fs_text *out)
{
    char *names[256];
    int n = llmfs_model_names(lf, names, 256);
    if (n > 256)
        n = 256;
    for (int i = 0; i < n; i++) {
        llmfs_model *m = llmfs_model_get(lf, names[i]);
        if (m) {
            llmfs_model_info info;
            llmfs_model_info_get(m, &info);
            text_printf(out, "load %s ", names[i]);
            put_quoted(out, info.path);
            text_puts(out, "\n");
            llmfs_model_put(m);
        }
        free(names[i]);
    }
    if (n == 0) {
        char dirs[4096] = "";
        llmfs_get(lf, "model_dirs", dirs, sizeof dirs);
        text_puts(out, "# No model is loaded. To load one, write to this file:\n"
                       "#   load NAME /path/to/model.gguf [key=value ...]\n");
        text_printf(out, "# Models may be loaded from: %s\n",
                    dirs[0] ? dirs : "any folder (model_dirs is empty)");
        text_puts(out, "# Presets:");
        for (size_t i = 0; i < sizeof profile_names / sizeof profile_names[0]; i++)
            if (llmfs_profile(profile_names[i]))
                text_printf(out, " profile=%s", profile_names[i]);
        text_puts(out, "\n# Then: echo hello > NAME/prompt; cat NAME/output\n");
    }
    return text_finish(out);
}
