/* stopstr.h — stop strings: a reply ends where its answer text reaches one of them, and
 * the stop string itself is never emitted.
 *
 * The session setting stop_strings holds the list as one line: strings separated by '|',
 * with the escapes \| (a bar), \n, \t, \r, \s (a space: the value is trimmed, so a space at
 * either end must be written so) and \\ (so any string fits a ctl line and the settings
 * text reads back as written). The filter sits between the generated answer
 * and the output: text that may be the start of a stop string is held back until the
 * next bytes show whether it is one.
 */
#ifndef LLMFS_STOPSTR_H
#define LLMFS_STOPSTR_H

#include <stdbool.h>
#include <stddef.h>

typedef struct stop_filter {
    char **stops;    /* NUL-free strings, none empty */
    size_t *lens;
    int n;
    char *held;      /* text not yet emitted: a possible start of a stop string */
    size_t n_held, cap_held;
    bool hit;        /* a stop string was reached: nothing more is emitted */
} stop_filter;

typedef void (*stop_emit)(void *arg, const char *text, size_t n);

/* Parses a stop_strings value into f (zeroed first). Empty strings are skipped.
 * 0 or -ENOMEM (f is then empty). */
int stop_filter_init(stop_filter *f, const char *list);
void stop_filter_free(stop_filter *f);
/* Whether the filter has any stop string (without one it passes text straight on). */
static inline bool stop_filter_active(const stop_filter *f) { return f->n > 0; }
/* Takes answer text; emits what is certainly not part of a stop string. Returns true once
 * a stop string has been reached (the text before it emitted, the rest dropped), or
 * -ENOMEM as a negative value when the held text could not grow. */
int stop_filter_push(stop_filter *f, const char *text, size_t n, stop_emit emit, void *arg);
/* At the end of a reply that ended otherwise: the held text was not a stop string. */
void stop_filter_flush(stop_filter *f, stop_emit emit, void *arg);
#endif
