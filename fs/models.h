/* models.h — the loaded models, as references (for listings, renders and timers). */
#ifndef LLMFS_FS_MODELS_H
#define LLMFS_FS_MODELS_H

#include "llmfs.h"

#define MODELS_MAX 256

/* Fills models with a new reference to each loaded model (at most MODELS_MAX), in the
 * core's order; returns the count, or -ENOMEM. */
int models_get(llmfs *lf, llmfs_model **models);
void models_put(llmfs_model **models, int n);

#endif
