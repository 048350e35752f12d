/* unsupported.c — THE table of what the test assets hold that llmfs does not run yet.
 *
 * Every case of ../shared/fixtures and every tokenizer vector set is run unless a row
 * here names its architecture, its weight type, its case kind or its vocabulary; such a
 * case is skipped loudly (name and reason on stderr), never silently. Each row names
 * the issue whose work removes it. A case of a family or type absent from this table
 * never skips.
 */
#include "fixture.h"

#include <stdio.h>
#include <string.h>

/* BY_ARCH_KIND: "arch/kind", the cases of one kind for one architecture */
typedef enum { BY_ARCH, BY_TYPE, BY_KIND, BY_ARCH_KIND, BY_VOCAB } match_by;

static const struct {
    match_by by;
    const char *value;  /* meta.txt arch / the model file's weight type / case kind / vector file */
    const char *why;
} unsupported[] = {
    /* every family, type, case kind and vocabulary of the test assets runs today; the
     * row without a value ends the table */
    {BY_ARCH, NULL, NULL},
};

static const char *lookup(match_by by, const char *value)
{
    for (size_t i = 0; unsupported[i].value; i++)
        if (unsupported[i].by == by && !strcmp(unsupported[i].value, value))
            return unsupported[i].why;
    return NULL;
}

const char *fixture_unsupported(const char *arch, const char *wtype, const char *kind)
{
    const char *why = lookup(BY_ARCH, arch);
    if (!why)
        why = lookup(BY_TYPE, wtype);
    if (!why)
        why = lookup(BY_KIND, kind);
    if (!why) {
        char ak[64];
        snprintf(ak, sizeof ak, "%s/%s", arch, kind);
        why = lookup(BY_ARCH_KIND, ak);
    }
    return why;
}

const char *vocab_unsupported(const char *vectors)
{
    return lookup(BY_VOCAB, vectors);
}

void test_say_skip(const char *what, const char *why)
{
    fprintf(stderr, "*** SKIP %s: %s not supported yet\n", what, why);
}
