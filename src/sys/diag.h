/* diag.h — diagnostics of the machine and of the loaded models.
 *
 * Two products. The checks (diag_text): one line per check and instance,
 *     CHECK VALUE EXPECTED VERDICT [# reason or what to do]
 * with VERDICT ok, warn or unknown, every field one word; they read the machine's files
 * (/proc, /sys, /run, /var/lib through sysroot.h) and the GPU through the device registry,
 * never by running a program. The warnings (diag_model_warnings): the known ways a model
 * runs badly or fails with the settings it has, each a sentence that names the setting to
 * change; they appear in the model's stats and error and as "warning" lines of the checks.
 *
 * The warning rules are a pure function of a facts struct, so tests can state a machine
 * (a GPU with little free memory, say) that the test host lacks.
 */
#ifndef LLMFS_DIAG_H
#define LLMFS_DIAG_H

#include "cpuset.h"
#include "llmfs.h"

#include <stdbool.h>
#include <stdint.h>

/* What the warning rules look at, for one model. */
typedef struct diag_model_facts {
    char profile[32];
    int parallel, ctx, n_ctx_train;
    char cache_k[8], cache_v[8];
    bool fit, mmap;
    int fit_target;                /* MiB */
    uint64_t weights_cpu, weights_gpu, kv_bytes;
    uint64_t mem_available, rss;   /* bytes; mem_available 0: unknown */
    int n_gpus;
    uint64_t vram_free;            /* bytes, of the least free GPU the model uses */
    bool hybrid;
    cpu_list e_cores;
    cpu_list cpus;                 /* where the threads run; empty: anywhere */
    int64_t swap_gen_delta;        /* pages during the last generation; -1 none yet */
    bool vision;                   /* a vision projector runs on the GPU (mmproj, mmproj_offload) */
    char projector_cpu[192];       /* why a projector meant for the GPU runs on the CPU; "" */
    bool spec_mtp;                 /* speculative decoding with the model's MTP head (spec_type mtp) */
} diag_model_facts;

enum { DIAG_WARN_LEN = 320, DIAG_MAX_WARNINGS = 8 };
enum { DIAG_HEADROOM_MIB = 512, DIAG_VISION_TARGET_MIB = 2048 };

/* The warnings these facts call for, each one line without a newline. Returns the
 * count (at most cap filled). */
int diag_model_warnings(const diag_model_facts *f, char (*out)[DIAG_WARN_LEN], int cap);

/* The facts of a loaded model (takes its lock). */
void diag_model_facts_get(llmfs_model *m, diag_model_facts *f);

/* The checks as text (malloc'd, NULL only without memory); lf may be NULL (no daemon:
 * no models, no mount-time counters). */
char *diag_text(llmfs *lf);

#endif
