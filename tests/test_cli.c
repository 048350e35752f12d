/* test_cli.c — the llmfs subcommands, called in-process with argv arrays and their
 * stdout/stderr captured: tokenize/detok against the fixtures, logits against llama.cpp's
 * reference logits, mkmodel's files (loadable, right shapes and types, sane outputs,
 * copied vocab), bench's three output formats and the error paths. */
#include "testutil.h"
#include "fixture.h"

#include "cmd.h"
#include "gguf.h"
#include "kv.h"
#include "mkmodel.h"
#include "model.h"
#include "quant.h"
#include "tokenizer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- running a subcommand ---- */

typedef struct cmd_out {
    int rc;
    char *out, *err;
    size_t out_len;
} cmd_out;

static char tmpdir[256];

static const char *tmp_path(const char *name, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s", tmpdir, name);
    return buf;
}

static char *slurp_fd(int fd, size_t *len)
{
    off_t n = lseek(fd, 0, SEEK_END);
    lseek(fd, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    ck_assert_ptr_nonnull(b);
    ck_assert_int_eq(read(fd, b, (size_t)n), n);
    b[n] = 0;
    if (len)
        *len = (size_t)n;
    return b;
}

/* Runs fn with argv {name, args..., NULL-terminated list}. */
static cmd_out run_argv(int (*fn)(int, char **), int argc, char **argv)
{
    char op[512], ep[512];
    tmp_path("stdout", op, sizeof op);
    tmp_path("stderr", ep, sizeof ep);
    fflush(stdout);
    fflush(stderr);
    int fo = open(op, O_RDWR | O_CREAT | O_TRUNC, 0600), fe = open(ep, O_RDWR | O_CREAT | O_TRUNC, 0600);
    ck_assert(fo >= 0 && fe >= 0);
    int so = dup(1), se = dup(2);
    dup2(fo, 1);
    dup2(fe, 2);
    cmd_out r;
    r.rc = fn(argc, argv);
    fflush(stdout);
    fflush(stderr);
    dup2(so, 1);
    dup2(se, 2);
    close(so);
    close(se);
    r.out = slurp_fd(fo, &r.out_len);
    r.err = slurp_fd(fe, NULL);
    close(fo);
    close(fe);
    return r;
}

static cmd_out run(int (*fn)(int, char **), const char *name, ...)
{
    char *argv[64];
    int argc = 0;
    argv[argc++] = (char *)name;
    va_list ap;
    va_start(ap, name);
    for (const char *a; (a = va_arg(ap, const char *));) {
        ck_assert_int_lt(argc, 63);
        argv[argc++] = (char *)a;
    }
    va_end(ap);
    argv[argc] = NULL;
    return run_argv(fn, argc, argv);
}

static void out_free(cmd_out *r)
{
    free(r->out);
    free(r->err);
}

static void trim(char *s)
{
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == ' ' || s[n - 1] == '\r'))
        s[--n] = 0;
}

/* The error contract: non-zero exit, exactly one stderr line, starting "llmfs: ". */
static void assert_one_line_error(const cmd_out *r, const char *what)
{
    ck_assert_msg(r->rc != 0, "%s: exit status 0", what);
    ck_assert_msg(strncmp(r->err, "llmfs: ", 7) == 0, "%s: stderr '%s'", what, r->err);
    size_t n = strlen(r->err);
    ck_assert_msg(n > 8 && r->err[n - 1] == '\n' && memchr(r->err, '\n', n - 1) == NULL,
                  "%s: stderr is not one line: '%s'", what, r->err);
}

/* ---- fixtures ---- */

/* A fixture case as the command-line tests use it (fixture.h has the model tests' form). */
typedef struct cli_case {
    char dir[1100], model[1024], name[600];
    int n_vocab;
} cli_case;

static int list_fixtures(cli_case **out)
{
    char base[512];
    test_shared_path("fixtures", base, sizeof base);
    int n = 0, cap = 64;
    cli_case *v = calloc((size_t)cap, sizeof *v);
    DIR *d = opendir(base);
    ck_assert_ptr_nonnull(d);
    for (struct dirent *e; (e = readdir(d));) {
        if (e->d_name[0] == '.')
            continue;
        char sub[800];
        snprintf(sub, sizeof sub, "%s/%s", base, e->d_name);
        DIR *d2 = opendir(sub);
        if (!d2)
            continue;
        for (struct dirent *c; (c = readdir(d2));) {
            if (c->d_name[0] == '.')
                continue;
            cli_case *f = &v[n];
            snprintf(f->dir, sizeof f->dir, "%s/%s", sub, c->d_name);
            char meta[1200], model[256], nv[32], arch[32], wtype[16], kind[16];
            snprintf(meta, sizeof meta, "%s/meta.txt", f->dir);
            if (test_meta_get(meta, "model", model, sizeof model) || test_meta_get(meta, "n_vocab", nv, sizeof nv))
                continue;
            snprintf(f->name, sizeof f->name, "%s/%s", e->d_name, c->d_name);
            ck_assert(!fixture_describe(f->dir, f->name, arch, wtype, kind));
            if (!strcmp(kind, "vision")) /* -1 for the image: tests/test_vision.c tokenizes these */
                continue;
            const char *why = fixture_unsupported(arch, wtype, kind);
            if (why) {
                test_say_skip(f->name, why);
                continue;
            }
            char rel[300];
            snprintf(rel, sizeof rel, "models/%s", model);
            test_shared_path(rel, f->model, sizeof f->model);
            f->n_vocab = atoi(nv);
            if (++n == cap)
                v = realloc(v, sizeof *v * (size_t)(cap *= 2));
        }
        closedir(d2);
    }
    closedir(d);
    *out = v;
    return n;
}

static const char *fpath(const cli_case *f, const char *file, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s", f->dir, file);
    return buf;
}

/* ---- tokenize / detok ---- */

START_TEST(tokenize_matches_every_fixture)
{
    cli_case *fx;
    int n = list_fixtures(&fx);
    ck_assert_int_gt(n, 30);
    for (int i = 0; i < n; i++) {
        char p[1200], t[1200];
        cmd_out r = run(cmd_tokenize, "tokenize", "-m", fx[i].model, "-f", fpath(&fx[i], "prompt.txt", p, sizeof p),
                        NULL);
        ck_assert_msg(r.rc == 0, "%s: %s", fx[i].name, r.err);
        char *want = test_read_file(fpath(&fx[i], "tokens.txt", t, sizeof t), NULL);
        ck_assert_ptr_nonnull(want);
        trim(want);
        trim(r.out);
        ck_assert_msg(strcmp(r.out, want) == 0, "%s: got '%s' want '%s'", fx[i].name, r.out, want);
        free(want);
        out_free(&r);
    }
    free(fx);
}
END_TEST

START_TEST(tokenize_flags)
{
    char m[1024];
    test_shared_path("models/qwen3-tiny-q4_k.gguf", m, sizeof m);
    /* Special tokens are parsed by default and not with --no-special. */
    cmd_out a = run(cmd_tokenize, "tokenize", "-m", m, "<|im_start|>", NULL);
    ck_assert_int_eq(a.rc, 0);
    trim(a.out);
    ck_assert_str_eq(a.out, "8193");
    cmd_out b = run(cmd_tokenize, "tokenize", "-m", m, "--no-special", "<|im_start|>", NULL);
    ck_assert_int_eq(b.rc, 0);
    ck_assert(strchr(b.out, ' ') != NULL); /* several plain-text tokens */
    /* Words are joined by one space. */
    cmd_out c = run(cmd_tokenize, "tokenize", "-m", m, "The", "quick", "brown", "fox", NULL);
    trim(c.out);
    ck_assert_str_eq(c.out, "785 3974 293 4830 282 5131");
    /* SPM adds BOS unless --no-bos. */
    test_shared_path("models/stories260K.gguf", m, sizeof m);
    cmd_out d = run(cmd_tokenize, "tokenize", "-m", m, "Once upon a time", NULL);
    cmd_out e = run(cmd_tokenize, "tokenize", "-m", m, "--no-bos", "Once upon a time", NULL);
    trim(d.out);
    trim(e.out);
    ck_assert(strncmp(d.out, "1 ", 2) == 0);
    ck_assert_str_eq(d.out + 2, e.out);
    /* --pieces: one "id<TAB>text" line per token. */
    cmd_out f = run(cmd_tokenize, "tokenize", "-m", m, "--pieces", "--no-bos", "Once upon a time", NULL);
    ck_assert_int_eq(f.rc, 0);
    int lines = 0, spaces = 0;
    for (char *p = f.out; *p; p++)
        lines += *p == '\n';
    for (char *p = e.out; *p; p++)
        spaces += *p == ' ';
    ck_assert_int_eq(lines, spaces + 1);
    char first[32];
    snprintf(first, sizeof first, "%.*s\t", (int)strcspn(e.out, " "), e.out);
    ck_assert(strncmp(f.out, first, strlen(first)) == 0);
    out_free(&a);
    out_free(&b);
    out_free(&c);
    out_free(&d);
    out_free(&e);
    out_free(&f);
}
END_TEST

START_TEST(detok_gives_back_the_prompt)
{
    static const char *cases[][2] = {
        {"qwen3-tiny-q4_k", "fox"},  {"qwen3-tiny-q4_k", "price"},   {"qwen2-tiny-q8_0", "chat"},
        {"stories260K", "lily-and-tom"}, {"llama-tiny-q8_0", "story"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char rel[256], m[1024], dir[1024], p[1200];
        snprintf(rel, sizeof rel, "models/%s.gguf", cases[i][0]);
        test_shared_path(rel, m, sizeof m);
        snprintf(rel, sizeof rel, "fixtures/%s/%s", cases[i][0], cases[i][1]);
        test_shared_path(rel, dir, sizeof dir);
        snprintf(p, sizeof p, "%s/tokens.txt", dir);
        char *ids = test_read_file(p, NULL);
        snprintf(p, sizeof p, "%s/prompt.txt", dir);
        size_t plen;
        char *prompt = test_read_file(p, &plen);
        ck_assert(ids && prompt);
        trim(ids);
        bool spm = strncmp(cases[i][0], "qwen", 4) != 0;
        /* SPM: skip the BOS id; the text comes back with SentencePiece's leading space. */
        const char *arg = spm ? strchr(ids, ' ') + 1 : ids;
        cmd_out r = run(cmd_detok, "detok", "-m", m, arg, NULL);
        ck_assert_msg(r.rc == 0, "%s", r.err);
        if (spm) {
            ck_assert_int_eq(r.out_len, plen + 1);
            ck_assert(r.out[0] == ' ' && memcmp(r.out + 1, prompt, plen) == 0);
        } else {
            ck_assert_msg(r.out_len == plen && memcmp(r.out, prompt, plen) == 0, "%s/%s: '%s'", cases[i][0],
                          cases[i][1], r.out);
        }
        out_free(&r);
        free(ids);
        free(prompt);
    }
}
END_TEST

/* ---- logits ---- */

static void check_logits_case(const char *model_stem, const char *case_name)
{
    char rel[256], m[1024], dir[1024], p[1200], out[600];
    snprintf(rel, sizeof rel, "models/%s.gguf", model_stem);
    test_shared_path(rel, m, sizeof m);
    snprintf(rel, sizeof rel, "fixtures/%s/%s", model_stem, case_name);
    test_shared_path(rel, dir, sizeof dir);
    char meta[1100], ctk[16], ctv[16], fa[8], nv[16];
    snprintf(meta, sizeof meta, "%s/meta.txt", dir);
    ck_assert(!test_meta_get(meta, "ctk", ctk, sizeof ctk) && !test_meta_get(meta, "ctv", ctv, sizeof ctv) &&
              !test_meta_get(meta, "flash_attn", fa, sizeof fa) && !test_meta_get(meta, "n_vocab", nv, sizeof nv));
    snprintf(p, sizeof p, "%s/tokens.txt", dir);
    char *ids = test_read_file(p, NULL);
    ck_assert_ptr_nonnull(ids);
    trim(ids);
    tmp_path("logits.f32", out, sizeof out);
    cmd_out r = run(cmd_logits, "logits", "-m", m, "--tokens", ids, "-o", out, "-ctk", ctk, "-ctv", ctv, "--fa",
                    fa, "-t", "2", NULL);
    ck_assert_msg(r.rc == 0, "%s/%s: %s", model_stem, case_name, r.err);
    ck_assert_int_eq(r.out_len, 0);

    int n_tok = 0;
    for (char *q = ids; *q; q++)
        n_tok += *q == ' ';
    n_tok++;
    int n_vocab = atoi(nv);
    size_t got_len, ref_len;
    char *got = test_read_file(out, &got_len);
    snprintf(p, sizeof p, "%s/logits.f32", dir);
    char *ref = test_read_file(p, &ref_len);
    ck_assert(got && ref);
    ck_assert_uint_eq(ref_len, (size_t)n_tok * (size_t)n_vocab * 4);
    ck_assert_uint_eq(got_len, ref_len);
    double tol = fixture_tolerance(model_stem, ctk), worst = 0;
    for (int t = 0; t < n_tok; t++) {
        const float *a = (const float *)got + (size_t)t * n_vocab, *b = (const float *)ref + (size_t)t * n_vocab;
        double se = 0, sr = 0;
        for (int v = 0; v < n_vocab; v++) {
            ck_assert(isfinite(a[v]));
            se += ((double)a[v] - b[v]) * ((double)a[v] - b[v]);
            sr += (double)b[v] * b[v];
        }
        double rel_err = sqrt(se / sr);
        if (rel_err > worst)
            worst = rel_err;
    }
    ck_assert_msg(worst <= tol, "%s/%s: relative RMS error %.3g > %.3g", model_stem, case_name, worst, tol);
    free(got);
    free(ref);
    free(ids);
    out_free(&r);
}

START_TEST(logits_match_reference)
{
    check_logits_case("stories260K", "once-upon-a-time");
    check_logits_case("llama-tiny-q8_0", "story-kvq8");
    check_logits_case("qwen3-tiny-q4_k", "fox-fa");
    check_logits_case("qwen2-tiny-q8_0", "chat");
}
END_TEST

START_TEST(logits_rejects_bad_ids)
{
    char m[1024], out[600];
    test_shared_path("models/stories260K.gguf", m, sizeof m);
    tmp_path("bad.f32", out, sizeof out);
    cmd_out r = run(cmd_logits, "logits", "-m", m, "--tokens", "1 512", "-o", out, NULL);
    assert_one_line_error(&r, "id past the vocab");
    out_free(&r);
    r = run(cmd_logits, "logits", "-m", m, "--tokens", "1 x 2", "-o", out, NULL);
    assert_one_line_error(&r, "non-numeric id");
    out_free(&r);
    r = run(cmd_logits, "logits", "-m", m, "--tokens", "1 2", "-o", out, "-ctk", "q5_1", NULL);
    assert_one_line_error(&r, "bad cache type");
    out_free(&r);
}
END_TEST

/* ---- mkmodel ---- */

static const char *mk(const char *file, char *path, size_t cap, ...)
{
    tmp_path(file, path, cap);
    char *argv[64];
    int argc = 0;
    argv[argc++] = "mkmodel";
    va_list ap;
    va_start(ap, cap);
    for (const char *a; (a = va_arg(ap, const char *));)
        argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc++] = "-q";
    argv[argc++] = "-o";
    argv[argc++] = path;
    argv[argc] = NULL;
    cmd_out r = run_argv(cmd_mkmodel, argc, argv);
    ck_assert_msg(r.rc == 0, "mkmodel %s: %s", file, r.err);
    out_free(&r);
    return path;
}

static int tensor_type(const gguf_file *f, const char *name)
{
    const gguf_tensor *t = gguf_find_tensor(f, name);
    ck_assert_msg(t != NULL, "no tensor %s", name);
    return t->type;
}

/* Loads the file, runs 12 random tokens in one batch and checks the logits look like a
 * language model's: finite, spread out, neither flat nor one-hot. */
static void check_forward(const char *path, int expect_vocab)
{
    llmfs_error err = {0};
    model_opts mo = {.n_threads = 2, .n_threads_batch = 2, .n_ubatch = 512};
    model *m = model_load(path, &mo, &err);
    ck_assert_msg(m != NULL, "%s: %s", path, err.msg);
    int V = m->hp.n_vocab;
    ck_assert_int_eq(V, expect_vocab);
    kv_cache *kv = kv_cache_alloc(m, 64, 1, T_F16, T_F16, &err);
    ck_assert_msg(kv != NULL, "%s", err.msg);
    enum { N = 12 };
    int32_t tok[N], pos[N], seq[N];
    int8_t want[N];
    for (int i = 0; i < N; i++) {
        tok[i] = (int32_t)((i * 7919 + 13) % V);
        pos[i] = i;
        seq[i] = 0;
        want[i] = 1;
    }
    float *logits = malloc(sizeof *logits * (size_t)N * (size_t)V);
    fwd_batch b = {.n = N, .token = tok, .pos = pos, .seq = seq, .logits = want};
    ck_assert_msg(model_forward(m, kv, &b, logits, false, &err) == 0, "%s", err.msg);
    int n_peaked = 0, n_flat = 0;
    for (int i = 0; i < N; i++) {
        const float *l = logits + (size_t)i * V;
        double mx = -INFINITY, mean = 0, var = 0, z = 0;
        for (int v = 0; v < V; v++) {
            ck_assert(isfinite(l[v]));
            mx = l[v] > mx ? l[v] : mx;
            mean += l[v];
        }
        mean /= V;
        for (int v = 0; v < V; v++) {
            var += (l[v] - mean) * (l[v] - mean);
            z += exp(l[v] - mx);
        }
        double sd = sqrt(var / V), top1 = 1.0 / z;
        ck_assert_msg(sd > 0.5 && sd < 50, "%s: logit sd %.3g at %d", path, sd, i);
        n_peaked += top1 > 0.999;
        n_flat += top1 < 2.0 / V;
    }
    ck_assert_msg(n_peaked < N / 2 && n_flat < N / 2, "%s: %d one-hot and %d flat positions", path, n_peaked,
                  n_flat);
    free(logits);
    kv_cache_free(kv);
    model_free(m);
}

START_TEST(mkmodel_q4_k_m_mix)
{
    char p[600];
    /* 8 layers: use_more_bits picks layers 0 (first eighth), 7 (last eighth), 3 and 6. */
    mk("llama8.gguf", p, sizeof p, "--arch", "llama", "--n-embd", "256", "--n-layer", "8", "--n-head", "4",
       "--n-head-kv", "2", "--n-ff", "512", "--n-vocab", "300", "--type", "q4_k_m", "--untied", NULL);
    llmfs_error err = {0};
    gguf_open_opts go = {0};
    gguf_file *f = gguf_open(p, &go, &err);
    ck_assert_msg(f != NULL, "%s", err.msg);
    uint32_t ft = 0;
    ck_assert(gguf_get_u32(f, "general.file_type", &ft));
    ck_assert_uint_eq(ft, 15);
    ck_assert_int_eq(tensor_type(f, "token_embd.weight"), T_Q4_K);
    ck_assert_int_eq(tensor_type(f, "output.weight"), T_Q6_K);
    ck_assert_int_eq(tensor_type(f, "output_norm.weight"), T_F32);
    for (int il = 0; il < 8; il++) {
        char n[64];
        int more = il == 0 || il == 3 || il == 6 || il == 7 ? T_Q6_K : T_Q4_K;
        snprintf(n, sizeof n, "blk.%d.attn_v.weight", il);
        ck_assert_msg(tensor_type(f, n) == more, "%s", n);
        snprintf(n, sizeof n, "blk.%d.ffn_down.weight", il);
        ck_assert_msg(tensor_type(f, n) == more, "%s", n);
        snprintf(n, sizeof n, "blk.%d.attn_q.weight", il);
        ck_assert_int_eq(tensor_type(f, n), T_Q4_K);
        snprintf(n, sizeof n, "blk.%d.ffn_up.weight", il);
        ck_assert_int_eq(tensor_type(f, n), T_Q4_K);
        snprintf(n, sizeof n, "blk.%d.attn_norm.weight", il);
        ck_assert_int_eq(tensor_type(f, n), T_F32);
    }
    const gguf_tensor *t = gguf_find_tensor(f, "blk.2.ffn_down.weight");
    ck_assert(t->ne[0] == 512 && t->ne[1] == 256);
    t = gguf_find_tensor(f, "blk.2.attn_k.weight");
    ck_assert(t->ne[0] == 256 && t->ne[1] == 128);
    gguf_close(f);
    check_forward(p, 300);

    /* Tied: the embedding is the output and gets its Q6_K. */
    mk("qwen3tied.gguf", p, sizeof p, "--shape", "qwen3-tiny", "--type", "q4_k_m", NULL);
    f = gguf_open(p, &go, &err);
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_null(gguf_find_tensor(f, "output.weight"));
    ck_assert_int_eq(tensor_type(f, "token_embd.weight"), T_Q6_K);
    ck_assert_int_eq(tensor_type(f, "blk.0.attn_v.weight"), T_Q4_K);
    ck_assert_int_eq(tensor_type(f, "blk.1.attn_v.weight"), T_Q6_K);
    gguf_close(f);
    check_forward(p, 8224);
}
END_TEST

START_TEST(mkmodel_every_arch_and_type)
{
    static const char *archs[] = {"llama", "qwen2", "qwen3", "qwen3moe"};
    static const char *types[] = {"q8_0", "f16", "q4_0", "q6_k", "bf16", "q4_k_m", "q5_1", "q3_k"};
    static const int type_ids[] = {T_Q8_0, T_F16, T_Q4_0, T_Q6_K, T_BF16, T_Q4_K, T_Q5_1, T_Q3_K};
    for (int a = 0; a < 4; a++) {
        for (int k = a % 2; k < 8; k += 2) {
            char file[64], p[600];
            snprintf(file, sizeof file, "%s-%s.gguf", archs[a], types[k]);
            mk(file, p, sizeof p, "--arch", archs[a], "--n-embd", "256", "--n-layer", "2", "--n-head", "4",
               "--n-head-kv", "2", "--n-ff", "512", "--n-ff-exp", "256", "--n-vocab", "512", "--type", types[k],
               "--seed", "7", NULL);
            llmfs_error err = {0};
            gguf_open_opts go = {0};
            gguf_file *f = gguf_open(p, &go, &err);
            ck_assert_msg(f != NULL, "%s: %s", file, err.msg);
            size_t len;
            const char *arch = gguf_get_str(f, "general.architecture", &len);
            ck_assert_str_eq(arch, archs[a]);
            bool moe = a == 3;
            ck_assert_int_eq(tensor_type(f, "blk.0.attn_q.weight"), type_ids[k]);
            ck_assert(gguf_find_tensor(f, moe ? "blk.1.ffn_gate_exps.weight" : "blk.1.ffn_gate.weight"));
            if (moe) {
                const gguf_tensor *t = gguf_find_tensor(f, "blk.1.ffn_down_exps.weight");
                ck_assert(t->n_dims == 3 && t->ne[0] == 256 && t->ne[1] == 256 && t->ne[2] == 8);
                ck_assert_int_eq(tensor_type(f, "blk.0.ffn_gate_inp.weight"), T_F32);
            }
            ck_assert(!!gguf_find_tensor(f, "blk.0.attn_q.bias") == (a == 1));
            ck_assert(!!gguf_find_tensor(f, "blk.0.attn_q_norm.weight") == (a >= 2));
            gguf_close(f);
            check_forward(p, 512);
        }
    }
}
END_TEST

START_TEST(mkmodel_moe_and_fallbacks)
{
    char p[600];
    /* With 8 experts llama.cpp bumps attn_v and attn_k to Q8_0 and attn_output to Q5_K. */
    mk("moe8.gguf", p, sizeof p, "--shape", "qwen3moe-tiny", "--n-embd", "256", "--n-head", "4", "--head-dim", "64",
       "--type", "q4_k_m", NULL);
    llmfs_error err = {0};
    gguf_open_opts go = {0};
    gguf_file *f = gguf_open(p, &go, &err);
    ck_assert_msg(f != NULL, "%s", err.msg);
    ck_assert_int_eq(tensor_type(f, "blk.0.attn_v.weight"), T_Q8_0);
    ck_assert_int_eq(tensor_type(f, "blk.0.attn_k.weight"), T_Q8_0);
    ck_assert_int_eq(tensor_type(f, "blk.0.attn_output.weight"), T_Q5_K);
    ck_assert_int_eq(tensor_type(f, "blk.1.ffn_down_exps.weight"), T_Q6_K);
    ck_assert_int_eq(tensor_type(f, "blk.0.ffn_down_exps.weight"), T_Q4_K);
    gguf_close(f);
    check_forward(p, 8224);

    /* Rows of 128 are not whole 256-blocks: Q4_K falls back to Q5_0, the output to Q8_0. */
    mk("narrow.gguf", p, sizeof p, "--arch", "qwen2", "--n-embd", "128", "--n-head", "4", "--n-ff", "256",
       "--type", "q4_k_m", NULL);
    f = gguf_open(p, &go, &err);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(tensor_type(f, "token_embd.weight"), T_Q8_0);
    ck_assert_int_eq(tensor_type(f, "blk.0.attn_q.weight"), T_Q5_0);
    ck_assert_int_eq(tensor_type(f, "blk.0.ffn_down.weight"), T_Q4_K); /* rows of n_ff = 256 */
    gguf_close(f);
    check_forward(p, 8224);
}
END_TEST

/* The IQ/TQ/MXFP4 file types: every weight in the type (the grid types as random codes),
 * MXFP4_MOE's experts, and IQ4_XS rows that are not whole 256-blocks falling back to
 * IQ4_NL as llama.cpp's do; every model runs. */
START_TEST(mkmodel_iq_types)
{
    static const char *types[] = {"iq4_nl", "iq4_xs", "mxfp4", "tq1_0", "iq2_xxs", "iq3_s", "iq1_m"};
    static const int ids[] = {T_IQ4_NL, T_IQ4_XS, T_MXFP4, T_TQ1_0, T_IQ2_XXS, T_IQ3_S, T_IQ1_M};
    char p[600], file[64];
    for (int k = 0; k < 7; k++) {
        snprintf(file, sizeof file, "llama-%s.gguf", types[k]);
        mk(file, p, sizeof p, "--arch", "llama", "--n-embd", "256", "--n-layer", "2", "--n-head", "4",
           "--n-head-kv", "2", "--n-ff", "512", "--n-vocab", "512", "--type", types[k], NULL);
        llmfs_error err = {0};
        gguf_open_opts go = {0};
        gguf_file *f = gguf_open(p, &go, &err);
        ck_assert_msg(f != NULL, "%s: %s", file, err.msg);
        ck_assert_int_eq(tensor_type(f, "blk.0.attn_q.weight"), ids[k]);
        ck_assert_int_eq(tensor_type(f, "blk.1.ffn_down.weight"), ids[k]);
        gguf_close(f);
        check_forward(p, 512);
    }
    mk("moe-mxfp4.gguf", p, sizeof p, "--shape", "qwen3moe-tiny", "--type", "mxfp4_moe", NULL);
    llmfs_error err = {0};
    gguf_open_opts go = {0};
    gguf_file *f = gguf_open(p, &go, &err);
    ck_assert_msg(f != NULL, "%s", err.msg);
    ck_assert_int_eq(tensor_type(f, "blk.0.ffn_gate_exps.weight"), T_MXFP4);
    ck_assert_int_eq(tensor_type(f, "blk.1.ffn_down_exps.weight"), T_MXFP4);
    ck_assert_int_eq(tensor_type(f, "blk.0.attn_q.weight"), T_Q8_0);
    gguf_close(f);
    check_forward(p, 8224);
    mk("narrow-iq4.gguf", p, sizeof p, "--arch", "qwen2", "--n-embd", "128", "--n-head", "4", "--n-ff", "256",
       "--type", "iq4_xs", NULL);
    f = gguf_open(p, &go, &err);
    ck_assert_ptr_nonnull(f);
    ck_assert_int_eq(tensor_type(f, "blk.0.attn_q.weight"), T_IQ4_NL);
    ck_assert_int_eq(tensor_type(f, "blk.0.ffn_down.weight"), T_IQ4_XS); /* rows of n_ff = 256 */
    gguf_close(f);
    check_forward(p, 8224);
}
END_TEST

START_TEST(mkmodel_llama3_rope_freqs)
{
    char p[600];
    mk("l3.gguf", p, sizeof p, "--shape", "llama-3.2-1b", "--n-layer", "1", "--n-embd", "256", "--n-head", "4",
       "--n-head-kv", "2", "--n-ff", "256", "--n-vocab", "300", "--type", "q8_0", NULL);
    llmfs_error err = {0};
    gguf_open_opts go = {0};
    gguf_file *f = gguf_open(p, &go, &err);
    ck_assert_msg(f != NULL, "%s", err.msg);
    const gguf_tensor *t = gguf_find_tensor(f, "rope_freqs.weight");
    ck_assert_ptr_nonnull(t);
    ck_assert(t->type == T_F32 && t->n_dims == 1 && t->ne[0] == 32);
    const float *v = t->data;
    /* Short wavelengths are kept, the longest stretched by the full factor of 32. */
    ck_assert_float_eq(v[0], 1.0f);
    ck_assert_float_eq(v[31], 32.0f);
    for (int i = 1; i < 32; i++)
        ck_assert(v[i] >= v[i - 1]);
    ck_assert(v[16] > 1.0f && v[16] < 32.0f);
    gguf_close(f);
    check_forward(p, 300);
}
END_TEST

START_TEST(mkmodel_is_deterministic)
{
    char a[600], b[600];
    mk("det1.gguf", a, sizeof a, "--shape", "llama-tiny", "--type", "q8_0", "--seed", "5", "-t", "1", NULL);
    mk("det2.gguf", b, sizeof b, "--shape", "llama-tiny", "--type", "q8_0", "--seed", "5", "-t", "3", NULL);
    size_t la, lb;
    char *x = test_read_file(a, &la), *y = test_read_file(b, &lb);
    ck_assert(x && y && la == lb && memcmp(x, y, la) == 0);
    free(y);
    mk("det3.gguf", b, sizeof b, "--shape", "llama-tiny", "--type", "q8_0", "--seed", "6", NULL);
    y = test_read_file(b, &lb);
    ck_assert(la == lb && memcmp(x, y, la) != 0);
    free(x);
    free(y);
}
END_TEST

/* Tokenizing with the made model must give what the source vocab gives. */
static void check_vocab_copy(const char *vocab_name, const char *arch)
{
    char vrel[256], vpath[1024], p[600], inp[1100];
    snprintf(vrel, sizeof vrel, "tokenizer/%s", vocab_name);
    test_shared_path(vrel, vpath, sizeof vpath);
    mk("vocab.gguf", p, sizeof p, "--arch", arch, "--n-embd", "64", "--n-layer", "1", "--n-head", "2",
       "--n-ff", "64", "--vocab", vpath, "--type", "q8_0", NULL);
    llmfs_error err = {0};
    gguf_open_opts go = {0};
    gguf_file *src = gguf_open(vpath, &go, &err), *dst = gguf_open(p, &go, &err);
    ck_assert(src && dst);
    int copied = 0;
    for (int i = 0; i < gguf_n_kv(src); i++) {
        const char *k = gguf_kv_key(src, i);
        if (strncmp(k, "tokenizer.", 10))
            continue;
        int j = gguf_find_key(dst, k);
        ck_assert_msg(j >= 0, "%s not copied", k);
        ck_assert_int_eq(gguf_kv_type(dst, j), gguf_kv_type(src, i));
        ck_assert_uint_eq(gguf_kv_arr_n(dst, j), gguf_kv_arr_n(src, i));
        copied++;
    }
    ck_assert_int_ge(copied, 4);
    /* Qwen models always get a chat template (ChatML when the vocab has none). */
    if (strncmp(arch, "qwen", 4) == 0)
        ck_assert_int_ge(gguf_find_key(dst, "tokenizer.chat_template"), 0);
    int n_vocab = (int)gguf_kv_arr_n(src, gguf_find_key(src, "tokenizer.ggml.tokens"));
    tokenizer *ts = tokenizer_load(src, &err), *td = tokenizer_load(dst, &err);
    ck_assert(ts && td);
    ck_assert_int_eq(tokenizer_n_vocab(td), tokenizer_n_vocab(ts));
    const gguf_tensor *emb = gguf_find_tensor(dst, "token_embd.weight");
    ck_assert_int_eq(emb->ne[1], tokenizer_n_vocab(ts));

    snprintf(inp, sizeof inp, "%s.inp", vpath);
    size_t len;
    char *text = test_read_file(inp, &len);
    ck_assert_ptr_nonnull(text);
    const char *sep = "\n__ggml_vocab_test__\n";
    int n_cases = 0;
    int32_t a[4096], b[4096];
    for (char *s = text, *e; (e = strstr(s, sep)); s = e + strlen(sep), n_cases++) {
        int na = tokenizer_encode(ts, s, (size_t)(e - s), true, true, a, 4096);
        int nb = tokenizer_encode(td, s, (size_t)(e - s), true, true, b, 4096);
        ck_assert_int_eq(na, nb);
        ck_assert(na <= 4096 && memcmp(a, b, sizeof *a * (size_t)na) == 0);
    }
    ck_assert_int_ge(n_cases, 40);
    /* ... and the command agrees on the made model. */
    cmd_out r1 = run(cmd_tokenize, "tokenize", "-m", p, "Hello world, this is llmfs", NULL);
    cmd_out r2 = run(cmd_tokenize, "tokenize", "-m", vpath, "Hello world, this is llmfs", NULL);
    ck_assert(r1.rc == 0 && r2.rc == 0);
    ck_assert_str_eq(r1.out, r2.out);
    out_free(&r1);
    out_free(&r2);
    free(text);
    tokenizer_free(ts);
    tokenizer_free(td);
    gguf_close(src);
    gguf_close(dst);
    check_forward(p, n_vocab);
}

START_TEST(mkmodel_copies_vocab)
{
    check_vocab_copy("ggml-vocab-llama-spm.gguf", "llama");
    check_vocab_copy("qwen3-vocab.gguf", "qwen3");
}
END_TEST

START_TEST(mkmodel_builtin_vocab)
{
    char p[600];
    mk("builtin.gguf", p, sizeof p, "--arch", "qwen3", "--n-vocab", "300", "--type", "q8_0", NULL);
    /* Byte-level: every byte of UTF-8 text is one token, specials are parsed. */
    cmd_out r = run(cmd_tokenize, "tokenize", "-m", p, "<|im_start|>hé", NULL);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    trim(r.out);
    ck_assert_str_eq(r.out, "257 104 195 169");
    out_free(&r);
    r = run(cmd_detok, "detok", "-m", p, "104 195 169", NULL);
    ck_assert_str_eq(r.out, "hé");
    out_free(&r);
    check_forward(p, 300);
}
END_TEST

/* Greedy continuation of a few prompt tokens with model a (one token a step), then the
 * fraction of its steps on which model b, given the same context (the whole sequence in
 * one batch), picks the same token. Also counts a's distinct generated tokens. */
enum { AGREE_PROMPT = 4, AGREE_GEN = 48 };

static double greedy_agreement(const char *pa, const char *pb, int *n_distinct)
{
    llmfs_error err = {0};
    model_opts mo = {.n_threads = 2, .n_threads_batch = 2, .n_ubatch = 512};
    model *a = model_load(pa, &mo, &err);
    ck_assert_msg(a != NULL, "%s: %s", pa, err.msg);
    model *b = model_load(pb, &mo, &err);
    ck_assert_msg(b != NULL, "%s: %s", pb, err.msg);
    enum { N = AGREE_PROMPT + AGREE_GEN };
    kv_cache *ka = kv_cache_alloc(a, N + 1, 1, T_F16, T_F16, &err);
    kv_cache *kb = kv_cache_alloc(b, N + 1, 1, T_F16, T_F16, &err);
    ck_assert(ka && kb);
    int32_t tok[N + 1], pos[N + 1], seq[N + 1] = {0}, ids[N + 1];
    int8_t want[N + 1];
    for (int i = 0; i <= N; i++)
        pos[i] = i, want[i] = 1;
    static const int32_t prompt[AGREE_PROMPT] = {72, 101, 108, 108}; /* "Hell" */
    memcpy(tok, prompt, sizeof prompt);
    /* the prompt in one batch, then one token a step */
    fwd_batch fb = {.n = AGREE_PROMPT, .token = tok, .pos = pos, .seq = seq, .logits = NULL};
    ck_assert_msg(model_forward_ids(a, ka, &fb, &tok[AGREE_PROMPT], false, &err) == 0, "%s", err.msg);
    for (int i = AGREE_PROMPT; i < N; i++) {
        fwd_batch one = {.n = 1, .token = &tok[i], .pos = &pos[i], .seq = seq, .logits = NULL};
        ck_assert_msg(model_forward_ids(a, ka, &one, &tok[i + 1], false, &err) == 0, "%s", err.msg);
    }
    fwd_batch all = {.n = N, .token = tok, .pos = pos, .seq = seq, .logits = want};
    ck_assert_msg(model_forward_ids(b, kb, &all, ids, false, &err) == 0, "%s", err.msg);
    int same = 0;
    for (int i = AGREE_PROMPT - 1; i < N; i++)
        same += ids[i] == tok[i + 1];
    *n_distinct = 0;
    for (int i = AGREE_PROMPT; i <= N; i++) {
        bool seen = false;
        for (int j = AGREE_PROMPT; j < i && !seen; j++)
            seen = tok[j] == tok[i];
        *n_distinct += !seen;
    }
    kv_cache_free(ka);
    kv_cache_free(kb);
    model_free(a);
    model_free(b);
    return (double)same / (AGREE_GEN + 1);
}

/* Calibrated weights do what they are for: the F16 and Q4_0 files of one seed agree on
 * nearly every greedy token (a draft model worth its cost), where the random-weight
 * pair of the same shape and seed does not; and the greedy text moves on from token to
 * token (the successor cycle), not repeating one token or a short loop. */
START_TEST(mkmodel_calibrated_pair_agrees)
{
    char cf[600], cq[600], rf[600], rq[600];
#define SHAPE "--arch", "qwen3", "--n-embd", "256", "--n-layer", "8", "--n-head", "4", "--n-head-kv", "2", \
              "--head-dim", "64", "--n-ff", "768", "--n-vocab", "1024", "--seed", "11"
    mk("cal-f16.gguf", cf, sizeof cf, SHAPE, "--calibrated", "--type", "f16", NULL);
    mk("cal-q4_0.gguf", cq, sizeof cq, SHAPE, "--calibrated", "--type", "q4_0", NULL);
    mk("rnd-f16.gguf", rf, sizeof rf, SHAPE, "--type", "f16", NULL);
    mk("rnd-q4_0.gguf", rq, sizeof rq, SHAPE, "--type", "q4_0", NULL);
#undef SHAPE
    int distinct_c, distinct_r;
    double cal = greedy_agreement(cf, cq, &distinct_c), rnd = greedy_agreement(rf, rq, &distinct_r);
    ck_assert_msg(cal >= 0.9, "calibrated F16/Q4_0 agree on %.2f of greedy tokens", cal);
    ck_assert_msg(rnd < cal - 0.2, "random F16/Q4_0 agree on %.2f, calibrated on %.2f", rnd, cal);
    ck_assert_msg(distinct_c >= AGREE_GEN - 2, "calibrated greedy text has %d distinct tokens of %d", distinct_c,
                  AGREE_GEN + 1);
    /* the same float weights before rounding: each Q4_0 weight within one step (a
     * thirty-second of its block's range) of the F16 file's */
    llmfs_error err = {0};
    gguf_open_opts go = {0};
    gguf_file *f = gguf_open(cf, &go, &err), *q = gguf_open(cq, &go, &err);
    ck_assert(f && q);
    const char *names[] = {"token_embd.weight", "blk.3.ffn_down.weight", "blk.5.attn_output.weight",
                           "blk.7.ffn_gate.weight"};
    for (int k = 0; k < 4; k++) {
        const gguf_tensor *tf = gguf_find_tensor(f, names[k]), *tq = gguf_find_tensor(q, names[k]);
        ck_assert(tf && tq && tf->type == T_F16 && tq->type == T_Q4_0);
        int64_t n = tf->ne[0];
        float *x = malloc(sizeof *x * (size_t)n), *y = malloc(sizeof *y * (size_t)n);
        ck_assert(x && y);
        for (int64_t row = 0; row < tf->ne[1]; row += 37) {
            dequantize_row(T_F16, (const uint8_t *)tf->data + type_row_bytes(T_F16, n) * (size_t)row, x, n);
            dequantize_row(T_Q4_0, (const uint8_t *)tq->data + type_row_bytes(T_Q4_0, n) * (size_t)row, y, n);
            for (int64_t b0 = 0; b0 < n; b0 += 32) {
                float amax = 0;
                for (int i = 0; i < 32; i++)
                    amax = fmaxf(amax, fabsf(x[b0 + i]));
                for (int i = 0; i < 32; i++)
                    ck_assert_msg(fabsf(x[b0 + i] - y[b0 + i]) <= amax / 8 * 1.01f + 1e-7f, "%s row %lld: %g vs %g",
                                  names[k], (long long)row, x[b0 + i], y[b0 + i]);
            }
        }
        free(x);
        free(y);
    }
    gguf_close(f);
    gguf_close(q);
}
END_TEST

START_TEST(mkmodel_bad_arguments)
{
    char p[600];
    tmp_path("bad.gguf", p, sizeof p);
    static const char *bad[][12] = {
        {"--shape", "no-such-shape", "-o", NULL},
        {"--arch", "gpt9", "-o", NULL},
        {"--shape", "llama-tiny", "--type", "q7_x", "-o", NULL},
        {"--shape", "llama-tiny", "--n-embd", "100", "-o", NULL},
        {"--shape", "llama-tiny", "--n-head", "8", "--n-head-kv", "3", "-o", NULL},
        {"--shape", "llama-tiny", "--n-layer", "zero", "-o", NULL},
        {"--shape", "llama-tiny", "--vocab", "/nonexistent/vocab.gguf", "-o", NULL},
        {"--shape", "llama-tiny", "--n-vocab", "100", "-o", NULL},
        {"--arch", "llama", "--n-expert", "4", "-o", NULL},
        {"--shape", "llama-tiny", NULL},
        {"--shape", "llama-tiny", "--bogus", "-o", NULL},
        {"--arch", "qwen3moe", "--calibrated", "-o", NULL},
        {"--arch", "llama", "--n-embd", "64", "--calibrated", "-o", NULL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *argv[16];
        int argc = 0;
        argv[argc++] = "mkmodel";
        for (int k = 0; bad[i][k]; k++)
            argv[argc++] = (char *)bad[i][k];
        if (strcmp(argv[argc - 1], "-o") == 0)
            argv[argc++] = p;
        argv[argc] = NULL;
        cmd_out r = run_argv(cmd_mkmodel, argc, argv);
        char what[64];
        snprintf(what, sizeof what, "mkmodel case %zu", i);
        assert_one_line_error(&r, what);
        out_free(&r);
    }
}
END_TEST

/* ---- bench ---- */

static int count_fields(const char *line, char sep)
{
    int n = 1;
    bool q = false;
    for (; *line && *line != '\n'; line++) {
        if (*line == '"')
            q = !q;
        else if (*line == sep && !q)
            n++;
    }
    return n;
}

/* the image test: one row, milliseconds per image of the projector's size */
START_TEST(bench_image)
{
    char p[1024];
    test_shared_path("models/gemma3-tiny-mmproj-f16.gguf", p, sizeof p);
    cmd_out r = run(cmd_bench, "bench", "--mmproj", p, "-r", "2", "-t", "1", NULL);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    ck_assert_msg(strstr(r.out, "ms/image"), "%s", r.out);
    ck_assert_msg(strstr(r.out, "| gemma3"), "%s", r.out);
    ck_assert_msg(strstr(r.out, "image 112x112 (4 tokens)"), "%s", r.out);
    double ms = -1;
    const char *row = strstr(r.out, "(4 tokens) |");
    ck_assert(row && sscanf(row + strlen("(4 tokens) |"), "%lf", &ms) == 1);
    ck_assert_msg(ms > 0 && ms < 60000, "%g ms", ms);
    out_free(&r);
}
END_TEST

START_TEST(bench_formats)
{
    char m[1024];
    test_shared_path("models/llama-tiny-q8_0.gguf", m, sizeof m);
    /* json */
    cmd_out r = run(cmd_bench, "bench", "-m", m, "-p", "16", "-n", "4", "-r", "2", "-t", "2", "-o", "json", NULL);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    ck_assert(r.out[0] == '[');
    static const char *keys[] = {"\"model\"", "\"size\"", "\"params\"", "\"backend\"", "\"threads\"", "\"test\"",
                                 "\"avg_ts\"", "\"stddev_ts\""};
    for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
        ck_assert_msg(strstr(r.out, keys[k]), "json lacks %s", keys[k]);
    int n_obj = 0;
    for (char *q = r.out; (q = strstr(q, "\"avg_ts\": ")); q++, n_obj++)
        ck_assert(strtod(q + 10, NULL) > 0);
    ck_assert_int_eq(n_obj, 2);
    ck_assert(strstr(r.out, "\"test\": \"pp16\"") && strstr(r.out, "\"test\": \"tg4\""));
    ck_assert(strstr(r.out, "\"backend\": \"CPU\"") && strstr(r.out, "\"threads\": 2"));
    out_free(&r);

    /* csv */
    r = run(cmd_bench, "bench", "-m", m, "-p", "16", "-n", "4", "-r", "2", "-t", "1", "-o", "csv", NULL);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    char *l1 = r.out, *l2 = strchr(l1, '\n') + 1, *l3 = strchr(l2, '\n') + 1;
    ck_assert(strncmp(l1, "model,size,params,backend,threads,", 34) == 0);
    int nf = count_fields(l1, ',');
    ck_assert_int_eq(count_fields(l2, ','), nf);
    ck_assert_int_eq(count_fields(l3, ','), nf);
    ck_assert(strstr(l2, "\"pp16\"") && strstr(l3, "\"tg4\""));
    /* avg_ts is the second-to-last field */
    for (char *line = l2; line != NULL && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        char *end = strchr(line, '\n'), *c = end;
        int commas = 0;
        while (c > line && commas < 2)
            if (*--c == ',')
                commas++;
        ck_assert(strtod(c + 1, NULL) > 0);
    }
    out_free(&r);

    /* markdown, with a depth */
    r = run(cmd_bench, "bench", "-m", m, "-p", "8", "-n", "2", "-r", "1", "-d", "16", "-o", "md", NULL);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    static const char *cols[] = {"model", "size", "params", "backend", "threads", "test", "t/s"};
    char *hdr = r.out;
    for (size_t k = 0; k < sizeof cols / sizeof cols[0]; k++)
        ck_assert_msg(strstr(hdr, cols[k]) && strstr(hdr, cols[k]) < strchr(hdr, '\n'), "md lacks %s", cols[k]);
    ck_assert(strstr(r.out, "pp8 @ d16") && strstr(r.out, "tg2 @ d16"));
    int rows = 0;
    for (char *q = r.out; (q = strstr(q, " ± ")); q++, rows++) {
        char *bar = q;
        while (bar > r.out && bar[-1] != '|')
            bar--;
        ck_assert(strtod(bar, NULL) > 0);
    }
    ck_assert_int_eq(rows, 2);
    out_free(&r);
}
END_TEST

/* bench -md and run -md: generation with and without speculation, and the acceptance */
START_TEST(bench_and_run_with_a_draft)
{
    char m[1024], d[1024];
    test_shared_path("models/llama-tiny-f16.gguf", m, sizeof m);
    test_shared_path("models/llama-tiny-q4_0.gguf", d, sizeof d);
    cmd_out r = run(cmd_bench, "bench", "-m", m, "-md", d, "-nd", "2", "-n", "16", "-r", "1", "-t", "2", NULL);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    ck_assert_msg(strstr(r.out, "| llama-tiny-f16.gguf") && strstr(r.out, "| llama-tiny-q4_0.gguf") &&
                      strstr(r.out, "tg16") && strstr(r.out, "speedup ") && strstr(r.out, "acceptance"),
                  "%s", r.out);
    char *drafted = strstr(r.out, "drafted ");
    ck_assert_ptr_nonnull(drafted);
    ck_assert_int_gt(atoi(drafted + 8), 0);
    out_free(&r);
    r = run(cmd_bench, "bench", "-m", m, "--spec", "ngram", "-n", "8", "-r", "1", NULL);
    ck_assert_msg(r.rc == 0 && strstr(r.out, "| ngram"), "%s %s", r.out, r.err);
    out_free(&r);
    r = run(cmd_bench, "bench", "-m", m, "--spec", "draft", NULL);
    ck_assert_int_eq(r.rc, CMD_USAGE);
    ck_assert_msg(strstr(r.err, "needs -md"), "%s", r.err);
    out_free(&r);
    /* a draft of another vocabulary: bench refuses to measure, run serves without it */
    char q[1024];
    test_shared_path("models/qwen2-tiny-q8_0.gguf", q, sizeof q);
    r = run(cmd_bench, "bench", "-m", m, "-md", q, "-n", "8", "-r", "1", NULL);
    ck_assert_int_eq(r.rc, CMD_FAIL);
    ck_assert_msg(strstr(r.err, "vocabulary differs"), "%s", r.err);
    out_free(&r);

    r = run(cmd_run, "run", "-m", m, "-md", d, "-p", "Once upon a time", "-n", "12", "--temp", "0", "-t", "2",
            "--stats", NULL);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    ck_assert_msg(strstr(r.err, "speculation: drafted ") && strstr(r.err, "without speculation: generated 12"),
                  "%s", r.err);
    cmd_out plain = run(cmd_run, "run", "-m", m, "-p", "Once upon a time", "-n", "12", "--temp", "0", "-t", "2", NULL);
    ck_assert_int_eq(plain.rc, 0);
    ck_assert_str_eq(r.out, plain.out);
    out_free(&plain);
    out_free(&r);
}
END_TEST

/* bench --spec mtp and run --spec-type mtp: the model's own MTP head, on the prompt it
 * was fitted to (acceptance 19/35 in llama.cpp); a model without a head is refused */
START_TEST(bench_and_run_with_mtp)
{
    char m[1024], p[1024], l[1024];
    test_shared_path("models/qwen35moe-mtp-tiny-q8_0.gguf", m, sizeof m);
    test_shared_path("fixtures/qwen35moe-mtp-tiny-q8_0/mtp-fox/prompt.txt", p, sizeof p);
    test_shared_path("models/llama-tiny-f16.gguf", l, sizeof l);
    cmd_out r = run(cmd_bench, "bench", "-m", m, "--spec", "mtp", "--spec-prompt", p, "-n", "32", "-r", "1", "-t",
                    "2", NULL);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    ck_assert_msg(strstr(r.out, "| mtp ") && strstr(r.out, "(its MTP head)") && strstr(r.out, " 0.543 |"), "%s",
                  r.out);
    out_free(&r);
    r = run(cmd_bench, "bench", "-m", l, "--spec", "mtp", "-n", "8", "-r", "1", NULL);
    ck_assert_int_eq(r.rc, CMD_FAIL);
    ck_assert_msg(strstr(r.err, "has no MTP (nextn) head"), "%s", r.err);
    out_free(&r);
    r = run(cmd_run, "run", "-m", m, "--spec-type", "mtp", "-f", p, "--raw", "-n", "32", "--temp", "0", "-t", "2",
            "--stats", NULL);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    ck_assert_msg(strstr(r.err, "speculation: drafted 35, accepted 19"), "%s", r.err);
    cmd_out plain = run(cmd_run, "run", "-m", m, "-f", p, "--raw", "-n", "32", "--temp", "0", "-t", "2", NULL);
    ck_assert_int_eq(plain.rc, 0);
    ck_assert_str_eq(r.out, plain.out);
    out_free(&plain);
    out_free(&r);
}
END_TEST

/* ---- errors ---- */

START_TEST(bad_arguments_fail_with_one_line)
{
    char m[1024];
    test_shared_path("models/stories260K.gguf", m, sizeof m);
    struct {
        int (*fn)(int, char **);
        const char *argv[10];
    } cases[] = {
        {cmd_tokenize, {"tokenize", "hello", NULL}},
        {cmd_tokenize, {"tokenize", "-m", m, NULL}},
        {cmd_tokenize, {"tokenize", "-m", "/nonexistent.gguf", "hi", NULL}},
        {cmd_tokenize, {"tokenize", "-m", m, "--bogus", "hi", NULL}},
        {cmd_tokenize, {"tokenize", "-m", NULL}},
        {cmd_detok, {"detok", "-m", m, "1", "99999", NULL}},
        {cmd_detok, {"detok", "-m", m, "-5", NULL}},
        {cmd_logits, {"logits", "-m", m, "--tokens", "1 2", NULL}},
        {cmd_logits, {"logits", "-m", m, "-o", "/tmp/x", NULL}},
        {cmd_logits, {"logits", "-m", m, "--tokens", "1", "-o", "/tmp/x", "--fa", "maybe", NULL}},
        {cmd_info, {"info", NULL}},
        {cmd_info, {"info", "-m", "/nonexistent.gguf", NULL}},
        {cmd_bench, {"bench", "-m", m, "-o", "xml", NULL}},
        {cmd_bench, {"bench", "-m", m, "-r", "0", NULL}},
        {cmd_bench, {"bench", "-m", m, "-p", "0", "-n", "0", NULL}},
        {cmd_bench, {"bench", "-m", m, "-t", "-3", NULL}},
        {cmd_bench, {"bench", "--mmproj", m, NULL}},
        {cmd_bench, {"bench", "--mmproj-shape", "gemma3-1000b", NULL}},
        {cmd_bench, {"bench", "--mmproj", m, "--mmproj-shape", "gemma3-12b", NULL}},
        {cmd_run, {"run", "-p", "hi", NULL}},
        {cmd_run, {"run", "-m", m, "-p", "hi", "--no-such-flag", "1", NULL}},
        {cmd_run, {"run", "-m", m, "-p", "hi", "--set", "nokey=1", NULL}},
        {cmd_run, {"run", "-m", m, "-p", "hi", "--set", "novalue", NULL}},
        {cmd_run, {"run", "-m", m, "-p", "hi", "--temp", "hot", NULL}},
        {cmd_run, {"run", "-m", "/nonexistent.gguf", "-p", "hi", NULL}},
        {cmd_run, {"run", "-m", m, "-p", NULL}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int argc = 0;
        while (cases[i].argv[argc])
            argc++;
        cmd_out r = run_argv(cases[i].fn, argc, (char **)cases[i].argv);
        char what[128];
        snprintf(what, sizeof what, "case %zu (%s %s)", i, cases[i].argv[0], argc > 1 ? cases[i].argv[argc - 1] : "");
        assert_one_line_error(&r, what);
        out_free(&r);
    }
}
END_TEST

START_TEST(info_describes_the_model)
{
    char m[1024];
    test_shared_path("models/qwen3moe-tiny-q8_0.gguf", m, sizeof m);
    cmd_out r = run(cmd_info, "info", "-m", m, NULL);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    static const char *want[] = {"architecture:   qwen3moe", "file type:      Q8_0", "n_embd:         128",
                                 "n_layer:        2", "experts:        8, 2 used, ff 256", "3271296 bytes",
                                 "bpe / qwen2, 8224 tokens", "chat template:  chatml", "<|im_start|>assistant",
                                 "q8_0", "f32"};
    for (size_t k = 0; k < sizeof want / sizeof want[0]; k++)
        ck_assert_msg(strstr(r.out, want[k]), "info lacks '%s':\n%s", want[k], r.out);
    out_free(&r);

    test_shared_path("models/llama-tiny-q4_k.gguf", m, sizeof m);
    r = run(cmd_info, "info", "-m", m, "--no-template", NULL);
    ck_assert_msg(r.rc == 0, "%s", r.err);
    /* Q4_K_M: 2x2 Q4_K attn_v/ffn_down... counts per type: Q6_K output + layer 1's two */
    ck_assert_msg(strstr(r.out, "q6_K             3 tensors"), "%s", r.out);
    ck_assert(strstr(r.out, "file type:      Q4_K_M") && strstr(r.out, "spm, 512 tokens"));
    out_free(&r);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("cli");
    TCase *tc = tcase_create("cli");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, tokenize_matches_every_fixture);
    tcase_add_test(tc, tokenize_flags);
    tcase_add_test(tc, detok_gives_back_the_prompt);
    tcase_add_test(tc, logits_match_reference);
    tcase_add_test(tc, logits_rejects_bad_ids);
    tcase_add_test(tc, mkmodel_q4_k_m_mix);
    tcase_add_test(tc, mkmodel_every_arch_and_type);
    tcase_add_test(tc, mkmodel_moe_and_fallbacks);
    tcase_add_test(tc, mkmodel_iq_types);
    tcase_add_test(tc, mkmodel_llama3_rope_freqs);
    tcase_add_test(tc, mkmodel_is_deterministic);
    tcase_add_test(tc, mkmodel_copies_vocab);
    tcase_add_test(tc, mkmodel_builtin_vocab);
    tcase_add_test(tc, mkmodel_calibrated_pair_agrees);
    tcase_add_test(tc, mkmodel_bad_arguments);
    tcase_add_test(tc, bench_formats);
    tcase_add_test(tc, bench_and_run_with_a_draft);
    tcase_add_test(tc, bench_and_run_with_mtp);
    tcase_add_test(tc, bench_image);
    tcase_add_test(tc, bad_arguments_fail_with_one_line);
    tcase_add_test(tc, info_describes_the_model);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (!test_shared_dir())
        test_skip_no_shared("test_cli");
    const char *base = getenv("TMPDIR");
    snprintf(tmpdir, sizeof tmpdir, "%s/llmfs_cli_XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    int rc = test_run_suite(make_suite());
    {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd) != 0)
            fprintf(stderr, "could not remove %s\n", tmpdir);
    }
    return rc;
}
