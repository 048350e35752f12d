/* cmd_fit.c — `llmfs fit`: the placement fit would choose, from the tensor table alone.
 *
 * The model is opened (mapped) but not loaded: nothing is read past the header, no
 * backend starts, so this answers in milliseconds even for models larger than RAM. */
#include "gguf.h"
#include "placement.h"
#include "quant.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MiB (1024.0 * 1024.0)

static void usage(FILE *f)
{
    fprintf(f, "usage: llmfs fit -m MODEL [--fit-ctx N] [--fit-target MiB] [--vram-limit MiB]\n"
               "                 [-ctk TYPE] [-ctv TYPE] [-ub N] [--fa on|off] [--override-tensor SPEC]\n");
}

static uint32_t arch_u32(const gguf_file *f, const char *arch, const char *suffix, uint32_t def)
{
    char key[128];
    uint32_t v;
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_get_u32(f, key, &v) ? v : def;
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
    const char *path = NULL, *ovr = NULL, *ctk = "f16", *ctv = "f16";
    long fit_ctx = 4096, target = 1024, vram_limit = -1, ubatch = 512;
    bool flash = true;
    for (int i = 1; i < argc; i++) {
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
        i++;
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    int tk = type_from_name(ctk), tv = type_from_name(ctv);
    if (tk < 0 || tv < 0 || !type_info(tk) || !type_info(tv)) {
        fprintf(stderr, "llmfs fit: unknown KV cache type '%s'\n", tk < 0 ? ctk : ctv);
        return 2;
    }

    llmfs_error err = {0};
    gguf_open_opts oo = {0};
    gguf_file *f = gguf_open(path, &oo, &err);
    if (!f) {
        fprintf(stderr, "llmfs fit: %s\n", err.msg);
        return 1;
    }
    const char *arch = gguf_get_str(f, "general.architecture", NULL);
    if (!arch) {
        fprintf(stderr, "llmfs fit: %s: no general.architecture\n", path);
        gguf_close(f);
        return 1;
    }
    int n_layer = (int)arch_u32(f, arch, "block_count", 0);
    int n_embd = (int)arch_u32(f, arch, "embedding_length", 0);
    int n_head = (int)arch_u32(f, arch, "attention.head_count", 1);
    int n_head_kv = (int)arch_u32(f, arch, "attention.head_count_kv", (uint32_t)n_head);
    int head_dim = (int)arch_u32(f, arch, "attention.key_length", n_head ? (uint32_t)(n_embd / n_head) : 0);
    int n_ff = (int)arch_u32(f, arch, "feed_forward_length", 0);
    int n_ff_exp = (int)arch_u32(f, arch, "expert_feed_forward_length", 0);
    int n_used = (int)arch_u32(f, arch, "expert_used_count", 0);
    uint64_t n_vocab = gguf_kv_arr_n(f, gguf_find_key(f, "tokenizer.ggml.tokens"));
    if (n_layer <= 0 || n_embd <= 0) {
        fprintf(stderr, "llmfs fit: %s: missing %s.block_count or embedding_length\n", path, arch);
        gguf_close(f);
        return 1;
    }

    int n = gguf_n_tensors(f);
    place_tensor *t = calloc((size_t)n, sizeof *t);
    uint64_t file_bytes = 0;
    for (int i = 0; i < n; i++) {
        const gguf_tensor *g = gguf_tensor_at(f, i);
        t[i].name = g->name;
        t[i].bytes = g->size;
        file_bytes += g->size;
    }
    /* K and V rows of n_head_kv*head_dim elements for fit_ctx cells */
    uint64_t kv_per_layer = (uint64_t)fit_ctx * (type_row_bytes(tk, (int64_t)n_head_kv * head_dim) +
                                                 type_row_bytes(tv, (int64_t)n_head_kv * head_dim));
    int ff = n_ff ? n_ff : n_ff_exp * (n_used ? n_used : 1);
    place_opts po = {
        .n_layer = n_layer,
        .override_tensor = ovr,
        .fit = true,
        .fit_target = (uint64_t)target * 1024 * 1024,
        .kv_bytes_per_layer = kv_per_layer,
        .compute_bytes = place_compute_bytes(n_embd, ff, n_head, head_dim, (int)n_vocab, (int)ubatch,
                                             (int)fit_ctx, flash),
    };
    const char *vram_src = "limit";
    if (vram_limit >= 0) {
        po.vram_free = (uint64_t)vram_limit * 1024 * 1024;
    } else {
        llmfs_gpu_info g[1];
        vram_src = "free on GPU 0";
        po.vram_free = llmfs_gpus(g, 1) > 0 ? g[0].vram_free : 0;
    }
    place_result r;
    int rc = place_decide(t, n, &po, &r, &err);
    if (rc < 0) {
        fprintf(stderr, "llmfs fit: %s\n", err.msg);
        free(t);
        gguf_close(f);
        return 1;
    }
    printf("model      %s (%s, %d layers, %.0f MiB of weights)\n", path, arch, n_layer, file_bytes / MiB);
    printf("vram       %.0f MiB (%s)\n", po.vram_free / MiB, vram_src);
    printf("kv         %ld cells, %s/%s: %.1f MiB per layer\n", fit_ctx, ctk, ctv, kv_per_layer / MiB);
    printf("compute    %.0f MiB (ubatch %ld, flash attention %s)\n", po.compute_bytes / MiB, ubatch,
           flash ? "on" : "off");
    printf("weights    CPU %.0f MiB, GPU %.0f MiB\n", r.bytes_cpu / MiB, r.bytes_gpu / MiB);
    printf("%s\n", r.text);
    printf("settings   %s\n", r.flags);
    free(t);
    gguf_close(f);
    return 0;
}
