/* cmd_fit.c — `llmfs fit`: the placement fit would choose, from the tensor table alone.
 *
 * The model is opened (mapped) but not loaded: nothing is read past the header, no
 * backend starts, so this answers in milliseconds even for models larger than RAM. */
#include "fit.h"
#include "quant.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MiB (1024.0 * 1024.0)

static void usage(FILE *f)
{
    fprintf(f, "usage: llmfs fit -m MODEL [--fit-ctx N] [--fit-target MiB] [--vram-limit MiB]\n"
               "                 [-ctk TYPE] [-ctv TYPE] [-ub N] [--fa on|off] [--override-tensor SPEC]\n"
               "                 [--offload-batch N] [-md DRAFT [-ctkd TYPE] [-ctvd TYPE]]\n"
               "  -md DRAFT  a draft model for speculative decoding, on the GPU with the target:\n"
               "             its weights and its KV cache (-ctkd/-ctvd, default f16) are counted first\n");
}

static int parse_long(const char *s, long lo, long hi, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

int cmd_fit(int argc, char **argv)
{
    const char *path = NULL, *ovr = NULL, *ctk = "f16", *ctv = "f16", *draft = NULL, *ctkd = "f16", *ctvd = "f16";
    long fit_ctx = 4096, target = 1024, vram_limit = -1, ubatch = 512, offload_batch = -1;
    bool flash = true;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long *num = NULL;
        long lo = 0, hi = 0;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return 0;
        }
        if (!v) {
            fprintf(stderr, "llmfs fit: %s needs a value\n", a);
            return 2;
        }
        if (strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0)
            path = v;
        else if (strcmp(a, "--fit-ctx") == 0)
            num = &fit_ctx, lo = 1, hi = 1 << 24;
        else if (strcmp(a, "--fit-target") == 0)
            num = &target, lo = 0, hi = 1 << 24;
        else if (strcmp(a, "--vram-limit") == 0)
            num = &vram_limit, lo = 0, hi = 1 << 26;
        else if (strcmp(a, "-ub") == 0 || strcmp(a, "--ubatch") == 0)
            num = &ubatch, lo = 1, hi = 1 << 16;
        else if (strcmp(a, "-ob") == 0 || strcmp(a, "--offload-batch") == 0)
            num = &offload_batch, lo = -1, hi = 1 << 20;
        else if (strcmp(a, "-md") == 0 || strcmp(a, "--model-draft") == 0)
            draft = v;
        else if (strcmp(a, "-ctkd") == 0)
            ctkd = v;
        else if (strcmp(a, "-ctvd") == 0)
            ctvd = v;
        else if (strcmp(a, "-ctk") == 0)
            ctk = v;
        else if (strcmp(a, "-ctv") == 0)
            ctv = v;
        else if (strcmp(a, "--override-tensor") == 0 || strcmp(a, "-ot") == 0)
            ovr = v;
        else if (strcmp(a, "--fa") == 0) {
            if (strcmp(v, "on") && strcmp(v, "off")) {
                fprintf(stderr, "llmfs fit: --fa takes on or off\n");
                return 2;
            }
            flash = strcmp(v, "on") == 0;
        } else {
            fprintf(stderr, "llmfs fit: unknown option '%s'\n", a);
            usage(stderr);
            return 2;
        }
        if (num && parse_long(v, lo, hi, num) < 0) {
            fprintf(stderr, "llmfs fit: %s: '%s' is not a number in %ld..%ld\n", a, v, lo, hi);
            return 2;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    if (draft && access(draft, R_OK) != 0) {
        fprintf(stderr, "llmfs fit: %s: %s\n", draft, strerror(errno));
        return 1;
    }
    const char *names[4] = {ctk, ctv, ctkd, ctvd};
    int types[4];
    for (int i = 0; i < 4; i++) {
        types[i] = type_from_name(names[i]);
        if (types[i] < 0 || !type_info(types[i])) {
            fprintf(stderr, "llmfs fit: unknown KV cache type '%s'\n", names[i]);
            return 2;
        }
    }
    int tk = types[0], tv = types[1];

    fit_input in = {
        .path = path, .ctx = (int)fit_ctx, .parallel = 1, .fit_ctx = (int)fit_ctx, .ubatch = (int)ubatch,
        .type_k = tk, .type_v = tv, .flash = flash, .override_tensor = ovr, .offload_batch = (int)offload_batch,
        .fit_target = (uint64_t)target * 1024 * 1024,
        .draft_path = draft, .draft_type_k = types[2], .draft_type_v = types[3],
    };
    const char *vram_src = "limit";
    if (vram_limit >= 0) {
        in.vram_free = (uint64_t)vram_limit * 1024 * 1024;
    } else {
        llmfs_gpu_info g[1];
        vram_src = "free on GPU 0";
        in.vram_free = llmfs_gpus(g, 1) > 0 ? g[0].vram_free : 0;
    }
    fit_output out;
    llmfs_error err = {0};
    if (fit_plan(&in, &out, &err) < 0) {
        fprintf(stderr, "llmfs fit: %s\n", err.msg);
        return 1;
    }
    printf("model      %s\n", path);
    printf("vram       %.0f MiB (%s)\n", in.vram_free / MiB, vram_src);
    printf("kv         %ld cells, %s/%s; ubatch %ld, flash attention %s\n", fit_ctx, ctk, ctv, ubatch,
           flash ? "on" : "off");
    if (draft)
        printf("draft      %s, KV %s/%s\n", draft, ctkd, ctvd);
    printf("%s\n", out.text);
    printf("settings   ngl=%d n_cpu_moe=%d ctx=%d%s%s\n", out.ngl, out.n_cpu_moe, out.ctx,
           ovr ? " override_tensor=" : "", ovr ? ovr : "");
    return 0;
}
