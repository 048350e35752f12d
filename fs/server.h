/* server.h — what the file server's modules share: the core handle, the FUSE session,
 * the limits and modes read once at start, and the open-file record. */
#ifndef LLMFS_FS_SERVER_H
#define LLMFS_FS_SERVER_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include "dirtab.h"
#include "llmfs.h"
#include "node.h"
#include "text.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

typedef struct fs_server {
    llmfs *lf;
    struct fuse_session *se;
    char *mountpoint;
    uid_t uid;
    gid_t gid;
    struct timespec started;
    /* Daemon settings read after the configuration is applied (only the configuration
     * and the command line may change them). */
    int file_mode, dir_mode;
    bool allow_other;
    uint64_t max_prompt_bytes, max_ctl_line, max_image_bytes;
} fs_server;

extern fs_server fs_srv;

/* Every open file and folder is on a list, so the ones still open when the file system
 * goes away (their release never comes) are freed too. */
typedef struct fs_handle {
    struct fs_handle *prev, *next;
    void (*destroy)(struct fs_handle *h);
} fs_handle;

/* One open file. Text files hold a snapshot rendered at open; output and transcript
 * hold the core's stream; ctl and prompt collect what is written. The record never
 * holds a model or session reference, so an open file does not keep an unloaded
 * model's memory alive. */
typedef struct fs_file {
    fs_handle h; /* first: the list holds fs_handle pointers */
    fs_dir *dir;
    const struct fs_filetab *tab; /* what the file is (dirtab.h) */
    char *text; /* snapshot, or NULL */
    size_t text_len;
    struct sio *sio; /* output, transcript (stream_io.h) */
    fs_text w; /* prompt bytes written and not yet submitted */
    int werr; /* errno of a failed prompt write: the prompt is dropped, not submitted */
} fs_file;

/* A folder's target for one operation: model and session references (NULL where the
 * folder has none or they were not asked for). */
typedef struct fs_target {
    fs_dir *dir;
    llmfs_model *m;
    llmfs_session *s;
} fs_target;

/* The lowlevel operations (ops.c). */
extern const struct fuse_lowlevel_ops fs_ops;

/* The list of open handles (handles.c). destroy frees what h belongs to. */
void fs_handle_add(fs_handle *h, void (*destroy)(fs_handle *h));
void fs_handle_remove(fs_handle *h);
/* Frees the files and folders still open; only once no FUSE thread runs. */
void fs_close_all(void);

/* Targets (target.c). Resolves a folder's target: model (and session; the default one
 * for a model folder). Returns 0 or -ENOENT; *m and *s (when asked for) are new
 * references. A session folder's session is checked to exist even when not asked for. */
int fs_resolve(const fs_dir *d, llmfs_model **m, llmfs_session **s);
/* The same into t (the session only when asked for); fs_target_put drops it. */
int fs_target_get(fs_dir *d, bool session, fs_target *t);
void fs_target_put(fs_target *t);
/* Whether a folder's target still exists (for node_unref/node_sweep). */
bool fs_dir_exists(const fs_dir *d);
/* The core's current error string for a folder (empty for the root). */
void fs_core_error(const fs_dir *d, char *buf, size_t cap);
/* Records an error for the folder's `error` file. */
void fs_record_error(fs_dir *d, const llmfs_error *err);

#endif
