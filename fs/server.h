/* server.h — what the file server's modules share: the core handle, the FUSE session,
 * the limits and modes read once at start, and the open-file record. */
#ifndef LLMFS_FS_SERVER_H
#define LLMFS_FS_SERVER_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include "llmfs.h"
#include "node.h"

#include <pthread.h>
#include <stdatomic.h>
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
    atomic_bool exiting;  /* set when unmounting: blocked readers return */
    /* Daemon settings read after the configuration is applied (only the configuration
     * and the command line may change them). */
    int file_mode, dir_mode;
    bool allow_other;
    uint64_t max_prompt_bytes, max_ctl_line;
} fs_server;

extern fs_server fs_srv;

/* Every open file and folder is on a list, so the ones still open when the file system
 * goes away (their release never comes) are freed too. */
typedef struct fs_handle {
    struct fs_handle *prev, *next;
    void (*destroy)(struct fs_handle *h);
} fs_handle;

/* One open file. Text files hold a snapshot rendered at open; output and transcript
 * hold a reference to the core's stream; ctl and prompt collect what is written. The
 * record never holds a model or session reference, so an open file does not keep an
 * unloaded model's memory alive. */
typedef struct fs_file {
    fs_handle h; /* first: the list holds fs_handle pointers */
    fs_dir *dir;
    int kind;
    char *text; /* snapshot, or NULL */
    size_t text_len;
    llmfs_stream *st;
    bool blocking; /* output: reads wait for data; transcript reads end at its size */
    pthread_mutex_t mu; /* guards pos, ph, watch */
    uint64_t pos;       /* end of the last read, where poll(2) looks for new bytes */
    struct fuse_pollhandle *ph;
    int watch; /* llmfs_stream_watch token; 0 none yet, -1 being set up */
    char *wbuf; /* prompt bytes written and not yet submitted */
    size_t wlen, wcap;
    int werr; /* errno of a failed prompt write: the prompt is dropped, not submitted */
} fs_file;

/* The lowlevel operations (ops.c). */
extern const struct fuse_lowlevel_ops fs_ops;
/* Frees the files and folders still open; only once no FUSE thread runs. */
void fs_close_all(void);

/* Resolves a folder's target: model (and session; the default one for a model folder).
 * Returns 0 or -ENOENT; *m and *s (when asked for) are new references. */
int fs_resolve(const fs_dir *d, llmfs_model **m, llmfs_session **s);
/* Whether a folder's target still exists (for node_unref/node_sweep). */
bool fs_dir_exists(const fs_dir *d);
/* The core's current error string for a folder (empty for the root). */
void fs_core_error(const fs_dir *d, char *buf, size_t cap);
/* Records an error for the folder's `error` file. */
void fs_record_error(fs_dir *d, const llmfs_error *err);

#endif
