/* fixture.c — loading the ../shared/fixtures cases for the model tests. */
#include "fixture.h"
#include "testutil.h"

#include "quant.h"
#include "sampler.h"

#include <dirent.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>



/* Relative RMS tolerances of ../shared/README.md: by model where the README names one,
 * else by weight type; a q8_0 K cache adds 3e-2. */
static const struct { const char *model_prefix, *wtype; double tol; } tolerances[] = {
    {"gptoss-tiny-mxfp4", NULL, 8e-2},
    {"gemma4-tiny", NULL, 8e-2},
    {"gemma4e-tiny", NULL, 8e-2},
    {"gemma4moe-tiny", NULL, 6e-2},
    {"qwen35", NULL, 8e-2},
    {"qwen3next", NULL, 8e-2},
    {NULL, "f32", 5e-3},
    {NULL, "f16", 5e-3},
    {NULL, "bf16", 2e-2},
    {NULL, "q8_0", 6e-2},
    {NULL, "q4_0", 6e-2},
    {NULL, "q4_1", 6e-2},
    {NULL, "q5_0", 6e-2},
    {NULL, "q5_1", 6e-2},
    {NULL, "iq4_nl", 6e-2},
    {NULL, "mxfp4", 6e-2},
};

/* "q8_0" of "llama-tiny-q8_0.gguf"; "f32" for stories260K (all F32). */
static void weight_type_of(const char *model_file, char wtype[16])
{
    if (strstr(model_file, "stories260K")) {
        snprintf(wtype, 16, "f32");
        return;
    }
    const char *dash = strrchr(model_file, '-');
    const char *t = dash ? dash + 1 : model_file;
    size_t n = strcspn(t, ".");
    snprintf(wtype, 16, "%.*s", (int)(n < 15 ? n : 15), t);
}

double fixture_tolerance(const char *model_file, const char *ctk)
{
    const char *base = strrchr(model_file, '/');
    base = base ? base + 1 : model_file;
    char wtype[16];
    weight_type_of(base, wtype);
    double tol = 1e-1; /* K-quants, mixes and the i-quants below 4 bits */
    for (size_t i = 0; i < sizeof tolerances / sizeof tolerances[0]; i++) {
        if (tolerances[i].model_prefix ? !strncmp(base, tolerances[i].model_prefix, strlen(tolerances[i].model_prefix))
                                       : !strcmp(wtype, tolerances[i].wtype)) {
            tol = tolerances[i].tol;
            break;
        }
    }
    return ctk && strcmp(ctk, "f16") ? tol + 3e-2 : tol;
}

int fixture_describe(const char *dir, const char *name, char arch[32], char wtype[16], char kind[16])
{
    char p[2048], model[256];
    snprintf(p, sizeof p, "%s/meta.txt", dir);
    if (test_meta_get(p, "model", model, sizeof model) || test_meta_get(p, "arch", arch, 32))
        return -1;
    weight_type_of(model, wtype);
    const char *c = strchr(name, '/');
    c = c ? c + 1 : name;
    snprintf(kind, 16, "logits");
    static const char *const kinds[] = {"mtp-", "vision-"};
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++)
        if (!strncmp(c, kinds[i], strlen(kinds[i])))
            snprintf(kind, 16, "%.*s", (int)strlen(kinds[i]) - 1, kinds[i]);
    return 0;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Sorted subdirectory names of dir (malloc'd); returns the count. */
static int list_dirs(const char *dir, char ***out)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    char **v = NULL;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        v = realloc(v, sizeof *v * (size_t)(n + 1));
        v[n++] = strdup(e->d_name);
    }
    closedir(d);
    qsort(v, (size_t)n, sizeof *v, cmp_str);
    *out = v;
    return n;
}

static void load_fixture(fixture *f, const char *dir, const char *name, int *n)
{
    char p[2048], v[256];
    memset(f, 0, sizeof *f);
    snprintf(f->name, sizeof f->name, "%s", name);
    snprintf(p, sizeof p, "%s/meta.txt", dir);
    if (test_meta_get(p, "model", v, sizeof v))
        return;
    char rel[300];
    snprintf(rel, sizeof rel, "models/%s", v);
    test_shared_path(rel, f->model, sizeof f->model);
    char ctk[16] = "f16";
    test_meta_get(p, "ctk", ctk, sizeof ctk);
    f->tol = fixture_tolerance(v, ctk);
    f->ctk = type_from_name(ctk);
    test_meta_get(p, "ctv", v, sizeof v);
    f->ctv = type_from_name(v);
    test_meta_get(p, "flash_attn", v, sizeof v);
    f->flash = !strcmp(v, "on");
    test_meta_get(p, "n_vocab", v, sizeof v);
    f->n_vocab = atoi(v);
    snprintf(p, sizeof p, "%s/tokens.txt", dir);
    f->n_tok = test_read_ints(p, &f->tok);
    snprintf(p, sizeof p, "%s/greedy.txt", dir);
    f->n_greedy = test_read_ints(p, &f->greedy);
    snprintf(p, sizeof p, "%s/greedy_margin.txt", dir);
    int nm = test_read_floats(p, &f->margin);
    snprintf(p, sizeof p, "%s/logits.f32", dir);
    size_t len = 0;
    f->ref = (float *)test_read_file(p, &len);
    if (f->n_tok <= 0 || f->n_greedy <= 0 || nm != f->n_greedy || !f->ref || f->n_vocab <= 0 ||
        len != sizeof(float) * (size_t)f->n_tok * (size_t)f->n_vocab || f->ctk < 0 || f->ctv < 0) {
        fprintf(stderr, "fixture %s is incomplete\n", name);
        exit(1);
    }
    (*n)++;
}

int fixtures_load(fixture **out)
{
    int n = 0, cap = 0, left_out = 0, unsupported = 0, elsewhere = 0;
    fixture *cases = NULL;
    regex_t only;
    const char *pat = getenv("LLMFS_FIXTURES");
    if (pat && *pat && regcomp(&only, pat, REG_EXTENDED | REG_NOSUB) != 0) {
        fprintf(stderr, "LLMFS_FIXTURES: not an extended regular expression: %s\n", pat);
        pat = NULL;
    }
    /* LLMFS_FIXTURES_SHARD=i/n keeps every n-th selected case starting at the i-th
       (1-based), so one selection can run as n processes side by side */
    int shard = 1, n_shards = 1, seen = 0, other_shards = 0;
    const char *sh = getenv("LLMFS_FIXTURES_SHARD");
    if (sh && *sh && (sscanf(sh, "%d/%d", &shard, &n_shards) != 2 || n_shards < 1 || shard < 1 ||
                      shard > n_shards)) {
        fprintf(stderr, "LLMFS_FIXTURES_SHARD: not i/n with 1 <= i <= n: %s\n", sh);
        exit(1);
    }
    char root[1024];
    test_shared_path("fixtures", root, sizeof root);
    char **models = NULL;
    int nm = list_dirs(root, &models);
    for (int i = 0; i < nm; i++) {
        char mdir[1400];
        snprintf(mdir, sizeof mdir, "%s/%s", root, models[i]);
        char **cs = NULL;
        int nc = list_dirs(mdir, &cs);
        for (int j = 0; j < nc; j++) {
            char cdir[1800], name[300], arch[32], wtype[16], kind[16];
            snprintf(cdir, sizeof cdir, "%s/%s", mdir, cs[j]);
            snprintf(name, sizeof name, "%s/%s", models[i], cs[j]);
            free(cs[j]);
            if (pat && *pat && regexec(&only, name, 0, NULL, 0) != 0) {
                left_out++;
                continue;
            }
            if (seen++ % n_shards != shard - 1) {
                other_shards++;
                continue;
            }
            if (fixture_describe(cdir, name, arch, wtype, kind)) {
                fprintf(stderr, "fixture %s has no meta.txt model and arch\n", name);
                exit(1);
            }
            if (!strcmp(kind, "vision") || !strcmp(kind, "mtp")) {
                /* image cases: test_vision and gpu_vision run them; MTP cases: test_mtp and
                 * test_mtp_gemma */
                elsewhere++;
                continue;
            }
            const char *why = fixture_unsupported(arch, wtype, kind);
            if (why) {
                test_say_skip(name, why);
                unsupported++;
                continue;
            }
            if (n == cap) {
                cap = cap ? 2 * cap : 64;
                cases = realloc(cases, sizeof *cases * (size_t)cap);
                if (!cases) {
                    fprintf(stderr, "out of memory\n");
                    exit(1);
                }
            }
            load_fixture(&cases[n], cdir, name, &n);
            snprintf(cases[n - 1].arch, sizeof cases[n - 1].arch, "%s", arch);
            snprintf(cases[n - 1].wtype, sizeof cases[n - 1].wtype, "%s", wtype);
            snprintf(cases[n - 1].kind, sizeof cases[n - 1].kind, "%s", kind);
        }
        free(cs);
        free(models[i]);
    }
    free(models);
    if (pat && *pat)
        regfree(&only);
    fprintf(stderr, "\n*** fixtures: %d cases run, %d unsupported (tests/unsupported.c), %d vision and MTP cases left to test_vision and test_mtp",
            n, unsupported, elsewhere);
    if (pat && *pat)
        fprintf(stderr, ", %d left out by LLMFS_FIXTURES=%s", left_out, pat);
    if (n_shards > 1)
        fprintf(stderr, ", %d in the other shards (LLMFS_FIXTURES_SHARD=%d/%d)", other_shards, shard, n_shards);
    fprintf(stderr, " ***\n\n");
    *out = cases;
    return n;
}

/* ---------------------------------------------------------------- shared helpers */

kv_cache *test_kv_cache(model *m, int n_ctx, int n_seq, int tk, int tv)
{
    llmfs_error err = {0};
    kv_cache *kv = kv_cache_alloc(m, n_ctx, n_seq, tk, tv, &err);
    ck_assert_msg(kv, "KV cache: %s", err.msg);
    return kv;
}

void fixture_eval(model *m, kv_cache *kv, const int32_t *tok, int n, int seq, int pos0, int step,
                  bool flash, float *out)
{
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)n), *sq = malloc(sizeof(int32_t) * (size_t)n);
    int8_t *lg = malloc((size_t)n);
    ck_assert(pos && sq && lg);
    for (int i = 0; i < n; i++) {
        pos[i] = pos0 + i;
        sq[i] = seq;
        lg[i] = 1;
    }
    for (int i = 0; i < n; i += step) {
        int c = n - i < step ? n - i : step;
        fwd_batch b = {c, tok + i, pos + i, sq + i, lg + i};
        llmfs_error err = {0};
        int rc = model_forward(m, kv, &b, out + (size_t)i * m->hp.n_vocab, flash, &err);
        ck_assert_msg(rc == 0, "forward: %d %s", rc, err.msg);
    }
    free(pos);
    free(sq);
    free(lg);
}

double logits_rel_rms(const float *a, const float *ref, int n)
{
    double d = 0, s = 0;
    for (int i = 0; i < n; i++) {
        d += ((double)a[i] - ref[i]) * ((double)a[i] - ref[i]);
        s += (double)ref[i] * ref[i];
    }
    return sqrt(d / n) / sqrt(s / n);
}

float logits_top2_margin(const float *x, int n)
{
    int b = sampler_argmax(x, n);
    float s = -INFINITY;
    for (int i = 0; i < n; i++)
        if (i != b && x[i] > s)
            s = x[i];
    return x[b] - s;
}

/* The margin a different argmax needs before it is an error: 0.5, or three standard
 * deviations of the difference of two logits when the logits carry a measured relative
 * RMS noise (another backend's rounding): a top-2 gap smaller than that may flip. */
static float flip_margin(double noise, const float *row, int V)
{
    double s = 0;
    for (int i = 0; i < V; i++)
        s += (double)row[i] * row[i];
    const double m = 3.0 * sqrt(2.0) * noise * sqrt(s / V);
    return m > 0.5 ? (float)m : 0.5f;
}

double fixture_check_prompt(const fixture *f, const float *out, double tol, const char *what)
{
    double worst = 0;
    int V = f->n_vocab;
    for (int i = 0; i < f->n_tok; i++) {
        const float *a = out + (size_t)i * V, *r = f->ref + (size_t)i * V;
        double e = logits_rel_rms(a, r, V);
        worst = e > worst ? e : worst;
        ck_assert_msg(e <= tol, "%s %s: position %d relative RMS error %.3g > %.3g", f->name, what,
                      i, e, tol);
        if (logits_top2_margin(r, V) > flip_margin(e, r, V))
            ck_assert_msg(sampler_argmax(a, V) == sampler_argmax(r, V),
                          "%s %s: position %d argmax %d, reference %d", f->name, what, i,
                          sampler_argmax(a, V), sampler_argmax(r, V));
    }
    return worst;
}

int fixture_check_greedy(const fixture *f, const float *out, double noise, const char *what)
{
    int checked = 0;
    for (int j = 0; j < f->n_greedy; j++) {
        const float *a = out + (size_t)(f->n_tok - 1 + j) * f->n_vocab;
        if (f->margin[j] <= flip_margin(noise, a, f->n_vocab))
            continue;
        int got = sampler_argmax(a, f->n_vocab);
        ck_assert_msg(got == f->greedy[j], "%s %s: greedy step %d gave %d, reference %d (margin %.2f)",
                      f->name, what, j, got, f->greedy[j], f->margin[j]);
        checked++;
    }
    return checked;
}

int32_t *fixture_full_sequence(const fixture *f, int *n)
{
    *n = f->n_tok + f->n_greedy - 1;
    int32_t *t = malloc(sizeof(int32_t) * (size_t)*n);
    ck_assert_ptr_nonnull(t);
    memcpy(t, f->tok, sizeof(int32_t) * (size_t)f->n_tok);
    memcpy(t + f->n_tok, f->greedy, sizeof(int32_t) * (size_t)(f->n_greedy - 1));
    return t;
}

float *fixture_logits_buf(const fixture *f, int n)
{
    float *p = malloc(sizeof(float) * (size_t)n * (size_t)f->n_vocab);
    ck_assert_ptr_nonnull(p);
    return p;
}
