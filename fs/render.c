/* render.c — text snapshots of the core's state (see render.h). */
#include "render.h"

#include "models.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_GPUS 16

int render_models(llmfs *lf, fs_text *out)
{
    llmfs_model *models[MODELS_MAX];
    int n = models_get(lf, models);
    if (n < 0)
        return n;
    for (int i = 0; i < n; i++) {
        llmfs_model_info info;
        llmfs_model_info_get(models[i], &info);
        text_printf(out, "%s %s %" PRIu64 " %s %s\n", llmfs_model_name(models[i]), info.arch,
                    info.n_params, info.file_type, info.state);
    }
    models_put(models, n);
    return text_finish(out);
}

int render_daemon_stats(llmfs *lf, fs_text *out)
{
    llmfs_daemon_stats ds;
    llmfs_daemon_stats_get(lf, &ds);
    text_printf(out, "pid %d\nuptime %.3f\n", (int)getpid(), ds.uptime_s);
    text_printf(out, "ram_total %" PRIu64 "\nram_free %" PRIu64 "\nram_rss %" PRIu64 "\n",
                ds.ram_total, ds.ram_free, ds.ram_rss);
    text_printf(out, "models %d\nsessions %d\n", ds.n_models, ds.n_sessions);
    llmfs_gpu_info gpus[MAX_GPUS];
    int ng = llmfs_gpus(gpus, MAX_GPUS);
    if (ng > MAX_GPUS)
        ng = MAX_GPUS;
    text_printf(out, "gpus %d\n", ng);
    for (int i = 0; i < ng; i++)
        text_printf(out,
                    "gpu%d_name %s\ngpu%d_vram_total %" PRIu64 "\ngpu%d_vram_used %" PRIu64
                    "\ngpu%d_vram_free %" PRIu64 "\n",
                    i, gpus[i].name, i, gpus[i].vram_total, i, gpus[i].vram_used, i,
                    gpus[i].vram_free);
    return text_finish(out);
}

/* Speculative decoding's lines: tokens drafted and accepted, their ratio, and the mean
 * of drafts accepted per verification step. */
static void spec_lines(fs_text *out, uint64_t drafted, uint64_t accepted, uint64_t steps)
{
    text_printf(out, "draft_n %" PRIu64 "\ndraft_accepted %" PRIu64 "\nacceptance %.4f\naccepted_per_step %.4f\n",
                drafted, accepted, drafted ? (double)accepted / (double)drafted : 0.0,
                steps ? (double)accepted / (double)steps : 0.0);
}

static void session_lines(const llmfs_session_stats *ss, fs_text *out)
{
    text_printf(out,
                "state %s\nstop_reason %s\nn_prompt %d\nn_cached %d\nn_gen %d\n"
                "ttft_ms %.3f\npp_tps %.3f\ntg_tps %.3f\nkv_used %d\nkv_size %d\nturns %d\n",
                ss->state, ss->stop_reason, ss->n_prompt, ss->n_cached, ss->n_gen, ss->ttft_ms,
                ss->pp_tps, ss->tg_tps, ss->kv_used, ss->kv_size, ss->turns);
    spec_lines(out, (uint64_t)ss->draft_n, (uint64_t)ss->draft_accepted, (uint64_t)ss->spec_steps);
}

int render_session_stats(llmfs_session *s, fs_text *out)
{
    llmfs_session_stats ss;
    llmfs_session_stats_get(s, &ss);
    text_printf(out, "session %d\n", ss.id);
    session_lines(&ss, out);
    return text_finish(out);
}

int render_model_stats(llmfs_model *m, llmfs_session *s, fs_text *out)
{
    llmfs_session_stats ss;
    llmfs_session_stats_get(s, &ss);
    session_lines(&ss, out);
    llmfs_model_stats ms;
    llmfs_model_stats_get(m, &ms);
    text_printf(out,
                "model_state %s\nsessions %d\ngenerating %d\nrequests %" PRIu64
                "\nerrors %" PRIu64 "\nprompt_tokens_total %" PRIu64
                "\ngen_tokens_total %" PRIu64 "\nprompt_seconds_total %.6f\n"
                "gen_seconds_total %.6f\nn_ctx %d\nn_slots %d\nkv_cells_used %" PRIu64
                "\nkv_cells_total %" PRIu64 "\nkv_bytes %" PRIu64 "\nweight_bytes_cpu %" PRIu64
                "\nweight_bytes_gpu %" PRIu64 "\nvram_used_load %" PRIu64
                "\nvram_used_now %" PRIu64 "\nram_rss %" PRIu64 "\n",
                ms.state, ms.n_sessions, ms.n_generating, ms.requests, ms.errors,
                ms.n_prompt_tokens, ms.n_gen_tokens, ms.prompt_seconds, ms.gen_seconds, ms.n_ctx,
                ms.n_slots, ms.kv_cells_used, ms.kv_cells_total, ms.kv_bytes,
                ms.weight_bytes_cpu, ms.weight_bytes_gpu, ms.vram_used_load, ms.vram_used_now,
                ms.ram_rss);
    text_printf(out, "cpus %s\nthreads %d\npriority %d\n", ms.cpus, ms.n_threads, ms.priority);
    /* the model's totals since load */
    text_printf(out, "spec %s\nspec_draft_total %" PRIu64 "\nspec_accepted_total %" PRIu64
                     "\nspec_steps_total %" PRIu64 "\n",
                ms.spec, ms.spec_drafted, ms.spec_accepted, ms.spec_steps);
    char w[4096];
    if (llmfs_model_warnings(m, w, sizeof w) > 0) /* "warning TEXT" lines */
        text_puts(out, w);
    return text_finish(out);
}

int render_placement(llmfs_model *m, fs_text *out)
{
    llmfs_model_info info;
    llmfs_model_info_get(m, &info);
    if (strcmp(info.arch, "remote") == 0) {
        /* the weights are on the server behind this URL */
        text_printf(out, "remote %s\n", info.path);
        return 0;
    }
    /* The core's rows end with a `total` row per device. */
    int n = llmfs_model_placement(m, NULL, 0);
    if (n < 0)
        return n;
    llmfs_placement_row *rows = n > 0 ? calloc((size_t)n, sizeof *rows) : NULL;
    if (n > 0 && !rows)
        return -ENOMEM;
    if (n > 0 && (n = llmfs_model_placement(m, rows, n)) < 0) {
        free(rows);
        return n;
    }
    for (int i = 0; i < n; i++)
        text_printf(out, "%s %s %s %" PRIu64 "\n", rows[i].group, rows[i].device, rows[i].type,
                    rows[i].bytes);
    free(rows);
    llmfs_stream_info si;
    llmfs_model_stream_info(m, &si);
    if (si.layers) {
        text_printf(out, "stream layers %d bytes %" PRIu64 " threshold %d batches %" PRIu64
                         " gpu_bytes_per_s %.4g cpu_s_per_token %.4g\n",
                    si.layers, si.bytes, si.threshold, si.batches, si.gpu_bytes_per_s, si.cpu_s_per_token);
        if (si.error[0])
            text_printf(out, "stream error %s\n", si.error);
    }
    char fit[4096];
    llmfs_model_fit_text(m, fit, sizeof fit);
    for (char *line = fit; *line;) {
        size_t len = strcspn(line, "\n");
        if (len)
            text_printf(out, "fit %.*s\n", (int)len, line);
        line += len + (line[len] == '\n');
    }
    return text_finish(out);
}

int render_kv(llmfs_model *m, fs_text *out)
{
    llmfs_kv_info kv;
    llmfs_model_kv_info(m, &kv);
    text_printf(out,
                "type_k %s\ntype_v %s\nn_ctx %d\nn_slots %d\nbytes %" PRIu64 "\nflash_attn %s\n",
                kv.type_k, kv.type_v, kv.n_ctx, kv.n_slots, kv.bytes, kv.flash_attn ? "on" : "off");
    if (kv.draft_bytes) /* the draft model's cache, same sequences and context */
        text_printf(out, "draft_bytes %" PRIu64 "\n", kv.draft_bytes);
    if (kv.mtp_bytes) /* the MTP head's cache: one layer, same sequences and context */
        text_printf(out, "mtp_bytes %" PRIu64 "\n", kv.mtp_bytes);
    text_printf(out, "swa_full %s\n", kv.swa_full ? "on" : "off");
    for (int k = 0; k < kv.n_kinds; k++)
        text_printf(out, "layers %s %d cells %d bytes_each %" PRIu64 "\n", kv.kinds[k].kind, kv.kinds[k].n_layers,
                    kv.kinds[k].cells, kv.kinds[k].layer_bytes);
    /* hybrid models: the recurrent state beside the cells (per sequence, whatever n_ctx) */
    if (kv.n_recurrent_layers)
        text_printf(out,
                    "recurrent_layers %d\nstate_conv_bytes %" PRIu64 "\nstate_ssm_bytes %" PRIu64
                    "\nstate_bytes %" PRIu64 "\ncheckpoints %d\n",
                    kv.n_recurrent_layers, kv.conv_bytes, kv.ssm_bytes, kv.state_bytes, kv.checkpoints);
    if (kv.snapshots) /* speculation: the state after each token of a verification batch */
        text_printf(out, "state_snapshots %d\nstate_snapshot_bytes %" PRIu64 "\n", kv.snapshots, kv.snapshot_bytes);
    int ids[1024];
    int n = llmfs_session_ids(m, ids + 1, 1023);
    if (n > 1023)
        n = 1023;
    ids[0] = 0;
    for (int i = 0; i <= n; i++) {
        llmfs_session *s = ids[i] ? llmfs_session_get(m, ids[i]) : llmfs_session_default(m);
        if (!s)
            continue;
        llmfs_session_stats ss;
        llmfs_session_stats_get(s, &ss);
        text_printf(out, "session %d used %d size %d", ids[i], ss.kv_used, ss.kv_size);
        if (kv.n_recurrent_layers)
            text_printf(out, " state_bytes %" PRIu64 " checkpoints %d", kv.state_bytes, ss.checkpoints);
        text_puts(out, "\n");
        llmfs_session_put(s);
    }
    return text_finish(out);
}

int render_info(llmfs_model *m, fs_text *out)
{
    llmfs_model_info in;
    llmfs_model_info_get(m, &in);
    text_printf(out,
                "name %s\narch %s\nlayers %d\nn_embd %d\nheads %d\nheads_kv %d\nhead_dim %d\n"
                "n_ff %d\nexperts %d\nexperts_used %d\nvocab %d\nn_ctx_train %d\n"
                "rope_freq_base %g\nrms_eps %g\ntokenizer %s\nfile_type %s\nparams %" PRIu64
                "\nsize %" PRIu64 "\nstate %s\npath %s\nchat_template_name %s\n",
                in.name, in.arch, in.n_layer, in.n_embd, in.n_head, in.n_head_kv, in.head_dim,
                in.n_ff, in.n_expert, in.n_expert_used, in.n_vocab, in.n_ctx_train,
                (double)in.rope_freq_base, (double)in.rms_eps, in.tokenizer, in.file_type,
                in.n_params, in.file_bytes, in.state, in.path, in.chat_template_name);
    if (in.projector[0])
        text_printf(out, "projector %s\nprojector_size %" PRIu64 "\nimage_size %d\nimage_tokens %d..%d\n",
                    in.projector, in.projector_bytes, in.image_size, in.image_min_tokens, in.image_max_tokens);
    text_puts(out, "chat_template ");
    text_escaped(out, in.chat_template ? in.chat_template : "");
    text_puts(out, "\n");
    return text_finish(out);
}

/* ---- metrics: the Prometheus text exposition format ---- */

static void label_value(fs_text *out, const char *v)
{
    for (; *v; v++) {
        if (*v == '\\' || *v == '"')
            text_printf(out, "\\%c", *v);
        else if (*v == '\n')
            text_puts(out, "\\n");
        else
            text_put(out, v, 1);
    }
}

static void family(fs_text *out, const char *name, const char *type, const char *help)
{
    text_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

enum {
    M_PROMPT_TOKENS,
    M_GEN_TOKENS,
    M_PROMPT_SECONDS,
    M_GEN_SECONDS,
    M_REQUESTS,
    M_ERRORS,
    M_SESSIONS,
    M_GENERATING,
    M_CTX,
    M_SLOTS,
    M_KV_USED,
    M_KV_CELLS,
    M_KV_BYTES,
    M_VRAM,
    M_SPEC_DRAFTED,
    M_SPEC_ACCEPTED,
    M_SPEC_STEPS,
    M_COUNT
};

static const struct {
    const char *name, *type, *help;
} model_metrics[M_COUNT] = {
    [M_PROMPT_TOKENS] = {"llmfs_prompt_tokens_total", "counter", "Prompt tokens processed."},
    [M_GEN_TOKENS] = {"llmfs_generated_tokens_total", "counter", "Tokens generated."},
    [M_PROMPT_SECONDS] = {"llmfs_prompt_seconds_total", "counter",
                          "Seconds spent processing prompts."},
    [M_GEN_SECONDS] = {"llmfs_generation_seconds_total", "counter",
                       "Seconds spent generating tokens."},
    [M_REQUESTS] = {"llmfs_requests_total", "counter", "Prompts accepted."},
    [M_ERRORS] = {"llmfs_errors_total", "counter", "Requests that failed."},
    [M_SESSIONS] = {"llmfs_model_sessions", "gauge", "Open sessions, the default one included."},
    [M_GENERATING] = {"llmfs_model_generating_sessions", "gauge", "Sessions generating now."},
    [M_CTX] = {"llmfs_context_tokens", "gauge", "Context length of each sequence."},
    [M_SLOTS] = {"llmfs_kv_sequences", "gauge", "Sequences the KV cache holds."},
    [M_KV_USED] = {"llmfs_kv_cells_used", "gauge", "KV cache cells in use."},
    [M_KV_CELLS] = {"llmfs_kv_cells", "gauge", "KV cache cells in all."},
    [M_KV_BYTES] = {"llmfs_kv_cache_bytes", "gauge", "Bytes of the KV cache."},
    [M_VRAM] = {"llmfs_vram_used_bytes", "gauge", "GPU memory the model uses now."},
    [M_SPEC_DRAFTED] = {"llmfs_spec_draft_tokens_total", "counter", "Tokens drafted for speculative decoding."},
    [M_SPEC_ACCEPTED] = {"llmfs_spec_accepted_tokens_total", "counter", "Drafted tokens the model accepted."},
    [M_SPEC_STEPS] = {"llmfs_spec_steps_total", "counter", "Speculative verification steps."},
};

static double model_metric(int i, const llmfs_model_stats *s)
{
    switch (i) {
    case M_PROMPT_TOKENS: return (double)s->n_prompt_tokens;
    case M_GEN_TOKENS: return (double)s->n_gen_tokens;
    case M_PROMPT_SECONDS: return s->prompt_seconds;
    case M_GEN_SECONDS: return s->gen_seconds;
    case M_REQUESTS: return (double)s->requests;
    case M_ERRORS: return (double)s->errors;
    case M_SESSIONS: return s->n_sessions;
    case M_GENERATING: return s->n_generating;
    case M_CTX: return s->n_ctx;
    case M_SLOTS: return s->n_slots;
    case M_KV_USED: return (double)s->kv_cells_used;
    case M_KV_CELLS: return (double)s->kv_cells_total;
    case M_KV_BYTES: return (double)s->kv_bytes;
    case M_SPEC_DRAFTED: return (double)s->spec_drafted;
    case M_SPEC_ACCEPTED: return (double)s->spec_accepted;
    case M_SPEC_STEPS: return (double)s->spec_steps;
    default: return (double)s->vram_used_now;
    }
}

static void model_label(fs_text *out, const char *name, const char *model)
{
    text_printf(out, "%s{model=\"", name);
    label_value(out, model);
    text_puts(out, "\"");
}

int render_metrics(llmfs *lf, fs_text *out)
{
    llmfs_daemon_stats ds;
    llmfs_daemon_stats_get(lf, &ds);
    family(out, "llmfs_uptime_seconds", "gauge", "Seconds since the daemon started.");
    text_printf(out, "llmfs_uptime_seconds %.3f\n", ds.uptime_s);
    family(out, "llmfs_models", "gauge", "Models loaded.");
    text_printf(out, "llmfs_models %d\n", ds.n_models);
    family(out, "llmfs_sessions", "gauge", "Open sessions of all models.");
    text_printf(out, "llmfs_sessions %d\n", ds.n_sessions);
    family(out, "llmfs_ram_total_bytes", "gauge", "Memory of the machine.");
    text_printf(out, "llmfs_ram_total_bytes %" PRIu64 "\n", ds.ram_total);
    family(out, "llmfs_ram_free_bytes", "gauge", "Memory available on the machine.");
    text_printf(out, "llmfs_ram_free_bytes %" PRIu64 "\n", ds.ram_free);
    family(out, "llmfs_resident_memory_bytes", "gauge", "Resident memory of the daemon.");
    text_printf(out, "llmfs_resident_memory_bytes %" PRIu64 "\n", ds.ram_rss);

    llmfs_gpu_info gpus[MAX_GPUS];
    int ng = llmfs_gpus(gpus, MAX_GPUS);
    if (ng > MAX_GPUS)
        ng = MAX_GPUS;
    static const char *const vram_names[3] = {"llmfs_gpu_memory_total_bytes",
                                              "llmfs_gpu_memory_used_bytes",
                                              "llmfs_gpu_memory_free_bytes"};
    static const char *const vram_help[3] = {"Memory of the GPU.", "GPU memory in use.",
                                             "GPU memory free."};
    for (int k = 0; k < 3 && ng > 0; k++) {
        family(out, vram_names[k], "gauge", vram_help[k]);
        for (int i = 0; i < ng; i++) {
            uint64_t v = k == 0 ? gpus[i].vram_total : k == 1 ? gpus[i].vram_used : gpus[i].vram_free;
            text_printf(out, "%s{gpu=\"%d\",name=\"", vram_names[k], i);
            label_value(out, gpus[i].name);
            text_printf(out, "\"} %" PRIu64 "\n", v);
        }
    }

    llmfs_model *models[MODELS_MAX];
    int n = models_get(lf, models);
    if (n < 0) {
        text_free(out);
        return n;
    }
    if (n == 0) {
        models_put(models, n);
        return text_finish(out);
    }
    llmfs_model_stats *st = calloc((size_t)n, sizeof *st);
    llmfs_model_info *info = calloc((size_t)n, sizeof *info);
    if (!st || !info) {
        free(st);
        free(info);
        models_put(models, n);
        return -ENOMEM;
    }
    /* One snapshot per model, so every family shows the same moment. */
    for (int j = 0; j < n; j++) {
        llmfs_model_stats_get(models[j], &st[j]);
        llmfs_model_info_get(models[j], &info[j]);
    }
    family(out, "llmfs_model_info", "gauge", "Loaded models: always 1, the labels describe it.");
    for (int j = 0; j < n; j++) {
        model_label(out, "llmfs_model_info", llmfs_model_name(models[j]));
        text_puts(out, ",arch=\"");
        label_value(out, info[j].arch);
        text_puts(out, "\",type=\"");
        label_value(out, info[j].file_type);
        text_puts(out, "\",state=\"");
        label_value(out, st[j].state);
        text_puts(out, "\"} 1\n");
    }
    for (int i = 0; i < M_COUNT; i++) {
        family(out, model_metrics[i].name, model_metrics[i].type, model_metrics[i].help);
        for (int j = 0; j < n; j++) {
            model_label(out, model_metrics[i].name, llmfs_model_name(models[j]));
            text_printf(out, "} %.17g\n", model_metric(i, &st[j]));
        }
    }
    family(out, "llmfs_weight_bytes", "gauge", "Bytes of model weights per device kind.");
    for (int j = 0; j < n; j++) {
        model_label(out, "llmfs_weight_bytes", llmfs_model_name(models[j]));
        text_printf(out, ",device=\"cpu\"} %" PRIu64 "\n", st[j].weight_bytes_cpu);
        model_label(out, "llmfs_weight_bytes", llmfs_model_name(models[j]));
        text_printf(out, ",device=\"gpu\"} %" PRIu64 "\n", st[j].weight_bytes_gpu);
    }
    free(st);
    free(info);
    models_put(models, n);
    return text_finish(out);
}
