/* ctl.c — ctl lines for the root, models and sessions (see ctl.h). */
#include "ctl.h"

#include "dirtab.h"
#include "models.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const profile_names[] = {"text-12gb", "text-24gb", "vision-12gb", "mtp"};

bool ctl_model_name_ok(const char *name)
{
    /* The core's rule, and a folder must not hide a file of the root. */
    return llmfs_model_name_valid(name) && dirtab_find(DIR_ROOT, name) == 0;
}

/* Names that would hide a root file are refused. A relative path must name a file
 * inside a model_dirs folder (as the `available` file lists them; the core resolves it
 * there), never one relative to the daemon's working folder (it runs in /, so that would
 * not mean what its writer meant). */
static int load_policy(llmfs *lf, const char *name, const char *path, llmfs_error *err)
{
    if (!ctl_model_name_ok(name))
        return llmfs_errorf(err, EINVAL,
                            "load: bad model name '%s' (1-63 of A-Z a-z 0-9 . _ - +, not "
                            "starting with '.', not a root file name)",
                            name);
    if (path[0] == '/' || strncmp(path, "http://", 7) == 0 || strncmp(path, "https://", 8) == 0)
        return 0; /* a file, or a remote model (the core checks remote_hosts) */
    char resolved[4096];
    llmfs_error e = {0};
    int rc = llmfs_model_file_resolve(lf, path, resolved, sizeof resolved, &e);
    return rc < 0 ? llmfs_errorf(err, -rc, "load %s: %s", name, e.msg) : 0;
}

int ctl_load(llmfs *lf, const char *name, const char *path, const char *const *settings,
             int n_settings, llmfs_error *err)
{
    int rc = load_policy(lf, name, path, err);
    return rc < 0 ? rc : llmfs_model_load(lf, name, path, settings, n_settings, err);
}

/* The n-th blank-separated word of line into buf ("" if there are fewer). */
static void nth_word(const char *line, int n, char *buf, size_t cap)
{
    const char *p = line;
    for (int i = 0;; i++) {
        p += strspn(p, " \t");
        size_t len = strcspn(p, " \t");
        if (i == n || len == 0) {
            snprintf(buf, cap, "%.*s", (int)len, p);
            return;
        }
        p += len;
    }
}

/* What the file server checks before a root line reaches the core (llmfs_ctl): the
 * load policy above, and that the mounted ctl file does not set daemon-only settings
 * (model_dirs, modes, limits), which its writer must not be able to widen. */
static int root_policy(const ctl_target *t, const char *line, llmfs_error *err)
{
    char key[64], name[128], path[PATH_MAX];
    size_t klen = strcspn(line, " \t=");
    snprintf(key, sizeof key, "%.*s", (int)klen, line);
    if (strcmp(key, "load") == 0) {
        nth_word(line, 1, name, sizeof name);
        nth_word(line, 2, path, sizeof path);
        /* An incomplete line gets the core's usage message. */
        return name[0] && path[0] ? load_policy(t->lf, name, path, err) : 0;
    }
    if (t->trusted || strcmp(key, "unload") == 0)
        return 0;
    const llmfs_setting_info *si = llmfs_setting_find(key);
    if (si && si->scope == LLMFS_SCOPE_DAEMON)
        return llmfs_errorf(err, EPERM,
                            "%s is a daemon setting: set it in the configuration file "
                            "or on the command line", key);
    return 0;
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
        rc = root_policy(t, l, err);
        if (rc == 0)
            rc = llmfs_ctl(t->lf, l, err);
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
    llmfs_model *models[MODELS_MAX];
    int n = models_get(lf, models);
    if (n < 0)
        return n;
    for (int i = 0; i < n; i++) {
        llmfs_model_info info;
        llmfs_model_info_get(models[i], &info);
        text_printf(out, "load %s ", llmfs_model_name(models[i]));
        put_quoted(out, info.path);
        text_puts(out, "\n");
    }
    models_put(models, n);
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
