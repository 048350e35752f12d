/* dirtab.c — the file table and what opening each file sets up (see dirtab.h). */
#include "dirtab.h"

#include "ctl.h"
#include "prompt.h"
#include "render.h"
#include "server.h"
#include "stream_io.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- snapshots: rendered at open, every read of the open file sees the same text ---- */

static int keep(struct fs_file *f, fs_text *t, int rc, llmfs_error *err)
{
    if (rc < 0)
        return llmfs_errorf(err, -rc, "cannot render %s", f->tab->name);
    f->text = t->buf;
    f->text_len = t->len;
    return 0;
}

static int session_settings_fill(void *s, char *buf, size_t cap)
{
    return llmfs_session_settings_text(s, buf, cap);
}

static int model_settings_fill(void *m, char *buf, size_t cap)
{
    return llmfs_model_settings_text(m, buf, cap);
}

/* The root's load lines, a model's settings and its default session's, or a session's. */
static int open_ctl(struct fs_file *f, const struct fs_target *t, llmfs_error *err)
{
    fs_text x = {0};
    if (!t->m)
        return keep(f, &x, ctl_root_text(fs_srv.lf, &x), err);
    if (node_type(t->dir) == DIR_MODEL)
        text_fill(&x, model_settings_fill, t->m);
    else
        text_fill(&x, session_settings_fill, t->s);
    return keep(f, &x, text_finish(&x), err);
}

static int open_stats(struct fs_file *f, const struct fs_target *t, llmfs_error *err)
{
    fs_text x = {0};
    int rc = !t->m                               ? render_daemon_stats(fs_srv.lf, &x)
             : node_type(t->dir) == DIR_MODEL ? render_model_stats(t->m, t->s, &x)
                                              : render_session_stats(t->s, &x);
    return keep(f, &x, rc, err);
}

static int open_models(struct fs_file *f, const struct fs_target *t, llmfs_error *err)
{
    (void)t;
    fs_text x = {0};
    return keep(f, &x, render_models(fs_srv.lf, &x), err);
}

static int open_metrics(struct fs_file *f, const struct fs_target *t, llmfs_error *err)
{
    (void)t;
    fs_text x = {0};
    return keep(f, &x, render_metrics(fs_srv.lf, &x), err);
}

static int open_available(struct fs_file *f, const struct fs_target *t, llmfs_error *err)
{
    (void)t;
    fs_text x = {0};
    char *text = llmfs_available_text(fs_srv.lf);
    if (text)
        text_puts(&x, text);
    free(text);
    return keep(f, &x, text ? 0 : -ENOMEM, err);
}

static int open_placement(struct fs_file *f, const struct fs_target *t, llmfs_error *err)
{
    fs_text x = {0};
    return keep(f, &x, render_placement(t->m, &x), err);
}

static int open_kv(struct fs_file *f, const struct fs_target *t, llmfs_error *err)
{
    fs_text x = {0};
    return keep(f, &x, render_kv(t->m, &x), err);
}

static int open_info(struct fs_file *f, const struct fs_target *t, llmfs_error *err)
{
    fs_text x = {0};
    return keep(f, &x, render_info(t->m, &x), err);
}

static int open_error(struct fs_file *f, const struct fs_target *t, llmfs_error *err)
{
    char core[256], msg[256];
    fs_core_error(t->dir, core, sizeof core);
    node_error_text(t->dir, core, msg, sizeof msg);
    fs_text x = {0};
    if (msg[0])
        text_printf(&x, "%s\n", msg);
    if (t->m && node_type(t->dir) == DIR_MODEL) { /* the known failure modes of its settings */
        char w[4096];
        if (llmfs_model_warnings(t->m, w, sizeof w) > 0)
            text_puts(&x, w);
    }
    return keep(f, &x, text_finish(&x), err);
}

/* The machine checks, run at open. */
static int open_diag(struct fs_file *f, const struct fs_target *t, llmfs_error *err)
{
    (void)t;
    char *d = llmfs_diag_text(fs_srv.lf);
    if (!d)
        return llmfs_errorf(err, ENOMEM, "diag: out of memory");
    fs_text x = {0};
    text_puts(&x, d);
    free(d);
    return keep(f, &x, text_finish(&x), err);
}

/* Reading prompt gives the last prompt. */
static int open_prompt(struct fs_file *f, const struct fs_target *t, llmfs_error *err)
{
    fs_text x = {0};
    char *p = llmfs_session_last_prompt(t->s);
    if (p) {
        text_puts(&x, p);
        free(p);
    }
    return keep(f, &x, text_finish(&x), err);
}

/* Reading image lists the images waiting for the next prompt, WIDTHxHEIGHT each. */
static int images_fill(void *s, char *buf, size_t cap)
{
    return llmfs_session_images_text(s, buf, cap);
}

static int open_image(struct fs_file *f, const struct fs_target *t, llmfs_error *err)
{
    fs_text x = {0};
    text_fill(&x, images_fill, t->s);
    return keep(f, &x, text_finish(&x), err);
}

/* Each open of clone makes one session; the open file reads its number. */
static int open_clone(struct fs_file *f, const struct fs_target *t, llmfs_error *err)
{
    llmfs_session *c = llmfs_session_new(t->m, err);
    if (!c)
        return err->code ? -err->code : -ENOMEM;
    fs_text x = {0};
    text_printf(&x, "%d\n", llmfs_session_id(c));
    llmfs_session_put(c);
    return keep(f, &x, text_finish(&x), err);
}

/* ---- streams: the core's byte logs, read as they grow ---- */

static int attach(struct fs_file *f, llmfs_stream *st, bool blocking, llmfs_error *err)
{
    f->sio = sio_open(st, blocking);
    return f->sio ? 0 : llmfs_errorf(err, ENOMEM, "no stream");
}

static uint64_t stream_size(llmfs_stream *st)
{
    uint64_t n = st ? llmfs_stream_size(st, NULL) : 0;
    if (st)
        llmfs_stream_put(st);
    return n;
}

/* output waits at its end until the reply is done. */
static int open_output(struct fs_file *f, const struct fs_target *t, llmfs_error *err)
{
    return attach(f, llmfs_session_output(t->s), true, err);
}

static uint64_t size_output(const struct fs_target *t)
{
    return stream_size(llmfs_session_output(t->s));
}

/* transcript ends at its current size, like a regular file that grows. */
static int open_transcript(struct fs_file *f, const struct fs_target *t, llmfs_error *err)
{
    return attach(f, llmfs_session_transcript(t->s), false, err);
}

static uint64_t size_transcript(const struct fs_target *t)
{
    return stream_size(llmfs_session_transcript(t->s));
}

/* reasoning (the analysis channel, the text between <think> tags) is the reply's other
 * half: it waits at its end until the reply is done, like output. */
static int open_reasoning(struct fs_file *f, const struct fs_target *t, llmfs_error *err)
{
    return attach(f, llmfs_session_reasoning(t->s), true, err);
}

static uint64_t size_reasoning(const struct fs_target *t)
{
    return stream_size(llmfs_session_reasoning(t->s));
}

/* ---- writes ---- */

static int write_ctl(struct fs_file *f, const char *buf, size_t n)
{
    fs_target t;
    int type = node_type(f->dir);
    int rc = fs_target_get(f->dir, type != DIR_ROOT, &t);
    if (rc < 0)
        return rc;
    ctl_target c = {.lf = fs_srv.lf, .m = t.m, .s = t.s};
    c.kind = type == DIR_ROOT ? CTL_ROOT : type == DIR_MODEL ? CTL_MODEL : CTL_SESSION;
    llmfs_error err = {0};
    rc = ctl_write(&c, buf, n, fs_srv.max_ctl_line, &err);
    fs_target_put(&t);
    if (rc < 0)
        fs_record_error(f->dir, &err);
    return rc;
}

/* ---- the table ---- */

#define ALL (IN_ROOT | IN_MODEL | IN_SESSION)
#define CONVERSATION (IN_MODEL | IN_SESSION)

static const fs_filetab files[] = {
    /* name         perm  folders       session open             size             write         flush */
    {"ctl",         0666, ALL,          true,  open_ctl,        NULL,            write_ctl,    NULL},
    {"models",      0444, IN_ROOT,      false, open_models,     NULL,            NULL,         NULL},
    {"prompt",      0666, CONVERSATION, true,  open_prompt,     NULL,            prompt_write, prompt_flush},
    {"image",       0666, CONVERSATION, true,  open_image,      NULL,            image_write,  image_flush},
    {"output",      0444, CONVERSATION, true,  open_output,     size_output,     NULL,         NULL},
    {"transcript",  0444, CONVERSATION, true,  open_transcript, size_transcript, NULL,         NULL},
    {"reasoning",   0444, CONVERSATION, true,  open_reasoning,  size_reasoning,  NULL,         NULL},
    {"stats",       0444, ALL,          true,  open_stats,      NULL,            NULL,         NULL},
    {"metrics",     0444, IN_ROOT,      false, open_metrics,    NULL,            NULL,         NULL},
    {"diag",        0444, IN_ROOT,      false, open_diag,       NULL,            NULL,         NULL},
    {"available",   0444, IN_ROOT,      false, open_available,  NULL,            NULL,         NULL},
    {"placement",   0444, IN_MODEL,     false, open_placement,  NULL,            NULL,         NULL},
    {"kv",          0444, IN_MODEL,     false, open_kv,         NULL,            NULL,         NULL},
    {"info",        0444, IN_MODEL,     false, open_info,       NULL,            NULL,         NULL},
    {"error",       0444, ALL,          false, open_error,      NULL,            NULL,         NULL},
    {"clone",       0444, IN_MODEL,     false, open_clone,      NULL,            NULL,         NULL},
};

#define N_FILES ((int)(sizeof files / sizeof files[0]))
#define FIRST_KIND (K_DIR + 1)

_Static_assert(FIRST_KIND + N_FILES <= NODE_KINDS, "the kinds must fit NODE_KIND_BITS");

const fs_filetab *dirtab_row(int kind)
{
    int i = kind - FIRST_KIND;
    return i >= 0 && i < N_FILES ? &files[i] : NULL;
}

int dirtab_next(int dir_type, int kind)
{
    for (int i = kind < K_DIR ? 0 : kind - K_DIR; i < N_FILES; i++)
        if (files[i].dirs & (1u << dir_type))
            return FIRST_KIND + i;
    return 0;
}

int dirtab_find(int dir_type, const char *name)
{
    for (int k = dirtab_next(dir_type, K_DIR); k; k = dirtab_next(dir_type, k))
        if (strcmp(dirtab_row(k)->name, name) == 0)
            return k;
    return 0;
}
