/* mtp_gemma_check.h — the gemma4 mtp-* fixture cases (a gemma4 target and its
 * gemma4-assistant drafter) and the checks the CPU and GPU tests share; each fails the
 * running Check test. */
#ifndef LLMFS_TEST_MTP_GEMMA_CHECK_H
#define LLMFS_TEST_MTP_GEMMA_CHECK_H

#include "testutil.h"

#include "gemma4assistant.h"
#include "model.h"

#include <stdbool.h>
#include <stdint.h>

typedef struct mtp_case {
    char dir[1600], name[600];   /* the case's folder, "model/case" */
    char target[1024], drafter[1024]; /* model files: meta.txt's model and spec_draft_model */
} mtp_case;

/* Every gemma4 mtp-* case under <shared>/fixtures that names a drafter, by name; at most
 * cap. Returns the count. */
int mtp_gemma_cases(mtp_case *cases, int cap);

/* The models with ngl layers on the GPU (0: the CPU; the drafter goes whole). */
model *mtp_gemma_load_target(const char *path, int ngl);
gemma4_assistant *mtp_gemma_load_drafter(const char *path, const model *target, int ngl);
/* The largest logit's id (lowest on ties). */
int32_t mtp_gemma_argmax(const float *x, int n);

/* The teacher-forced rows with the target's K and V cached as type_kv (llama.cpp's are
 * f16; a q8_0 cache stays within the same tolerance), both models on the flash or the
 * plain attention path (llama.cpp's: plain): returns the largest relative RMS error;
 * out (NULL: not wanted) gets the rows' logits [*n_out][n_vocab], malloc'd. */
double mtp_gemma_check_rows(const mtp_case *k, int ngl, int type_kv, bool flash, float **out, int *n_out);
/* The server flow, forced then free-running; rings: the target's sliding-window layers
 * in rings of 4 cells beyond the window (the prompt alone wraps them). */
void mtp_gemma_check_flow(const mtp_case *k, int ngl, bool rings);

#endif
