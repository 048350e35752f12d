/* fuzz_settings.c — libFuzzer target for the ctl line parser and the settings table.
 *
 * The first byte picks the scopes a caller may set; the rest is split into lines, each
 * applied to one settings struct. Invariants: a refused line leaves the settings text
 * unchanged; after every line the whole text, written back line by line into fresh
 * settings, is accepted and reproduces itself exactly. */
#include "settings.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                      \
    do {                                                                              \
        if (!(c)) {                                                                   \
            fprintf(stderr, "fuzz_settings: check failed: %s (line %d)\n", #c, __LINE__); \
            abort();                                                                  \
        }                                                                             \
    } while (0)

static char *text_of(const llmfs_settings *s)
{
    int n = settings_text(s, 7, NULL, 0);
    char *t = malloc((size_t)n + 1);
    CHECK(t);
    CHECK(settings_text(s, 7, t, (size_t)n + 1) == n);
    return t;
}

static void check_round_trip(const llmfs_settings *s)
{
    char *t = text_of(s);
    llmfs_settings b;
    settings_init(&b);
    char *save = NULL, *copy = strdup(t);
    CHECK(copy);
    for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        llmfs_error e = {0};
        int rc = settings_set_line(&b, 7, l, &e);
        if (rc != 0)
            fprintf(stderr, "refused '%s': %s\n", l, e.msg);
        CHECK(rc == 0);
    }
    char *t2 = text_of(&b);
    CHECK(strcmp(t, t2) == 0);
    free(copy);
    free(t);
    free(t2);
    settings_clear(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1 || size > 4096)
        return 0;
    int scope = (data[0] & 7) ? (data[0] & 7) : 7;
    char *in = malloc(size);
    CHECK(in);
    memcpy(in, data + 1, size - 1);
    in[size - 1] = 0;
    llmfs_settings s;
    settings_init(&s);
    char *save = NULL;
    for (char *l = strtok_r(in, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        char *before = text_of(&s);
        llmfs_error e = {0};
        int rc = settings_set_line(&s, scope, l, &e);
        char *after = text_of(&s);
        if (rc < 0) {
            CHECK(e.code == -rc && e.msg[0]);
            CHECK(strcmp(before, after) == 0);
        }
        free(before);
        free(after);
        check_round_trip(&s);
    }
    settings_clear(&s);
    free(in);
    return 0;
}
