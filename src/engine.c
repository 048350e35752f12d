/* engine.c — the daemon object and its models: loading, settings, info, stats. */
#include "engine.h"
#include "remote.h"
#include "chat.h"
#include "diag.h"
#include "fit.h"
#include "placement.h"
#include "quant.h"
#include "stream.h"
#include "sysroot.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

double engine_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* ---- daemon ---- */

llmfs *llmfs_new(llmfs_error *err)
{
    llmfs *lf = calloc(1, sizeof *lf);
    if (!lf) {
        llmfs_errorf(err, ENOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&lf->mu, NULL);
    settings_init(&lf->settings);
    lf->t_start = engine_now();
    lf->swap_at_start = sysroot_swap_pages();
    return lf;
}

void llmfs_free(llmfs *lf)
{
    if (!lf)
        return;
    for (;;) {
        pthread_mutex_lock(&lf->mu);
        llmfs_model *m = lf->models;
        char name[64];
        if (m)
            snprintf(name, sizeof name, "%s", m->name);
        pthread_mutex_unlock(&lf->mu);
        if (!m)
            break;
        if (llmfs_model_unload(lf, name, NULL) < 0) {
            /* still loading on another thread: wait for it to finish */
            struct timespec ts = {0, 10 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
    settings_clear(&lf->settings);
    pthread_mutex_destroy(&lf->mu);
    free(lf);
}

int llmfs_set(llmfs *lf, const char *key, const char *value, llmfs_error *err)
{
    pthread_mutex_lock(&lf->mu);
    int rc = settings_set(&lf->settings, LLMFS_SCOPE_DAEMON | LLMFS_SCOPE_MODEL | LLMFS_SCOPE_SESSION, key,
                          value, err);
    pthread_mutex_unlock(&lf->mu);
    return rc;
}

int llmfs_get(llmfs *lf, const char *key, char *buf, size_t cap)
{
    pthread_mutex_lock(&lf->mu);
    int rc = settings_get(&lf->settings, key, buf, cap);
    pthread_mutex_unlock(&lf->mu);
    return rc;
}

const llmfs_setting_info *llmfs_setting_find(const char *name)
{
    return settings_info(settings_find(name));
}

int llmfs_settings_text(llmfs *lf, int scope_mask, char *buf, size_t cap)
{
    pthread_mutex_lock(&lf->mu);
    int n = settings_text(&lf->settings, scope_mask, buf, cap);
    pthread_mutex_unlock(&lf->mu);
    return n;
}

/* Next whitespace-separated word of *p into buf; false at the end. */
static bool next_word(const char **p, char *buf, size_t cap)
{
    const char *s = *p;
    while (*s && isspace((unsigned char)*s))
        s++;
    if (!*s)
        return false;
    const char *e = s;
    while (*e && !isspace((unsigned char)*e))
        e++;
    size_t n = (size_t)(e - s);
    if (n >= cap)
        n = cap - 1;
    memcpy(buf, s, n);
    buf[n] = 0;
    *p = e;
    return true;
}

int llmfs_ctl(llmfs *lf, const char *line, llmfs_error *err)
{
    char key[64];
    size_t vl;
    const char *v = settings_split_line(line ? line : "", key, sizeof key, &vl);
    if (!v)
        return 0;
    if (strcmp(key, "load") == 0) {
        char name[64], path[PATH_MAX];
        char *args = strndup(v, vl);
        if (!args)
            return llmfs_errorf(err, ENOMEM, "out of memory");
        const char *p = args;
        if (!next_word(&p, name, sizeof name) || !next_word(&p, path, sizeof path)) {
            free(args);
            return llmfs_errorf(err, EINVAL, "usage: load NAME PATH [key=value ...]");
        }
        char *kv[64];
        int n = 0, rc = 0;
        char word[4096];
        while (rc == 0 && next_word(&p, word, sizeof word)) {
            if (n == 64)
                rc = llmfs_errorf(err, EINVAL, "load: too many settings");
            else if (!(kv[n++] = strdup(word)))
                rc = llmfs_errorf(err, ENOMEM, "out of memory");
        }
        if (rc == 0)
            rc = llmfs_model_load(lf, name, path, (const char *const *)kv, n, err);
        for (int i = 0; i < n; i++)
            free(kv[i]);
        free(args);
        return rc;
    }
    if (strcmp(key, "unload") == 0) {
        char name[64];
        char *args = strndup(v, vl);
        const char *p = args;
        int rc = args && next_word(&p, name, sizeof name) ? llmfs_model_unload(lf, name, err)
                                                           : llmfs_errorf(err, EINVAL, "usage: unload NAME");
        free(args);
        return rc;
    }
    pthread_mutex_lock(&lf->mu);
    int rc = settings_set_line(&lf->settings, LLMFS_SCOPE_DAEMON | LLMFS_SCOPE_MODEL | LLMFS_SCOPE_SESSION,
                               line, err);
    pthread_mutex_unlock(&lf->mu);
    return rc;
}

/* ---- model objects ---- */

static int cache_ggml_type(int cache_enum);

void model_set_error(llmfs_model *m, const char *msg)
{
    snprintf(m->error, sizeof m->error, "%s", msg);
}

static void model_destroy(llmfs_model *m)
{
    spec_drafter_free(m->drafter);
    mtp_free(m->mtp);
    if (m->kv)
        kv_cache_free(m->kv);
    /* before the text model: a projector on its GPU frees its weights through that backend */
    clip_free(m->clip);
    if (m->mdl)
        model_free(m->mdl);
    remote_free(m->remote);
    pthread_mutex_destroy(&m->clip_mu);
    pthread_mutex_destroy(&m->dev_mu);
    for (int i = 0; i < m->n_slots; i++)
        free(m->slots[i].tokens);
    free(m->slots);
    free(m->sessions);
    settings_clear(&m->settings);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->work_cv);
    free(m);
}

void llmfs_model_put(llmfs_model *m)
{
    if (m && atomic_fetch_sub(&m->refs, 1) == 1)
        model_destroy(m);
}

const char *llmfs_model_name(const llmfs_model *m)
{
    return m->name;
}

llmfs_model *llmfs_model_get(llmfs *lf, const char *name)
{
    pthread_mutex_lock(&lf->mu);
    llmfs_model *m = lf->models;
    while (m && strcmp(m->name, name) != 0)
        m = m->next;
    if (m)
        atomic_fetch_add(&m->refs, 1);
    pthread_mutex_unlock(&lf->mu);
    return m;
}

int llmfs_model_names(llmfs *lf, char **names, int cap)
{
    int n = 0;
    pthread_mutex_lock(&lf->mu);
    for (llmfs_model *m = lf->models; m && n < cap; m = m->next) {
        names[n] = strdup(m->name);
        if (!names[n]) {
            /* a list with a model missing would read as "not loaded" */
            pthread_mutex_unlock(&lf->mu);
            while (n > 0)
                free(names[--n]);
            return -ENOMEM;
        }
        n++;
    }
    pthread_mutex_unlock(&lf->mu);
    return n;
}

static bool valid_model_name(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n >= 64 || name[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++)
        if (!isalnum((unsigned char)name[i]) && !strchr("._-+", name[i]))
            return false;
    return true;
}

bool llmfs_model_name_valid(const char *name)
{
    return name && valid_model_name(name);
}

/* path must lie in one of the colon-separated dirs (after resolving links). */
static int check_model_dirs(const char *path, const char *dirs, llmfs_error *err)
{
    char real[PATH_MAX];
    if (!realpath(path, real))
        return llmfs_errorf(err, errno == ENOENT ? ENOENT : EACCES, "%s: %s", path, strerror(errno));
    if (!dirs || !*dirs)
        return 0;
    char *copy = strdup(dirs);
    if (!copy)
        return llmfs_errorf(err, ENOMEM, "out of memory");
    int rc = llmfs_errorf(err, EACCES, "%s is outside the model folders (model_dirs)", path);
    char *save = NULL;
    for (char *d = strtok_r(copy, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char rd[PATH_MAX];
        if (!realpath(d, rd))
            continue;
        size_t n = strlen(rd);
        while (n > 1 && rd[n - 1] == '/')
            rd[--n] = 0;
        if (strncmp(real, rd, n) == 0 && (real[n] == '/' || (n == 1 && rd[0] == '/'))) {
            rc = 0;
            if (err)
                err->code = 0, err->msg[0] = 0;
            break;
        }
    }
    free(copy);
    return rc;
}

static int cache_ggml_type(int cache_enum)
{
    return cache_enum == CACHE_Q8_0 ? T_Q8_0 : cache_enum == CACHE_Q4_0 ? T_Q4_0 : T_F16;
}

static const char *cache_type_name(int cache_enum)
{
    return cache_enum == CACHE_Q8_0 ? "q8_0" : cache_enum == CACHE_Q4_0 ? "q4_0" : "f16";
}

/* The KV cache and slots for the current settings (m->mu held, nothing running). */
static int model_alloc_kv(llmfs_model *m, llmfs_error *err)
{
    const llmfs_settings *s = &m->settings;
    llmfs_error e = {0};
    const int slack = kv_swa_slack(s->ubatch, s->swa_full);
    kv_cache *kv = kv_cache_alloc_swa(m->mdl, s->ctx, s->parallel, cache_ggml_type(s->cache_type_k),
                                      cache_ggml_type(s->cache_type_v), slack, &e);
    if (!kv && e.code == ENOMEM && m->kv) {
        /* the old cache and the new one may not fit together: drop the old one first, and
         * get it back if the new one does not fit alone either */
        int old_ctx = m->kv->n_ctx, old_seq = m->kv->n_seq, old_tk = m->kv->type_k, old_tv = m->kv->type_v,
            old_slack = m->kv->swa_slack;
        kv_cache_free(m->kv);
        m->kv = NULL;
        kv = kv_cache_alloc_swa(m->mdl, s->ctx, s->parallel, cache_ggml_type(s->cache_type_k),
                                cache_ggml_type(s->cache_type_v), slack, &e);
        if (!kv) {
            llmfs_error e2 = {0};
            m->kv = kv_cache_alloc_swa(m->mdl, old_ctx, old_seq, old_tk, old_tv, old_slack, &e2);
            for (int i = 0; i < m->n_slots; i++)
                m->slots[i].n = 0;
            for (int i = 0; i < m->n_sessions; i++)
                if (m->sessions[i]->slot >= 0)
                    m->sessions[i]->slot = -1;
            for (int i = 0; i < m->n_slots; i++)
                m->slots[i].owner = NULL;
            if (!m->kv) {
                m->state = MS_FAILED;
                model_set_error(m, "the KV cache could not be allocated again");
            }
        }
    }
    if (!kv) {
        if (err)
            *err = e;
        return e.code ? -e.code : -ENOMEM;
    }
    if (kv->n_recurrent && s->spec_type) {
        /* speculation on a hybrid model: the state after each token of a verification
         * batch, so rejected drafts are taken back without decoding the kept ones again;
         * where they cannot be kept (a device without them, no memory) a checkpoint before
         * the drafts does it, at that cost */
        llmfs_error se = {0};
        if (kv_snapshots_alloc(kv, s->spec_draft_n_max + 1, &se) < 0)
            kv_snapshots_alloc(kv, 0, &se);
    }
    kv_slot *slots = calloc((size_t)s->parallel, sizeof *slots);
    if (!slots) {
        kv_cache_free(kv);
        return llmfs_errorf(err, ENOMEM, "out of memory for KV slots");
    }
    for (int i = 0; i < m->n_slots; i++)
        free(m->slots[i].tokens);
    free(m->slots);
    for (int i = 0; i < m->n_sessions; i++)
        m->sessions[i]->slot = -1;
    if (m->kv)
        kv_cache_free(m->kv);
    m->kv = kv;
    m->slots = slots;
    m->n_slots = s->parallel;
    if (m->drafter) {
        /* the draft's cache follows the target's sequences; one that no longer fits ends
         * speculation with the draft model, the target goes on */
        llmfs_error de = {0};
        if (spec_drafter_resize(m->drafter, s->ctx, s->parallel, &de) < 0) {
            spec_drafter_free(m->drafter);
            m->drafter = NULL;
            m->spec_mask &= ~SPEC_DRAFT;
            snprintf(m->error, sizeof m->error, "draft model dropped: %.200s", de.msg);
        }
    }
    if (m->mtp) {
        llmfs_error de = {0};
        if (mtp_resize(m->mtp, s->ctx, s->parallel, &de) < 0) {
            mtp_free(m->mtp);
            m->mtp = NULL;
            m->spec_mask &= ~SPEC_MTP;
            snprintf(m->error, sizeof m->error, "MTP head dropped: %.200s", de.msg);
        }
    }
    return 0;
}

/* spec_type mtp: the MTP head of the target's file, or of the MTP file spec_draft_model
 * names (path, "" none); one that cannot be used (no head, another model's file) is
 * refused with its reason in the model's error, and the target is served without it. */
static void load_mtp(llmfs_model *m, const model *target, const char *path, const spec_drafter_opts *o)
{
    llmfs_error e = {0};
    int rc = path ? 0 : llmfs_errorf(&e, ENOMEM, "out of memory");
    if (rc == 0 && *path) {
        pthread_mutex_lock(&m->lf->mu);
        char *dirs = strdup(m->lf->settings.model_dirs ? m->lf->settings.model_dirs : "");
        pthread_mutex_unlock(&m->lf->mu);
        rc = dirs ? check_model_dirs(path, dirs, &e) : llmfs_errorf(&e, ENOMEM, "out of memory");
        free(dirs);
    }
    /* Gemma 4 drafts with a separate assistant model that reads its cache; the hybrid
     * Qwen files carry a nextn head */
    const bool assistant = strcmp(target->hp.arch, "gemma4") == 0;
    mtp_drafter *d = rc != 0       ? NULL
                     : assistant ? mtp_assistant_load(path, target, &m->kv, o, &e)
                                 : mtp_load(path, m->path, target, o, &e);
    pthread_mutex_lock(&m->mu);
    if (d) {
        m->mtp = d;
        m->spec_mask |= SPEC_MTP;
    } else {
        snprintf(m->error, sizeof m->error, "MTP head refused: %.200s", e.msg[0] ? e.msg : "load failed");
    }
    pthread_mutex_unlock(&m->mu);
}

/* The drafters of spec_type; a draft model that cannot be used is refused with its reason
 * in the model's error, and the target is served without it. Called after the target's
 * KV cache is allocated and before the scheduler starts, without m->mu (loading is slow). */
static void load_drafter(llmfs_model *m, const model *target)
{
    pthread_mutex_lock(&m->mu);
    const llmfs_settings *s = &m->settings;
    int mask = s->spec_type;
    char *path = strdup(s->spec_draft_model ? s->spec_draft_model : "");
    spec_drafter_opts o = {
        .ngl = s->spec_draft_ngl,
        .n_threads = s->spec_draft_threads ? s->spec_draft_threads : s->threads,
        .type_k = cache_ggml_type(s->spec_draft_ctk),
        .type_v = cache_ggml_type(s->spec_draft_ctv),
        .n_ctx = m->kv->n_ctx,
        .n_seq = m->kv->n_seq,
        .n_ubatch = s->ubatch,
    };
    m->spec_mask = mask & ~(SPEC_DRAFT | SPEC_MTP);
    pthread_mutex_unlock(&m->mu);
    if (mask & SPEC_MTP) {
        load_mtp(m, target, path, &o);
        free(path);
        return;
    }
    if (!(mask & SPEC_DRAFT)) {
        free(path);
        return;
    }
    llmfs_error e = {0};
    spec_drafter *d = NULL;
    int rc = 0;
    if (!path)
        rc = llmfs_errorf(&e, ENOMEM, "out of memory");
    else if (!*path)
        rc = llmfs_errorf(&e, EINVAL, "spec_type %s needs spec_draft_model", mask & SPEC_NGRAM ? "draft+ngram" : "draft");
    if (rc == 0) {
        pthread_mutex_lock(&m->lf->mu);
        char *dirs = strdup(m->lf->settings.model_dirs ? m->lf->settings.model_dirs : "");
        pthread_mutex_unlock(&m->lf->mu);
        rc = dirs ? check_model_dirs(path, dirs, &e) : llmfs_errorf(&e, ENOMEM, "out of memory");
        free(dirs);
    }
    if (rc == 0)
        d = spec_drafter_load(path, target->tok, target->hp.n_vocab, &o, &e);
    free(path);
    pthread_mutex_lock(&m->mu);
    if (d) {
        m->drafter = d;
        m->spec_mask |= SPEC_DRAFT;
    } else {
        snprintf(m->error, sizeof m->error, "draft model refused: %.200s", e.msg[0] ? e.msg : "load failed");
    }
    pthread_mutex_unlock(&m->mu);
}

/* Family sampling defaults for the values nobody set, and chat mode where a template exists. */
static void apply_model_defaults(llmfs_model *m, llmfs_settings *s)
{
    sampler_params p;
    sampler_defaults(m->mdl->hp.arch, m->mdl->hp.name, &p);
    char v[32];
    if (!settings_is_explicit(s, "temp"))
        snprintf(v, sizeof v, "%.9g", (double)p.temp), settings_set_default(s, "temp", v);
    if (!settings_is_explicit(s, "top_k"))
        snprintf(v, sizeof v, "%d", p.top_k), settings_set_default(s, "top_k", v);
    if (!settings_is_explicit(s, "top_p"))
        snprintf(v, sizeof v, "%.9g", (double)p.top_p), settings_set_default(s, "top_p", v);
    if (!settings_is_explicit(s, "min_p"))
        snprintf(v, sizeof v, "%.9g", (double)p.min_p), settings_set_default(s, "min_p", v);
    if (!settings_is_explicit(s, "mode"))
        settings_set_default(s, "mode", m->chat_template ? "chat" : "raw");
}

static void token_text(const tokenizer *tok, int32_t id, char *buf, size_t cap)
{
    const char *t = id >= 0 ? tokenizer_text(tok, id) : NULL;
    snprintf(buf, cap, "%s", t ? t : "");
}

static void unlist_model(llmfs *lf, llmfs_model *m)
{
    pthread_mutex_lock(&lf->mu);
    for (llmfs_model **pp = &lf->models; *pp; pp = &(*pp)->next)
        if (*pp == m) {
            *pp = m->next;
            break;
        }
    pthread_mutex_unlock(&lf->mu);
}

/* The MTP head's cache, before the model is open: one attention layer of K and V at the
 * draft cache types for ctx x parallel cells; the head size is not known yet, so 8 KV
 * heads of 256 (the largest of the hybrid Qwen files) bound it. */
static uint64_t mtp_cache_guess(const llmfs_settings *s)
{
    const int kinds[2] = {cache_ggml_type(s->spec_draft_ctk), cache_ggml_type(s->spec_draft_ctv)};
    uint64_t row = 0;
    for (int i = 0; i < 2; i++)
        row += type_row_bytes(kinds[i], 8 * 256);
    return row * (uint64_t)s->ctx * (uint64_t)s->parallel;
}

/* With fit on, ngl left to llmfs (-1) and a GPU: the layers, experts and context that
 * fit (fit.h). The context it settles on replaces the setting. */
static int fit_before_load(llmfs_model *m, const char *path, model_opts *o, llmfs_error *err)
{
    const llmfs_settings *s = &m->settings;
    llmfs_gpu_info g;
    if (!s->fit || s->ngl >= 0 || llmfs_gpus(&g, 1) < 1)
        return 0;
    uint64_t vram = g.vram_free, limit = (uint64_t)s->vram_limit * 1048576;
    if (limit && limit < vram)
        vram = limit;
    /* a draft model bound for the GPU: fit takes the room of its weights and KV cache
     * first */
    const char *draft = (s->spec_type & SPEC_DRAFT) && s->spec_draft_ngl != 0 && s->spec_draft_model &&
                                *s->spec_draft_model
                            ? s->spec_draft_model
                            : NULL;
    /* the MTP head: its separate file, or the target's output head again beside its
     * block (counted with the trunk's layers), and its one layer's cache */
    uint64_t mtp_room = 0;
    struct stat st;
    if ((s->spec_type & SPEC_MTP) && s->spec_draft_ngl != 0) {
        if (s->spec_draft_model && *s->spec_draft_model && stat(s->spec_draft_model, &st) == 0) {
            mtp_room = (uint64_t)st.st_size;
        } else {
            llmfs_error ge = {0};
            gguf_file *gf = gguf_open(path, NULL, &ge);
            const gguf_tensor *out = gf ? gguf_find_tensor(gf, "output.weight") : NULL;
            if (gf && !out)
                out = gguf_find_tensor(gf, "token_embd.weight");
            mtp_room = out ? out->size : 0;
            gguf_close(gf);
        }
        mtp_room += mtp_cache_guess(s);
    }
    vram = vram > mtp_room ? vram - mtp_room : 0;
    fit_input fi = {
        .path = path,
        .ctx = s->ctx,
        .parallel = s->parallel,
        .fit_ctx = s->fit_ctx,
        .ubatch = s->ubatch,
        .type_k = cache_ggml_type(s->cache_type_k),
        .type_v = cache_ggml_type(s->cache_type_v),
        .flash = s->flash_attn,
        .swa_full = s->swa_full,
        .n_cpu_moe = s->n_cpu_moe,
        .offload_batch = s->offload_batch,
        .override_tensor = o->override_tensor,
        .vram_free = vram,
        .fit_target = (uint64_t)s->fit_target * 1048576,
        .n_snap = s->spec_type ? s->spec_draft_n_max + 1 : 0,
        .draft_path = draft,
        .draft_type_k = cache_ggml_type(s->spec_draft_ctk),
        .draft_type_v = cache_ggml_type(s->spec_draft_ctv),
        /* the projector goes where the layers go (load_projector): its room first */
        .mmproj = s->mmproj_offload && s->mmproj && *s->mmproj ? s->mmproj : NULL,
        .image_max_tokens = s->image_max_tokens,
    };
    fit_output fo;
    int rc = fit_plan(&fi, &fo, err);
    if (rc < 0)
        return rc;
    o->ngl = fo.ngl;
    o->n_cpu_moe = fo.n_cpu_moe;
    pthread_mutex_lock(&m->mu);
    if (fo.ctx != s->ctx) {
        char v[32];
        snprintf(v, sizeof v, "%d", fo.ctx);
        settings_set_default(&m->settings, "ctx", v);
    }
    snprintf(m->fit_text, sizeof m->fit_text, "%s", fo.text); /* with the draft model's share */
    pthread_mutex_unlock(&m->mu);
    return 0;
}

/* Pins the CPU backend's helper threads and sets their priority; the scheduler thread,
 * which takes part in every split, does the same for itself when it starts. */
static int place_threads(llmfs_model *m, model *mdl, llmfs_error *err)
{
    if (cpu_list_count(&m->cpus) == 0 && m->priority == 0)
        return 0;
    int tids[CPU_LIST_MAX];
    int n = backend_cpu_tids(mdl->cpu, tids, CPU_LIST_MAX);
    for (int i = 0; i < n && i < CPU_LIST_MAX; i++) {
        int rc = cpu_place_thread(tids[i], &m->cpus, m->priority, err);
        if (rc < 0)
            return rc;
    }
    return 0;
}

/* The GPU the text model's layers use, or NULL when they all run on the CPU. */
static backend *layers_gpu(const model *mdl)
{
    for (int il = 0; mdl->gpu && il < mdl->hp.n_layer; il++)
        if (mdl->layers[il].be == mdl->gpu)
            return mdl->gpu;
    return NULL;
}

/* The projector of setting mmproj, checked against the text model it feeds: the same
 * family (gemma3 with Gemma 3, gemma4v with Gemma 4) and its rows as wide as the model's
 * embeddings. With offload on and layers on a GPU the tower runs there (llama.cpp's
 * --mmproj-offload, on by default); where its weights do not fit there, or the device
 * fails them, it runs on the CPU instead, the reason in note (a model warning), rather
 * than the load failing: the text model is loaded by then, and images still work, only
 * slower. llama.cpp fails the load there; a daemon that keeps serving text and images
 * is the more useful answer. */
static int load_projector(const model *mdl, const char *path, int n_threads, bool offload, clip_model **out,
                          char *note, size_t note_cap, llmfs_error *err)
{
    backend *dev = offload ? layers_gpu(mdl) : NULL;
    llmfs_error dev_err = {0};
    clip_model *c = clip_load_on(path, n_threads, dev, dev ? &dev_err : err);
    if (!c && dev) {
        /* a file at fault fails here too, with the CPU load's reason */
        c = clip_load(path, n_threads, err);
        if (c)
            snprintf(note, note_cap, "%.180s", dev_err.msg[0] ? dev_err.msg : "the device refused its weights");
    }
    if (!c)
        return err && err->code ? -err->code : -EINVAL;
    const clip_hparams *hp = clip_hp(c);
    const char *want = hp->projector == CLIP_GEMMA3 ? "gemma3" : "gemma4";
    int rc = 0;
    if (strcmp(mdl->hp.arch, want))
        rc = llmfs_errorf(err, EINVAL, "mmproj: a %s projector does not fit a %s model", hp->type_name, mdl->hp.arch);
    else if (hp->n_embd_out != mdl->hp.n_embd)
        rc = llmfs_errorf(err, EINVAL, "mmproj: the projector writes rows of %d, the model's embeddings are %d wide",
                          hp->n_embd_out, mdl->hp.n_embd);
    if (rc) {
        clip_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int llmfs_model_load(llmfs *lf, const char *name, const char *path, const char *const *settings,
                     int n_settings, llmfs_error *err)
{
    if (!name || !valid_model_name(name))
        return llmfs_errorf(err, EINVAL, "bad model name '%s' (letters, digits, . _ - +; at most 63)",
                            name ? name : "");
    if (!path || !*path)
        return llmfs_errorf(err, EINVAL, "no model path");
    /* a relative name is a file of a model_dirs folder, when there are any */
    char resolved[sizeof ((llmfs_model *)0)->path];
    if (path[0] != '/' && llmfs_model_file_resolve(lf, path, resolved, sizeof resolved, NULL) == 0)
        path = resolved;
    llmfs_model *m = calloc(1, sizeof *m);
    if (!m)
        return llmfs_errorf(err, ENOMEM, "out of memory");
    atomic_init(&m->refs, 1);
    m->lf = lf;
    pthread_mutex_init(&m->mu, NULL);
    pthread_mutex_init(&m->clip_mu, NULL);
    pthread_mutex_init(&m->dev_mu, NULL);
    pthread_cond_init(&m->work_cv, NULL);
    snprintf(m->name, sizeof m->name, "%s", name);
    snprintf(m->path, sizeof m->path, "%s", path);
    m->state = MS_LOADING;
    m->last_activity = engine_now();
    m->swap_gen_start = m->swap_gen_delta = -1;

    /* a remote model: model=ID and api_key_file=PATH are its own arguments, and its host
     * must be in remote_hosts */
    bool remote = remote_is_url(path);
    const char *remote_id = NULL, *remote_key = NULL;
    pthread_mutex_lock(&lf->mu);
    settings_copy(&m->settings, &lf->settings);
    char *dirs = strdup(remote ? (lf->settings.remote_hosts ? lf->settings.remote_hosts : "")
                               : (lf->settings.model_dirs ? lf->settings.model_dirs : ""));
    pthread_mutex_unlock(&lf->mu);
    int rc = dirs ? 0 : llmfs_errorf(err, ENOMEM, "out of memory");
    for (int i = 0; i < n_settings && rc == 0; i++) {
        if (remote && strncmp(settings[i], "model=", 6) == 0)
            remote_id = settings[i] + 6;
        else if (remote && strncmp(settings[i], "api_key_file=", 13) == 0)
            remote_key = settings[i] + 13;
        else
            rc = settings_set_line(&m->settings, LLMFS_SCOPE_MODEL | LLMFS_SCOPE_SESSION, settings[i], err);
    }
    if (rc == 0 && remote && !dirs[0])
        rc = llmfs_errorf(err, EACCES, "remote models are off: remote_hosts (a daemon setting) is empty");
    else if (rc == 0 && remote && !remote_host_allowed(path, dirs))
        rc = llmfs_errorf(err, EACCES, "%s: the host is not in remote_hosts", path);
    else if (rc == 0 && !remote)
        rc = check_model_dirs(path, dirs, err);
    if (rc == 0 && m->settings.mmproj && *m->settings.mmproj)
        rc = check_model_dirs(m->settings.mmproj, dirs, err);
    free(dirs);
    if (rc == 0) {
        pthread_mutex_lock(&lf->mu);
        for (llmfs_model *o = lf->models; o; o = o->next)
            if (strcmp(o->name, name) == 0)
                rc = llmfs_errorf(err, EEXIST, "a model named %s is loaded", name);
        if (rc == 0) {
            m->next = lf->models;
            lf->models = m;
        }
        pthread_mutex_unlock(&lf->mu);
    }
    if (rc < 0) {
        model_destroy(m);
        return rc;
    }
    /* listed from here on, in state "loading" */
    llmfs_session *def = session_create(m, 0, err);
    pthread_mutex_lock(&m->mu);
    if (def) {
        m->sessions = malloc(sizeof *m->sessions * 8);
        if (m->sessions) {
            m->cap_sessions = 8;
            m->sessions[m->n_sessions++] = def;
            m->def = def;
        }
    }
    pthread_mutex_unlock(&m->mu);
    if (!m->def) {
        if (def)
            llmfs_session_put(def);
        rc = llmfs_errorf(err, ENOMEM, "out of memory");
        goto failed;
    }

    if (remote) {
        remote_model *r = NULL;
        llmfs_error le = {0};
        rc = remote_open(&r, path, remote_id, remote_key, &le);
        pthread_mutex_lock(&m->mu);
        m->remote = r;
        if (rc == 0 && pthread_create(&m->thread, NULL, remote_main, m) != 0)
            rc = llmfs_errorf(&le, EAGAIN, "cannot start the model's thread");
        if (rc == 0) {
            m->thread_started = true;
            m->state = MS_READY;
        }
        pthread_mutex_unlock(&m->mu);
        if (rc < 0) {
            if (err)
                *err = le;
            goto failed;
        }
        return 0;
    }

    const llmfs_settings *s = &m->settings;
    model_opts o = {
        .no_mmap = !s->mmap,
        .mlock = s->mlock,
        .n_threads = s->threads,
        .n_threads_batch = s->threads_batch ? s->threads_batch : s->threads,
        .n_ubatch = s->ubatch,
        .ngl = s->ngl,
        .override_tensor = s->override_tensor && *s->override_tensor ? s->override_tensor : NULL,
        .n_cpu_moe = s->n_cpu_moe,
    };
    llmfs_error le = {0};
    /* where the threads go decides how many there are by default: one per physical core
     * of the chosen cores */
    cpu_list cpus;
    rc = cpu_affinity_resolve(s->cpu_affinity, &cpus, &le);
    if (rc > 0 && s->threads == 0)
        o.n_threads = cpu_list_physical(&cpus);
    if (rc > 0 && s->threads_batch == 0)
        o.n_threads_batch = o.n_threads;
    if (rc >= 0) {
        pthread_mutex_lock(&m->mu);
        m->cpus = cpus;
        m->priority = s->priority;
        pthread_mutex_unlock(&m->mu);
        rc = fit_before_load(m, path, &o, &le);
    }
    if (rc < 0) {
        if (err)
            *err = le;
        goto failed;
    }
    model *mdl = model_load(path, &o, &le);
    if (!mdl) {
        rc = le.code ? -le.code : -EINVAL;
        if (err)
            *err = le;
        goto failed;
    }
    rc = place_threads(m, mdl, &le);
    clip_model *clip = NULL;
    char clip_note[sizeof m->clip_note] = "";
    if (rc == 0 && s->mmproj && *s->mmproj)
        rc = load_projector(mdl, s->mmproj, o.n_threads_batch, s->mmproj_offload, &clip, clip_note,
                            sizeof clip_note, &le);
    if (rc < 0) {
        model_free(mdl);
        if (err)
            *err = le;
        goto failed;
    }
    pthread_mutex_lock(&m->mu);
    m->mdl = mdl;
    m->clip = clip;
    memcpy(m->clip_note, clip_note, sizeof clip_note);
    m->n_vocab = mdl->hp.n_vocab;
    const char *tmpl = gguf_get_str(mdl->file, "tokenizer.chat_template", NULL);
    m->chat_template = tmpl && *tmpl ? tmpl : NULL;
    token_text(mdl->tok, tokenizer_bos(mdl->tok), m->bos_text, sizeof m->bos_text);
    token_text(mdl->tok, tokenizer_eos(mdl->tok), m->eos_text, sizeof m->eos_text);
    apply_model_defaults(m, &m->settings);
    apply_model_defaults(m, &m->def->settings);
    rc = model_alloc_kv(m, &le);
    m->stream = mdl->stream;
    /* the draft model after the target's cache: where memory is short, the target gets it */
    if (rc == 0) {
        pthread_mutex_unlock(&m->mu);
        load_drafter(m, mdl);
        pthread_mutex_lock(&m->mu);
    }
    m->vram_load = m->vram_now = model_vram_bytes(mdl) + model_vram_bytes_or0(spec_drafter_model(m->drafter)) +
                                 model_vram_bytes_or0(mtp_model(m->mtp));
    if (rc == 0 && pthread_create(&m->thread, NULL, scheduler_main, m) != 0)
        rc = llmfs_errorf(&le, EAGAIN, "cannot start the scheduler thread");
    if (rc == 0) {
        m->thread_started = true;
        m->state = MS_READY;
    }
    pthread_mutex_unlock(&m->mu);
    if (rc < 0) {
        if (err)
            *err = le;
        goto failed;
    }
    return 0;

failed:
    unlist_model(lf, m);
    pthread_mutex_lock(&m->mu);
    m->state = MS_FAILED;
    model_set_error(m, err ? err->msg : "load failed");
    llmfs_session **ss = m->sessions;
    int n = m->n_sessions;
    m->sessions = NULL;
    m->n_sessions = m->cap_sessions = 0;
    m->def = NULL;
    for (int i = 0; i < n; i++)
        ss[i]->closed = true;
    pthread_mutex_unlock(&m->mu);
    for (int i = 0; i < n; i++) {
        stream_finish(ss[i]->out);
        stream_finish(ss[i]->transcript);
        stream_finish(ss[i]->reasoning);
        llmfs_session_put(ss[i]);
    }
    free(ss);
    llmfs_model_put(m);
    return rc;
}

int llmfs_model_unload(llmfs *lf, const char *name, llmfs_error *err)
{
    pthread_mutex_lock(&lf->mu);
    llmfs_model *m = lf->models;
    while (m && strcmp(m->name, name) != 0)
        m = m->next;
    if (!m) {
        pthread_mutex_unlock(&lf->mu);
        return llmfs_errorf(err, ENOENT, "no model named %s", name);
    }
    pthread_mutex_lock(&m->mu);
    bool loading = m->state == MS_LOADING;
    pthread_mutex_unlock(&m->mu);
    if (loading) {
        pthread_mutex_unlock(&lf->mu);
        return llmfs_errorf(err, EBUSY, "model %s is still loading", name);
    }
    for (llmfs_model **pp = &lf->models; *pp; pp = &(*pp)->next)
        if (*pp == m) {
            *pp = m->next;
            break;
        }
    pthread_mutex_unlock(&lf->mu);

    pthread_mutex_lock(&m->mu);
    m->stopping = true;
    m->state = MS_UNLOADED;
    pthread_cond_broadcast(&m->work_cv);
    pthread_mutex_unlock(&m->mu);
    if (m->thread_started)
        pthread_join(m->thread, NULL);

    pthread_mutex_lock(&m->mu);
    llmfs_session **ss = m->sessions;
    int n = m->n_sessions;
    m->sessions = NULL;
    m->n_sessions = m->cap_sessions = 0;
    m->def = NULL;
    for (int i = 0; i < n; i++) {
        ss[i]->closed = true;
        session_release_slot(ss[i]);
    }
    pthread_mutex_unlock(&m->mu);
    for (int i = 0; i < n; i++) {
        stream_printf(ss[i]->transcript, "### closed\n");
        stream_finish(ss[i]->transcript);
        stream_finish(ss[i]->reasoning);
        stream_finish(ss[i]->out);
        llmfs_session_put(ss[i]);
    }
    free(ss);
    llmfs_model_put(m);
    return 0;
}

/* ---- model ctl ---- */

static bool any_busy(llmfs_model *m)
{
    for (int i = 0; i < m->n_sessions; i++)
        if (m->sessions[i]->state != SS_IDLE || m->sessions[i]->preparing)
            return true;
    return false;
}

static bool changed(const llmfs_settings *a, const llmfs_settings *b, const char *key)
{
    char x[512], y[512];
    int nx = settings_get(a, key, x, sizeof x), ny = settings_get(b, key, y, sizeof y);
    if (nx != ny)
        return true;
    if (nx < (int)sizeof x)
        return strcmp(x, y) != 0;
    /* long strings (override_tensor): compare the whole text */
    char *lx = malloc((size_t)nx + 1), *ly = malloc((size_t)ny + 1);
    bool diff = true;
    if (lx && ly) {
        settings_get(a, key, lx, (size_t)nx + 1);
        settings_get(b, key, ly, (size_t)ny + 1);
        diff = strcmp(lx, ly) != 0;
    }
    free(lx);
    free(ly);
    return diff;
}

/* A model-scope line (m->mu held). What a changed value needs before it may be used
 * comes from the table's applies column (settings.h). Buffers are reallocated only
 * while no session generates: the scheduler runs a step without the lock, and a step
 * happens only while some session is queued or generating. */
static int model_setting(llmfs_model *m, const char *line, int idx, llmfs_error *err)
{
    llmfs_settings tmp;
    settings_copy(&tmp, &m->settings);
    int rc = settings_set_line(&tmp, LLMFS_SCOPE_MODEL, line, err);
    bool kv_changed = false, scratch_changed = false;
    const char *name = settings_info(idx)->name;
    bool via_profile = strcmp(name, "profile") == 0;
    for (int i = 0; rc == 0 && i < SETTINGS_N; i++) {
        if (settings_home_scope(i) != LLMFS_SCOPE_MODEL || !changed(&tmp, &m->settings, settings_info(i)->name))
            continue;
        const char *key = settings_info(i)->name;
        switch (settings_applies(i)) {
        case A_LOAD:
            /* a profile also sets load-time keys; on a loaded model they wait for the next load */
            if (!via_profile && m->state == MS_READY)
                rc = llmfs_errorf(err, EBUSY, "%s applies when the model is loaded: unload and load it with %s=...",
                                  key, key);
            break;
        case A_KV:
            kv_changed = true;
            break;
        case A_SCRATCH:
            scratch_changed = true;
            break;
        case A_NOW:
            break;
        }
    }
    /* a remote model has no cache or buffers here: the values are only kept */
    if (rc == 0 && (kv_changed || scratch_changed) && m->state == MS_READY && !m->remote) {
        int old_ubatch = m->mdl->n_ubatch;
        if (any_busy(m))
            rc = llmfs_errorf(err, EBUSY, "%s cannot change while a session generates (write stop first)", name);
        if (rc == 0 && scratch_changed)
            rc = model_set_ubatch(m->mdl, tmp.ubatch, err);
        if (rc == 0 && kv_changed) {
            llmfs_settings old = m->settings;
            m->settings = tmp;
            rc = model_alloc_kv(m, err);
            m->settings = old;
            if (rc < 0 && scratch_changed)
                model_set_ubatch(m->mdl, old_ubatch, NULL);
        }
    }
    if (rc == 0) {
        settings_clear(&m->settings);
        m->settings = tmp;
    } else {
        settings_clear(&tmp);
    }
    return rc;
}

int llmfs_model_ctl(llmfs_model *m, const char *line, llmfs_error *err)
{
    llmfs_error e = {0};
    char key[64];
    const char *v = settings_split_line(line ? line : "", key, sizeof key, NULL);
    if (!v)
        return 0;
    int rc = 0;
    pthread_mutex_lock(&m->mu);
    if (m->state == MS_UNLOADED || m->state == MS_FAILED) {
        rc = llmfs_errorf(&e, ENODEV, "model %s is unloaded", m->name);
    } else if (m->state == MS_LOADING) {
        rc = llmfs_errorf(&e, EAGAIN, "model %s is still loading", m->name);
    } else if (strcmp(key, "stop") == 0) {
        for (int i = 0; i < m->n_sessions; i++)
            if (m->sessions[i]->state != SS_IDLE || m->sessions[i]->preparing)
                atomic_store(&m->sessions[i]->stop_req, true);
        pthread_cond_signal(&m->work_cv);
    } else {
        int idx = settings_find(key);
        int home = settings_home_scope(idx);
        if (idx < 0) {
            rc = llmfs_errorf(&e, ENOENT, "unknown setting or command '%s'", key);
        } else if (home == LLMFS_SCOPE_SESSION) {
            llmfs_settings a, b;
            settings_copy(&a, &m->settings);
            rc = settings_set_line(&a, LLMFS_SCOPE_SESSION, line, &e);
            if (rc == 0 && a.mode == MODE_CHAT && m->state == MS_READY && !m->chat_template && !m->remote)
                rc = llmfs_errorf(&e, EINVAL, "model %s has no chat template: only mode raw works", m->name);
            if (rc == 0 && m->def) {
                settings_copy(&b, &m->def->settings);
                rc = settings_set_line(&b, LLMFS_SCOPE_SESSION, line, &e);
                if (rc == 0) {
                    settings_clear(&m->def->settings);
                    m->def->settings = b;
                } else {
                    settings_clear(&b);
                }
            }
            if (rc == 0) {
                settings_clear(&m->settings);
                m->settings = a;
            } else {
                settings_clear(&a);
            }
        } else {
            rc = model_setting(m, line, idx, &e);
        }
    }
    if (rc < 0)
        model_set_error(m, e.msg);
    pthread_mutex_unlock(&m->mu);
    if (rc < 0 && err)
        *err = e;
    return rc;
}

int llmfs_model_settings_text(llmfs_model *m, char *buf, size_t cap)
{
    pthread_mutex_lock(&m->mu);
    int n = settings_text(&m->settings, LLMFS_SCOPE_MODEL, buf, cap);
    const llmfs_settings *ss = m->def ? &m->def->settings : &m->settings;
    size_t o = (size_t)n;
    n += settings_text(ss, LLMFS_SCOPE_SESSION, o < cap ? buf + o : NULL, o < cap ? cap - o : 0);
    pthread_mutex_unlock(&m->mu);
    return n;
}

int llmfs_model_setting(llmfs_model *m, const char *key, char *buf, size_t cap)
{
    pthread_mutex_lock(&m->mu);
    int n = settings_get(&m->settings, key, buf, cap);
    pthread_mutex_unlock(&m->mu);
    return n;
}

/* ---- info and stats ---- */

static const char *model_state_name(llmfs_model *m)
{
    switch (m->state) {
    case MS_LOADING:
        return "loading";
    case MS_READY:
        return any_busy(m) ? "busy" : "ready";
    case MS_FAILED:
        return "failed";
    case MS_UNLOADED:
        return "unloaded";
    }
    return "?";
}

void llmfs_model_info_get(llmfs_model *m, llmfs_model_info *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&m->mu);
    snprintf(out->name, sizeof out->name, "%s", m->name);
    snprintf(out->path, sizeof out->path, "%s", m->path);
    snprintf(out->state, sizeof out->state, "%s", model_state_name(m));
    snprintf(out->chat_template_name, sizeof out->chat_template_name, "%s", chat_template_name(m->chat_template));
    out->chat_template = m->chat_template;
    if (m->mdl) {
        const model_hparams *h = &m->mdl->hp;
        snprintf(out->arch, sizeof out->arch, "%s", h->arch);
        snprintf(out->file_type, sizeof out->file_type, "%s", model_file_type_name(m->mdl));
        out->file_bytes = gguf_file_size(m->mdl->file);
        out->n_params = m->mdl->n_params;
        out->n_vocab = h->n_vocab;
        out->n_ctx_train = h->n_ctx_train;
        out->n_embd = h->n_embd;
        out->n_layer = h->n_layer;
        out->n_head = h->n_head;
        out->n_head_kv = h->n_head_kv;
        out->head_dim = h->head_dim;
        out->n_ff = h->n_ff;
        out->n_expert = h->n_expert;
        out->n_expert_used = h->n_expert_used;
        out->rope_freq_base = h->rope.freq_base;
        out->rms_eps = h->rms_eps;
        snprintf(out->tokenizer, sizeof out->tokenizer, "%s",
                 tokenizer_kind(m->mdl->tok) == TOK_SPM ? "spm" : "bpe");
    } else if (m->remote) {
        /* what the server's /models says; the rest is the server's business */
        snprintf(out->arch, sizeof out->arch, "remote");
        snprintf(out->file_type, sizeof out->file_type, "remote");
        snprintf(out->tokenizer, sizeof out->tokenizer, "remote");
        snprintf(out->chat_template_name, sizeof out->chat_template_name, "remote");
        out->n_ctx_train = remote_ctx_train(m->remote);
    }
    if (m->clip) {
        const clip_hparams *ch = clip_hp(m->clip);
        snprintf(out->projector, sizeof out->projector, "%s", ch->type_name);
        out->projector_bytes = clip_weight_bytes(m->clip);
        if (ch->projector == CLIP_GEMMA3) {
            out->image_size = ch->image_size;
            out->image_min_tokens = out->image_max_tokens = clip_n_tokens(m->clip, ch->image_size, ch->image_size);
        } else {
            out->image_min_tokens = m->settings.image_min_tokens > 0 ? m->settings.image_min_tokens : ch->min_tokens;
            out->image_max_tokens = m->settings.image_max_tokens > 0 ? m->settings.image_max_tokens : ch->max_tokens;
            int w, h; /* a square picture at the most tokens */
            clip_image_dims(m->clip, 4096, 4096, out->image_min_tokens, out->image_max_tokens, &w, &h);
            out->image_size = w;
        }
    }
    pthread_mutex_unlock(&m->mu);
}

static uint64_t tensor_bytes(const tensor *t)
{
    int64_t rows = t->ne[1] > 0 ? t->ne[1] : 1, mats = t->ne[2] > 0 ? t->ne[2] : 1;
    if (!type_info(t->type))
        return 0;
    return (uint64_t)type_row_bytes(t->type, t->ne[0]) * (uint64_t)rows * (uint64_t)mats;
}

static const char *device_name(const model *mdl, const tensor *t)
{
    if (mdl->gpu && t->be == mdl->gpu)
        return "CUDA0";
    return "CPU";
}

typedef struct place_acc {
    llmfs_placement_row row;
    long order;
    uint64_t by_type[T_COUNT];
} place_acc;

static int place_acc_cmp(const void *a, const void *b)
{
    const place_acc *x = a, *y = b;
    if (x->order != y->order)
        return x->order < y->order ? -1 : 1;
    return strcmp(x->row.device, y->row.device);
}

/* The rows, built fresh (m->mu held). Returns the count, *out malloc'd. */
static int placement_rows(llmfs_model *m, place_acc **out)
{
    *out = NULL;
    if (!m->mdl)
        return 0;
    const model *mdl = m->mdl;
    int cap = 3 * mdl->hp.n_layer + 8, n = 0;
    place_acc *acc = calloc((size_t)cap, sizeof *acc);
    if (!acc)
        return -ENOMEM;
    for (int i = 0; i < mdl->n_tensors; i++) {
        const tensor *t = &mdl->tensors[i];
        place_tensor pt = {.name = t->name};
        place_classify(&pt);
        char group[48];
        long order;
        static const char *gnames[] = {[PG_ATTN] = "attn", [PG_FFN] = "ffn", [PG_EXPS] = "ffn_exps"};
        if (pt.layer >= 0 && (pt.group == PG_ATTN || pt.group == PG_FFN || pt.group == PG_EXPS)) {
            snprintf(group, sizeof group, "blk.%d.%s", pt.layer, gnames[pt.group]);
            order = 1 + (long)pt.layer * 4 + (pt.group == PG_ATTN ? 0 : pt.group == PG_FFN ? 1 : 2);
        } else if (pt.group == PG_EMBD) {
            snprintf(group, sizeof group, "token_embd");
            order = 0;
        } else {
            snprintf(group, sizeof group, "output");
            order = 1 + (long)mdl->hp.n_layer * 4;
        }
        const char *dev = device_name(mdl, t);
        int k = 0;
        while (k < n && (strcmp(acc[k].row.group, group) != 0 || strcmp(acc[k].row.device, dev) != 0))
            k++;
        if (k == n) {
            if (n == cap) {
                place_acc *p = realloc(acc, sizeof *acc * (size_t)(cap *= 2));
                if (!p) {
                    free(acc);
                    return -ENOMEM; /* partial rows would misstate where the weights are */
                }
                acc = p;
            }
            memset(&acc[n], 0, sizeof acc[n]);
            snprintf(acc[n].row.group, sizeof acc[n].row.group, "%s", group);
            snprintf(acc[n].row.device, sizeof acc[n].row.device, "%s", dev);
            acc[n].order = order;
            n++;
        }
        uint64_t b = tensor_bytes(t);
        acc[k].row.bytes += b;
        if (t->type >= 0 && t->type < T_COUNT)
            acc[k].by_type[t->type] += b;
    }
    if (m->clip && n + 2 > cap) {
        place_acc *p = realloc(acc, sizeof *acc * (size_t)(cap = n + 2));
        if (!p) {
            free(acc);
            return -ENOMEM;
        }
        acc = p;
    }
    if (m->clip) {
        /* where the projector runs (the text model's GPU, or the CPU): its weights (on a
         * GPU the copy there), and the scratch of one image at the most tokens an image
         * may become */
        const int max_t = m->settings.image_max_tokens;
        const bool on_gpu = clip_on_device(m->clip);
        const struct {
            const char *group;
            uint64_t bytes;
            int type;
        } vrows[2] = {{"mmproj", on_gpu ? clip_device_bytes(m->clip) : clip_weight_bytes(m->clip), T_F16},
                      {"mmproj_buffers", clip_buffer_bytes(m->clip, max_t), T_F32}};
        for (int r = 0; r < 2; r++, n++) {
            memset(&acc[n], 0, sizeof acc[n]);
            snprintf(acc[n].row.group, sizeof acc[n].row.group, "%s", vrows[r].group);
            snprintf(acc[n].row.device, sizeof acc[n].row.device, "%s", on_gpu ? "CUDA0" : "CPU");
            acc[n].row.bytes = vrows[r].bytes;
            acc[n].by_type[vrows[r].type] = vrows[r].bytes;
            acc[n].order = 2 + (long)mdl->hp.n_layer * 4 + r;
        }
    }
    qsort(acc, (size_t)n, sizeof *acc, place_acc_cmp);
    /* totals per device, after the rows */
    int rows = n;
    for (int i = 0; i < rows; i++) {
        int k = rows;
        while (k < n && strcmp(acc[k].row.device, acc[i].row.device) != 0)
            k++;
        if (k == n) {
            if (n == cap) {
                place_acc *p = realloc(acc, sizeof *acc * (size_t)(cap *= 2));
                if (!p) {
                    free(acc);
                    return -ENOMEM; /* partial rows would misstate where the weights are */
                }
                acc = p;
            }
            memset(&acc[n], 0, sizeof acc[n]);
            snprintf(acc[n].row.group, sizeof acc[n].row.group, "total");
            memcpy(acc[n].row.device, acc[i].row.device, sizeof acc[n].row.device);
            n++;
        }
        acc[k].row.bytes += acc[i].row.bytes;
        for (int t = 0; t < T_COUNT; t++)
            acc[k].by_type[t] += acc[i].by_type[t];
    }
    /* the draft model of speculative decoding, or the MTP head (a model of its own, whose
     * output head is a copy of the target's where it sits on another device): one row
     * per device, after the totals */
    const model *dm = m->mtp ? mtp_model(m->mtp) : spec_drafter_model(m->drafter);
    const char *dgroup = m->mtp ? "mtp" : "draft";
    for (int i = 0; dm && i < dm->n_tensors; i++) {
        const tensor *t = &dm->tensors[i];
        const char *dev = device_name(dm, t);
        int k = rows;
        while (k < n && (strcmp(acc[k].row.group, dgroup) != 0 || strcmp(acc[k].row.device, dev) != 0))
            k++;
        if (k == n) {
            if (n == cap) {
                place_acc *p = realloc(acc, sizeof *acc * (size_t)(cap *= 2));
                if (!p) {
                    free(acc);
                    return -ENOMEM;
                }
                acc = p;
            }
            memset(&acc[n], 0, sizeof acc[n]);
            snprintf(acc[n].row.group, sizeof acc[n].row.group, "%s", dgroup);
            snprintf(acc[n].row.device, sizeof acc[n].row.device, "%s", dev);
            n++;
        }
        uint64_t b = tensor_bytes(t);
        acc[k].row.bytes += b;
        if (t->type >= 0 && t->type < T_COUNT)
            acc[k].by_type[t->type] += b;
    }
    for (int i = 0; i < n; i++) {
        int best = -1;
        for (int t = 0; t < T_COUNT; t++)
            if (acc[i].by_type[t] && (best < 0 || acc[i].by_type[t] > acc[i].by_type[best]))
                best = t;
        const type_traits *tt = best >= 0 ? type_info(best) : NULL;
        snprintf(acc[i].row.type, sizeof acc[i].row.type, "%s", tt ? tt->name : "");
    }
    *out = acc;
    return n;
}

int llmfs_model_placement(llmfs_model *m, llmfs_placement_row *rows, int cap)
{
    pthread_mutex_lock(&m->mu);
    place_acc *acc;
    int n = placement_rows(m, &acc);
    pthread_mutex_unlock(&m->mu);
    for (int i = 0; i < n && i < cap; i++)
        rows[i] = acc[i].row;
    free(acc); /* NULL on an error */
    return n;
}

void engine_weight_bytes(llmfs_model *m, uint64_t *cpu, uint64_t *gpu)
{
    *cpu = *gpu = 0;
    if (!m->mdl)
        return;
    for (int i = 0; i < m->mdl->n_tensors; i++) {
        const tensor *t = &m->mdl->tensors[i];
        if (m->mdl->gpu && t->be == m->mdl->gpu)
            *gpu += tensor_bytes(t);
        else
            *cpu += tensor_bytes(t);
    }
}

static uint64_t meminfo_kb(const char *key)
{
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f)
        return 0;
    char line[256];
    size_t kl = strlen(key);
    uint64_t v = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, kl) == 0 && line[kl] == ':') {
            v = strtoull(line + kl + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    if (!f)
        return 0;
    unsigned long long size = 0, res = 0;
    if (fscanf(f, "%llu %llu", &size, &res) != 2)
        res = 0;
    fclose(f);
    return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

void llmfs_model_stream_info(llmfs_model *m, llmfs_stream_info *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&m->mu);
    if (m->mdl && m->stream.layers) {
        const model_stream_stats *s = &m->stream;
        out->layers = s->layers;
        out->bytes = s->bytes;
        out->threshold = model_stream_threshold(s, m->settings.offload_batch);
        out->batches = s->batches;
        out->gpu_bytes_per_s = s->gpu_bytes_per_s;
        out->cpu_s_per_token = s->cpu_s_per_token;
        snprintf(out->error, sizeof out->error, "%s", s->error);
    }
    pthread_mutex_unlock(&m->mu);
}

void llmfs_model_fit_text(llmfs_model *m, char *buf, size_t cap)
{
    pthread_mutex_lock(&m->mu);
    if (!m->settings.fit)
        snprintf(buf, cap, "%s", "");
    else if (m->fit_text[0])
        snprintf(buf, cap, "%s", m->fit_text);
    else if (m->mdl && m->mdl->note[0])
        snprintf(buf, cap, "%s", m->mdl->note);
    else
        snprintf(buf, cap, "no GPU: every layer on the CPU");
    pthread_mutex_unlock(&m->mu);
}

void llmfs_model_stats_get(llmfs_model *m, llmfs_model_stats *out)
{
    memset(out, 0, sizeof *out);
    uint64_t rss = rss_bytes();
    diag_model_facts f;
    char w[1][DIAG_WARN_LEN];
    diag_model_facts_get(m, &f);
    if (diag_model_warnings(&f, w, 1) > 0)
        snprintf(out->warning, sizeof out->warning, "%s", w[0]);
    pthread_mutex_lock(&m->mu);
    snprintf(out->state, sizeof out->state, "%s", model_state_name(m));
    if (cpu_list_count(&m->cpus))
        cpu_list_format(&m->cpus, out->cpus, sizeof out->cpus);
    else
        snprintf(out->cpus, sizeof out->cpus, "all");
    out->n_threads = m->mdl ? backend_cpu_threads(m->mdl->cpu) : 0;
    out->priority = m->priority;
    out->n_prompt_tokens = m->n_prompt_tokens;
    out->n_gen_tokens = m->n_gen_tokens;
    out->prompt_seconds = m->prompt_seconds;
    out->gen_seconds = m->gen_seconds;
    for (int i = 0; i < m->n_sessions; i++) {
        out->n_sessions++;
        out->n_generating += m->sessions[i]->state != SS_IDLE;
    }
    out->n_ctx = m->kv ? m->kv->n_ctx : m->settings.ctx;
    out->n_slots = m->n_slots;
    for (int i = 0; i < m->n_slots; i++)
        out->kv_cells_used += (uint64_t)m->slots[i].n;
    out->kv_cells_total = m->kv ? (uint64_t)m->kv->n_ctx * (uint64_t)m->kv->n_seq : 0;
    out->kv_bytes = m->kv ? kv_cache_bytes(m->kv) : 0;
    out->state_bytes = m->kv ? kv_state_bytes(m->kv) * (uint64_t)m->kv->n_seq : 0;
    out->checkpoints = m->kv ? kv_checkpoint_count(m->kv, -1) : 0;
    engine_weight_bytes(m, &out->weight_bytes_cpu, &out->weight_bytes_gpu);
    out->vram_used_load = m->vram_load;
    out->vram_used_now = m->vram_now;
    out->ram_rss = rss;
    out->requests = m->requests;
    out->errors = m->errors;
    out->spec_drafted = m->spec_drafted;
    out->spec_accepted = m->spec_accepted;
    out->spec_steps = m->spec_steps;
    const char *draft = m->drafter ? strrchr(m->settings.spec_draft_model, '/') : NULL;
    draft = draft ? draft + 1 : m->drafter ? m->settings.spec_draft_model : NULL;
    snprintf(out->spec, sizeof out->spec, "%s%s%s%s", m->spec_mask & SPEC_NGRAM ? "ngram" : "",
             m->spec_mask == 3 ? " " : "", draft ? "draft " : "", draft ? draft : "");
    if (m->mtp) { /* "mtp" and where the head came from */
        const char *side = m->settings.spec_draft_model && *m->settings.spec_draft_model
                               ? strrchr(m->settings.spec_draft_model, '/') : NULL;
        side = side ? side + 1 : m->settings.spec_draft_model;
        snprintf(out->spec, sizeof out->spec, "mtp %s", side && *side ? side : "(in the model file)");
    }
    if (!m->spec_mask)
        snprintf(out->spec, sizeof out->spec, "none");
    pthread_mutex_unlock(&m->mu);
}

void llmfs_model_error(llmfs_model *m, char *buf, size_t cap)
{
    pthread_mutex_lock(&m->mu);
    snprintf(buf, cap, "%s", m->error);
    pthread_mutex_unlock(&m->mu);
}

void llmfs_model_kv_info(llmfs_model *m, llmfs_kv_info *out)
{
    memset(out, 0, sizeof *out);
    pthread_mutex_lock(&m->mu);
    snprintf(out->type_k, sizeof out->type_k, "%s", cache_type_name(m->settings.cache_type_k));
    snprintf(out->type_v, sizeof out->type_v, "%s", cache_type_name(m->settings.cache_type_v));
    out->n_ctx = m->kv ? m->kv->n_ctx : m->settings.ctx;
    out->n_slots = m->kv ? m->kv->n_seq : m->settings.parallel;
    out->bytes = m->kv ? kv_cache_bytes(m->kv) : 0;
    out->flash_attn = m->settings.flash_attn;
    out->state_bytes = m->kv ? kv_state_bytes(m->kv) : 0;
    out->n_recurrent_layers = m->kv ? m->kv->n_recurrent : 0;
    out->conv_bytes = m->kv && m->kv->n_recurrent ? sizeof(float) * m->kv->conv_floats : 0;
    out->ssm_bytes = m->kv && m->kv->n_recurrent ? sizeof(float) * m->kv->ssm_floats : 0;
    out->checkpoints = m->kv ? kv_checkpoint_count(m->kv, -1) : 0;
    out->swa_full = m->settings.swa_full;
    for (int il = 0; m->kv && il < m->kv->n_layer; il++) {
        const struct kv_layer *L = &m->kv->layer[il];
        const char *kind = m->kv->state && m->kv->state[il].be ? "recurrent"
                           : !L->k                              ? "shared"
                           : L->n_cells < m->kv->n_ctx          ? "swa"
                                                                : "full";
        uint64_t b = kv_layer_bytes(m->kv, il);
        int k = 0;
        while (k < out->n_kinds && (strcmp(out->kinds[k].kind, kind) || out->kinds[k].cells != L->n_cells ||
                                    out->kinds[k].layer_bytes != b))
            k++;
        if (k == out->n_kinds) {
            if (k == (int)(sizeof out->kinds / sizeof out->kinds[0]))
                continue;
            snprintf(out->kinds[k].kind, sizeof out->kinds[k].kind, "%s", kind);
            out->kinds[k].cells = L->n_cells;
            out->kinds[k].layer_bytes = b;
            out->n_kinds++;
        }
        out->kinds[k].n_layers++;
    }
    const kv_cache *dkv = spec_drafter_kv(m->drafter), *mkv = mtp_kv(m->mtp);
    out->draft_bytes = dkv ? kv_cache_bytes(dkv) : 0;
    out->mtp_bytes = mkv ? kv_cache_bytes(mkv) : 0;
    out->snapshots = m->kv ? m->kv->n_snap : 0;
    out->snapshot_bytes = m->kv ? kv_snap_bytes(m->kv) * (uint64_t)m->kv->n_seq : 0;
    pthread_mutex_unlock(&m->mu);
}

double llmfs_model_idle_seconds(llmfs_model *m)
{
    pthread_mutex_lock(&m->mu);
    double idle = m->state != MS_READY || any_busy(m) ? 0 : engine_now() - m->last_activity;
    pthread_mutex_unlock(&m->mu);
    return idle;
}

/* ---- daemon stats ---- */

int llmfs_gpus(llmfs_gpu_info *out, int cap)
{
    int n = backend_gpu_count(), k = 0;
    for (int i = 0; i < n && k < cap; i++) {
        llmfs_gpu_info *g = &out[k];
        memset(g, 0, sizeof *g);
        backend_gpu_info gi;
        if (backend_gpu_info_of(i, &gi, NULL, 0) == 0) {
            snprintf(g->name, sizeof g->name, "%s", gi.name);
            g->vram_total = gi.vram_total;
            g->vram_free = gi.vram_free;
            g->vram_used = g->vram_total - g->vram_free;
            k++;
        }
    }
    return k;
}

void llmfs_daemon_stats_get(llmfs *lf, llmfs_daemon_stats *out)
{
    memset(out, 0, sizeof *out);
    out->ram_total = meminfo_kb("MemTotal") * 1024;
    out->ram_free = meminfo_kb("MemAvailable") * 1024;
    out->ram_rss = rss_bytes();
    pthread_mutex_lock(&lf->mu);
    out->uptime_s = engine_now() - lf->t_start;
    for (llmfs_model *m = lf->models; m; m = m->next) {
        out->n_models++;
        pthread_mutex_lock(&m->mu);
        out->n_sessions += m->n_sessions;
        pthread_mutex_unlock(&m->mu);
    }
    pthread_mutex_unlock(&lf->mu);
}
