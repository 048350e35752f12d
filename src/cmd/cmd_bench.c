/* cmd_bench.c — `llmfs bench`: prompt processing and generation speed, llama-bench style.
 *
 * ppN: N random tokens in one forward call (logits of the last only); tgN: N forward
 * calls of one token each. Each test runs once to warm up, then r times from an empty
 * cache (after prefilling DEPTH tokens, untimed, when -d is given); t/s is the mean and
 * sample standard deviation over the repetitions of tokens / seconds.
 */
#include "cmd.h"

#include "clip.h"
#include "kv.h"
#include "model.h"
#include "quant.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void usage(void)
{
    printf("usage: llmfs bench -m MODEL [-p N] [-n N] [-r R] [-d DEPTH] [-t N] [-ctk T] [-ctv T]\n"
           "                   [--fa on|off] [-ub N] [-ngl N] [-ncmoe N] [-ot REGEX=DEV,...] [-ob N] [--no-mmap]\n"
           "                   [--seed S] [-o md|csv|json] [-md DRAFT] [-nd N] [--draft-p-min P]\n"
           "                   [--spec TYPE] [--spec-prompt FILE]\n"
           "       llmfs bench --mmproj FILE | --mmproj-shape gemma3-4b|gemma3-12b|gemma3-27b [-r R] [-t N]\n"
           "  -p N   prompt tokens of the pp test, 0 to skip (default 512)\n"
           "  -n N   generated tokens of the tg test, 0 to skip (default 128)\n"
           "  -r R   repetitions after one warm-up (default 5)\n"
           "  -d D   measure at a context depth: D tokens are evaluated first (untimed)\n"
           "  -t N   threads (default: physical cores)\n"
           "  -ngl N layers on the GPU (default: all when a GPU is usable, else 0)\n"
           "  -ncmoe N  the experts of the first N layers stay on the CPU (n_cpu_moe)\n"
           "  -ot    tensors whose names match REGEX go to DEV, CPU or CUDA0 (override_tensor)\n"
           "  -ob N  smallest prompt micro-batch that streams CPU-resident feed-forward weights\n"
           "         to the GPU; -1 chosen from measured speed (default), 0 never (offload_batch)\n"
           "  -md DRAFT  speculative decoding with this draft model: instead of pp/tg, a greedy\n"
           "         reply of -n tokens through the engine, speculation off then on, -r times;\n"
           "         prints both speeds and the acceptance\n"
           "  -nd N  most tokens drafted per step (spec_draft_n_max, default 3)\n"
           "  --draft-p-min P  a draft below probability P ends the step's chain (spec_draft_p_min)\n"
           "  --spec TYPE  ngram, draft, draft+ngram or mtp (default draft with -md; ngram needs no -md;\n"
           "         mtp drafts with the model's MTP head, or that of the MTP file -md names)\n"
           "  --spec-prompt FILE  the reply's prompt (default: a fixed paragraph)\n"
           "  --mmproj FILE  measure a vision projector: milliseconds to encode one image of its\n"
           "         largest size (preprocessing, tower, projection), on the CPU\n"
           "  --mmproj-shape NAME  the same for a projector of a released model's shape with\n"
           "         random weights, written to a temporary file first\n");
}

typedef struct bench_result {
    char test[48];
    int n_prompt, n_gen, depth;
    double mean, sd;
    double *samples;
    int n_samples;
} bench_result;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

typedef struct bench_ctx {
    model *m;
    kv_cache *kv;
    bool fa;
    int32_t *tok, *pos, *seq;
    int8_t *want;
    float *logits;
    uint64_t rng;
    llmfs_error err;
} bench_ctx;

static int32_t random_token(bench_ctx *b)
{
    /* xorshift64*: deterministic ids for a given seed */
    b->rng ^= b->rng >> 12;
    b->rng ^= b->rng << 25;
    b->rng ^= b->rng >> 27;
    return (int32_t)(((b->rng * 0x2545f4914f6cdd1dull) >> 33) % (uint64_t)b->m->hp.n_vocab);
}

/* n tokens at positions p0.. in one call, logits of the last. */
static int eval_batch(bench_ctx *b, int p0, int n)
{
    for (int i = 0; i < n; i++) {
        b->tok[i] = random_token(b);
        b->pos[i] = p0 + i;
        b->seq[i] = 0;
        b->want[i] = i == n - 1;
    }
    fwd_batch fb = {.n = n, .token = b->tok, .pos = b->pos, .seq = b->seq, .logits = b->want};
    return model_forward(b->m, b->kv, &fb, b->logits, b->fa, &b->err);
}

/* One repetition: returns tokens/s or a negative value on error. */
static double run_once(bench_ctx *b, int n_prompt, int n_gen, int depth)
{
    kv_seq_keep(b->kv, 0, 0);
    if (depth > 0) {
        for (int p = 0; p < depth; p += 512) {
            int n = depth - p < 512 ? depth - p : 512;
            if (eval_batch(b, p, n) < 0)
                return -1;
        }
    }
    double t0 = now_s();
    if (n_prompt > 0) {
        if (eval_batch(b, depth, n_prompt) < 0)
            return -1;
    } else {
        for (int i = 0; i < n_gen; i++)
            if (eval_batch(b, depth + i, 1) < 0)
                return -1;
    }
    double dt = now_s() - t0;
    int n = n_prompt > 0 ? n_prompt : n_gen;
    return dt > 0 ? n / dt : 0;
}

static void size_label(uint64_t params, char *buf, size_t cap)
{
    /* One significant digit, as model cards name sizes: 0.6B, 1B, 8B, 30B. */
    double p = (double)params;
    const char *unit = "B";
    double v = p / 1e9;
    if (p < 1e8) {
        v = p / 1e6;
        unit = "M";
    }
    if (p < 1e5) {
        v = p / 1e3;
        unit = "K";
    }
    if (v >= 1)
        snprintf(buf, cap, "%.0f%s", v, unit);
    else
        snprintf(buf, cap, "%.1f%s", v, unit);
}

static void fmt_size(uint64_t b, char *buf, size_t cap)
{
    if (b >= (1ull << 30))
        snprintf(buf, cap, "%.2f GiB", (double)b / (double)(1ull << 30));
    else
        snprintf(buf, cap, "%.2f MiB", (double)b / (double)(1ull << 20));
}

static void fmt_params(uint64_t p, char *buf, size_t cap)
{
    if (p >= 1000000000ull)
        snprintf(buf, cap, "%.2f B", (double)p / 1e9);
    else if (p >= 1000000ull)
        snprintf(buf, cap, "%.2f M", (double)p / 1e6);
    else
        snprintf(buf, cap, "%.2f K", (double)p / 1e3);
}

/* The backend column: CPU, or CUDA and the device when layers run on a GPU. */
static void backend_label(const model *m, char *buf, size_t cap)
{
    if (!m->gpu) {
        snprintf(buf, cap, "CPU");
        return;
    }
    llmfs_gpu_info g[1];
    if (llmfs_gpus(g, 1) > 0)
        snprintf(buf, cap, "CUDA %s", g[0].name);
    else
        snprintf(buf, cap, "CUDA");
}

static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            printf("\\%c", *s);
        else if ((unsigned char)*s < 0x20)
            printf("\\u%04x", *s);
        else
            putchar(*s);
    }
    putchar('"');
}

/* The image test: one picture of the projector's largest size, preprocessed and
 * encoded once to warm up (not with -r 1: a large tower takes minutes), then reps
 * times; prints a table row (ms per image). */
static int bench_image(const char *C, const char *path, const char *label, int reps, int threads)
{
    llmfs_error err = {0};
    clip_model *c = clip_load(path, threads, &err);
    if (!c)
        return cmd_fail(C, "%s", err.msg);
    const clip_hparams *hp = clip_hp(c);
    int w, h;
    clip_image_dims(c, 4096, 4096, 0, 0, &w, &h);
    const int T = clip_n_tokens(c, w, h);
    image_rgb img = {w, h, malloc((size_t)w * h * 3)};
    float *out = malloc(sizeof(float) * (size_t)T * hp->n_embd_out);
    double *ms = calloc((size_t)reps, sizeof *ms);
    int rc = img.rgb && out && ms ? CMD_OK : cmd_fail(C, "out of memory");
    for (int i = 0; img.rgb && i < w * h * 3; i++) /* a colour gradient */
        img.rgb[i] = (uint8_t)((i / 3 % w) * 255 / w + (i % 3) * 60);
    for (int r = reps > 1 ? -1 : 0; r < reps && rc == CMD_OK; r++) {
        double t0 = now_s();
        float *px;
        int pw, ph;
        if (clip_preprocess(c, &img, 0, 0, &px, &pw, &ph, &err) || clip_encode(c, px, pw, ph, out, &err))
            rc = cmd_fail(C, "%s", err.msg);
        else if (r >= 0)
            ms[r] = (now_s() - t0) * 1e3;
        if (!err.code)
            free(px);
    }
    if (rc == CMD_OK) {
        double sum = 0, ss = 0;
        for (int r = 0; r < reps; r++)
            sum += ms[r];
        double mean = sum / reps;
        for (int r = 0; r < reps; r++)
            ss += (ms[r] - mean) * (ms[r] - mean);
        char size_s[32], test[64], v[48];
        fmt_size(clip_weight_bytes(c), size_s, sizeof size_s);
        snprintf(test, sizeof test, "image %dx%d (%d tokens)", w, h, T);
        snprintf(v, sizeof v, "%.1f ± %.1f", mean, reps > 1 ? sqrt(ss / (reps - 1)) : 0.0);
        printf("| %-30s | %10s | %-10s | %7s | %24s | %16s |\n", "projector", "size", "backend", "threads", "test",
               "ms/image");
        printf("| ------------------------------ | ---------: | ---------- | ------: | -----------------------: | "
               "---------------: |\n");
        char name[64];
        snprintf(name, sizeof name, "%s %s L%d", hp->type_name, label, hp->n_layer);
        printf("| %-30s | %10s | %-10s | %7d | %24s | %17s |\n", name, size_s, "CPU", clip_threads(c), test,
               v);
    }
    free(ms);
    free(out);
    free(img.rgb);
    clip_free(c);
    return rc;
}

int cmd_bench(int argc, char **argv)
{
    const char *C = "bench";
    const char *path = NULL, *ctk = "f16", *ctv = "f16", *fmt = "md", *ot = NULL;
    int n_prompt = 512, n_gen = 128, reps = 5, depth = 0, threads = 0, ubatch = 512, n_cpu_moe = 0,
        offload_batch = -1;
    /* as llama-bench: every layer on the GPU unless told otherwise (when there is one) */
    llmfs_gpu_info gpu0;
    int ngl = llmfs_gpus(&gpu0, 1) > 0 ? 999 : 0;
    bool fa = false, no_mmap = false;
    uint64_t seed = 42;
    const char *draft = NULL, *spec_type = NULL, *spec_prompt = NULL;
    int n_draft = 3;
    double p_min = 0;
    const char *mmproj = NULL, *mmproj_shape = NULL;
    const cmd_opt opts[] = {
        {"-md|--model-draft", OPT_STR, &draft, 0, 0},
        {"-nd|--draft-max", OPT_INT, &n_draft, 1, 64},
        {"--draft-p-min", OPT_FLOAT, &p_min, 0, 1},
        {"--spec|--spec-type", OPT_STR, &spec_type, 0, 0},
        {"--spec-prompt", OPT_STR, &spec_prompt, 0, 0},
        {"-m|--model", OPT_STR, &path, 0, 0},
        {"-p|--n-prompt", OPT_INT, &n_prompt, 0, 1 << 20},
        {"-n|--n-gen", OPT_INT, &n_gen, 0, 1 << 20},
        {"-r|--repetitions", OPT_INT, &reps, 1, 1000},
        {"-d|--n-depth", OPT_INT, &depth, 0, 1 << 24},
        {"-t|--threads", OPT_INT, &threads, 0, 1024},
        {"-ctk|--cache-type-k", OPT_STR, &ctk, 0, 0},
        {"-ctv|--cache-type-v", OPT_STR, &ctv, 0, 0},
        {"-fa|--fa|--flash-attn", OPT_ONOFF, &fa, 0, 0},
        {"-ub|--ubatch-size", OPT_INT, &ubatch, 1, 1 << 20},
        {"-ngl|--n-gpu-layers", OPT_INT, &ngl, 0, 100000},
        {"-ncmoe|--n-cpu-moe", OPT_INT, &n_cpu_moe, 0, 100000},
        {"-ot|--override-tensor", OPT_STR, &ot, 0, 0},
        {"-ob|--offload-batch", OPT_INT, &offload_batch, -1, 1 << 20},
        {"--no-mmap", OPT_FLAG, &no_mmap, 0, 0},
        {"--seed", OPT_U64, &seed, 0, 0},
        {"-o|--output", OPT_STR, &fmt, 0, 0},
        {"--mmproj", OPT_STR, &mmproj, 0, 0},
        {"--mmproj-shape", OPT_STR, &mmproj_shape, 0, 0},
    };
    char *pos[1];
    int np = cmd_parse(C, argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), pos, 0);
    if (np == CMD_PARSE_HELP) {
        usage();
        return CMD_OK;
    }
    if (np < 0)
        return CMD_USAGE;
    if (mmproj && mmproj_shape)
        return cmd_usage_error(C, "--mmproj and --mmproj-shape: one or the other");
    if (mmproj)
        return bench_image(C, mmproj, "", reps, threads);
    if (mmproj_shape) {
        clip_mk_shape shape;
        if (!clip_mk_shape_find(mmproj_shape, &shape))
            return cmd_usage_error(C, "--mmproj-shape wants gemma3-4b, gemma3-12b or gemma3-27b, not '%s'",
                                   mmproj_shape);
        const char *dir = getenv("TMPDIR");
        char tmp[1024];
        snprintf(tmp, sizeof tmp, "%s/llmfs-bench-mmproj-%d.gguf", dir && *dir ? dir : "/tmp", (int)getpid());
        llmfs_error err = {0};
        fprintf(stderr, "bench: writing a %s projector with random weights to %s\n", mmproj_shape, tmp);
        if (clip_mk_write(tmp, &shape, seed, &err))
            return cmd_fail(C, "%s", err.msg);
        int rc = bench_image(C, tmp, mmproj_shape, reps, threads);
        unlink(tmp);
        return rc;
    }
    if (!path)
        return cmd_usage_error(C, "missing -m MODEL");
    if (strcmp(fmt, "md") && strcmp(fmt, "csv") && strcmp(fmt, "json"))
        return cmd_usage_error(C, "-o wants md, csv or json, not '%s'", fmt);
    if (n_prompt == 0 && n_gen == 0)
        return cmd_usage_error(C, "nothing to measure: -p and -n are both 0");
    int tk = cmd_kv_type(ctk), tv = cmd_kv_type(ctv);
    if (tk < 0 || tv < 0)
        return cmd_usage_error(C, "KV cache types are f16, q8_0 or q4_0, not '%s'", tk < 0 ? ctk : ctv);
    if (draft || spec_type) {
        if (!spec_type)
            spec_type = "draft";
        if (strcmp(spec_type, "ngram") && strcmp(spec_type, "draft") && strcmp(spec_type, "draft+ngram") &&
            strcmp(spec_type, "mtp"))
            return cmd_usage_error(C, "--spec wants ngram, draft, draft+ngram or mtp, not '%s'", spec_type);
        if (strcmp(spec_type, "ngram") && strcmp(spec_type, "mtp") && !draft)
            return cmd_usage_error(C, "--spec %s needs -md DRAFT", spec_type);
        if (n_gen < 2)
            return cmd_usage_error(C, "speculation is measured on generation: -n must be 2 or more");
        return bench_spec(path, draft, spec_type, spec_prompt, n_draft, p_min, n_gen, reps, threads, ngl, ctk, ctv, fa);
    }

    bench_ctx b = {.fa = fa, .rng = seed * 0x9e3779b97f4a7c15ull + 1};
    model_opts mo = {.no_mmap = no_mmap, .n_threads = threads, .n_threads_batch = threads, .n_ubatch = ubatch,
                     .ngl = ngl, .override_tensor = ot, .n_cpu_moe = n_cpu_moe};
    if (!(b.m = model_load(path, &mo, &b.err)))
        return cmd_fail(C, "%s", b.err.msg);
    b.m->offload_batch = offload_batch;
    int rc = CMD_FAIL;
    bench_result res[2];
    int n_res = 0;
    memset(res, 0, sizeof res);
    int longest = n_prompt > n_gen ? n_prompt : n_gen, batch_max = n_prompt > 512 ? n_prompt : 512;
    int n_ctx = depth + longest;
    n_ctx = (n_ctx + 255) / 256 * 256;
    if (!(b.kv = kv_cache_alloc(b.m, n_ctx, 1, tk, tv, &b.err))) {
        cmd_fail(C, "%s", b.err.msg);
        goto done;
    }
    b.tok = malloc(sizeof *b.tok * (size_t)batch_max);
    b.pos = malloc(sizeof *b.pos * (size_t)batch_max);
    b.seq = malloc(sizeof *b.seq * (size_t)batch_max);
    b.want = malloc((size_t)batch_max);
    b.logits = malloc(sizeof *b.logits * (size_t)b.m->hp.n_vocab);
    if (!b.tok || !b.pos || !b.seq || !b.want || !b.logits) {
        cmd_fail(C, "out of memory");
        goto done;
    }

    for (int t = 0; t < 2; t++) {
        int p = t == 0 ? n_prompt : 0, g = t == 1 ? n_gen : 0;
        if (p == 0 && g == 0)
            continue;
        bench_result *r = &res[n_res++];
        r->n_prompt = p;
        r->n_gen = g;
        r->depth = depth;
        snprintf(r->test, sizeof r->test, p ? "pp%d" : "tg%d", p ? p : g);
        if (depth)
            snprintf(r->test + strlen(r->test), sizeof r->test - strlen(r->test), " @ d%d", depth);
        if (!(r->samples = calloc((size_t)reps, sizeof *r->samples))) {
            cmd_fail(C, "out of memory");
            goto done;
        }
        if (run_once(&b, p, g, depth) < 0) {
            cmd_fail(C, "%s", b.err.msg[0] ? b.err.msg : "forward pass failed");
            goto done;
        }
        double sum = 0, ss = 0;
        for (int i = 0; i < reps; i++) {
            double ts = run_once(&b, p, g, depth);
            if (ts < 0) {
                cmd_fail(C, "%s", b.err.msg[0] ? b.err.msg : "forward pass failed");
                goto done;
            }
            r->samples[r->n_samples++] = ts;
            sum += ts;
        }
        r->mean = sum / reps;
        for (int i = 0; i < reps; i++)
            ss += (r->samples[i] - r->mean) * (r->samples[i] - r->mean);
        r->sd = reps > 1 ? sqrt(ss / (reps - 1)) : 0;
    }

    uint64_t size = 0;
    for (int i = 0; i < gguf_n_tensors(b.m->file); i++)
        size += gguf_tensor_at(b.m->file, i)->size;
    char label[16], model_s[96], size_s[32], params_s[32], backend_s[160];
    size_label(b.m->n_params, label, sizeof label);
    snprintf(model_s, sizeof model_s, "%s %s %s", b.m->hp.arch, label, model_file_type_name(b.m));
    fmt_size(size, size_s, sizeof size_s);
    fmt_params(b.m->n_params, params_s, sizeof params_s);
    backend_label(b.m, backend_s, sizeof backend_s);
    int n_threads = b.m->cpu ? backend_cpu_threads(b.m->cpu) : threads;
    bool extra = tk != T_F16 || tv != T_F16 || fa;

    if (strcmp(fmt, "md") == 0) {
        printf("| %-30s | %10s | %10s | %-10s | %7s |", "model", "size", "params", "backend", "threads");
        if (extra)
            printf(" %5s | %5s | %3s |", "type_k", "type_v", "fa");
        printf(" %15s | %20s |\n", "test", "t/s");
        printf("| ------------------------------ | ---------: | ---------: | ---------- | ------: |");
        if (extra)
            printf(" -----: | -----: | --: |");
        printf(" --------------: | -------------------: |\n");
        for (int i = 0; i < n_res; i++) {
            char ts[48];
            snprintf(ts, sizeof ts, "%.2f ± %.2f", res[i].mean, res[i].sd);
            printf("| %-30s | %10s | %10s | %-10s | %7d |", model_s, size_s, params_s, backend_s, n_threads);
            if (extra)
                printf(" %6s | %6s | %3s |", type_info(tk)->name, type_info(tv)->name, fa ? "1" : "0");
            /* "±" is two bytes but one column: pad by hand to keep the table aligned. */
            printf(" %15s | %21s |\n", res[i].test, ts);
        }
    } else if (strcmp(fmt, "csv") == 0) {
        printf("model,size,params,backend,threads,type_k,type_v,flash_attn,test,n_prompt,n_gen,n_depth,"
               "avg_ts,stddev_ts\n");
        for (int i = 0; i < n_res; i++)
            printf("\"%s\",%llu,%llu,\"%s\",%d,%s,%s,%d,\"%s\",%d,%d,%d,%.6f,%.6f\n", model_s,
                   (unsigned long long)size, (unsigned long long)b.m->n_params, backend_s, n_threads,
                   type_info(tk)->name, type_info(tv)->name, fa, res[i].test, res[i].n_prompt, res[i].n_gen,
                   res[i].depth, res[i].mean, res[i].sd);
    } else {
        printf("[\n");
        for (int i = 0; i < n_res; i++) {
            printf("  {\"model\": ");
            json_str(model_s);
            printf(", \"size\": %llu, \"params\": %llu, \"backend\": ", (unsigned long long)size,
                   (unsigned long long)b.m->n_params);
            json_str(backend_s);
            printf(", \"threads\": %d, \"type_k\": \"%s\", \"type_v\": \"%s\", \"flash_attn\": %s, \"test\": ",
                   n_threads, type_info(tk)->name, type_info(tv)->name, fa ? "true" : "false");
            json_str(res[i].test);
            printf(", \"n_prompt\": %d, \"n_gen\": %d, \"n_depth\": %d, \"avg_ts\": %.6f, \"stddev_ts\": %.6f, "
                   "\"samples_ts\": [",
                   res[i].n_prompt, res[i].n_gen, res[i].depth, res[i].mean, res[i].sd);
            for (int k = 0; k < res[i].n_samples; k++)
                printf(k ? ", %.6f" : "%.6f", res[i].samples[k]);
            printf("]}%s\n", i + 1 < n_res ? "," : "");
        }
        printf("]\n");
    }
    const model_stream_stats *st = &b.m->stream;
    if (st->layers) /* what the prompt batches did with the host-resident feed-forward weights */
        fprintf(stderr, "bench: %d layers' feed-forward weights in host memory (%.1f MiB); micro-batches of %d+ "
                        "tokens stream them to the GPU; %llu streamed%s%s\n",
                st->layers, (double)st->bytes / 1048576.0, st->threshold, (unsigned long long)st->batches,
                st->error[0] ? "; fell back: " : "", st->error);
    rc = fflush(stdout) ? cmd_fail(C, "cannot write: %s", strerror(errno)) : CMD_OK;
done:
    for (int i = 0; i < n_res; i++)
        free(res[i].samples);
    free(b.tok);
    free(b.pos);
    free(b.seq);
    free(b.want);
    free(b.logits);
    if (b.kv)
        kv_cache_free(b.kv);
    model_free(b.m);
    return rc;
}
