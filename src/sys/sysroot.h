/* sysroot.h — reading the kernel's files (/proc, /sys, /run) under one root directory.
 *
 * Every diagnostic and placement decision reads the machine through these calls, so a
 * test can fabricate a machine (a hybrid CPU, a hot thermal zone, a swapping system) in a
 * temporary directory and point LLMFS_SYSROOT at it. Without the variable the root is "",
 * i.e. the real files. The variable is meant for tests only.
 */
#ifndef LLMFS_SYSROOT_H
#define LLMFS_SYSROOT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* The root prefix: $LLMFS_SYSROOT or "" (read on every call: tests change it). */
const char *sysroot(void);
/* root + path (path starts with '/') into buf; false if it does not fit. */
bool sysroot_path(char *buf, size_t cap, const char *path);
/* The first line of root+path without its newline and trailing blanks; -errno. */
int sysroot_read_line(const char *path, char *buf, size_t cap);
/* The whole file (at most cap-1 bytes), NUL-terminated; the length or -errno. */
int sysroot_read(const char *path, char *buf, size_t cap);
/* The file's first line as an integer; -errno (-EINVAL when it is not a number). */
int sysroot_read_i64(const char *path, int64_t *out);
/* In a "key value" or "key: value" file (/proc/meminfo, /proc/vmstat): the first number
 * after key; -ENOENT when the key is absent, -errno when the file is unreadable. */
int sysroot_read_key(const char *path, const char *key, int64_t *out);
/* Pages swapped in and out since boot (/proc/vmstat pswpin + pswpout); -1 unreadable. */
int64_t sysroot_swap_pages(void);
/* MemAvailable of /proc/meminfo in bytes; 0 unreadable. */
uint64_t sysroot_mem_available(void);

#endif
