/* cmd_mkmodel.c — `llmfs mkmodel`: a random-weight (or calibrated) GGUF of a real model's shape. */
#include "cmd.h"
#include "mkmodel.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

static void usage(void)
{
    printf("usage: llmfs mkmodel (--shape NAME | --arch ARCH [DIMS]) [--type TYPE] [--vocab FILE]\n"
           "                     [--seed S] [--calibrated] [-t N] [-q] -o FILE\n"
           "  --shape NAME    a real model's shape (dims below override it):\n"
           "                 ");
    for (int i = 0; mkmodel_shape_name(i); i++)
        printf(" %s", mkmodel_shape_name(i));
    printf("\n"
           "  --arch ARCH     llama, qwen2, qwen3, qwen3moe, gpt-oss (a small model unless dims are given)\n"
           "  --type TYPE     q4_k_m (default; llama.cpp's mix), q8_0, q4_0, q4_1, q5_0, q5_1,\n"
           "                  q2_k, q3_k, q4_k, q5_k, q6_k, iq4_nl, iq4_xs, tq1_0, tq2_0, mxfp4,\n"
           "                  f16, bf16, f32 (every weight that type); mxfp4_moe (MXFP4 experts,\n"
           "                  Q8_0 elsewhere, llama.cpp's MXFP4_MOE); iq3_xxs, iq3_s, iq2_xxs,\n"
           "                  iq2_xs, iq2_s, iq1_s, iq1_m as random grid codes (no quantizer:\n"
           "                  llama.cpp needs an importance matrix for these)\n"
           "  --vocab FILE    copy the tokenizer of a (vocab-only) GGUF; n_vocab becomes its size.\n"
           "                  Without it: byte-level BPE, 256 byte tokens, ChatML specials, padding\n"
           "  DIMS            --n-embd --n-layer --n-head --n-head-kv --head-dim --n-ff --n-expert\n"
           "                  --n-expert-used --n-ff-exp --n-vocab --ctx --rope-base --rms-eps\n"
           "                  --rope-llama3 FACTOR (0 off)\n"
           "                  --tied | --untied, --name NAME\n"
           "  --seed S        weights are a function of the seed alone (default 1)\n"
           "  --calibrated    weights shaped like a trained model's (dense llama, qwen2, qwen3):\n"
           "                  each token predicts a seeded successor with a clear margin, so the\n"
           "                  files of one seed at any precision agree (draft models)\n"
           "  -t N            threads (default: every CPU)\n");
}

int cmd_mkmodel(int argc, char **argv)
{
    const char *C = "mkmodel";
    const char *shape_name = NULL, *arch = NULL, *type = "q4_k_m", *vocab = NULL, *out = NULL, *name = NULL;
    int n_embd = -1, n_layer = -1, n_head = -1, n_head_kv = -1, head_dim = -1, n_ff = -1;
    int n_expert = -1, n_expert_used = -1, n_ff_exp = -1, n_vocab = -1, n_ctx = -1, threads = 0;
    double rope_base = -1, rms_eps = -1, rope_l3 = -1;
    bool tied = false, untied = false, quiet = false, calibrated = false;
    uint64_t seed = 1;
    const double BIG = 1 << 24;
    const cmd_opt opts[] = {
        {"--shape", OPT_STR, &shape_name, 0, 0},
        {"--arch", OPT_STR, &arch, 0, 0},
        {"--type", OPT_STR, &type, 0, 0},
        {"--vocab", OPT_STR, &vocab, 0, 0},
        {"-o|--output", OPT_STR, &out, 0, 0},
        {"--name", OPT_STR, &name, 0, 0},
        {"--seed", OPT_U64, &seed, 0, 0},
        {"-t|--threads", OPT_INT, &threads, 0, 4096},
        {"-q|--quiet", OPT_FLAG, &quiet, 0, 0},
        {"--calibrated", OPT_FLAG, &calibrated, 0, 0},
        {"--n-embd", OPT_INT, &n_embd, 1, BIG},
        {"--n-layer", OPT_INT, &n_layer, 1, 4096},
        {"--n-head", OPT_INT, &n_head, 1, 4096},
        {"--n-head-kv", OPT_INT, &n_head_kv, 1, 4096},
        {"--head-dim", OPT_INT, &head_dim, 2, 4096},
        {"--n-ff", OPT_INT, &n_ff, 1, BIG},
        {"--n-expert", OPT_INT, &n_expert, 0, 4096},
        {"--n-expert-used", OPT_INT, &n_expert_used, 0, 4096},
        {"--n-ff-exp", OPT_INT, &n_ff_exp, 1, BIG},
        {"--n-vocab", OPT_INT, &n_vocab, 1, BIG},
        {"--ctx", OPT_INT, &n_ctx, 1, BIG * 16},
        {"--rope-base", OPT_FLOAT, &rope_base, 1e-3, 1e12},
        {"--rms-eps", OPT_FLOAT, &rms_eps, 1e-12, 1},
        {"--rope-llama3", OPT_FLOAT, &rope_l3, 0, 1024},
        {"--tied", OPT_FLAG, &tied, 0, 0},
        {"--untied", OPT_FLAG, &untied, 0, 0},
    };
    char *pos[1];
    int np = cmd_parse(C, argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), pos, 0);
    if (np == CMD_PARSE_HELP) {
        usage();
        return CMD_OK;
    }
    if (np < 0)
        return CMD_USAGE;
    if (!out)
        return cmd_usage_error(C, "missing -o FILE");
    if (tied && untied)
        return cmd_usage_error(C, "--tied and --untied contradict each other");

    mkmodel_shape s;
    if (shape_name) {
        if (!mkmodel_shape_find(shape_name, &s))
            return cmd_usage_error(C, "unknown shape '%s' (see 'llmfs mkmodel --help')", shape_name);
        if (arch && strcmp(arch, s.arch) != 0)
            return cmd_usage_error(C, "shape %s is a %s model, not %s", shape_name, s.arch, arch);
    } else if (arch) {
        if (!mkmodel_arch_defaults(arch, &s))
            return cmd_usage_error(C, "unknown architecture '%s' (llama, qwen2, qwen3, qwen3moe, gpt-oss)", arch);
    } else {
        return cmd_usage_error(C, "needs --shape NAME or --arch ARCH");
    }
    int ftype = mkmodel_ftype_from_name(type);
    if (ftype < 0)
        return cmd_usage_error(C, "unknown type '%s' (see 'llmfs mkmodel --help')", type);

    /* A new width or head count without --head-dim keeps heads tiling the width. */
    bool reshaped = n_embd > 0 || n_head > 0;
#define OVR(field, v) \
    if ((v) >= 0)     \
        s.field = (v);
    OVR(n_embd, n_embd)
    OVR(n_layer, n_layer)
    OVR(n_head, n_head)
    OVR(n_head_kv, n_head_kv)
    OVR(n_ff, n_ff)
    OVR(n_expert, n_expert)
    OVR(n_expert_used, n_expert_used)
    OVR(n_ff_exp, n_ff_exp)
    OVR(n_vocab, n_vocab)
    OVR(n_ctx, n_ctx)
#undef OVR
    if (head_dim > 0)
        s.head_dim = head_dim;
    else if (reshaped)
        s.head_dim = s.n_embd / s.n_head;
    if (n_head > 0 && n_head_kv < 0 && s.n_head % s.n_head_kv)
        s.n_head_kv = s.n_head;
    if (rope_base > 0)
        s.rope_base = (float)rope_base;
    if (rms_eps > 0)
        s.rms_eps = (float)rms_eps;
    if (rope_l3 >= 0)
        s.rope_l3_factor = (float)rope_l3;
    if (tied)
        s.tied = true;
    if (untied)
        s.tied = false;
    if (name)
        snprintf(s.name, sizeof s.name, "%s", name);
    if (vocab && n_vocab > 0)
        return cmd_usage_error(C, "--n-vocab and --vocab: the vocab file sets the size");

    llmfs_error err = {0};
    if (mkmodel_shape_check(&s, &err) < 0)
        return cmd_usage_error(C, "%s", err.msg);

    mkmodel_opts o = {.vocab_path = vocab, .seed = seed, .n_threads = threads, .quiet = quiet,
                      .calibrated = calibrated};
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    if (mkmodel_write(&s, ftype, &o, out, &err) < 0)
        return cmd_fail(C, "%s", err.msg[0] ? err.msg : "failed");
    clock_gettime(CLOCK_MONOTONIC, &t1);
    struct stat st;
    double mib = stat(out, &st) == 0 ? (double)st.st_size / (1024.0 * 1024.0) : 0;
    if (!quiet)
        printf("%s: %s %s %s, %.1f MiB in %.1f s\n", out, s.arch, s.name, type, mib,
               (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) * 1e-9);
    return CMD_OK;
}
