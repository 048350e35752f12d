/* models.c — the loaded models as references (see models.h). */
#include "models.h"

#include <stdlib.h>

int models_get(llmfs *lf, llmfs_model **models)
{
    char *names[MODELS_MAX];
    int n = llmfs_model_names(lf, names, MODELS_MAX);
    if (n < 0)
        return n;
    if (n > MODELS_MAX)
        n = MODELS_MAX;
    int k = 0;
    for (int i = 0; i < n; i++) {
        llmfs_model *m = llmfs_model_get(lf, names[i]);
        if (m) /* unloaded since the names were taken */
            models[k++] = m;
        free(names[i]);
    }
    return k;
}

void models_put(llmfs_model **models, int n)
{
    for (int i = 0; i < n; i++)
        llmfs_model_put(models[i]);
}
