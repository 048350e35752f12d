/* idle.c — closing idle sessions and unloading idle models (see idle.h). */
#include "idle.h"

#include "models.h"
#include "text.h"

#include <stdlib.h>
#include <string.h>

#define MAX_SESSIONS 4096

static int model_settings_fill(void *m, char *buf, size_t cap)
{
    return llmfs_model_settings_text(m, buf, cap);
}

/* The value of a `key value` line in a settings text, 0 if absent. */
static long setting_long(const char *text, const char *key)
{
    size_t klen = strlen(key);
    for (const char *p = text; *p;) {
        if (strncmp(p, key, klen) == 0 && p[klen] == ' ')
            return strtol(p + klen + 1, NULL, 10);
        const char *nl = strchr(p, '\n');
        if (!nl)
            break;
        p = nl + 1;
    }
    return 0;
}

static void close_idle_sessions(llmfs_model *m, long limit)
{
    int *ids = malloc(sizeof *ids * MAX_SESSIONS);
    if (!ids)
        return;
    int n = llmfs_session_ids(m, ids, MAX_SESSIONS);
    for (int i = 0; i < n && i < MAX_SESSIONS; i++) {
        llmfs_session *s = llmfs_session_get(m, ids[i]);
        if (!s)
            continue;
        if (llmfs_session_idle_seconds(s) >= (double)limit)
            llmfs_session_ctl(s, "close", NULL);
        llmfs_session_put(s);
    }
    free(ids);
}

void idle_check(llmfs *lf)
{
    llmfs_model *models[MODELS_MAX];
    int n = models_get(lf, models);
    for (int i = 0; i < n; i++) {
        llmfs_model *m = models[i];
        fs_text t = {0};
        text_fill(&t, model_settings_fill, m);
        long unload_after = t.buf ? setting_long(t.buf, "idle_unload") : 0;
        long close_after = t.buf ? setting_long(t.buf, "session_idle") : 0;
        text_free(&t);
        if (close_after > 0)
            close_idle_sessions(m, close_after);
        if (unload_after > 0 && llmfs_model_idle_seconds(m) >= (double)unload_after)
            llmfs_model_unload(lf, llmfs_model_name(m), NULL);
    }
    models_put(models, n);
}
