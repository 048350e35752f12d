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

/* The kind part of an inode number: K_DIR is the folder itself, the kinds above it are
 * rows of the file table (dirtab.h). */
#define K_DIR 1
#define NODE_KIND_BITS 5
#define NODE_KINDS (1 << NODE_KIND_BITS)

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

/* The nearest `error` file's text. Errors the file server itself gives (limits,
 * refusals) are kept here; errors the core records are read from the core. Whichever
 * is newer shows: the server's message is shown as long as the core's string is still
 * what it was when the server's was set. */
void node_set_error(fs_dir *d, const char *msg, const char *core_now);
void node_error_text(fs_dir *d, const char *core_now, char *buf, size_t cap);

#endif
