/* fuzz_settings.c — libFuzzer target for the settings (ctl) parser.
 *
 * Input layout: one byte holding the caller's scope mask (bits 0-2) and the line
 * separator (bit 3: NUL, so that a line may hold a newline; else newline), then the
 * lines. Each line goes through settings_set_line, as a ctl write does, and (on a copy)
 * its first word and the rest through settings_set, as an INI key or a command-line flag
 * does. A refused line
 * must give a negative errno with a one-line reason and leave the settings exactly as
 * they were; an accepted one must leave settings whose text, written back line by line
 * into fresh settings, is accepted and reproduces the same text.
 */
#include "settings.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                       \
    do {                                                                               \
        if (!(c)) {                                                                    \
            fprintf(stderr, "fuzz_settings: check failed: %s (line %d)\n", #c, __LINE__); \
            abort();                                                                   \
        }                                                                              \
    } while (0)

#define TEXT_CAP (1 << 20)
static char before[TEXT_CAP], after[TEXT_CAP], again[TEXT_CAP];
static char verified[TEXT_CAP]; /* the last text known to read back (the check is costly) */

static int text_of(const llmfs_settings *s, char *buf)
{
    int n = settings_text(s, 7, buf, TEXT_CAP);
    CHECK(n >= 0 && n < TEXT_CAP);
    return n;
}

/* The text of s read back into fresh settings gives the same text. */
static void check_round_trip(const llmfs_settings *s)
{
    text_of(s, after);
    if (strcmp(after, verified) == 0)
        return;
    llmfs_settings b;
    settings_init(&b);
    char *save = NULL;
    char *copy = strdup(after);
    CHECK(copy);
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        llmfs_error e = {0};
        if (settings_set_line(&b, 7, line, &e) != 0) {
            fprintf(stderr, "fuzz_settings: the settings text does not read back: '%s': %s\n", line, e.msg);
            abort();
        }
    }
    free(copy);
    text_of(&b, again);
    if (strcmp(after, again) != 0) {
        fprintf(stderr, "fuzz_settings: the text changed on the way back:\n%s---\n%s", after, again);
        abort();
    }
    settings_clear(&b);
    memcpy(verified, after, strlen(after) + 1);
}

static void check_refusal(int rc, const llmfs_error *e, const llmfs_settings *s, const uint8_t *flags_before)
{
    CHECK(rc == -EINVAL || rc == -ENOENT || rc == -ENOMEM);
    CHECK(e->code == -rc);
    CHECK(e->msg[0] && !strchr(e->msg, '\n'));
    text_of(s, after);
    if (strcmp(before, after) != 0) {
        fprintf(stderr, "fuzz_settings: a refused line (%s) changed the settings\n", e->msg);
        abort();
    }
    CHECK(memcmp(flags_before, s->explicit_set, sizeof s->explicit_set) == 0);
}

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void one_line(llmfs_settings *s, int mask, const char *line)
{
    uint8_t flags[SETTINGS_N];

    /* the ctl path */
    text_of(s, before);
    memcpy(flags, s->explicit_set, sizeof flags);
    llmfs_error e = {0};
    int rc = settings_set_line(s, mask, line, &e);
    if (rc)
        check_refusal(rc, &e, s, flags);
    else
        check_round_trip(s);

    /* the key/value path, on a copy: the first word, and the rest after one space or '=' */
    size_t kl = strcspn(line, " =");
    char *key = strndup(line, kl);
    CHECK(key);
    const char *value = line[kl] ? line + kl + 1 : "";
    llmfs_settings c;
    settings_copy(&c, s);
    text_of(&c, before);
    memcpy(flags, c.explicit_set, sizeof flags);
    e = (llmfs_error){0};
    rc = settings_set(&c, mask, key, value, &e);
    if (rc) {
        check_refusal(rc, &e, &c, flags);
    } else {
        CHECK(settings_find(key) >= 0);
        /* Values with whitespace at an end are not promised to survive the text
         * (a ctl line is trimmed); anything else is. */
        size_t vl = strlen(value);
        if (!vl || (!is_ws(value[0]) && !is_ws(value[vl - 1])))
            check_round_trip(&c);
    }
    settings_clear(&c);
    free(key);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    int mask = data[0] & 7;
    char sep = data[0] & 8 ? 0 : '\n';
    char *buf = malloc(size);
    CHECK(buf);
    memcpy(buf, data + 1, size - 1);
    buf[size - 1] = 0;
    for (size_t i = 0; sep && i < size - 1; i++)
        if (buf[i] == sep)
            buf[i] = 0;
    llmfs_settings s;
    settings_init(&s);
    for (char *p = buf; p < buf + size;) {
        one_line(&s, mask, p);
        p += strlen(p) + 1;
    }
    /* a copy is independent of its source */
    llmfs_settings c;
    settings_copy(&c, &s);
    text_of(&s, before);
    text_of(&c, after);
    CHECK(strcmp(before, after) == 0);
    settings_clear(&s);
    settings_clear(&c);
    free(buf);
    return 0;
}
