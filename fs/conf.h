/* conf.h — the configuration file (INI, read with inih).
 *
 *   [llmfs]          daemon settings and defaults: mountpoint, model_dirs, limits, temp, ...
 *   [model NAME]     path = FILE (relative to the configuration file's folder) or a remote
 *                    model's URL (then model = ID, api_key_file = PATH), then any model
 *                    or session setting, profile = NAME included
 *
 * Reading only collects the pairs; they are applied through ctl.h like every other
 * setting, so a key means the same here as in a ctl file.
 */
#ifndef LLMFS_FS_CONF_H
#define LLMFS_FS_CONF_H

#include <stddef.h>

typedef struct conf_model {
    char *name;
    char *path;
    char **settings; /* "key=value" */
    int n_settings;
} conf_model;

typedef struct fs_conf {
    char **keys, **values; /* [llmfs], in file order */
    int n;
    conf_model *models;
    int n_models;
} fs_conf;

/* Reads path into c (zeroed first). 0, or a negative errno with the reason in msg. */
int conf_load(const char *path, fs_conf *c, char *msg, size_t cap);
/* The last value of an [llmfs] key, NULL if absent. */
const char *conf_get(const fs_conf *c, const char *key);
void conf_free(fs_conf *c);

#endif
