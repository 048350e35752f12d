/* idle.c — closing idle sessions and unloading idle models (see idle.h). */
#include "idle.h"

#include "models.h"

#include <stdlib.h>

#define MAX_SESSIONS 4096

/* A model's whole-second setting (idle_unload, session_idle); 0 if it cannot be read. */
static long model_seconds(llmfs_model *m, const char *key)
{
    char v[32];
    int n = llmfs_model_setting(m, key, v, sizeof v);
    return n > 0 && (size_t)n < sizeof v ? strtol(v, NULL, 10) : 0;
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
        long unload_after = model_seconds(m, "idle_unload");
        long close_after = model_seconds(m, "session_idle");
        if (close_after > 0)
            close_idle_sessions(m, close_after);
        if (unload_after > 0 && llmfs_model_idle_seconds(m) >= (double)unload_after)
            llmfs_model_unload(lf, llmfs_model_name(m), NULL);
    }
    models_put(models, n);
}
