/* cmd_info.c — `llmfs info`: what a model file holds. */
#include "cmd.h"

#include "chat.h"
#include "gguf.h"
#include "model.h"
#include "quant.h"
#include "tokenizer.h"

#include <errno.h>
#include <string.h>

static void usage(void)
{
    printf("usage: llmfs info -m MODEL [--no-template]\n"
           "  architecture, hyperparameters, tensor types, size, parameter count, file type,\n"
           "  tokenizer and chat template (the template text last, unless --no-template)\n");
}

static void print_bytes(uint64_t b)
{
    if (b >= (1ull << 30))
        printf("%.2f GiB", (double)b / (double)(1ull << 30));
    else
        printf("%.2f MiB", (double)b / (double)(1ull << 20));
}

static void print_tensor_types(const gguf_file *f)
{
    uint64_t bytes[T_COUNT] = {0}, other_bytes = 0;
    int count[T_COUNT] = {0}, other = 0, n = gguf_n_tensors(f);
    for (int i = 0; i < n; i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        if (t->type >= 0 && t->type < T_COUNT) {
            count[t->type]++;
            bytes[t->type] += t->size;
        } else {
            other++;
            other_bytes += t->size;
        }
    }
    printf("tensors:        %d\n", n);
    for (int t = 0; t < T_COUNT; t++) {
        if (!count[t])
            continue;
        const type_traits *tr = type_info(t);
        printf("  %-12s %5d tensors  ", tr ? tr->name : "?", count[t]);
        print_bytes(bytes[t]);
        putchar('\n');
    }
    if (other) {
        printf("  %-12s %5d tensors  ", "unknown", other);
        print_bytes(other_bytes);
        putchar('\n');
    }
}

static void print_tokenizer(const gguf_file *f, const tokenizer *tok)
{
    size_t len;
    const char *pre = gguf_get_str(f, "tokenizer.ggml.pre", &len);
    printf("tokenizer:      %s%s%s, %d tokens\n", tokenizer_kind(tok) == TOK_SPM ? "spm" : "bpe",
           pre ? " / " : "", pre ? pre : "", tokenizer_n_vocab(tok));
    int32_t bos = tokenizer_bos(tok), eos = tokenizer_eos(tok);
    printf("special tokens: bos %d", bos);
    if (bos >= 0)
        printf(" '%s'", tokenizer_text(tok, bos));
    printf(", eos %d", eos);
    if (eos >= 0)
        printf(" '%s'", tokenizer_text(tok, eos));
    printf(", add_bos %s\n", tokenizer_add_bos(tok) ? "yes" : "no");
}

static void print_template(const gguf_file *f, bool text)
{
    size_t len;
    const char *tmpl = gguf_get_str(f, "tokenizer.chat_template", &len);
    printf("chat template:  %s\n", chat_template_name(tmpl));
    if (tmpl && text) {
        printf("---- chat template ----\n");
        fwrite(tmpl, 1, len, stdout);
        if (len && tmpl[len - 1] != '\n')
            putchar('\n');
        printf("----\n");
    }
}

static void print_params(uint64_t p)
{
    if (p >= 1000000000ull)
        printf("%.2f B", (double)p / 1e9);
    else if (p >= 1000000ull)
        printf("%.2f M", (double)p / 1e6);
    else
        printf("%.2f K", (double)p / 1e3);
    printf(" (%llu)", (unsigned long long)p);
}

int cmd_info(int argc, char **argv)
{
    const char *C = "info";
    const char *path = NULL;
    bool no_template = false;
    const cmd_opt opts[] = {
        {"-m|--model", OPT_STR, &path, 0, 0},
        {"--no-template", OPT_FLAG, &no_template, 0, 0},
    };
    char *pos[1];
    int np = cmd_parse(C, argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), pos, 1);
    if (np == CMD_PARSE_HELP) {
        usage();
        return CMD_OK;
    }
    if (np < 0)
        return CMD_USAGE;
    if (!path && np == 1)
        path = pos[0];
    if (!path)
        return cmd_usage_error(C, "missing -m MODEL");

    llmfs_error err = {0};
    model_opts mo = {.n_threads = 1, .n_threads_batch = 1, .n_ubatch = 1};
    model *m = model_load(path, &mo, &err);
    if (!m) {
        /* Still describe what the file holds (a vocab-only file, an unsupported
         * architecture), then report why it is not a usable model. */
        llmfs_error ferr = {0};
        gguf_open_opts go = {0};
        gguf_file *f = gguf_open(path, &go, &ferr);
        if (!f)
            return cmd_fail(C, "%s", err.msg);
        size_t len;
        const char *arch = gguf_get_str(f, "general.architecture", &len);
        printf("file:           %s (%zu bytes)\n", path, gguf_file_size(f));
        printf("architecture:   %s\n", arch ? arch : "?");
        print_tensor_types(f);
        tokenizer *tok = tokenizer_load(f, &ferr);
        if (tok) {
            print_tokenizer(f, tok);
            tokenizer_free(tok);
        }
        print_template(f, !no_template);
        gguf_close(f);
        return cmd_fail(C, "not a loadable model: %s", err.msg);
    }

    const model_hparams *hp = &m->hp;
    printf("file:           %s (%zu bytes, ", path, gguf_file_size(m->file));
    print_bytes(gguf_file_size(m->file));
    printf(")\n");
    printf("architecture:   %s\n", hp->arch);
    if (hp->name[0])
        printf("name:           %s\n", hp->name);
    printf("file type:      %s\n", model_file_type_name(m));
    printf("parameters:     ");
    print_params(m->n_params);
    printf("\n");
    printf("context:        %d (trained)\n", hp->n_ctx_train);
    printf("n_embd:         %d\n", hp->n_embd);
    printf("n_layer:        %d\n", hp->n_layer);
    printf("n_head:         %d (kv %d, head_dim %d)\n", hp->n_head, hp->n_head_kv, hp->head_dim);
    if (hp->n_expert)
        printf("experts:        %d, %d used, ff %d%s\n", hp->n_expert, hp->n_expert_used, hp->n_ff_exp,
               hp->expert_norm ? ", weights renormalised" : "");
    else
        printf("n_ff:           %d\n", hp->n_ff);
    printf("rope:           base %g, %s, %d dims%s\n", hp->rope.freq_base, hp->rope.neox ? "neox" : "interleaved",
           hp->rope.n_rot, hp->rope.freq_factors || hp->rope.l3_factor > 0 ? ", frequency factors" : "");
    printf("rms_eps:        %g\n", hp->rms_eps);
    printf("output:         %s\n", hp->tied_output ? "tied to token_embd" : "separate");
    if (hp->qkv_bias || hp->qk_norm)
        printf("attention:      %s%s\n", hp->qkv_bias ? "q/k/v biases " : "", hp->qk_norm ? "q/k norms" : "");
    /* layer kinds (Gemma): each kind's window, KV heads and head size, and shared caches */
    int n_swa_layers = 0, n_shared = 0, swa_at = -1, full_at = -1;
    for (int il = 0; il < hp->n_layer; il++) {
        const model_layer *L = &m->layers[il];
        n_shared += L->kv_from != il;
        if (L->n_swa) {
            n_swa_layers++;
            swa_at = swa_at < 0 ? il : swa_at;
        } else {
            full_at = full_at < 0 ? il : full_at;
        }
    }
    if (n_swa_layers) {
        const model_layer *S = &m->layers[swa_at];
        printf("layers:         %d sliding-window (window %d, kv %d x %d, rope base %g)", n_swa_layers, S->n_swa,
               S->n_head_kv, S->head_dim, S->rope.freq_base);
        if (full_at >= 0)
            printf(", %d full (kv %d x %d)", hp->n_layer - n_swa_layers, m->layers[full_at].n_head_kv,
                   m->layers[full_at].head_dim);
        if (n_shared)
            printf(", %d reuse an earlier layer's KV", n_shared);
        putchar('\n');
    }
    if (hp->logit_softcap > 0)
        printf("logits:         soft-capped at %g\n", hp->logit_softcap);
    print_tensor_types(m->file);
    print_tokenizer(m->file, m->tok);
    print_template(m->file, !no_template);
    model_free(m);
    if (fflush(stdout))
        return cmd_fail(C, "cannot write: %s", strerror(errno));
    return CMD_OK;
}
