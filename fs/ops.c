/* ops.c — the FUSE lowlevel operations: lookups and attributes, and the open, read,
 * write, flush, release and poll of files, each done through the file's row in the
 * file table (dirtab.h). Folder listings are in listing.c.
 *
 * Attributes and entries are never cached by the kernel (timeouts 0) and every file is
 * opened with direct_io, so `stat` always sees the current size of output and
 * transcript and reads always come here.
 */
#include "server.h"

#include "listing.h"
#include "stream_io.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- attributes ---- */

static int fill_attr(fs_dir *d, int kind, struct stat *st)
{
    const fs_filetab *tab = dirtab_row(kind);
    if (kind != K_DIR && !tab)
        return -ENOENT;
    fs_target t;
    int rc = fs_target_get(d, tab && tab->size, &t);
    if (rc < 0)
        return rc;
    memset(st, 0, sizeof *st);
    st->st_ino = node_ino(d, kind);
    st->st_uid = fs_srv.uid;
    st->st_gid = fs_srv.gid;
    st->st_atim = st->st_mtim = st->st_ctim = fs_srv.started;
    st->st_blksize = 4096;
    if (!tab) {
        st->st_mode = S_IFDIR | (mode_t)fs_srv.dir_mode;
        st->st_nlink = 2;
    } else {
        st->st_mode = S_IFREG | (mode_t)(fs_srv.file_mode & tab->perm);
        st->st_nlink = 1;
        st->st_size = tab->size ? (off_t)tab->size(&t) : 0;
    }
    fs_target_put(&t);
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
        const fs_filetab *tab = dirtab_row(kind);
        if (!tab || !tab->write) {
            fuse_reply_err(req, EACCES);
            return;
        }
        if (attr->st_size != 0) {
            fuse_reply_err(req, EINVAL);
            return;
        }
        if (fi) {
            fs_file *f = (fs_file *)(uintptr_t)fi->fh;
            f->w.len = 0;
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
    int kind = dirtab_find(node_type(p), name);
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

/* ---- files ---- */

static void free_file(fs_file *f)
{
    if (f->sio)
        sio_close(f->sio);
    free(f->text);
    text_free(&f->w);
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

/* Opens the file a row describes: a write-only open of a writable file sets up nothing
 * to read; any other runs the row's open (render a snapshot, attach a stream, make a
 * session) with the folder's target looked up as the row asks. */
static int open_file(fs_dir *d, const fs_filetab *tab, int acc, fs_file **out)
{
    fs_target t;
    int rc = fs_target_get(d, tab->session, &t);
    if (rc < 0)
        return rc;
    fs_file *f = calloc(1, sizeof *f);
    if (!f) {
        fs_target_put(&t);
        return -ENOMEM;
    }
    f->dir = d;
    f->tab = tab;
    llmfs_error err = {0};
    if (acc != O_WRONLY)
        rc = tab->open(f, &t, &err);
    fs_target_put(&t);
    if (rc < 0) {
        fs_record_error(d, &err);
        free_file(f);
        return rc;
    }
    *out = f;
    return 0;
}

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    int kind;
    fs_dir *d = dir_of(ino, &kind);
    const fs_filetab *tab = d ? dirtab_row(kind) : NULL;
    int acc = fi->flags & O_ACCMODE;
    int rc = !d                                   ? -ENOENT
             : kind == K_DIR                      ? -EISDIR
             : !tab                               ? -ENOENT
             : acc != O_RDONLY && !tab->write     ? -EACCES
                                                  : 0;
    fs_file *f = NULL;
    if (rc == 0)
        rc = open_file(d, tab, acc, &f);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    node_ref(d, 1);
    fi->fh = (uintptr_t)f;
    fi->direct_io = 1;
    fi->keep_cache = 0;
    fs_handle_add(&f->h, close_file);
    if (fuse_reply_open(req, fi) != 0) {
        fs_handle_remove(&f->h);
        close_file(&f->h);
    }
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                    struct fuse_file_info *fi)
{
    (void)ino;
    fs_file *f = (fs_file *)(uintptr_t)fi->fh;
    if (f->sio) {
        sio_read(req, f->sio, size, off, fi->flags);
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

/* ctl lines and prompt bytes are taken in the order written, whatever the offset. */
static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    (void)ino;
    (void)off;
    fs_file *f = (fs_file *)(uintptr_t)fi->fh;
    int rc = f->tab->write ? f->tab->write(f, buf, size) : -EBADF;
    if (rc < 0)
        fuse_reply_err(req, -rc);
    else
        fuse_reply_write(req, size);
}

/* close(2): a prompt is submitted here, so the writer's close gets the error. */
static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    fs_file *f = (fs_file *)(uintptr_t)fi->fh;
    int rc = f->tab->flush ? f->tab->flush(f) : 0;
    fuse_reply_err(req, rc < 0 ? -rc : 0);
}

/* A read still waiting on the file (there should be none: the kernel releases a file
 * after its last read returns) is answered by sio_close. */
static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    fs_file *f = (fs_file *)(uintptr_t)fi->fh;
    fs_handle_remove(&f->h);
    close_file(&f->h);
    fuse_reply_err(req, 0);
}

static void op_poll(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi,
                    struct fuse_pollhandle *ph)
{
    (void)ino;
    fs_file *f = (fs_file *)(uintptr_t)fi->fh;
    if (f->sio) {
        sio_poll(req, f->sio, ph);
        return;
    }
    if (ph)
        fuse_pollhandle_destroy(ph);
    unsigned ev = POLLIN | POLLRDNORM;
    if (f->tab->write)
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
    .opendir = listing_open,
    .readdir = listing_read,
    .releasedir = listing_release,
    .poll = op_poll,
};
