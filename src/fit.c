/* fit.c — the GPU fit before a model loads (see fit.h). */
#include "fit.h"
#include "clip.h"
#include "kv.h"
#include "gguf.h"
#include "placement.h"
#include "quant.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static uint32_t arch_u32(const gguf_file *f, const char *arch, const char *suffix, uint32_t def)
{
    char key[128];
    uint32_t v;
    snprintf(key, sizeof key, "%s.%s", arch, suffix);
    return gguf_get_u32(f, key, &v) ? v : def;
}

/* Layers whose attention the decision put on the GPU (their KV cache goes there too). */
static int gpu_layers(const place_result *r, int n_layer)
{
    return r->ngl > n_layer ? n_layer : r->ngl;
}

/* K and V bytes of one sequence of ctx cells over the whole model, layer by layer: Gemma
 * 4 gives the KV heads per layer and its sliding-window layers (the pattern) their own
 * head size, and its last shared_kv_layers layers keep no cache of their own; a
 * sliding-window layer keeps a ring of window + swa_slack cells when that is fewer (kv.h;
 * swa_slack 0: the whole context). The windowed layers: Gemma 4's per-layer pattern, or
 * all but every period-th (Gemma 3: 6 unless the file says, gpt-oss: 2). */
static uint64_t kv_seq_bytes(const gguf_file *f, const char *arch, int n_layer, int n_head_kv, int head_dim,
                             int type_k, int type_v, int ctx, int swa_slack)
{
    char k[128];
    snprintf(k, sizeof k, "%s.attention.head_count_kv", arch);
    bool kv_arr = gguf_kv_arr_n(f, gguf_find_key(f, k)) == (uint64_t)n_layer;
    snprintf(k, sizeof k, "%s.attention.sliding_window_pattern", arch);
    enum gguf_vtype pt;
    uint64_t pn = 0;
    const uint8_t *pat = gguf_get_arr_data(f, k, &pt, &pn);
    if (pn != (uint64_t)n_layer || (pt != GGUF_T_BOOL && pt != GGUF_T_U8 && pt != GGUF_T_I8))
        pat = NULL; /* bools, one byte each */
    int hd_swa = (int)arch_u32(f, arch, "attention.key_length_swa", (uint32_t)head_dim);
    int shared = (int)arch_u32(f, arch, "attention.shared_kv_layers", 0);
    int n_swa = (int)arch_u32(f, arch, "attention.sliding_window", 0);
    int period = (int)arch_u32(f, arch, "attention.sliding_window_pattern",
                               !strcmp(arch, "gemma3") ? 6 : !strcmp(arch, "gpt-oss") ? 2 : 0);
    uint64_t sum = 0;
    for (int il = 0; il < n_layer - (shared < n_layer ? shared : 0); il++) {
        int64_t h = n_head_kv, d = head_dim, v;
        char kk[128];
        snprintf(kk, sizeof kk, "%s.attention.head_count_kv", arch);
        if (kv_arr && gguf_get_arr_i64(f, kk, (uint64_t)il, &v))
            h = v;
        if (pat && pat[il])
            d = hd_swa;
        bool swa = n_swa > 0 && (pat ? pat[il] != 0 : period > 1 && il % period < period - 1);
        int64_t cells = swa && swa_slack > 0 && (int64_t)n_swa + swa_slack < ctx ? n_swa + swa_slack : ctx;
        sum += (uint64_t)cells * (type_row_bytes(type_k, h * d) + type_row_bytes(type_v, h * d));
    }
    return sum;
}

/* The GPU bytes a projector takes beside the text layers: its weights, and the scratch
 * of one image at the most tokens (clip.h). 0, or a negative errno with err filled. */
static int projector_bytes(const fit_input *in, uint64_t *bytes, llmfs_error *err)
{
    *bytes = 0;
    if (!in->mmproj || !*in->mmproj)
        return 0;
    clip_model *c = clip_load(in->mmproj, 1, err);
    if (!c)
        return err && err->code ? -err->code : -EINVAL;
    *bytes = clip_weight_bytes(c) + clip_buffer_bytes(c, in->image_max_tokens);
    clip_free(c);
    return 0;
}

/* A draft model's share of the GPU: its tensors (all of them: an upper bound of what it
 * uploads, as a draft is small beside its target) and the dimensions of its KV cache. */
typedef struct draft_info {
    gguf_file *f;  /* NULL: no draft, or one that cannot be read (it counts nothing) */
    const char *arch;
    int n_layer, n_head_kv, head_dim;
    uint64_t weights;
} draft_info;

static void draft_open(const char *path, draft_info *d)
{
    memset(d, 0, sizeof *d);
    gguf_open_opts oo = {0};
    llmfs_error e = {0};
    if (!path || !*path || !(d->f = gguf_open(path, &oo, &e)))
        return;
    d->arch = gguf_get_str(d->f, "general.architecture", NULL);
    d->n_layer = d->arch ? (int)arch_u32(d->f, d->arch, "block_count", 0) : 0;
    int n_embd = d->arch ? (int)arch_u32(d->f, d->arch, "embedding_length", 0) : 0;
    if (d->n_layer <= 0 || n_embd <= 0) {
        gguf_close(d->f);
        d->f = NULL;
        return;
    }
    int n_head = (int)arch_u32(d->f, d->arch, "attention.head_count", 1);
    d->n_head_kv = (int)arch_u32(d->f, d->arch, "attention.head_count_kv", (uint32_t)n_head);
    d->head_dim = (int)arch_u32(d->f, d->arch, "attention.key_length", (uint32_t)(n_embd / (n_head ? n_head : 1)));
    for (int i = 0; i < gguf_n_tensors(d->f); i++)
        d->weights += gguf_tensor_at(d->f, i)->size;
}

/* Its bytes at ctx cells per sequence: the engine sizes its cache as the target's,
 * ctx x parallel, and keeps every cell (no sliding-window rings). */
static uint64_t draft_kv_bytes(const draft_info *d, const fit_input *in, int ctx)
{
    if (!d->f)
        return 0;
    return kv_seq_bytes(d->f, d->arch, d->n_layer, d->n_head_kv, d->head_dim, in->draft_type_k, in->draft_type_v,
                        ctx, 0) *
           (uint64_t)in->parallel;
}

int fit_plan(const fit_input *in, fit_output *out, llmfs_error *err)
{
    memset(out, 0, sizeof *out);
    uint64_t proj = 0;
    int prc = projector_bytes(in, &proj, err);
    if (prc < 0)
        return prc;
    /* the projector's room first: what the layers may take is what it leaves */
    const uint64_t vram_free = in->vram_free > proj ? in->vram_free - proj : 0;
    gguf_open_opts oo = {0};
    gguf_file *f = gguf_open(in->path, &oo, err);
    if (!f)
        return err && err->code ? -err->code : -EINVAL;
    const char *arch = gguf_get_str(f, "general.architecture", NULL);
    int n_layer = arch ? (int)arch_u32(f, arch, "block_count", 0) : 0;
    int n_embd = arch ? (int)arch_u32(f, arch, "embedding_length", 0) : 0;
    if (n_layer <= 0 || n_embd <= 0) {
        gguf_close(f);
        return llmfs_errorf(err, EINVAL, "%s: no layer count or embedding length", in->path);
    }
    int n_head = (int)arch_u32(f, arch, "attention.head_count", 1);
    int n_head_kv = (int)arch_u32(f, arch, "attention.head_count_kv", (uint32_t)n_head);
    int head_dim = (int)arch_u32(f, arch, "attention.key_length", (uint32_t)(n_embd / (n_head ? n_head : 1)));
    int n_ff = (int)arch_u32(f, arch, "feed_forward_length", 0);
    int n_ff_exp = (int)arch_u32(f, arch, "expert_feed_forward_length", 0);
    int n_used = (int)arch_u32(f, arch, "expert_used_count", 0);
    int n_vocab = (int)gguf_kv_arr_n(f, gguf_find_key(f, "tokenizer.ggml.tokens"));
    int n = gguf_n_tensors(f);
    place_tensor *t = calloc((size_t)(n > 0 ? n : 1), sizeof *t);
    if (!t) {
        gguf_close(f);
        return llmfs_errorf(err, ENOMEM, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        const gguf_tensor *g = gguf_tensor_at(f, i);
        t[i].name = g->name;
        t[i].bytes = g->size;
    }
    int ff = n_ff ? n_ff : n_ff_exp * (n_used ? n_used : 1);
    /* the placement counts KV per layer alike: the model's total spread evenly */
    /* Hybrid models: DeltaNet layers hold a fixed recurrent state per sequence instead
     * of K/V cells (every interval-th trunk layer attends; the MTP blocks after the
     * trunk hold nothing in a plain run). The per-layer figure below is the average. */
    int d_state = (int)arch_u32(f, arch, "ssm.state_size", 0);
    int n_trunk = n_layer - (int)arch_u32(f, arch, "nextn_predict_layers", 0), n_recr = 0;
    uint64_t state_seq = 0; /* bytes of one recurrent layer's state per sequence */
    if (d_state > 0 && n_trunk > 0) {
        int interval = (int)arch_u32(f, arch, "full_attention_interval", 4);
        int nk = (int)arch_u32(f, arch, "ssm.group_count", 0), nv = (int)arch_u32(f, arch, "ssm.time_step_rank", 0);
        int kc = (int)arch_u32(f, arch, "ssm.conv_kernel", 4);
        for (int il = 0; il < n_trunk; il++)
            n_recr += interval > 0 && (il + 1) % interval != 0;
        state_seq = 4ull * ((uint64_t)(kc - 1) * (uint64_t)(2 * nk * d_state + nv * d_state) +
                            (uint64_t)nv * d_state * d_state);
    }
    /* K+V bytes of one cell of an average layer (hybrid models: their attention layers) */
    const uint64_t cell_row =
        kv_seq_bytes(f, arch, n_layer, n_head_kv, head_dim, in->type_k, in->type_v, 1, 0) / (uint64_t)n_layer;
    int floor_ctx = in->fit_ctx > 0 && in->fit_ctx < in->ctx ? in->fit_ctx : in->ctx;
    draft_info draft;
    draft_open(in->draft_path, &draft);
    place_result best = {0};
    int best_ctx = in->ctx, rc = 0;
    uint64_t best_draft = 0;
    bool have = false;
    for (int ctx = in->ctx;; ctx = ctx / 2 > floor_ctx ? ctx / 2 : floor_ctx) {
        uint64_t dneed = draft.f ? draft.weights + draft_kv_bytes(&draft, in, ctx) : 0;
        place_opts po = {
            .n_layer = n_layer,
            .ngl = -1,
            .n_cpu_moe = in->n_cpu_moe,
            .override_tensor = in->override_tensor,
            .fit = true,
            .vram_free = vram_free > dneed ? vram_free - dneed : 0,
            .fit_target = in->fit_target,
            .kv_bytes_per_layer = n_recr ? ((uint64_t)(n_trunk - n_recr) * ctx * in->parallel * cell_row +
                                             (uint64_t)n_recr * in->parallel * state_seq * (uint64_t)(1 + in->n_snap)) /
                                                (uint64_t)n_layer
                                          : kv_seq_bytes(f, arch, n_layer, n_head_kv, head_dim, in->type_k,
                                                         in->type_v, ctx, kv_swa_slack(in->ubatch, in->swa_full)) *
                                                (uint64_t)in->parallel / (uint64_t)n_layer,
            .stream = in->offload_batch != 0,
            .compute_bytes = place_compute_bytes(n_embd, ff, n_head, head_dim, n_vocab, in->ubatch, ctx,
                                                 in->flash),
        };
        place_result r;
        llmfs_error e = {0};
        rc = place_decide(t, n, &po, &r, &e);
        if (rc == -ENOMEM && ctx > floor_ctx)
            continue; /* nothing fits at this context: try a smaller one */
        if (rc < 0) {
            if (err)
                *err = e;
            break;
        }
        /* a smaller context is worth it only if it brings more layers onto the GPU */
        if (!have || gpu_layers(&r, n_layer) > gpu_layers(&best, n_layer) ||
            (gpu_layers(&r, n_layer) == gpu_layers(&best, n_layer) && r.n_cpu_moe < best.n_cpu_moe)) {
            best = r;
            best_ctx = ctx;
            best_draft = dneed;
            have = true;
        }
        if ((r.ngl > n_layer && r.n_cpu_moe == 0) || ctx <= floor_ctx)
            break;
    }
    free(t);
    gguf_close(f);
    uint64_t draft_w = draft.weights;
    if (draft.f)
        gguf_close(draft.f);
    if (!have)
        return rc < 0 ? rc : llmfs_errorf(err, ENOMEM, "fit: no placement fits");
    out->ngl = best.ngl;
    out->n_cpu_moe = best.n_cpu_moe;
    out->ctx = best_ctx;
    out->projector_bytes = proj;
    out->gpu_bytes = best.gpu_total + proj;
    out->draft_bytes = best_draft;
    int len = snprintf(out->text, sizeof out->text, "%s; ctx %d%s; weights GPU %.0f MiB, CPU %.0f MiB; headroom %.0f MiB",
                       best.text[0] ? best.text : "fit", best_ctx, best_ctx < in->ctx ? " (shrunk to fit)" : "",
                       best.bytes_gpu / 1048576.0, best.bytes_cpu / 1048576.0, best.headroom / 1048576.0);
    if (proj && len > 0 && (size_t)len < sizeof out->text)
        len += snprintf(out->text + len, sizeof out->text - (size_t)len,
                        "; projector %.1f MiB (weights and one image's buffers) kept beside the layers",
                        proj / 1048576.0);
    if (best_draft && len > 0 && (size_t)len < sizeof out->text)
        snprintf(out->text + len, sizeof out->text - (size_t)len, "; draft model GPU %.1f MiB (weights %.1f, KV %.1f)",
                 best_draft / 1048576.0, draft_w / 1048576.0, (best_draft - draft_w) / 1048576.0);
    return 0;
}
