/* node.h — the file tree's inode numbers: path → (root | model | session) × file kind.
 *
 * Only folders are kept in a table; a file's inode number is its folder's id and its
 * kind packed together, so a lookup of `NAME/stats` costs one table entry for NAME.
 * Folders name their target (model name, session id) rather than point at it: every
 * operation looks the target up again through llmfs.h, so an unloaded model or a
 * closed session turns into ENOENT instead of a dangling pointer. Ids are never reused,
 * so the kernel never sees one inode number stand for two targets.
 */
#ifndef LLMFS_FS_NODE_H
#define LLMFS_FS_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum fs_dir_type { DIR_ROOT, DIR_MODEL, DIR_SESSION };

/* File kinds; K_DIR is the folder itself. Fits in NODE_KIND_BITS. */
enum fs_kind {
    K_DIR = 1,
    K_CTL,
    K_MODELS,
    K_STATS,
    K_METRICS,
    K_ERROR,
    K_PROMPT,
    K_OUTPUT,
    K_TRANSCRIPT,
    K_PLACEMENT,
    K_KV,
    K_INFO,
    K_CLONE,
    K_COUNT
};
#define NODE_KIND_BITS 4

#define NODE_NAME_MAX 64

typedef struct fs_dir fs_dir;

/* The root folder's table entry exists from node_init to node_fini. */
void node_init(void);
void node_fini(void);
fs_dir *node_root(void);

/* The folder for a model name or a model's session id, created if needed, with `refs`
 * references added (lookups the kernel will forget, or one for an open file). */
fs_dir *node_dir_get(int type, const char *model, int sid, uint64_t refs);
void node_ref(fs_dir *d, uint64_t n);
/* Drops n references; a folder without references whose target is gone is freed
 * (exists() is asked only then). The root is never freed. */
void node_unref(fs_dir *d, uint64_t n, bool (*exists)(const fs_dir *d));
/* Frees every unreferenced folder whose target is gone. */
void node_sweep(bool (*exists)(const fs_dir *d));

/* Folder and kind of an inode number, NULL if no such folder. The folder stays valid
 * while the kernel holds the inode (it cannot be forgotten during an operation on it). */
fs_dir *node_from_ino(uint64_t ino, int *kind);
uint64_t node_ino(const fs_dir *d, int kind);

int node_type(const fs_dir *d);
const char *node_model(const fs_dir *d);
int node_sid(const fs_dir *d);

/* Kind named `name` inside a folder of this type, 0 if none. */
int node_kind_by_name(int type, const char *name);
const char *node_kind_name(int kind);
/* The file kinds a folder of this type holds, in listing order; returns the count. */
int node_kinds(int type, const int **kinds);
/* Whether `kind` can be written (ctl, prompt). */
bool node_kind_writable(int kind);

/* The nearest `error` file's text. Errors the file server itself gives (limits,
 * refusals) are kept here; errors the core records are read from the core. Whichever
 * is newer shows: the server's message is shown as long as the core's string is still
 * what it was when the server's was set. */
void node_set_error(fs_dir *d, const char *msg, const char *core_now);
void node_error_text(fs_dir *d, const char *core_now, char *buf, size_t cap);

#endif
