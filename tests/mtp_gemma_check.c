/* mtp_gemma_check.c — the checks of Gemma 4's MTP drafter against the gemma4 mtp-*
 * fixture cases (shared/notes/gemma4mtp.md), on whichever device the models are placed:
 *   rows:  the teacher-forced draft rows of mtp_rows.txt from one target pass (its K/V
 *          and final hidden states), each row's logits within 8e-2 relative RMS of
 *          mtp_logits.f32 and its argmax equal where llama.cpp's margin exceeds 2;
 *   flow:  llama.cpp's server flow (greedy, n_max 3) with the target forced onto the
 *          case's tokens: mtp_draft.txt's drafts, accepted counts and appended tokens;
 *          then free-running, its ids equal to plain greedy decoding of the same engine.
 */
#include "mtp_gemma_check.h"

#include "fixture.h"
#include "kv.h"
#include "quant.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int by_name(const void *a, const void *b)
{
    return strcmp(((const mtp_case *)a)->name, ((const mtp_case *)b)->name);
}

#define ROW_TOL 8e-2   /* relative RMS per draft row (shared/notes/gemma4mtp.md) */
#define DRAFT_MARGIN 2 /* argmax compared where llama.cpp's drafter margin exceeds this */
#define GREEDY_MARGIN 0.5f

int mtp_gemma_cases(mtp_case *cases, int cap)
{
    int n_cases = 0, left_out = 0;
    /* $LLMFS_FIXTURES keeps the cases whose "model/case" name it matches, as fixture.c */
    regex_t only;
    const char *pat = getenv("LLMFS_FIXTURES");
    if (pat && *pat && regcomp(&only, pat, REG_EXTENDED | REG_NOSUB) != 0) {
        fprintf(stderr, "LLMFS_FIXTURES: not an extended regular expression: %s\n", pat);
        pat = NULL;
    }
    char root[1024];
    test_shared_path("fixtures", root, sizeof root);
    DIR *d = opendir(root);
    if (!d) {
        if (pat && *pat)
            regfree(&only);
        return 0;
    }
    struct dirent *e;
    while ((e = readdir(d)) && n_cases < cap) {
        if (e->d_name[0] == '.')
            continue;
        char sub[1280];
        snprintf(sub, sizeof sub, "%s/%s", root, e->d_name);
        DIR *d2 = opendir(sub);
        if (!d2)
            continue;
        struct dirent *c;
        while ((c = readdir(d2)) && n_cases < cap) {
            if (strncmp(c->d_name, "mtp-", 4))
                continue;
            mtp_case *k = &cases[n_cases];
            char meta[1700], arch[32], model[256], draft[256];
            snprintf(k->dir, sizeof k->dir, "%s/%s", sub, c->d_name);
            snprintf(meta, sizeof meta, "%s/meta.txt", k->dir);
            if (test_meta_get(meta, "arch", arch, sizeof arch) || strcmp(arch, "gemma4") ||
                test_meta_get(meta, "model", model, sizeof model) ||
                test_meta_get(meta, "spec_draft_model", draft, sizeof draft))
                continue;
            snprintf(k->name, sizeof k->name, "%s/%s", e->d_name, c->d_name);
            if (pat && *pat && regexec(&only, k->name, 0, NULL, 0) != 0) {
                left_out++;
                continue;
            }
            char rel[600];
            snprintf(rel, sizeof rel, "models/%s", model);
            test_shared_path(rel, k->target, sizeof k->target);
            snprintf(rel, sizeof rel, "models/%s", draft);
            test_shared_path(rel, k->drafter, sizeof k->drafter);
            n_cases++;
        }
        closedir(d2);
    }
    closedir(d);
    if (pat && *pat) {
        regfree(&only);
        fprintf(stderr, "\n*** gemma4 mtp cases: %d left out by LLMFS_FIXTURES=%s ***\n\n", left_out, pat);
    }
    /* in name order, whatever the directory's */
    qsort(cases, (size_t)n_cases, sizeof *cases, by_name);
    return n_cases;
}

/* ---------------------------------------------------------------- helpers */

model *mtp_gemma_load_target(const char *path, int ngl)
{
    model_opts o = {.n_threads = 2, .n_threads_batch = 2, .ngl = ngl};
    llmfs_error err = {0};
    model *m = model_load(path, &o, &err);
    ck_assert_msg(m, "loading %s: %s", path, err.msg);
    ck_assert_msg(!ngl || m->gpu, "%s: ngl %d but no GPU backend", path, ngl);
    return m;
}

gemma4_assistant *mtp_gemma_load_drafter(const char *path, const model *target, int ngl)
{
    model_opts o = {.n_threads = 2, .ngl = ngl};
    llmfs_error err = {0};
    gemma4_assistant *a = gemma4_assistant_load(path, target, &o, &err);
    ck_assert_msg(a, "loading %s: %s", path, err.msg);
    return a;
}

int32_t mtp_gemma_argmax(const float *x, int n)
{
    int32_t b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return b;
}

static const char *case_file(const mtp_case *k, const char *file, char *buf, size_t cap)
{
    snprintf(buf, cap, "%s/%s", k->dir, file);
    return buf;
}

/* The case's full sequence: the prompt then the 32 greedy ids; *n_prompt, *n_all. */
static int32_t *case_sequence(const mtp_case *k, int *n_prompt, int *n_greedy, float **margin)
{
    char p[1700];
    int32_t *tok, *gr;
    *n_prompt = test_read_ints(case_file(k, "tokens.txt", p, sizeof p), &tok);
    *n_greedy = test_read_ints(case_file(k, "greedy.txt", p, sizeof p), &gr);
    ck_assert_msg(*n_prompt > 0 && *n_greedy > 0, "%s: tokens or greedy ids missing", k->name);
    ck_assert_int_eq(test_read_floats(case_file(k, "greedy_margin.txt", p, sizeof p), margin), *n_greedy);
    int32_t *t = malloc(sizeof(int32_t) * (size_t)(*n_prompt + *n_greedy));
    ck_assert(t);
    memcpy(t, tok, sizeof(int32_t) * (size_t)*n_prompt);
    memcpy(t + *n_prompt, gr, sizeof(int32_t) * (size_t)*n_greedy);
    free(tok);
    free(gr);
    return t;
}

/* The lines of a case file that are not comments, in a malloc'd array of strings. */
static int data_lines(const char *path, char ***out)
{
    size_t len;
    char *text = test_read_file(path, &len);
    ck_assert_msg(text, "cannot read %s", path);
    int n = 0, cap = 0;
    char **lines = NULL;
    for (char *save = NULL, *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        if (l[0] == '#' || !l[0])
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 64;
            lines = realloc(lines, sizeof(char *) * (size_t)cap);
            ck_assert(lines);
        }
        lines[n++] = strdup(l);
    }
    free(text);
    *out = lines;
    return n;
}

static void free_lines(char **l, int n)
{
    for (int i = 0; i < n; i++)
        free(l[i]);
    free(l);
}

/* Target pass over t[0..n) of sequence 0 from position pos0: the hidden rows to h
 * [n][E], and logits to lg (when not NULL): of every row, or of the last only. */
static void target_pass(model *m, kv_cache *kv, const int32_t *t, int n, int pos0, float *lg, bool every, float *h,
                        bool flash)
{
    int32_t *pos = malloc(sizeof(int32_t) * (size_t)n), *seq = calloc((size_t)n, sizeof(int32_t));
    int8_t *all = malloc((size_t)n);
    ck_assert(pos && seq && all);
    for (int i = 0; i < n; i++)
        pos[i] = pos0 + i, all[i] = 1;
    fwd_batch b = {n, t, pos, seq, every ? all : NULL};
    llmfs_error err = {0};
    ck_assert_msg(model_forward_hidden(m, kv, &b, lg, h, flash, &err) == 0, "%s", err.msg);
    free(pos), free(seq), free(all);
}

/* ---------------------------------------------------------------- rows */

double mtp_gemma_check_rows(const mtp_case *k, int ngl, int type_kv, bool flash, float **out, int *n_out)
{
    model *t = mtp_gemma_load_target(k->target, ngl);
    gemma4_assistant *a = mtp_gemma_load_drafter(k->drafter, t, ngl);
    const int V = t->hp.n_vocab, Et = t->hp.n_embd;
    int n_prompt, n_greedy;
    float *gmargin;
    int32_t *seq = case_sequence(k, &n_prompt, &n_greedy, &gmargin);
    /* one target pass over the prompt and greedy[:-1]: its cache and hidden rows */
    const int T = n_prompt + n_greedy - 1;
    kv_cache *kv = test_kv_cache(t, 512, 1, type_kv, type_kv);
    float *h = malloc(sizeof(float) * (size_t)T * Et);
    ck_assert(h);
    target_pass(t, kv, seq, T, 0, NULL, false, h, flash);

    char p[1700];
    char **rows;
    int n_rows = data_lines(case_file(k, "mtp_rows.txt", p, sizeof p), &rows);
    size_t bytes;
    float *ref = (float *)test_read_file(case_file(k, "mtp_logits.f32", p, sizeof p), &bytes);
    ck_assert_msg(ref && bytes == sizeof(float) * (size_t)n_rows * V, "%s: mtp_logits.f32 has %zu bytes for %d rows",
                  k->name, bytes, n_rows);
    float *lg = malloc(sizeof(float) * (size_t)V), *hn = malloc(sizeof(float) * 2 * (size_t)Et);
    ck_assert(lg && hn);
    double worst[3] = {0}, worst_all = 0;
    float *all = out ? malloc(sizeof(float) * (size_t)n_rows * V) : NULL;
    ck_assert(!out || all);
    int hits = 0, clear = 0;
    llmfs_error err = {0};
    for (int r = 0; r < n_rows; r++) {
        int row, pos, step, tok_in, tok_next, ref_id;
        float margin;
        ck_assert_int_eq(sscanf(rows[r], "%d %d %d %d %d %d %f", &row, &pos, &step, &tok_in, &tok_next, &ref_id,
                                &margin), 7);
        ck_assert_int_eq(row, r);
        ck_assert_msg(step >= 0 && step < 3 && pos >= 1 && pos + step + 1 < n_prompt + n_greedy, "%s", rows[r]);
        ck_assert_int_eq(tok_in, seq[pos + step]);
        /* step 0 reads the target's row of pos-1, the later steps the previous row's output */
        const float *hin = step == 0 ? h + (size_t)(pos - 1) * Et : hn + (size_t)((step + 1) % 2) * Et;
        int32_t id;
        ck_assert_msg(gemma4_assistant_step(a, t, kv, 0, tok_in, pos, hin, flash, lg, &id,
                                            hn + (size_t)(step % 2) * Et, &err) == 0,
                      "%s row %d: %s", k->name, r, err.msg);
        ck_assert_int_eq(id, mtp_gemma_argmax(lg, V));
        if (all)
            memcpy(all + (size_t)r * V, lg, sizeof(float) * (size_t)V);
        const float *rr = ref + (size_t)r * V;
        double e = logits_rel_rms(lg, rr, V);
        ck_assert_msg(e <= ROW_TOL, "%s row %d (pos %d step %d): rel RMS %.4f > %.2f", k->name, r, pos, step, e,
                      ROW_TOL);
        ck_assert_int_eq(ref_id, mtp_gemma_argmax(rr, V));
        if (margin > DRAFT_MARGIN) {
            clear++;
            ck_assert_msg(id == ref_id, "%s row %d: argmax %d, llama.cpp %d (margin %.2f)", k->name, r, id, ref_id,
                          margin);
        }
        hits += id == tok_next;
        worst[step] = e > worst[step] ? e : worst[step];
        worst_all = e > worst_all ? e : worst_all;
    }
    printf("%-28s %s KV %-4s %-5s %d draft rows: max rel err %.4f (steps %.4f / %.4f / %.4f), %d clear argmaxes equal, "
           "%d rows propose the target's token\n",
           k->name, ngl ? "GPU" : "CPU", type_info(type_kv)->name, flash ? "flash" : "plain", n_rows, worst_all, worst[0], worst[1], worst[2], clear, hits);
    free_lines(rows, n_rows);
    if (out) {
        *out = all;
        *n_out = n_rows;
    }
    free(ref), free(lg), free(hn), free(h), free(seq), free(gmargin);
    kv_cache_free(kv);
    gemma4_assistant_free(a);
    model_free(t);
    return worst_all;
}

/* ---------------------------------------------------------------- server flow */

/* One verification step of mtp_draft.txt. */
typedef struct ref_step {
    int n_past, id_last, n_draft, draft[8], n_acc, appended;
    float margin[8];
} ref_step;

static int read_steps(const mtp_case *k, ref_step *st, int cap, int *drafted, int *accepted)
{
    char p[1700];
    char **lines;
    int n_lines = data_lines(case_file(k, "mtp_draft.txt", p, sizeof p), &lines), n = 0;
    *drafted = *accepted = -1;
    for (int i = 0; i < n_lines; i++) {
        char *s = lines[i], *end;
        if (!strncmp(s, "drafted ", 8))
            *drafted = atoi(s + 8);
        else if (!strncmp(s, "accepted ", 9))
            *accepted = atoi(s + 9);
        if (strncmp(s, "step ", 5))
            continue;
        ck_assert_int_lt(n, cap);
        ref_step *r = &st[n];
        /* step i n_past id_last n_draft d_0.. n_accepted appended m_0.. */
        double v[40];
        int nv = 0;
        for (s += 5; nv < 40; s = end) {
            v[nv] = strtod(s, &end);
            if (end == s)
                break;
            nv++;
        }
        ck_assert_int_eq((int)v[0], n);
        r->n_past = (int)v[1], r->id_last = (int)v[2], r->n_draft = (int)v[3];
        ck_assert_msg(r->n_draft >= 0 && r->n_draft <= 8 && nv == 6 + 2 * r->n_draft, "%s", lines[i]);
        for (int j = 0; j < r->n_draft; j++) {
            r->draft[j] = (int)v[4 + j];
            r->margin[j] = (float)v[6 + r->n_draft + j];
        }
        r->n_acc = (int)v[4 + r->n_draft];
        r->appended = (int)v[5 + r->n_draft];
        n++;
    }
    free_lines(lines, n_lines);
    return n;
}

/* One verification step as run here. */
typedef struct run_step {
    int n_past, id_last, n_draft, draft[3], n_acc, appended;
} run_step;

/* llama.cpp's server flow, greedy, n_max drafts at most: the prompt in one batch, the
 * first id from its last row, then per step a draft chain at n_past, the target's
 * verification of [id_last, drafts], the accepted drafts plus one target token, and the
 * cache cut back behind them. forced: the target's choices are the case's own tokens
 * (forced[q] at position q), so the run follows the reference whatever the near ties
 * do; the target's own argmax must then agree wherever the reference's greedy margin is
 * clear. ref: llama.cpp's steps; a draft that differs from its draft where that one's
 * margin is not clear (a near tie of the drafter) is replaced by it, counted in
 * *near_ties, so the chain and the steps after it stay comparable. NULL, NULL: the
 * target's argmax and the drafter's own drafts. Writes n_greedy ids and the steps;
 * returns the step count. */
static int run_flow(const mtp_case *k, model *t, gemma4_assistant *a, kv_cache *kv, const int32_t *prompt,
                    int n_prompt, int n_greedy, const int32_t *forced, const float *gmargin, const ref_step *ref,
                    int n_ref, int *near_ties, int32_t *ids, run_step *steps, int max_steps)
{
    const int V = t->hp.n_vocab, Et = t->hp.n_embd, n_ctx = kv->n_ctx, n_max = 3;
    float *lg = malloc(sizeof(float) * (size_t)(n_max + 1) * V), *dl = malloc(sizeof(float) * (size_t)n_max * V);
    float *h = malloc(sizeof(float) * (size_t)(n_prompt > n_max + 1 ? n_prompt : n_max + 1) * Et);
    ck_assert(lg && dl && h);
    gemma4_mtp_rows rows = {.width = Et};
    llmfs_error err = {0};

    /* the target's choice for the row predicting position q */
    #define CHOICE(row, q)                                                                                    \
        (forced ? forced[q] : mtp_gemma_argmax(lg + (size_t)(row) * V, V))
    #define CHECK_OWN(row, q)                                                                                 \
        do {                                                                                                  \
            if (forced && (q) - n_prompt < n_greedy && gmargin[(q) - n_prompt] > GREEDY_MARGIN)               \
                ck_assert_msg(mtp_gemma_argmax(lg + (size_t)(row) * V, V) == forced[q],                              \
                              "%s: the target's choice at position %d is %d, greedy %d (margin %.3f)",        \
                              k->name, q, mtp_gemma_argmax(lg + (size_t)(row) * V, V), forced[q],                    \
                              gmargin[(q) - n_prompt]);                                                        \
        } while (0)

    target_pass(t, kv, prompt, n_prompt, 0, lg, false, h, false);
    ck_assert_int_eq(gemma4_mtp_process(&rows, h, n_prompt), 0);
    CHECK_OWN(0, n_prompt);
    int n_ids = 0, n_past = n_prompt, n_steps = 0;
    int32_t id_last = ids[n_ids++] = CHOICE(0, n_prompt);
    while (n_ids < n_greedy) {
        const int n_remaining = n_greedy - n_ids;
        int n_draft = n_ctx - n_past - 2 < n_remaining - 1 ? n_ctx - n_past - 2 : n_remaining - 1;
        n_draft = n_draft > n_max ? n_max : n_draft < 0 ? 0 : n_draft;
        int32_t batch[1 + 3] = {id_last}, *d = batch + 1;
        if (n_draft > 0 && !ref) {
            ck_assert_msg(gemma4_assistant_draft(a, t, kv, 0, id_last, n_past, rows.pending, n_draft, false, d, dl,
                                                 NULL, &err) == n_draft,
                          "%s step %d: %s", k->name, n_steps, err.msg);
            for (int j = 0; j < n_draft; j++) /* each draft is its row's argmax */
                ck_assert_int_eq(d[j], mtp_gemma_argmax(dl + (size_t)j * V, V));
        } else if (n_draft > 0) {
            /* the same chain a row at a time, to follow llama.cpp's draft at a near tie */
            ck_assert_msg(n_steps < n_ref, "%s: more steps than llama.cpp's %d", k->name, n_ref);
            const ref_step *q = &ref[n_steps];
            ck_assert_msg(q->n_past == n_past && q->id_last == id_last && q->n_draft == n_draft,
                          "%s step %d: n_past %d id_last %d n_draft %d, llama.cpp %d %d %d", k->name, n_steps, n_past,
                          id_last, n_draft, q->n_past, q->id_last, q->n_draft);
            int32_t tok = id_last;
            const float *hin = rows.pending;
            for (int j = 0; j < n_draft; j++) {
                float *hn = h + (size_t)(j % 2) * Et; /* h is free until the verification */
                ck_assert_msg(gemma4_assistant_step(a, t, kv, 0, tok, n_past, hin, false, dl, &d[j], hn, &err) == 0,
                              "%s step %d: %s", k->name, n_steps, err.msg);
                if (d[j] != q->draft[j]) {
                    ck_assert_msg(q->margin[j] <= DRAFT_MARGIN,
                                  "%s step %d: draft %d is %d, llama.cpp's %d (margin %.3f)", k->name, n_steps, j,
                                  d[j], q->draft[j], q->margin[j]);
                    d[j] = q->draft[j];
                    ++*near_ties;
                }
                tok = d[j];
                hin = hn;
            }
        }
        target_pass(t, kv, batch, n_draft + 1, n_past, lg, true, h, false);
        ck_assert_int_eq(gemma4_mtp_process(&rows, h, n_draft + 1), 0);
        int acc = 0;
        while (acc < n_draft && CHOICE(acc, n_past + 1 + acc) == d[acc]) {
            CHECK_OWN(acc, n_past + 1 + acc);
            acc++;
        }
        CHECK_OWN(acc, n_past + 1 + acc);
        const int32_t appended = CHOICE(acc, n_past + 1 + acc);
        gemma4_mtp_accept(&rows, acc);
        ck_assert_int_eq(kv_seq_keep(kv, 0, n_past + acc + 1), n_past + acc + 1);
        ck_assert_int_lt(n_steps, max_steps);
        run_step *r = &steps[n_steps++];
        *r = (run_step){n_past, id_last, n_draft, {0}, acc, appended};
        memcpy(r->draft, d, sizeof(int32_t) * (size_t)n_draft);
        for (int j = 0; j < acc; j++)
            ids[n_ids++] = d[j];
        ids[n_ids++] = appended;
        n_past += acc + 1;
        id_last = appended;
    }
    #undef CHOICE
    #undef CHECK_OWN
    ck_assert_int_eq(n_ids, n_greedy);
    gemma4_mtp_rows_free(&rows);
    free(lg), free(dl), free(h);
    return n_steps;
}

void mtp_gemma_check_flow(const mtp_case *k, int ngl, bool rings)
{
    model *t = mtp_gemma_load_target(k->target, ngl);
    gemma4_assistant *a = mtp_gemma_load_drafter(k->drafter, t, ngl);
    const int V = t->hp.n_vocab;
    int n_prompt, n_greedy;
    float *gmargin;
    int32_t *seq = case_sequence(k, &n_prompt, &n_greedy, &gmargin);
    ref_step st[64];
    int ref_drafted, ref_accepted, n_ref = read_steps(k, st, 64, &ref_drafted, &ref_accepted);
    llmfs_error err = {0};
    kv_cache *kv = kv_cache_alloc_swa(t, 512, 1, T_F16, T_F16, rings ? 4 : 0, &err);
    ck_assert_msg(kv, "%s", err.msg);
    if (rings) /* the prompt alone wraps the rings */
        ck_assert_int_lt(kv->layer[t->hp.n_layer - 2].n_cells, n_prompt);

    int32_t ids[64];
    run_step steps[64];
    int near_ties = 0;
    int n_steps = run_flow(k, t, a, kv, seq, n_prompt, n_greedy, seq, gmargin, st, n_ref, &near_ties, ids, steps, 64);
    int drafted = 0, accepted = 0, clear = 0;
    for (int s = 0; s < n_steps; s++) {
        const run_step *r = &steps[s];
        const ref_step *q = &st[s];
        for (int j = 0; j < r->n_draft; j++) {
            ck_assert_int_eq(r->draft[j], q->draft[j]);
            clear += q->margin[j] > DRAFT_MARGIN;
        }
        ck_assert_msg(r->n_acc == q->n_acc, "%s step %d: %d accepted, llama.cpp %d", k->name, s, r->n_acc, q->n_acc);
        ck_assert_int_eq(r->appended, q->appended);
        drafted += r->n_draft;
        accepted += r->n_acc;
    }
    ck_assert_int_eq(n_steps, n_ref);
    ck_assert_int_eq(drafted, ref_drafted);
    ck_assert_int_eq(accepted, ref_accepted);
    for (int i = 0; i < n_greedy; i++)
        ck_assert_int_eq(ids[i], seq[n_prompt + i]);

    /* free-running: the engine's own plain greedy run, one token per call */
    int32_t plain[64], pos[64], sq[64] = {0};
    for (int i = 0; i < 64; i++)
        pos[i] = i;
    float *lg = malloc(sizeof(float) * (size_t)V);
    ck_assert(lg);
    kv_seq_keep(kv, 0, 0);
    fwd_batch pb = {n_prompt, seq, pos, sq, NULL};
    ck_assert_msg(model_forward(t, kv, &pb, lg, false, &err) == 0, "%s", err.msg);
    for (int i = 0; i < n_greedy; i++) {
        plain[i] = mtp_gemma_argmax(lg, V);
        fwd_batch b1 = {1, &plain[i], &pos[n_prompt + i], sq, NULL};
        if (i + 1 < n_greedy)
            ck_assert_msg(model_forward(t, kv, &b1, lg, false, &err) == 0, "%s", err.msg);
    }
    kv_seq_keep(kv, 0, 0);
    int32_t free_ids[64];
    int n_free = run_flow(k, t, a, kv, seq, n_prompt, n_greedy, NULL, gmargin, NULL, 0, NULL, free_ids, steps, 64);
    int free_drafted = 0, free_accepted = 0;
    for (int s = 0; s < n_free; s++)
        free_drafted += steps[s].n_draft, free_accepted += steps[s].n_acc;
    for (int i = 0; i < n_greedy; i++)
        ck_assert_msg(free_ids[i] == plain[i], "%s: free-running id %d is %d, plain greedy %d", k->name, i,
                      free_ids[i], plain[i]);

    printf("%-28s %s %-10s forced: %d steps, %d drafted, %d accepted (llama.cpp %d / %d), %d clear drafts "
           "equal, %d near ties followed; free-running: %d / %d, ids = plain greedy\n",
           k->name, ngl ? "GPU" : "CPU", rings ? "rings" : "full cache", n_steps, drafted, accepted, ref_drafted, ref_accepted, clear,
           near_ties, free_drafted, free_accepted);
    free(lg), free(seq), free(gmargin);
    kv_cache_free(kv);
    gemma4_assistant_free(a);
    model_free(t);
}
