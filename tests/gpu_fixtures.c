/* gpu_fixtures.c — every ../shared fixture case with the model on the GPU, against
 * llama.cpp's reference logits (the README's tolerances):
 *  - full offload (ngl 99): the prompt in one batch with both attention paths, prompt +
 *    greedy continuation in one pass, and one token per call (the decode path, recorded
 *    steps included), each checked for logits and greedy tokens; a hybrid model's
 *    recurrent state on the device resumed from a checkpoint;
 *  - partial offload (half the layers, then every layer but not the output): the hidden
 *    state crosses between the backends;
 *  - two sequences interleaved in one batch, then decoded together;
 *  - hybrid placements, the host-resident feed-forward weights computed on the CPU and
 *    streamed to the GPU, and streaming through both slots on five-layer mkmodel models;
 *  - offload_batch through the engine (load settings, ctl) to the scheduled model;
 *  - device memory exhausted: clear errors, and the model serves again afterwards.
 * $LLMFS_FIXTURES_DEEP limits the partial, two-sequence and placement tests to the
 * cases it matches (the simulated device in CI runs every case's full offload).
 * Exits 77 (skip) without a GPU or without the test assets. */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef LLMFS_HAVE_CUDA
#include "backend.h"
#include "kv.h"
#include "mkmodel.h"
#include "model.h"
#include "quant.h"
#include "sampler.h"

#include "fixture.h"

static fixture *cases;
static int n_cases;
/* The cases that also run partial offload, two sequences and the hybrid placements:
 * those whose name matches $LLMFS_FIXTURES_DEEP (every case when it is unset). Each
 * case runs full offload, which checks its logits and greedy tokens on the device;
 * the deeper tests exercise the machinery between backends, the same for every weight
 * type of a family, and cost three times as much on the simulated device. Full offload
 * of a case that is not deep decodes its prompt in one batch and the continuation one
 * token per call (as generation does), and leaves the device's argmax to the deep ones. */
static int *deep, n_deep;
static bool *is_deep; /* [n_cases] */

static void load_fixtures(void)
{
    n_cases = fixtures_load(&cases);
    deep = calloc((size_t)n_cases + 1, sizeof *deep);
    is_deep = calloc((size_t)n_cases + 1, sizeof *is_deep);
    if (!deep || !is_deep) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    const char *pat = getenv("LLMFS_FIXTURES_DEEP");
    regex_t re;
    if (pat && *pat && regcomp(&re, pat, REG_EXTENDED | REG_NOSUB) != 0) {
        fprintf(stderr, "LLMFS_FIXTURES_DEEP: not an extended regular expression: %s\n", pat);
        exit(1);
    }
    for (int i = 0; i < n_cases; i++)
        if (!pat || !*pat || regexec(&re, cases[i].name, 0, NULL, 0) == 0)
            deep[n_deep++] = i, is_deep[i] = true;
    if (pat && *pat) {
        regfree(&re);
        fprintf(stderr, "*** gpu_fixtures: %d of %d cases run the deeper tests (LLMFS_FIXTURES_DEEP=%s); "
                        "the rest full offload only ***\n", n_deep, n_cases, pat);
    }
}

/* ---------------------------------------------------------------- helpers */

static model *load(const char *path, int ngl)
{
    model_opts o = {.n_threads = 2, .n_threads_batch = 2, .ngl = ngl};
    llmfs_error err = {0};
    model *m = model_load(path, &o, &err);
    ck_assert_msg(m, "loading %s with ngl %d: %s", path, ngl, err.msg);
    ck_assert_msg(m->gpu != NULL, "%s: ngl %d but no GPU backend", path, ngl);
    return m;
}

/* Every byte the device will give, in halving chunks, held by a backend of its own. */
typedef struct hog {
    backend *be;
    void **held;
    int n;
} hog;

static hog hog_device(void)
{
    char why[256];
    hog h = {backend_gpu_new(0, why, sizeof why), calloc(4096, sizeof(void *)), 0};
    ck_assert_msg(h.be, "%s", why);
    for (size_t chunk = (size_t)256 << 20; chunk >= (64u << 10) && h.n < 4096;) {
        void *p = h.be->ops->alloc(h.be, chunk);
        if (p)
            h.held[h.n++] = p;
        else
            chunk /= 2;
    }
    backend_gpu_info gi;
    ck_assert_int_eq(backend_gpu_info_of(0, &gi, why, sizeof why), 0);
    ck_assert_msg(gi.vram_free < (8u << 20), "%llu bytes still free after taking all",
                  (unsigned long long)gi.vram_free);
    return h;
}

static void hog_release(hog *h)
{
    for (int i = 0; i < h->n; i++)
        h->be->ops->free(h->be, h->held[i]);
    backend_free(h->be);
    free(h->held);
}

/* A five-layer mkmodel model of an architecture and file type at a temporary path
 * (removed by the caller). */
static void write_model(char *path, const char *arch, const char *ftype, int n_embd, int n_ff, uint64_t seed)
{
    mkmodel_shape sh;
    ck_assert(mkmodel_arch_defaults(arch, &sh));
    sh.n_layer = 5;
    if (n_embd) {
        sh.head_dim = n_embd / sh.n_head;
        sh.n_embd = n_embd;
        sh.n_ff = n_ff;
    }
    const int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    mkmodel_opts mo = {.seed = seed, .n_threads = 2, .quiet = true};
    llmfs_error err = {0};
    ck_assert_msg(mkmodel_write(&sh, mkmodel_ftype_from_name(ftype), &mo, path, &err) == 0, "mkmodel %s: %s", arch,
                  err.msg);
}

/* ---------------------------------------------------------------- tests */

/* Full offload: the prompt in one batch (both attention paths), prompt + greedy in one
 * pass, and the same one token per call. */
START_TEST(full_offload)
{
    const fixture *f = &cases[_i];
    model *m = load(f->model, 99);
    ck_assert_int_eq(m->hp.n_vocab, f->n_vocab);
    ck_assert_ptr_eq(m->output->be, m->gpu);
    kv_cache *kv = test_kv_cache(m, 512, 1, f->ctk, f->ctv);
    float *out = fixture_logits_buf(f, f->n_tok);
    double e[4] = {0};
    for (int fl = 0; fl < 2; fl++) {
        const bool flash = fl ? !f->flash : f->flash;
        kv_seq_keep(kv, 0, 0);
        fixture_eval(m, kv, f->tok, f->n_tok, 0, 0, f->n_tok, flash, out);
        e[fl] = fixture_check_prompt(f, out, f->tol, flash ? "full offload, flash" : "full offload, plain");
    }
    free(out);

    int n;
    int32_t *t = fixture_full_sequence(f, &n);
    float *one = fixture_logits_buf(f, n), *dec = fixture_logits_buf(f, n);
    kv_seq_keep(kv, 0, 0);
    fixture_eval(m, kv, t, n, 0, 0, n, f->flash, one);
    e[2] = fixture_check_prompt(f, one, f->tol, "full offload, greedy pass");
    const int c = fixture_check_greedy(f, one, e[2], "full offload, one pass");
    kv_seq_keep(kv, 0, 0);
    if (is_deep[_i]) {
        fixture_eval(m, kv, t, n, 0, 0, 1, f->flash, dec);
    } else {
        fixture_eval(m, kv, t, f->n_tok, 0, 0, f->n_tok, f->flash, dec);
        fixture_eval(m, kv, t + f->n_tok, n - f->n_tok, 0, f->n_tok, 1, f->flash, dec + (size_t)f->n_tok * f->n_vocab);
    }
    e[3] = fixture_check_prompt(f, dec, f->tol, "full offload, decode");
    fixture_check_greedy(f, dec, e[3], "full offload, one token per call");
    /* greedy ids picked on the GPU: the argmax of the logits just checked */
    kv_seq_keep(kv, 0, 0);
    for (int i = 0; i < n && is_deep[_i]; i++) {
        const int32_t p = i, s0 = 0;
        int32_t id = -1;
        const int8_t want = 1;
        fwd_batch b = {1, t + i, &p, &s0, &want};
        llmfs_error err = {0};
        ck_assert_msg(model_forward_ids(m, kv, &b, &id, f->flash, &err) == 0, "%s", err.msg);
        const float *row = dec + (size_t)i * f->n_vocab;
        int best = 0;
        for (int v = 1; v < f->n_vocab; v++)
            if (row[v] > row[best])
                best = v;
        /* the same step twice may round differently only where two logits nearly tie */
        ck_assert_msg(id == best || row[best] - row[id] < 1e-3f, "%s: position %d: GPU chose %d, logits say %d", f->name,
                      i, id, best);
    }
    if (m->hp.n_recurrent) {
        /* the recurrent state on the device, through a checkpoint: the prompt's first half,
         * a checkpoint, the rest; cut back into the second half, the state comes from the
         * checkpoint (device -> host -> device) and the rest again gives the same logits
         * (without the restore the state would have seen the rest twice) */
        const int h = f->n_tok / 2, r = f->n_tok - h;
        ck_assert_ptr_eq(kv->state[0].be, m->gpu);
        float *first = fixture_logits_buf(f, f->n_tok), *again = fixture_logits_buf(f, r);
        kv_seq_keep(kv, 0, 0);
        fixture_eval(m, kv, f->tok, h, 0, 0, h, f->flash, first);
        ck_assert_int_eq(kv_checkpoint_save(kv, 0), 0);
        fixture_eval(m, kv, f->tok + h, r, 0, h, r, f->flash, first + (size_t)h * f->n_vocab);
        fixture_check_prompt(f, first, f->tol, "full offload, prompt in two halves");
        ck_assert_int_eq(kv_seq_keep(kv, 0, f->n_tok - 1), h);
        fixture_eval(m, kv, f->tok + h, r, 0, h, r, f->flash, again);
        for (int i = 0; i < r; i++) { /* the same kernels on the same state: equal up to reordered sums */
            const double d = logits_rel_rms(again + (size_t)i * f->n_vocab, first + (size_t)(h + i) * f->n_vocab,
                                            f->n_vocab);
            ck_assert_msg(d < 1e-4, "%s: position %d after restoring a checkpoint on the GPU: off by %.3g", f->name,
                          h + i, d);
        }
        free(first);
        free(again);
    }
    printf("%-34s GPU: prompt %.2e / %.2e (other path), greedy pass %.2e, decode %.2e (tol %.0e); %d greedy steps\n",
           f->name, e[0], e[1], e[2], e[3], f->tol, c);
    free(one);
    free(dec);
    free(t);
    kv_cache_free(kv);
    model_free(m);
}
END_TEST

/* Part of the model on the GPU: the hidden state moves between backends. */
START_TEST(partial_offload)
{
    const fixture *f = &cases[deep[_i]];
    model *probe = load(f->model, 1);
    const int nl = probe->hp.n_layer;
    model_free(probe);
    const int ngls[2] = {nl > 1 ? nl / 2 : 1, nl};
    int n;
    int32_t *t = fixture_full_sequence(f, &n);
    float *out = fixture_logits_buf(f, n);
    for (int k = 0; k < 2; k++) {
        model *m = load(f->model, ngls[k]);
        ck_assert_ptr_eq(m->output->be, m->cpu);
        kv_cache *kv = test_kv_cache(m, 512, 1, f->ctk, f->ctv);
        char what[64];
        snprintf(what, sizeof what, "ngl %d of %d", ngls[k], nl);
        fixture_eval(m, kv, t, n, 0, 0, n, f->flash, out);
        const double noise = fixture_check_prompt(f, out, f->tol, what);
        fixture_check_greedy(f, out, noise, what);
        kv_seq_keep(kv, 0, 0);
        fixture_eval(m, kv, t, n, 0, 0, 4, f->flash, out);
        fixture_check_prompt(f, out, f->tol, what);
        kv_cache_free(kv);
        model_free(m);
    }
    free(out);
    free(t);
}
END_TEST

/* Hybrid placements with every layer on the GPU: the feed-forward weights (the experts of
 * a MoE model, by n_cpu_moe and by the override pattern that catches _exps and _shexp)
 * stay on the CPU, so each layer's activations cross twice. */
START_TEST(hybrid_placements)
{
    const fixture *f = &cases[deep[_i]];
    int n;
    int32_t *t = fixture_full_sequence(f, &n);
    float *out = fixture_logits_buf(f, n);
    model *probe = load(f->model, 1);
    const int nl = probe->hp.n_layer;
    const bool moe = probe->hp.n_expert > 0;
    model_free(probe);
    struct {
        const char *what, *ot;
        int n_cpu_moe, ngl;
    } cfg[3] = {{"experts on the CPU (n_cpu_moe)", NULL, nl, 99},
                {"feed-forward on the CPU (override_tensor)", "ffn_(up|down|gate)_(ch|)exps=CPU,ffn_(up|down|gate)=CPU", 0, 99},
                {"first layers on the CPU (ngl)", NULL, 0, nl / 2}};
    for (int k = moe ? 0 : 1; k < 3; k++) {
        model_opts o = {.n_threads = 2, .n_threads_batch = 2, .ngl = cfg[k].ngl, .override_tensor = cfg[k].ot,
                        .n_cpu_moe = cfg[k].n_cpu_moe};
        llmfs_error err = {0};
        model *m = model_load(f->model, &o, &err);
        ck_assert_msg(m && m->gpu, "%s: %s: %s", f->name, cfg[k].what, err.msg);
        ck_assert_ptr_eq(m->output->be, k == 2 ? m->cpu : m->gpu);
        /* the last layer computes attention on the GPU (its feed-forward weights on the
         * CPU), or with ngl the first layer is on the CPU altogether */
        const model_layer *L = &m->layers[k == 2 ? 0 : nl - 1];
        /* Gemma 4's experts are one fused gate_up tensor (in gate_exps) */
        const tensor *ffn = moe ? (L->up_exps ? L->up_exps : L->gate_exps) : L->w_up;
        ck_assert_msg(ffn && ffn->be == m->cpu, "%s: %s: the feed-forward is not on the CPU", f->name, cfg[k].what);
        /* a hybrid model's layer 0 is recurrent: its projection is attn_qkv or ssm_in */
        const tensor *proj = L->wq ? L->wq : L->wqkv ? L->wqkv : L->ssm_in;
        ck_assert_ptr_eq(proj->be, k == 2 ? m->cpu : m->gpu);
        ck_assert_int_gt(m->stream.layers, 0);
        kv_cache *kv = test_kv_cache(m, 512, 1, f->ctk, f->ctv);
        /* the prompt in one batch with the CPU computing its feed-forward weights, then with
         * those weights streamed to the GPU (two layers in flight), then a token per call */
        for (int streamed = 0; streamed < 2; streamed++) {
            char what[160];
            snprintf(what, sizeof what, "%s, %s", cfg[k].what, streamed ? "weights streamed" : "computed on the CPU");
            m->offload_batch = streamed ? 2 : 0;
            const uint64_t before = m->stream.batches;
            kv_seq_keep(kv, 0, 0);
            fixture_eval(m, kv, t, n, 0, 0, n, f->flash, out);
            ck_assert_msg(m->stream.batches == before + (uint64_t)streamed, "%s: %s: %llu batches streamed",
                          f->name, what, (unsigned long long)(m->stream.batches - before));
            ck_assert_msg(!m->stream.error[0], "%s: %s: %s", f->name, what, m->stream.error);
            const double noise = fixture_check_prompt(f, out, f->tol, what);
            fixture_check_greedy(f, out, noise, what);
        }
        kv_seq_keep(kv, 0, 0);
        fixture_eval(m, kv, t, n, 0, 0, 1, f->flash, out);
        fixture_check_prompt(f, out, f->tol, cfg[k].what);
        kv_cache_free(kv);
        model_free(m);
    }
    free(out);
    free(t);
}
END_TEST

/* Two sequences interleaved in one batch, then one token of each per call: each gets
 * the logits it gets alone with the same calls. The interleaved prompt stays within the
 * batch size that the matrix-vector kernels take (16), so both runs take the same
 * kernels; the larger batches' paths across sequences are covered op by op in gpu_ops. */
START_TEST(two_sequences)
{
    const fixture *f = &cases[deep[_i]];
    int na;
    int32_t *a = fixture_full_sequence(f, &na);
    const int nb = na - 3;
    int32_t *bt = malloc(sizeof(int32_t) * (size_t)nb);
    bt[0] = a[0];
    for (int i = 1; i < nb; i++)
        bt[i] = a[na - i];
    model *m = load(f->model, 99);
    const int V = f->n_vocab;
    const int pa = na < 9 ? na : 9, pb = nb < 7 ? nb : 7, cap = na + nb;
    float *ra = fixture_logits_buf(f, na), *rb = fixture_logits_buf(f, nb);
    kv_cache *kv1 = test_kv_cache(m, 128, 1, f->ctk, f->ctv);
    fixture_eval(m, kv1, a, pa, 0, 0, pa, f->flash, ra);
    fixture_eval(m, kv1, a + pa, na - pa, 0, pa, 1, f->flash, ra + (size_t)pa * V);
    kv_seq_keep(kv1, 0, 0);
    fixture_eval(m, kv1, bt, pb, 0, 0, pb, f->flash, rb);
    fixture_eval(m, kv1, bt + pb, nb - pb, 0, pb, 1, f->flash, rb + (size_t)pb * V);
    kv_cache_free(kv1);

    kv_cache *kv = test_kv_cache(m, 128, 3, f->ctk, f->ctv);
    int32_t *tok = malloc(sizeof(int32_t) * cap), *pos = malloc(sizeof(int32_t) * cap), *seq = malloc(sizeof(int32_t) * cap);
    int8_t *lg = malloc((size_t)cap);
    float *out = fixture_logits_buf(f, cap);
    int n = 0;
    for (int i = 0; i < pa || i < pb; i++) {
        if (i < pa) {
            tok[n] = a[i], pos[n] = i, seq[n] = 2, lg[n] = 1;
            n++;
        }
        if (i < pb) {
            tok[n] = bt[i], pos[n] = i, seq[n] = 0, lg[n] = 1;
            n++;
        }
    }
    llmfs_error err = {0};
    fwd_batch b = {n, tok, pos, seq, lg};
    ck_assert_int_eq(model_forward(m, kv, &b, out, f->flash, &err), 0);
    /* batch arithmetic differs from the single-sequence runs only by rounding noise */
    const double tol = f->tol / 2;
    for (int k = 0, ia = 0, ib = 0; k < n; k++) {
        const float *r = seq[k] == 2 ? ra + (size_t)ia++ * V : rb + (size_t)ib++ * V;
        double e = logits_rel_rms(out + (size_t)k * V, r, V);
        ck_assert_msg(e < tol, "%s: interleaved prompt token %d off by %.3g", f->name, k, e);
    }
    for (int ia = pa, ib = pb; ia < na || ib < nb;) {
        n = 0;
        if (ib < nb) {
            tok[n] = bt[ib], pos[n] = ib, seq[n] = 0, lg[n] = 1;
            n++;
        }
        if (ia < na) {
            tok[n] = a[ia], pos[n] = ia, seq[n] = 2, lg[n] = 1;
            n++;
        }
        fwd_batch d = {n, tok, pos, seq, lg};
        ck_assert_int_eq(model_forward(m, kv, &d, out, f->flash, &err), 0);
        for (int k = 0; k < n; k++) {
            const float *r = seq[k] == 2 ? ra + (size_t)pos[k] * V : rb + (size_t)pos[k] * V;
            double e = logits_rel_rms(out + (size_t)k * V, r, V);
            ck_assert_msg(e < tol, "%s: sequence %d position %d off by %.3g", f->name, seq[k], pos[k], e);
        }
        ia += ia < na;
        ib += ib < nb;
    }
    free(tok);
    free(pos);
    free(seq);
    free(lg);
    free(out);
    free(ra);
    free(rb);
    free(a);
    free(bt);
    kv_cache_free(kv);
    model_free(m);
}
END_TEST

/* Device memory runs out: a KV cache, a batch that needs more scratch and a second model
 * each get ENOMEM with a reason (the model may instead stay on the CPU, saying why), and
 * once the memory is back the first model serves again and still matches llama.cpp. */
START_TEST(out_of_memory)
{
    const fixture *f = &cases[0];
    model *m = load(f->model, 99);
    kv_cache *kv = test_kv_cache(m, 512, 1, f->ctk, f->ctv);
    float *out = fixture_logits_buf(f, f->n_tok);
    fixture_eval(m, kv, f->tok, 1, 0, 0, 1, f->flash, out); /* small batches only so far */

    hog h = hog_device();

    llmfs_error e = {0};
    kv_cache *big = kv_cache_alloc(m, 8192, 4, f->ctk, f->ctv, &e);
    ck_assert_msg(big == NULL && e.code == ENOMEM && e.msg[0], "KV cache on a full device: %d %s", e.code, e.msg);

    int32_t *pos = malloc(sizeof(int32_t) * 512), *seq = calloc(512, sizeof(int32_t)), *tok = malloc(sizeof(int32_t) * 512);
    int8_t *lg = calloc(512, 1);
    for (int i = 0; i < 512; i++) {
        pos[i] = i;
        tok[i] = f->tok[i % f->n_tok];
    }
    lg[511] = 1;
    float *last = fixture_logits_buf(f, 1);
    kv_seq_keep(kv, 0, 0);
    fwd_batch b = {512, tok, pos, seq, lg};
    memset(&e, 0, sizeof e);
    const int rc = model_forward(m, kv, &b, last, f->flash, &e);
    ck_assert_msg(rc == -ENOMEM && e.code == ENOMEM && strstr(e.msg, "memory"),
                  "a 512-token batch on a full device: %d %s", rc, e.msg);

    model_opts o = {.n_threads = 2, .n_threads_batch = 2, .ngl = 99};
    memset(&e, 0, sizeof e);
    model *m2 = model_load(f->model, &o, &e);
    if (m2) {
        ck_assert_msg(m2->gpu == NULL && strstr(m2->note, "memory"), "a second model on a full device: %s", m2->note);
        model_free(m2);
    } else {
        ck_assert_msg(e.code == ENOMEM && e.msg[0], "a second model on a full device: %d %s", e.code, e.msg);
    }

    /* memory back: the same model, the same cache, the big batch and the reference */
    hog_release(&h);
    kv_seq_keep(kv, 0, 0);
    memset(&e, 0, sizeof e);
    ck_assert_msg(model_forward(m, kv, &b, last, f->flash, &e) == 0, "the 512-token batch afterwards: %s", e.msg);
    kv_seq_keep(kv, 0, 0);
    fixture_eval(m, kv, f->tok, f->n_tok, 0, 0, f->n_tok, f->flash, out);
    fixture_check_prompt(f, out, f->tol, "after running out of memory");
    free(pos);
    free(seq);
    free(tok);
    free(lg);
    free(last);
    free(out);
    kv_cache_free(kv);
    model_free(m);
}
END_TEST

/* Streaming through both slots: models of five layers (the fixtures have two, so no
 * slot is ever refilled there) written by mkmodel, dense Q4_K_M (its blocks repacked on
 * the device) and MoE Q8_0, with every feed-forward weight on the CPU. Streamed, the
 * prompt runs the kernels that run when those weights live on the GPU, so it must give
 * those logits to rounding; a slot refilled before its layer has read it, or read before
 * its copy is done, gives another layer's weights. */
START_TEST(streamed_layers)
{
    static const struct {
        const char *arch, *ftype, *ot;
        int n_cpu_moe;
    } shapes[] = {{"llama", "q4_k_m", "ffn_(up|down|gate)=CPU", 0}, {"qwen3moe", "q8_0", NULL, 5}};
    const int nl = 5, n = 24;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
        char path[] = "/tmp/llmfs-streamed-XXXXXX";
        write_model(path, shapes[s].arch, shapes[s].ftype, 0, 0, 11 + s);
        llmfs_error err = {0};
        model *g = load(path, 99);
        model_opts o = {.n_threads = 2, .n_threads_batch = 2, .ngl = 99, .override_tensor = shapes[s].ot,
                        .n_cpu_moe = shapes[s].n_cpu_moe};
        model *m = model_load(path, &o, &err);
        unlink(path);
        ck_assert_msg(m && m->gpu, "%s: %s", shapes[s].arch, err.msg);
        ck_assert_int_eq(g->stream.layers, 0);
        ck_assert_int_eq(m->stream.layers, nl);
        const int V = m->hp.n_vocab;
        int32_t tok[24];
        test_rand_seed(5 + s);
        for (int i = 0; i < n; i++)
            tok[i] = (int32_t)(test_rand() % (uint64_t)V);
        float *ref = malloc(sizeof(float) * (size_t)n * V), *out = malloc(sizeof(float) * (size_t)n * V);
        kv_cache *kv = test_kv_cache(g, 64, 1, T_F16, T_F16);
        fixture_eval(g, kv, tok, n, 0, 0, n, false, ref);
        kv_cache_free(kv);
        kv = test_kv_cache(m, 64, 1, T_F16, T_F16);
        /* on the CPU; a threshold above the batch (not streamed); streamed */
        const int thresholds[] = {0, n + 1, 2};
        const double within[] = {1.5e-1, 1.5e-1, 1e-5};
        for (int t = 0; t < 3; t++) {
            m->offload_batch = thresholds[t];
            const uint64_t before = m->stream.batches;
            kv_seq_keep(kv, 0, 0);
            fixture_eval(m, kv, tok, n, 0, 0, n, false, out);
            ck_assert_msg(m->stream.batches == before + (t == 2), "%s, offload_batch %d: %llu batches streamed",
                          shapes[s].arch, thresholds[t], (unsigned long long)(m->stream.batches - before));
            ck_assert_msg(!m->stream.error[0], "%s: %s", shapes[s].arch, m->stream.error);
            double worst = 0;
            for (int i = 0; i < n; i++) {
                const double e = logits_rel_rms(out + (size_t)i * V, ref + (size_t)i * V, V);
                worst = e > worst ? e : worst;
            }
            fprintf(stderr, "%-10s %d layers, offload_batch %-3d: logits within %.2e of the weights on the GPU\n",
                    shapes[s].arch, nl, thresholds[t], worst);
            ck_assert_msg(worst < within[t], "%s, offload_batch %d: logits differ by %.3g", shapes[s].arch,
                          thresholds[t], worst);
        }
        kv_cache_free(kv);
        free(ref);
        free(out);
        model_free(m);
        model_free(g);
    }
}
END_TEST

/* The layers in flight hold device memory that a larger batch's scratch then cannot
 * get: that batch runs with the memory given back and the feed-forward on the CPU, and
 * streaming stays off (placement says why); the logits are those of a batch that never
 * streamed. */
START_TEST(stream_out_of_memory)
{
    char path[] = "/tmp/llmfs-stream-oom-XXXXXX";
    write_model(path, "llama", "q8_0", 512, 4096, 23);
    model_opts o = {.n_threads = 2, .n_threads_batch = 2, .ngl = 99, .override_tensor = "ffn_(up|down|gate)=CPU"};
    llmfs_error err = {0};
    model *m = model_load(path, &o, &err);
    unlink(path);
    ck_assert_msg(m && m->gpu, "%s", err.msg);
    ck_assert_int_eq(m->stream.layers, 5);
    const int V = m->hp.n_vocab, n = 96;
    int32_t tok[96];
    test_rand_seed(17);
    for (int i = 0; i < n; i++)
        tok[i] = (int32_t)(test_rand() % (uint64_t)V);
    float *out = malloc(sizeof(float) * (size_t)n * V), *ref = malloc(sizeof(float) * (size_t)n * V);
    kv_cache *kv = test_kv_cache(m, 256, 1, T_F16, T_F16);
    m->offload_batch = 2;
    fixture_eval(m, kv, tok, 17, 0, 0, 17, false, out); /* the slots at their full size */
    ck_assert_int_eq(m->stream.batches, 1);
    const uint64_t held = m->gpu->ops->mem_used(m->gpu);

    hog h = hog_device();
    kv_seq_keep(kv, 0, 0);
    fixture_eval(m, kv, tok, n, 0, 0, n, false, out);
    ck_assert_msg(strstr(m->stream.error, "streaming off") && strstr(m->stream.error, "memory"), "stream error: '%s'",
                  m->stream.error);
    ck_assert_int_eq(m->stream.batches, 1);
    ck_assert_int_eq(model_stream_threshold(&m->stream, m->offload_batch), 0);
    /* the two slots (a layer's feed-forward weights each) went back */
    const uint64_t now = m->gpu->ops->mem_used(m->gpu), slot = m->stream.bytes / 5;
    fprintf(stderr, "stream_out_of_memory: device memory held %.1f MiB streaming, %.1f MiB after (slots %.1f MiB)\n",
            held / 1048576.0, now / 1048576.0, slot / 1048576.0);
    ck_assert_msg(now + 2 * slot <= held, "%llu bytes held before, %llu after", (unsigned long long)held,
                  (unsigned long long)now);
    hog_release(&h);

    kv_seq_keep(kv, 0, 0);
    fixture_eval(m, kv, tok, n, 0, 0, n, false, ref); /* offload_batch 2, but streaming is off */
    ck_assert_int_eq(m->stream.batches, 1);
    for (int i = 0; i < n; i++) {
        const double e = logits_rel_rms(out + (size_t)i * V, ref + (size_t)i * V, V);
        ck_assert_msg(e < 1e-5, "position %d: %.3g from the batch that never streamed", i, e);
    }
    free(out);
    free(ref);
    kv_cache_free(kv);
    model_free(m);
}
END_TEST

/* Through the engine: offload_batch set at load and by ctl reaches the model the
 * scheduler runs, and the model's stream state what `placement` shows. */
START_TEST(engine_offload_batch)
{
    char path[4096];
    test_shared_path("models/llama-tiny-q8_0.gguf", path, sizeof path);
    llmfs_error e = {0};
    llmfs *lf = llmfs_new(&e);
    ck_assert_msg(lf, "%s", e.msg);
    static const char *const settings[] = {"ngl=99", "override_tensor=ffn_(up|down|gate)=CPU", "offload_batch=2",
                                           "ctx=256", "threads=2"};
    ck_assert_msg(llmfs_model_load(lf, "m", path, settings, 5, &e) == 0, "%s", e.msg);
    llmfs_model *m = llmfs_model_get(lf, "m");
    llmfs_session *s = llmfs_session_default(m);
    ck_assert_int_eq(llmfs_session_ctl(s, "mode raw", &e), 0);
    ck_assert_int_eq(llmfs_session_ctl(s, "n_predict 3", &e), 0);
    llmfs_stream_info si;
    llmfs_model_stream_info(m, &si);
    ck_assert_int_eq(si.layers, 2);
    ck_assert_int_eq(si.threshold, 2);
    ck_assert_uint_eq(si.batches, 0);
    for (int round = 0; round < 2; round++) {
        static const char text[] = "Once upon a time there was a little girl";
        ck_assert_msg(llmfs_session_prompt(s, text, sizeof text - 1, &e) == 0, "%s", e.msg);
        test_wait_idle(s, 600);
        llmfs_model_stream_info(m, &si);
        /* the prompt streamed once; the generated tokens (one at a time) did not */
        ck_assert_msg(si.batches == 1, "round %d: %llu batches streamed", round, (unsigned long long)si.batches);
        ck_assert_msg(!si.error[0], "%s", si.error);
        ck_assert(si.gpu_bytes_per_s > 0);
        if (round == 0) { /* then never: the second prompt computes on the CPU */
            ck_assert_int_eq(llmfs_model_ctl(m, "offload_batch 0", &e), 0);
            llmfs_model_stream_info(m, &si);
            ck_assert_int_eq(si.threshold, 0);
        }
    }
    llmfs_session_put(s);
    llmfs_free(lf);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("gpu_fixtures");
    TCase *tc = tcase_create("fixtures");
    tcase_set_timeout(tc, 900);
    tcase_add_loop_test(tc, full_offload, 0, n_cases);
    tcase_add_loop_test(tc, partial_offload, 0, n_deep);
    tcase_add_loop_test(tc, two_sequences, 0, n_deep);
    tcase_add_loop_test(tc, hybrid_placements, 0, n_deep);
    /* the tests of no particular case run in the first shard only */
    const char *sh = getenv("LLMFS_FIXTURES_SHARD");
    if (!sh || !*sh || atoi(sh) == 1) {
        tcase_add_test(tc, out_of_memory);
        tcase_add_test(tc, streamed_layers);
        tcase_add_test(tc, stream_out_of_memory);
        tcase_add_test(tc, engine_offload_batch);
    }
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    char err[256] = "";
    backend *probe = backend_gpu_new(0, err, sizeof err);
    if (!probe) {
        /* a device that is there but unusable is a failure, not a skip */
        if (backend_gpu_count() > 0) {
            fprintf(stderr, "\n*** FAILED gpu_fixtures: %d CUDA device(s) present, but: %s ***\n\n",
                    backend_gpu_count(), err);
            return 1;
        }
        fprintf(stderr, "\n*** SKIPPED gpu_fixtures: no usable GPU (%s) ***\n\n", err);
        return test_skip_code();
    }
    backend_free(probe);
    load_fixtures();
    if (n_cases == 0) {
        fprintf(stderr, "\n*** SKIPPED gpu_fixtures: no fixture cases found under %s ***\n\n",
                test_shared_dir() ? test_shared_dir() : "(no test assets)");
        return test_skip_code();
    }
    /* CUDA state does not survive fork: run the tests in this process */
    setenv("CK_FORK", "no", 1);
    return test_run_suite(make_suite());
}

#else
int main(void)
{
    fprintf(stderr, "\n*** SKIPPED gpu_fixtures: llmfs was built without CUDA ***\n\n");
    return test_skip_code();
}
#endif
