/* cmd_logits.c — `llmfs logits`: every position's logits for token ids evaluated in one
 * batch, as little-endian float32 [n_tokens][n_vocab] (the format of the reference
 * fixtures, so the two compare byte for byte in layout). */
#include "cmd.h"

#include "kv.h"
#include "model.h"
#include "quant.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void usage(void)
{
    printf("usage: llmfs logits -m MODEL (--tokens \"ID ID ...\" | --tokens-file FILE) -o FILE\n"
           "                    [-ctk TYPE] [-ctv TYPE] [--fa on|off] [-t N] [-c CTX] [-ub N] [-ngl N]\n"
           "                    [--no-mmap]\n"
           "  writes float32 little-endian logits, row-major [n_tokens][n_vocab]\n"
           "  -ctk, -ctv  KV cache types: f16 (default), q8_0, q4_0\n"
           "  --fa        flash attention (default off)\n"
           "  -c CTX      KV cache cells (default: max(512, n_tokens))\n");
}

/* Parses space/comma separated ids; returns the count or -1. */
static int parse_ids(const char *s, int32_t **out)
{
    int n = 0, cap = 64;
    int32_t *v = malloc(sizeof *v * (size_t)cap);
    if (!v)
        return -1;
    for (const char *p = s;;) {
        while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == ',')
            p++;
        if (!*p)
            break;
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX) {
            free(v);
            return -1;
        }
        if (n == cap) {
            int32_t *nv = realloc(v, sizeof *v * (size_t)(cap *= 2));
            if (!nv) {
                free(v);
                return -1;
            }
            v = nv;
        }
        v[n++] = (int32_t)x;
        p = end;
    }
    *out = v;
    return n;
}

static bool host_is_le(void)
{
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

int cmd_logits(int argc, char **argv)
{
    const char *C = "logits";
    const char *path = NULL, *tokens = NULL, *tokens_file = NULL, *out = NULL, *ctk = "f16", *ctv = "f16";
    bool fa = false, no_mmap = false;
    int threads = 0, n_ctx = 0, ubatch = 512, ngl = 0;
    const cmd_opt opts[] = {
        {"-m|--model", OPT_STR, &path, 0, 0},
        {"--tokens", OPT_STR, &tokens, 0, 0},
        {"--tokens-file", OPT_STR, &tokens_file, 0, 0},
        {"-o|--output", OPT_STR, &out, 0, 0},
        {"-ctk|--cache-type-k", OPT_STR, &ctk, 0, 0},
        {"-ctv|--cache-type-v", OPT_STR, &ctv, 0, 0},
        {"-fa|--fa|--flash-attn", OPT_ONOFF, &fa, 0, 0},
        {"-t|--threads", OPT_INT, &threads, 0, 1024},
        {"-c|--ctx-size", OPT_INT, &n_ctx, 0, 1 << 24},
        {"-ub|--ubatch-size", OPT_INT, &ubatch, 1, 1 << 20},
        {"-ngl|--n-gpu-layers", OPT_INT, &ngl, 0, 100000},
        {"--no-mmap", OPT_FLAG, &no_mmap, 0, 0},
    };
    char *pos[1];
    int np = cmd_parse(C, argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), pos, 0);
    if (np == CMD_PARSE_HELP) {
        usage();
        return CMD_OK;
    }
    if (np < 0)
        return CMD_USAGE;
    if (!path)
        return cmd_usage_error(C, "missing -m MODEL");
    if (!out)
        return cmd_usage_error(C, "missing -o FILE");
    if (!tokens == !tokens_file)
        return cmd_usage_error(C, "give the ids with --tokens or --tokens-file");
    int tk = cmd_kv_type(ctk), tv = cmd_kv_type(ctv);
    if (tk < 0 || tv < 0)
        return cmd_usage_error(C, "KV cache types are f16, q8_0 or q4_0, not '%s'", tk < 0 ? ctk : ctv);

    char *file_text = NULL;
    if (tokens_file && !(tokens = file_text = cmd_read_file(tokens_file, NULL)))
        return cmd_fail(C, "cannot read %s: %s", tokens_file, strerror(errno));
    int32_t *ids = NULL;
    int n = parse_ids(tokens, &ids);
    free(file_text);
    if (n < 0)
        return cmd_usage_error(C, "token ids are non-negative integers separated by spaces");
    if (n == 0) {
        free(ids);
        return cmd_usage_error(C, "no token ids");
    }

    int rc = CMD_FAIL;
    llmfs_error err = {0};
    model_opts mo = {.no_mmap = no_mmap, .n_threads = threads, .n_threads_batch = threads, .n_ubatch = ubatch,
                     .ngl = ngl};
    model *m = model_load(path, &mo, &err);
    kv_cache *kv = NULL;
    float *logits = NULL;
    int32_t *posv = NULL, *seq = NULL;
    int8_t *want = NULL;
    FILE *f = NULL;
    if (!m) {
        cmd_fail(C, "%s", err.msg);
        goto done;
    }
    int n_vocab = m->hp.n_vocab;
    for (int i = 0; i < n; i++)
        if (ids[i] >= n_vocab) {
            cmd_usage_error(C, "token id %d is outside the vocab (0..%d)", ids[i], n_vocab - 1);
            rc = CMD_USAGE;
            goto done;
        }
    if (n_ctx <= 0)
        n_ctx = n > 512 ? n : 512;
    if (n > n_ctx) {
        cmd_usage_error(C, "%d tokens do not fit a context of %d", n, n_ctx);
        rc = CMD_USAGE;
        goto done;
    }
    if (!(kv = kv_cache_alloc(m, n_ctx, 1, tk, tv, &err))) {
        cmd_fail(C, "%s", err.msg);
        goto done;
    }
    logits = malloc(sizeof *logits * (size_t)n * (size_t)n_vocab);
    posv = malloc(sizeof *posv * (size_t)n);
    seq = calloc((size_t)n, sizeof *seq);
    want = malloc((size_t)n);
    if (!logits || !posv || !seq || !want) {
        cmd_fail(C, "out of memory for %d x %d logits", n, n_vocab);
        goto done;
    }
    for (int i = 0; i < n; i++) {
        posv[i] = i;
        want[i] = 1;
    }
    fwd_batch b = {.n = n, .token = ids, .pos = posv, .seq = seq, .logits = want};
    if (model_forward(m, kv, &b, logits, fa, &err) < 0) {
        cmd_fail(C, "%s", err.msg[0] ? err.msg : "forward pass failed");
        goto done;
    }
    if (!host_is_le()) {
        for (size_t i = 0; i < (size_t)n * (size_t)n_vocab; i++) {
            uint32_t u;
            memcpy(&u, &logits[i], 4);
            u = __builtin_bswap32(u);
            memcpy(&logits[i], &u, 4);
        }
    }
    if (!(f = fopen(out, "wb"))) {
        cmd_fail(C, "cannot create %s: %s", out, strerror(errno));
        goto done;
    }
    size_t count = (size_t)n * (size_t)n_vocab;
    if (fwrite(logits, sizeof(float), count, f) != count || fflush(f)) {
        cmd_fail(C, "cannot write %s: %s", out, strerror(errno));
        goto done;
    }
    rc = CMD_OK;
done:
    if (f && fclose(f) && rc == CMD_OK)
        rc = cmd_fail(C, "cannot write %s: %s", out, strerror(errno));
    free(want);
    free(seq);
    free(posv);
    free(logits);
    if (kv)
        kv_cache_free(kv);
    if (m)
        model_free(m);
    free(ids);
    return rc;
}
