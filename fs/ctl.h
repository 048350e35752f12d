/* ctl.h — ctl lines: the one path by which the root ctl, a model's ctl, a session's
 * ctl, the configuration file and the command line change settings or run commands.
 *
 * Root lines: `load NAME PATH [key=value ...]`, `unload NAME`, or `key value` for a
 * default that later models and sessions inherit. Model and session lines go to the
 * core as they are (settings and commands: temp 0.7, stop, reset, close, ...), except
 * that `reset` in a model's ctl resets its default session (whose prompt and output
 * the model folder shows). Empty lines and lines starting with '#' are ignored.
 */
#ifndef LLMFS_FS_CTL_H
#define LLMFS_FS_CTL_H

#include "llmfs.h"
#include "text.h"

#include <stdbool.h>
#include <stddef.h>

enum ctl_kind { CTL_ROOT, CTL_MODEL, CTL_SESSION };

typedef struct ctl_target {
    int kind;
    llmfs *lf;
    llmfs_model *m;    /* CTL_MODEL */
    llmfs_session *s;  /* CTL_SESSION, and CTL_MODEL's default session (for reset) */
    /* The configuration file and the command line may set daemon settings (model_dirs,
     * modes, limits); the mounted ctl file may not. */
    bool trusted;
} ctl_target;

/* Applies each line of buf (a write to a ctl file) in order and stops at the first that
 * fails; lines before it have taken effect. A line longer than max_line fails with
 * -E2BIG, a NUL byte with -EINVAL. */
int ctl_write(const ctl_target *t, const char *buf, size_t len, size_t max_line,
              llmfs_error *err);
/* One line (without its newline). */
int ctl_line(const ctl_target *t, const char *line, llmfs_error *err);
/* "key value" given apart (configuration file, command line): same as ctl_line. */
int ctl_set(const ctl_target *t, const char *key, const char *value, llmfs_error *err);

/* Loads a model after checking its name (the root ctl's `load` and the configuration
 * file's [model NAME] sections both end here). settings: "key=value" strings. */
int ctl_load(llmfs *lf, const char *name, const char *path, const char *const *settings,
             int n_settings, llmfs_error *err);
/* Whether NAME may name a model folder: a name the core accepts
 * (llmfs_model_name_valid) that is not the name of a file in the root folder. */
bool ctl_model_name_ok(const char *name);

/* What reading the root ctl returns: a `load` line per model (so the text can be
 * written back), or how to load a model when none is loaded. */
int ctl_root_text(llmfs *lf, fs_text *out);

#endif
