/* text.h — a growable text buffer for rendering files. An allocation failure is
 * remembered and reported once at the end, so renderers need not check every call. */
#ifndef LLMFS_FS_TEXT_H
#define LLMFS_FS_TEXT_H

#include <stdbool.h>
#include <stddef.h>

typedef struct fs_text {
    char *buf;
    size_t len, cap;
    bool oom;
} fs_text;

void text_put(fs_text *t, const char *s, size_t n);
void text_puts(fs_text *t, const char *s);
void text_printf(fs_text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends what fill(arg, buf, cap) writes, for the core's snprintf-like *_text calls. */
void text_fill(fs_text *t, int (*fill)(void *arg, char *buf, size_t cap), void *arg);
/* Appends s with backslash, newline and tab escaped (\\, \n, \t). */
void text_escaped(fs_text *t, const char *s);
/* 0, or -ENOMEM if any append failed (the buffer is then freed). */
int text_finish(fs_text *t);
void text_free(fs_text *t);

#endif
