/* listing.c — folder listings: a snapshot taken at opendir, read by readdir. */
#include "listing.h"

#include "models.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#define MAX_LISTED_SESSIONS 4096

typedef struct dir_listing {
    fs_handle h; /* first */
    size_t n, cap;
    bool failed; /* an entry could not be added: the listing is refused, never cut short */
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
        if (!e) {
            l->failed = true;
            return;
        }
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

static void add_models(dir_listing *l)
{
    llmfs_model *models[MODELS_MAX];
    int n = models_get(fs_srv.lf, models);
    for (int i = 0; i < n; i++) {
        fs_dir *c = node_dir_get(DIR_MODEL, llmfs_model_name(models[i]), 0, 0);
        if (c)
            listing_add(l, llmfs_model_name(models[i]), node_ino(c, K_DIR), S_IFDIR);
        else
            l->failed = true;
    }
    models_put(models, n);
}

static void add_sessions(dir_listing *l, fs_dir *d, llmfs_model *m)
{
    int *ids = malloc(sizeof *ids * MAX_LISTED_SESSIONS);
    if (!ids) {
        l->failed = true;
        return;
    }
    int n = llmfs_session_ids(m, ids, MAX_LISTED_SESSIONS);
    for (int i = 0; i < n && i < MAX_LISTED_SESSIONS; i++) {
        char name[16];
        snprintf(name, sizeof name, "%d", ids[i]);
        fs_dir *c = node_dir_get(DIR_SESSION, node_model(d), ids[i], 0);
        if (c)
            listing_add(l, name, node_ino(c, K_DIR), S_IFDIR);
        else
            l->failed = true;
    }
    free(ids);
}

void listing_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    int kind;
    fs_dir *d = node_from_ino(ino, &kind);
    fs_target t = {0};
    int rc = !d ? -ENOENT : kind != K_DIR ? -ENOTDIR : fs_target_get(d, false, &t);
    if (rc < 0) {
        fuse_reply_err(req, -rc);
        return;
    }
    dir_listing *l = calloc(1, sizeof *l);
    if (!l) {
        fs_target_put(&t);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    int type = node_type(d);
    listing_add(l, ".", ino, S_IFDIR);
    listing_add(l, "..", type == DIR_SESSION
                             ? node_ino(node_dir_get(DIR_MODEL, node_model(d), 0, 0), K_DIR)
                             : FUSE_ROOT_ID,
                S_IFDIR);
    for (int k = dirtab_next(type, K_DIR); k; k = dirtab_next(type, k))
        listing_add(l, dirtab_row(k)->name, node_ino(d, k), S_IFREG);
    if (type == DIR_ROOT)
        add_models(l);
    else if (type == DIR_MODEL)
        add_sessions(l, d, t.m);
    fs_target_put(&t);
    if (l->failed) { /* out of memory: ENOMEM rather than a listing with holes */
        free_listing(&l->h);
        fuse_reply_err(req, ENOMEM);
        return;
    }
    fi->fh = (uintptr_t)l;
    fi->cache_readdir = 0;
    fs_handle_add(&l->h, free_listing);
    if (fuse_reply_open(req, fi) != 0) {
        fs_handle_remove(&l->h);
        free_listing(&l->h);
    }
}

void listing_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
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

void listing_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    dir_listing *l = (dir_listing *)(uintptr_t)fi->fh;
    fs_handle_remove(&l->h);
    free_listing(&l->h);
    fuse_reply_err(req, 0);
}
