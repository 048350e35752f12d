/* placement.c — ngl, n_cpu_moe, override_tensor and fit as one decision per tensor. */
#include "placement.h"

#include <errno.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MiB (1024.0 * 1024.0)
#define MAX_OVERRIDES 32

void place_classify(place_tensor *t)
{
    const char *n = t->name;
    t->layer = -1;
    if (strncmp(n, "blk.", 4) == 0) {
        char *end;
        long il = strtol(n + 4, &end, 10);
        if (end != n + 4 && *end == '.') {
            t->layer = (int)il;
            if (strstr(end, "_exps") || strstr(end, "_chexps"))
                t->group = PG_EXPS;
            else if (strstr(end, ".ffn_"))
                t->group = PG_FFN;
            else
                t->group = PG_ATTN;
            return;
        }
    }
    if (strncmp(n, "output", 6) == 0)
        t->group = PG_OUTPUT;
    else
        t->group = PG_EMBD; /* token_embd and other globals stay with the lookup */
}

typedef struct override {
    regex_t re;
    enum place_device dev;
} override;

static int device_from_name(const char *s, enum place_device *out)
{
    if (strcasecmp(s, "CPU") == 0) {
        *out = PLACE_CPU;
        return 0;
    }
    if (strcasecmp(s, "CUDA0") == 0 || strcasecmp(s, "CUDA") == 0 || strcasecmp(s, "GPU") == 0 ||
        strcasecmp(s, "GPU0") == 0) {
        *out = PLACE_GPU;
        return 0;
    }
    return -1;
}

static void free_overrides(override *ov, int n)
{
    for (int i = 0; i < n; i++)
        regfree(&ov[i].re);
}

/* Splits "re=dev,re=dev" and compiles each pattern (POSIX extended, unanchored, as
 * llama.cpp's --override-tensor searches). Returns the count or a negative errno. */
static int parse_overrides(const char *spec, override *ov, llmfs_error *err)
{
    int n = 0;
    if (!spec || !*spec)
        return 0;
    char *copy = strdup(spec);
    if (!copy)
        return llmfs_errorf(err, ENOMEM, "override_tensor: out of memory");
    int rc = 0;
    char *save = NULL;
    for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strrchr(item, '=');
        if (!eq || eq == item) {
            rc = llmfs_errorf(err, EINVAL, "override_tensor: '%s' is not REGEX=DEVICE", item);
            break;
        }
        *eq = 0;
        if (n == MAX_OVERRIDES) {
            rc = llmfs_errorf(err, EINVAL, "override_tensor: more than %d patterns", MAX_OVERRIDES);
            break;
        }
        if (device_from_name(eq + 1, &ov[n].dev) < 0) {
            rc = llmfs_errorf(err, EINVAL, "override_tensor: unknown device '%s' (CPU or CUDA0)", eq + 1);
            break;
        }
        int e = regcomp(&ov[n].re, item, REG_EXTENDED | REG_NOSUB);
        if (e) {
            char why[128];
            regerror(e, &ov[n].re, why, sizeof why);
            rc = llmfs_errorf(err, EINVAL, "override_tensor: bad pattern '%s': %s", item, why);
            break;
        }
        n++;
    }
    free(copy);
    if (rc < 0) {
        free_overrides(ov, n);
        return rc;
    }
    return n;
}

int place_parse_overrides(const char *spec, llmfs_error *err)
{
    override ov[MAX_OVERRIDES];
    int n = parse_overrides(spec, ov, err);
    if (n < 0)
        return n;
    free_overrides(ov, n);
    return 0;
}

/* A shared expert (ffn_up_shexp) answers to the patterns written for the routed
 * experts (ffn_up_exps), so the usual "ffn_(up|down|gate)_(ch|)exps=CPU" moves a
 * layer's whole expert block. */
static bool override_matches(const regex_t *re, const char *name)
{
    if (regexec(re, name, 0, NULL, 0) == 0)
        return true;
    const char *sh = strstr(name, "_shexp");
    if (!sh)
        return false;
    char alias[256];
    int k = snprintf(alias, sizeof alias, "%.*s_exps%s", (int)(sh - name), name, sh + 6);
    return k > 0 && (size_t)k < sizeof alias && regexec(re, alias, 0, NULL, 0) == 0;
}

/* The CUDA backend's buffer for GGUF blocks it repacks while streaming (kernels/stage.cu):
 * a tensor's blocks, at most this many bytes at a time. */
#define STREAM_RAW_BYTES (32ull << 20)

/* Devices for a given (ngl, n_cpu_moe), then the overrides; fills the totals. work:
 * 2 * n_layer counters of the caller's (allocated once: assign runs many times). */
static void assign(uint64_t *work, place_tensor *t, int n, const place_opts *o, const override *ov,
                   int n_ov, int ngl, int n_cpu_moe, place_result *r)
{
    int first_gpu = o->n_layer - (ngl < 0 || ngl > o->n_layer ? o->n_layer : ngl);
    bool output_gpu = ngl < 0 || ngl > o->n_layer;
    size_t nl = (size_t)(o->n_layer > 0 ? o->n_layer : 0);
    uint64_t *attn_gpu = work, *ffn_cpu = work + nl;
    memset(work, 0, 2 * nl * sizeof *work);
    uint64_t biggest = 0; /* the largest tensor that streams */
    r->bytes_cpu = r->bytes_gpu = 0;
    for (int i = 0; i < n; i++) {
        place_tensor *p = &t[i];
        enum place_device d = PLACE_CPU;
        if (o->vram_free > 0 || !o->fit) {
            if (p->group == PG_OUTPUT)
                d = output_gpu ? PLACE_GPU : PLACE_CPU;
            else if (p->layer >= 0)
                d = p->layer >= first_gpu ? PLACE_GPU : PLACE_CPU;
            if (p->group == PG_EXPS && p->layer >= 0 && p->layer < n_cpu_moe)
                d = PLACE_CPU;
        }
        for (int k = 0; k < n_ov; k++) {
            if (override_matches(&ov[k].re, p->name)) {
                d = ov[k].dev;
                break;
            }
        }
        p->device = d;
        if (d == PLACE_GPU)
            r->bytes_gpu += p->bytes;
        else
            r->bytes_cpu += p->bytes;
        if (d == PLACE_GPU && p->group == PG_ATTN && p->layer >= 0 && p->layer < o->n_layer)
            attn_gpu[p->layer] = 1;
        if (d == PLACE_CPU && (p->group == PG_FFN || p->group == PG_EXPS) && p->layer >= 0 && p->layer < o->n_layer) {
            ffn_cpu[p->layer] += p->bytes;
            biggest = p->bytes > biggest ? p->bytes : biggest;
        }
    }
    int kv_layers = 0;
    uint64_t widest = 0; /* the largest layer that streams */
    for (int il = 0; il < o->n_layer; il++) {
        kv_layers += (int)attn_gpu[il];
        widest = ffn_cpu[il] > widest ? ffn_cpu[il] : widest;
    }
    r->stream_bytes = o->stream && r->bytes_gpu && widest
                          ? 2 * widest + (biggest < STREAM_RAW_BYTES ? biggest : STREAM_RAW_BYTES)
                          : 0;
    r->ngl = ngl < 0 ? o->n_layer + 1 : ngl;
    r->n_cpu_moe = n_cpu_moe;
    r->gpu_total = r->bytes_gpu + (uint64_t)kv_layers * o->kv_bytes_per_layer +
                   (r->bytes_gpu ? o->compute_bytes : 0) + r->stream_bytes;
    r->headroom = (int64_t)o->vram_free - (int64_t)r->gpu_total;
}

static bool fits(const place_result *r, const place_opts *o)
{
    return r->gpu_total == 0 || r->headroom >= (int64_t)o->fit_target;
}

int place_decide(place_tensor *t, int n, const place_opts *o, place_result *res, llmfs_error *err)
{
    override ov[MAX_OVERRIDES];
    int n_ov = parse_overrides(o->override_tensor, ov, err);
    if (n_ov < 0)
        return n_ov;
    memset(res, 0, sizeof *res);
    uint64_t *work = calloc(2 * (size_t)(o->n_layer > 0 ? o->n_layer : 1), sizeof *work);
    if (!work) {
        free_overrides(ov, n_ov);
        return llmfs_errorf(err, ENOMEM, "placement: out of memory");
    }
    for (int i = 0; i < n; i++)
        place_classify(&t[i]);

    if (!o->fit) {
        assign(work, t, n, o, ov, n_ov, o->ngl, o->n_cpu_moe, res);
    } else if (o->vram_free == 0) {
        assign(work, t, n, o, ov, n_ov, 0, 0, res);
        snprintf(res->text, sizeof res->text, "fit: no GPU memory: every weight on the CPU");
    } else {
        bool has_exps = false;
        for (int i = 0; i < n; i++)
            has_exps |= t[i].group == PG_EXPS;
        int all = o->n_layer + 1;
        int ngl = all, moe = 0;
        assign(work, t, n, o, ov, n_ov, ngl, moe, res);
        if (!fits(res, o) && has_exps) {
            /* Experts go first: each token reads only a few of them, so they cost the
             * least speed per byte moved to the CPU. Fewest CPU expert layers that fit. */
            int lo = 1, hi = o->n_layer;
            while (lo < hi) {
                int mid = (lo + hi) / 2;
                assign(work, t, n, o, ov, n_ov, ngl, mid, res);
                if (fits(res, o))
                    hi = mid;
                else
                    lo = mid + 1;
            }
            moe = lo;
            assign(work, t, n, o, ov, n_ov, ngl, moe, res);
        }
        if (!fits(res, o)) {
            /* Then whole layers, output first (ngl semantics), keeping as many as fit. */
            int lo = 0, hi = all;
            while (lo < hi) {
                int mid = (lo + hi + 1) / 2;
                assign(work, t, n, o, ov, n_ov, mid, moe, res);
                if (fits(res, o))
                    lo = mid;
                else
                    hi = mid - 1;
            }
            ngl = lo;
            assign(work, t, n, o, ov, n_ov, ngl, moe, res);
        }
        snprintf(res->text, sizeof res->text,
                 "fit: %.0f MiB free, target %.0f MiB: ngl %d of %d, n_cpu_moe %d; "
                 "GPU %.0f MiB (weights %.0f, KV %.0f, compute %.0f, stream %.0f), headroom %.0f MiB",
                 o->vram_free / MiB, o->fit_target / MiB, res->ngl, all, res->n_cpu_moe,
                 res->gpu_total / MiB, res->bytes_gpu / MiB,
                 (res->gpu_total - res->bytes_gpu - (res->bytes_gpu ? o->compute_bytes : 0) - res->stream_bytes) / MiB,
                 (res->bytes_gpu ? o->compute_bytes : 0) / MiB, res->stream_bytes / MiB, res->headroom / MiB);
    }
    snprintf(res->flags, sizeof res->flags, "ngl=%d n_cpu_moe=%d%s%s", res->ngl, res->n_cpu_moe,
             o->override_tensor && *o->override_tensor ? " override_tensor=" : "",
             o->override_tensor && *o->override_tensor ? o->override_tensor : "");
    free_overrides(ov, n_ov);
    free(work);
    return 0;
}

/* The device backend's scratch that does not scale with the batch: prefill dequantizes
 * weights to f16 for cuBLAS in slabs of up to 64 MiB (kernels/matmul.cu), and scratch
 * buffers keep a quarter's slack when they grow. */
#define DEVICE_SLAB_BYTES (80ull << 20)

uint64_t place_compute_bytes(int n_embd, int n_ff, int n_head, int head_dim, int n_vocab,
                             int n_ubatch, int n_ctx, bool flash)
{
    uint64_t per_token = 4ull * (3ull * (uint64_t)n_embd + 4ull * (uint64_t)n_head * head_dim +
                                 3ull * (uint64_t)n_ff + (uint64_t)n_vocab);
    uint64_t scores = flash ? 0 : 4ull * (uint64_t)n_ubatch * n_head * (uint64_t)n_ctx;
    return per_token * (uint64_t)n_ubatch + scores + DEVICE_SLAB_BYTES;
}
