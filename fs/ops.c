/* ops.c — the FUSE lowlevel operations: lookups, attributes, listings, and what open,
 * read, write, flush and release mean for each file kind.
 *
 * Attributes and entries are never cached by the kernel (timeouts 0) and every file is
 * opened with direct_io, so `stat` always sees the current size of output and
 * transcript and reads always come here.
 */
#include "server.h"

#include "ctl.h"
#include "models.h"
#include "render.h"
#include "stream_io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- targets ---- */

int fs_resolve(const fs_dir *d, llmfs_model **m, llmfs_session **s)
{
    if (m)
        *m = NULL;
    if (s)
        *s = NULL;
    if (node_type(d) == DIR_ROOT)
        return 0;
    llmfs_model *mm = llmfs_model_get(fs_srv.lf, node_model(d));
    if (!mm)
        return -ENOENT;
    if (s || node_type(d) == DIR_SESSION) {
        llmfs_session *ss = node_type(d) == DIR_MODEL ? llmfs_session_default(mm)
                                                      : llmfs_session_get(mm, node_sid(d));
        if (!ss) {
            llmfs_model_put(mm);
            return -ENOENT;
        }
        if (s)
            *s = ss;
        else
            llmfs_session_put(ss);
    }
    if (m)
        *m = mm;
    else
        llmfs_model_put(mm);
    return 0;
}

bool fs_dir_exists(const fs_dir *d)
{
    return fs_resolve(d, NULL, NULL) == 0;
}

void fs_core_error(const fs_dir *d, char *buf, size_t cap)
{
    buf[0] = '\0';
    llmfs_model *m;
    llmfs_session *s;
    if (node_type(d) == DIR_ROOT || fs_resolve(d, &m, &s) < 0)
        return;
    if (node_type(d) == DIR_MODEL)
        llmfs_model_error(m, buf, cap);
    if (!buf[0])
        llmfs_session_error(s, buf, cap);
    llmfs_session_put(s);
    llmfs_model_put(m);
}

void fs_record_error(fs_dir *d, const llmfs_error *err)
{
    char core[256];
    fs_core_error(d, core, sizeof core);
    node_set_error(d, err->msg, core);
}

static void put_target(llmfs_model *m, llmfs_session *s)
{
    if (s)
        llmfs_session_put(s);
    if (m)
        llmfs_model_put(m);
}

/* ---- open handles ---- */

static pthread_mutex_t handles_mu = PTHREAD_MUTEX_INITIALIZER;
static fs_handle handles = {&handles, &handles, NULL};

static void handle_add(fs_handle *h, void (*destroy)(fs_handle *h))
{
    h->destroy = destroy;
    pthread_mutex_lock(&handles_mu);
    h->next = handles.next;
    h->prev = &handles;
    handles.next->prev = h;
    handles.next = h;
    pthread_mutex_unlock(&handles_mu);
}

static void handle_remove(fs_handle *h)
{
    pthread_mutex_lock(&handles_mu);
    h->prev->next = h->next;
    h->next->prev = h->prev;
    pthread_mutex_unlock(&handles_mu);
}

void fs_close_all(void)
{
    while (handles.next != &handles) {
        fs_handle *h = handles.next;
        handle_remove(h);
        h->destroy(h);
    }
}

/* ---- attributes ---- */

static int fill_attr(fs_dir *d, int kind, struct stat *st)
{
    llmfs_model *m;
    llmfs_session *s;
    bool is_stream = kind == K_OUTPUT || kind == K_TRANSCRIPT;
    int rc = fs_resolve(d, &m, is_stream ? &s : NULL);
    if (rc < 0)
        return rc;
    memset(st, 0, sizeof *st);
    st->st_ino = node_ino(d, kind);
    st->st_uid = fs_srv.uid;
    st->st_gid = fs_srv.gid;
    st->st_atim = st->st_mtim = st->st_ctim = fs_srv.started;
    st->st_blksize = 4096;
    if (kind == K_DIR) {
        st->st_mode = S_IFDIR | (mode_t)fs_srv.dir_mode;
        st->st_nlink = 2;
    } else {
        int perm = fs_srv.file_mode & (node_kind_writable(kind) ? 0666 : 0444);
        st->st_mode = S_IFREG | (mode_t)perm;
        st->st_nlink = 1;
    }
    if (is_stream) {
        llmfs_stream *strm = kind == K_OUTPUT ? llmfs_session_output(s) : llmfs_session_transcript(s);
        if (strm) {
            st->st_size = (off_t)llmfs_stream_size(strm, NULL);
            llmfs_stream_put(strm);
        }
    }
    put_target(m, is_stream ? s : NULL);
    return 0;
}

static fs_dir *dir_of(fuse_ino_t ino, int *kind)
{
    return node_from_ino(ino, kind);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    int kind;
    fs_dir *d = dir_of(ino, &kind);
    struct stat st;
    int rc = d ? fill_attr(d, kind, &st) : -ENOENT;
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_attr(req, &st, 0.0);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
                       struct fuse_file_info *fi)
{
    int kind;
    fs_dir *d = dir_of(ino, &kind);
    if (!d) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
        fuse_reply_err(req, EPERM);
        return;
    }
    if (to_set & FUSE_SET_ATTR_SIZE) {
        /* Only the truncation that `>` asks for: it starts a fresh write. */
        if (!node_kind_writable(kind)) {
            fuse_reply_err(req, EACCES);
            return;
        }
        if (attr->st_size != 0) {
            fuse_reply_err(req, EINVAL);
            return;
        }
        if (fi) {
            fs_file *f = (fs_file *)(uintptr_t)fi->fh;
            f->wlen = 0;
            f->werr = 0;
        }
    }
    struct stat st;
    int rc = fill_attr(d, kind, &st);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_attr(req, &st, 0.0);
}

/* ---- names ---- */

/* A session folder's name: a positive decimal number without leading zeros. */
static int parse_sid(const char *name)
{
    if (name[0] < '1' || name[0] > '9')
        return -1;
    long v = 0;
    for (const char *p = name; *p; p++) {
        if (*p < '0' || *p > '9')
            return -1;
        v = v * 10 + (*p - '0');
        if (v > INT_MAX)
            return -1;
    }
    return (int)v;
}

static void reply_entry(fuse_req_t req, fs_dir *d, int kind)
{
    struct fuse_entry_param e;
    memset(&e, 0, sizeof e);
    int rc = fill_attr(d, kind, &e.attr);
    if (rc < 0) {
        node_unref(d, 1, fs_dir_exists);
        fuse_reply_err(req, -rc);
        return;
    }
    e.ino = e.attr.st_ino;
    e.attr_timeout = 0.0;
    e.entry_timeout = 0.0;
    if (fuse_reply_entry(req, &e) != 0)
        node_unref(d, 1, fs_dir_exists); /* the kernel did not take the reference */
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    int pkind;
    fs_dir *p = dir_of(parent, &pkind);
    if (!p || pkind != K_DIR) {
        fuse_reply_err(req, p ? ENOTDIR : ENOENT);
        return;
    }
    int kind = node_kind_by_name(node_type(p), name);
    if (kind) {
        node_ref(p, 1);
        reply_entry(req, p, kind);
        return;
    }
    fs_dir *child = NULL;
    if (node_type(p) == DIR_ROOT) {
        llmfs_model *m = llmfs_model_get(fs_srv.lf, name);
        if (m) {
            llmfs_model_put(m);
            child = node_dir_get(DIR_MODEL, name, 0, 1);
        }
    } else if (node_type(p) == DIR_MODEL) {
        int sid = parse_sid(name);
        if (sid > 0)
            child = node_dir_get(DIR_SESSION, node_model(p), sid, 1);
    }
    if (!child) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    reply_entry(req, child, K_DIR); /* ENOENT there if the session does not exist */
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    int kind;
    fs_dir *d = dir_of(ino, &kind);
    if (d)
        node_unref(d, nlookup, fs_dir_exists);
    fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
    for (size_t i = 0; i < count; i++) {
        int kind;
        fs_dir *d = dir_of(forgets[i].ino, &kind);
        if (d)
            node_unref(d, forgets[i].nlookup, fs_dir_exists);
    }
    fuse_reply_none(req);
}

/* ---- folders: the listing is a snapshot taken at opendir ---- */

typedef struct dir_listing {
    fs_handle h; /* first */
    size_t n, cap;
    struct {
        char name[NODE_NAME_MAX];
        fuse_ino_t ino;
        mode_t mode;
    } *e;
} dir_listing;

static void listing_add(dir_listing *l, const char *name, fuse_ino_t ino, mode_t mode)
{
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 32;
        void *e = realloc(l->e, cap * sizeof *l->e);
        if (!e)
            return;
        l->e = e;
        l->cap = cap;
    }
    snprintf(l->e[l->n].name, sizeof l->e[l->n].name, "%s", name);
    l->e[l->n].ino = ino;
    l->e[l->n].mode = mode;
    l->n++;
}

static void free_listing(fs_handle *h)
{
    dir_listing *l = (dir_listing *)h;
    free(l->e);
    free(l);
}

static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    int kind;
    fs_dir *d = dir_of(ino, &kind);
    llmfs_model *m;
    int rc = !d ? -ENOENT : kind != K_DIR ? -ENOTDIR : fs_resolve(d, &m, NULL);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    dir_listing *l = calloc(1, sizeof *l);
    if (!l) {
        put_target(m, NULL);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    listing_add(l, ".", ino, S_IFDIR);
    listing_add(l, "..", node_type(d) == DIR_SESSION
                             ? node_ino(node_dir_get(DIR_MODEL, node_model(d), 0, 0), K_DIR)
                             : FUSE_ROOT_ID,
                S_IFDIR);
    const int *kinds;
    int nk = node_kinds(node_type(d), &kinds);
    for (int i = 0; i < nk; i++)
        listing_add(l, node_kind_name(kinds[i]), node_ino(d, kinds[i]), S_IFREG);
    if (node_type(d) == DIR_ROOT) {
        llmfs_model *models[MODELS_MAX];
        int n = models_get(fs_srv.lf, models);
        for (int i = 0; i < n; i++) {
            fs_dir *c = node_dir_get(DIR_MODEL, llmfs_model_name(models[i]), 0, 0);
            if (c)
                listing_add(l, llmfs_model_name(models[i]), node_ino(c, K_DIR), S_IFDIR);
        }
        models_put(models, n);
    } else if (node_type(d) == DIR_MODEL) {
        int ids[4096];
        int n = llmfs_session_ids(m, ids, 4096);
        for (int i = 0; i < n && i < 4096; i++) {
            char name[16];
            snprintf(name, sizeof name, "%d", ids[i]);
            fs_dir *c = node_dir_get(DIR_SESSION, node_model(d), ids[i], 0);
            if (c)
                listing_add(l, name, node_ino(c, K_DIR), S_IFDIR);
        }
    }
    put_target(m, NULL);
    fi->fh = (uintptr_t)l;
    fi->cache_readdir = 0;
    handle_add(&l->h, free_listing);
    if (fuse_reply_open(req, fi) != 0) {
        handle_remove(&l->h);
        free_listing(&l->h);
    }
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                       struct fuse_file_info *fi)
{
    (void)ino;
    dir_listing *l = (dir_listing *)(uintptr_t)fi->fh;
    char *buf = malloc(size);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t used = 0;
    for (size_t i = (size_t)off; i < l->n; i++) {
        struct stat st = {.st_ino = l->e[i].ino, .st_mode = l->e[i].mode};
        size_t need = fuse_add_direntry(req, buf + used, size - used, l->e[i].name, &st,
                                        (off_t)(i + 1));
        if (need > size - used)
            break;
        used += need;
    }
    fuse_reply_buf(req, buf, used);
    free(buf);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    dir_listing *l = (dir_listing *)(uintptr_t)fi->fh;
    handle_remove(&l->h);
    free_listing(&l->h);
    fuse_reply_err(req, 0);
}

/* ---- files ---- */

static int session_settings_fill(void *s, char *buf, size_t cap)
{
    return llmfs_session_settings_text(s, buf, cap);
}

static int model_settings_fill(void *m, char *buf, size_t cap)
{
    return llmfs_model_settings_text(m, buf, cap);
}

/* The snapshot a read of this file returns, rendered now. */
static int render_file(fs_file *f, llmfs_model *m, llmfs_session *s, llmfs_error *err)
{
    fs_text t = {0};
    int rc = 0;
    int type = node_type(f->dir);
    switch (f->kind) {
    case K_CTL:
        if (type == DIR_ROOT) {
            rc = ctl_root_text(fs_srv.lf, &t);
        } else {
            text_fill(&t, type == DIR_MODEL ? model_settings_fill : session_settings_fill,
                      type == DIR_MODEL ? (void *)m : (void *)s);
            rc = text_finish(&t);
        }
        break;
    case K_PROMPT: {
        char *p = llmfs_session_last_prompt(s);
        if (p) {
            text_puts(&t, p);
            free(p);
        }
        rc = text_finish(&t);
        break;
    }
    case K_STATS:
        rc = type == DIR_ROOT    ? render_daemon_stats(fs_srv.lf, &t)
             : type == DIR_MODEL ? render_model_stats(m, s, &t)
                                 : render_session_stats(s, &t);
        break;
    case K_MODELS:
        rc = render_models(fs_srv.lf, &t);
        break;
    case K_METRICS:
        rc = render_metrics(fs_srv.lf, &t);
        break;
    case K_PLACEMENT:
        rc = render_placement(m, &t);
        break;
    case K_KV:
        rc = render_kv(m, &t);
        break;
    case K_INFO:
        rc = render_info(m, &t);
        break;
    case K_ERROR: {
        char core[256], msg[256];
        fs_core_error(f->dir, core, sizeof core);
        node_error_text(f->dir, core, msg, sizeof msg);
        if (msg[0])
            text_printf(&t, "%s\n", msg);
        rc = text_finish(&t);
        break;
    }
    case K_CLONE: {
        llmfs_session *c = llmfs_session_new(m, err);
        if (!c)
            return err->code ? -err->code : -ENOMEM;
        text_printf(&t, "%d\n", llmfs_session_id(c));
        llmfs_session_put(c);
        rc = text_finish(&t);
        break;
    }
    default:
        break;
    }
    if (rc < 0)
        return llmfs_errorf(err, -rc, "cannot render %s", node_kind_name(f->kind));
    f->text = t.buf;
    f->text_len = t.len;
    return 0;
}

static void free_file(fs_file *f)
{
    if (f->st) {
        sio_release(f);
        llmfs_stream_put(f->st);
    }
    pthread_mutex_destroy(&f->mu);
    free(f->text);
    free(f->wbuf);
    free(f);
}

/* An open file's end: the file and its folder reference. */
static void close_file(fs_handle *h)
{
    fs_file *f = (fs_file *)h;
    fs_dir *d = f->dir;
    free_file(f);
    node_unref(d, 1, fs_dir_exists);
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    int kind;
    fs_dir *d = dir_of(ino, &kind);
    if (!d) {
        fuse_reply_err(req, ENOENT);
        return;
    }
    if (kind == K_DIR) {
        fuse_reply_err(req, EISDIR);
        return;
    }
    int acc = fi->flags & O_ACCMODE;
    if (acc != O_RDONLY && !node_kind_writable(kind)) {
        fuse_reply_err(req, EACCES);
        return;
    }
    llmfs_model *m;
    llmfs_session *s;
    bool need_session = kind == K_PROMPT || kind == K_OUTPUT || kind == K_TRANSCRIPT ||
                        kind == K_STATS || kind == K_CTL;
    int rc = fs_resolve(d, &m, need_session ? &s : NULL);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    fs_file *f = calloc(1, sizeof *f);
    if (!f) {
        put_target(m, need_session ? s : NULL);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    pthread_mutex_init(&f->mu, NULL);
    f->dir = d;
    f->kind = kind;
    llmfs_error err = {0};
    if (kind == K_OUTPUT) {
        f->st = llmfs_session_output(s);
        f->blocking = true;
    } else if (kind == K_TRANSCRIPT) {
        f->st = llmfs_session_transcript(s);
    } else if (acc != O_WRONLY) {
        rc = render_file(f, m, need_session ? s : NULL, &err);
    }
    if ((kind == K_OUTPUT || kind == K_TRANSCRIPT) && !f->st)
        rc = llmfs_errorf(&err, ENOMEM, "no stream");
    put_target(m, need_session ? s : NULL);
    if (rc < 0) {
        fs_record_error(d, &err);
        free_file(f);
        fuse_reply_err(req, -rc);
        return;
    }
    node_ref(d, 1);
    fi->fh = (uintptr_t)f;
    fi->direct_io = 1;
    fi->keep_cache = 0;
    handle_add(&f->h, close_file);
    if (fuse_reply_open(req, fi) != 0) {
        handle_remove(&f->h);
        close_file(&f->h);
    }
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)ino;
    fs_file *f = (fs_file *)(uintptr_t)fi->fh;
    if (f->st) {
        sio_read(req, f, size, off, fi->flags);
        return;
    }
    if (off < 0 || (size_t)off >= f->text_len) {
        fuse_reply_buf(req, NULL, 0);
        return;
    }
    size_t n = f->text_len - (size_t)off;
    if (n > size)
        n = size;
    /* The reply goes from a copy: the kernel hands the bytes to the reader while the
     * reply's write is still returning, and the reader's close may then free the
     * snapshot before that write is done with its arguments. */
    char *copy = malloc(n);
    if (!copy) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    memcpy(copy, f->text + off, n);
    fuse_reply_buf(req, copy, n);
    free(copy);
}

static int fail(fs_dir *d, llmfs_error *err, int rc)
{
    fs_record_error(d, err);
    return rc;
}

static int write_ctl(fs_file *f, const char *buf, size_t size)
{
    llmfs_error err = {0};
    ctl_target t = {.lf = fs_srv.lf};
    int type = node_type(f->dir);
    int rc = fs_resolve(f->dir, type == DIR_ROOT ? NULL : &t.m, type == DIR_ROOT ? NULL : &t.s);
    if (rc < 0)
        return rc;
    t.kind = type == DIR_ROOT ? CTL_ROOT : type == DIR_MODEL ? CTL_MODEL : CTL_SESSION;
    rc = ctl_write(&t, buf, size, fs_srv.max_ctl_line, &err);
    put_target(t.m, t.s);
    return rc < 0 ? fail(f->dir, &err, rc) : 0;
}

/* Prompt bytes gather until the writer closes the file (flush). The first write checks
 * that the session is free, so a shell's `echo` sees EBUSY as a write error even where
 * the shell ignores close(2)'s result. */
static int write_prompt(fs_file *f, const char *buf, size_t size)
{
    llmfs_error err = {0};
    if (f->werr)
        return -f->werr;
    if (f->wlen + size > fs_srv.max_prompt_bytes) {
        f->werr = EFBIG;
        f->wlen = 0;
        return fail(f->dir,  &err,
                    llmfs_errorf(&err, EFBIG, "prompt longer than max_prompt_bytes %llu",
                                 (unsigned long long)fs_srv.max_prompt_bytes));
    }
    if (f->wlen == 0) {
        llmfs_session *s;
        int rc = fs_resolve(f->dir, NULL, &s);
        if (rc < 0)
            return rc;
        llmfs_session_stats ss;
        llmfs_session_stats_get(s, &ss);
        llmfs_session_put(s);
        if (strcmp(ss.state, "idle") != 0) {
            f->werr = EBUSY;
            return fail(f->dir, &err,
                        llmfs_errorf(&err, EBUSY,
                                     "a generation is running (%s); write stop to ctl first",
                                     ss.state));
        }
    }
    if (f->wlen + size > f->wcap) {
        size_t cap = f->wcap ? f->wcap : 4096;
        while (cap < f->wlen + size)
            cap *= 2;
        char *b = realloc(f->wbuf, cap);
        if (!b)
            return -ENOMEM;
        f->wbuf = b;
        f->wcap = cap;
    }
    memcpy(f->wbuf + f->wlen, buf, size);
    f->wlen += size;
    return 0;
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    (void)ino;
    (void)off; /* ctl lines and prompt bytes are taken in the order written */
    fs_file *f = (fs_file *)(uintptr_t)fi->fh;
    int rc = f->kind == K_CTL ? write_ctl(f, buf, size) : write_prompt(f, buf, size);
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_write(req, size);
}

/* close(2) of a prompt: submits what was written, so the writer's close gets the error. */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    fs_file *f = (fs_file *)(uintptr_t)fi->fh;
    int rc = 0;
    if (f->kind == K_PROMPT && f->werr) {
        rc = -f->werr;
        f->werr = 0;
    } else if (f->kind == K_PROMPT && f->wlen > 0) {
        size_t len = f->wlen;
        f->wlen = 0;
        llmfs_session *s;
        llmfs_error err = {0};
        rc = fs_resolve(f->dir, NULL, &s);
        if (rc == 0) {
            rc = llmfs_session_prompt(s, f->wbuf, len, &err);
            llmfs_session_put(s);
            if (rc < 0)
                fail(f->dir, &err, rc);
        }
    }
    fuse_reply_err(req, rc < 0 ? -rc : 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    fs_file *f = (fs_file *)(uintptr_t)fi->fh;
    handle_remove(&f->h);
    close_file(&f->h);
    fuse_reply_err(req, 0);
}

static void op_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
                    struct fuse_pollhandle *ph)
{
    (void)ino;
    fs_file *f = (fs_file *)(uintptr_t)fi->fh;
    if (f->st) {
        sio_poll(req, f, ph);
        return;
    }
    if (ph)
        fuse_pollhandle_destroy(ph);
    unsigned ev = POLLIN | POLLRDNORM;
    if (node_kind_writable(f->kind))
        ev |= POLLOUT | POLLWRNORM;
    fuse_reply_poll(req, ev);
}

/* The tree is fixed: nothing is created, removed or renamed by name. */
static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
    (void)parent, (void)name, (void)mode, (void)rdev;
    fuse_reply_err(req, EACCES);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    (void)parent, (void)name, (void)mode;
    fuse_reply_err(req, EACCES);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                      struct fuse_file_info *fi)
{
    (void)parent, (void)name, (void)mode, (void)fi;
    fuse_reply_err(req, EACCES);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    (void)parent, (void)name;
    fuse_reply_err(req, EPERM);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    (void)parent, (void)name, (void)newparent, (void)newname, (void)flags;
    fuse_reply_err(req, EPERM);
}

const struct fuse_lowlevel_ops fs_ops = {
    .lookup = op_lookup,
    .forget = op_forget,
    .forget_multi = op_forget_multi,
    .getattr = op_getattr,
    .setattr = op_setattr,
    .mknod = op_mknod,
    .mkdir = op_mkdir,
    .unlink = op_unlink,
    .rmdir = op_unlink,
    .rename = op_rename,
    .create = op_create,
    .open = op_open,
    .read = op_read,
    .write = op_write,
    .flush = op_flush,
    .release = op_release,
    .opendir = op_opendir,
    .readdir = op_readdir,
    .releasedir = op_releasedir,
    .poll = op_poll,
};
