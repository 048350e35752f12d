/* dirtab.h — the file table: one row per file kind, in the manner of a Plan 9 Dirtab.
 *
 * A row says everything the operations need to know about a file: its name, its
 * permission bits (file_mode masks them), the folders that hold it, whether opening it
 * needs the folder's session, what an open sets up for reads (a snapshot rendered now,
 * a stream, a new session for `clone`), the size stat shows, and what write and flush
 * (close) do. Lookups, listings, attributes, open, read, write, flush and poll all go
 * through the row; no operation switches on the kind.
 *
 * The rows are in listing order; a kind is the row's index plus 2 (1 is K_DIR, the
 * folder itself), which is the kind part of the file's inode number.
 */
#ifndef LLMFS_FS_DIRTAB_H
#define LLMFS_FS_DIRTAB_H

#include "llmfs.h"
#include "node.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct fs_file;
struct fs_target;

/* The folders a row is in (bit mask of 1 << fs_dir_type). */
#define IN_ROOT (1u << DIR_ROOT)
#define IN_MODEL (1u << DIR_MODEL)
#define IN_SESSION (1u << DIR_SESSION)

typedef struct fs_filetab {
    const char *name;
    int perm;      /* 0444 read-only, 0666 writable */
    unsigned dirs; /* IN_* */
    bool session;  /* open and stat need the folder's session */
    /* Sets up what reads of a newly opened file return; not called for a write-only
     * open. 0, or a negative errno with err filled (it goes to the folder's error). */
    int (*open)(struct fs_file *f, const struct fs_target *t, llmfs_error *err);
    /* The size stat shows; NULL for 0 (snapshots have no size before they are opened). */
    uint64_t (*size)(const struct fs_target *t);
    /* One write(2): 0 or a negative errno. NULL: the file is read-only. */
    int (*write)(struct fs_file *f, const char *buf, size_t n);
    /* One close(2) of the open file: 0 or a negative errno. NULL: nothing to do. */
    int (*flush)(struct fs_file *f);
} fs_filetab;

/* The row of a kind, NULL if the kind is no file. */
const fs_filetab *dirtab_row(int kind);
/* The kind named NAME in a folder of this type, 0 if none. */
int dirtab_find(int dir_type, const char *name);
/* The kinds of a folder of this type in listing order: the first after `kind` (start
 * with K_DIR), 0 after the last. */
int dirtab_next(int dir_type, int kind);

#endif
