/* test_stopstr.c — stop strings: the list's escapes, and the filter fed whole and one
 * byte at a time (a stop string cut anywhere), the stop string itself never emitted. */
#include "testutil.h"

#include "stopstr.h"

#include <string.h>

typedef struct sink {
    char out[512];
    size_t n;
} sink;

static void collect(void *arg, const char *t, size_t n)
{
    sink *k = arg;
    ck_assert(k->n + n < sizeof k->out);
    memcpy(k->out + k->n, t, n);
    k->n += n;
    k->out[k->n] = 0;
}

/* Feeds reply through a filter of list; the emitted text must be want, and the filter
 * must have hit a stop string exactly when hit is set. */
static void check(const char *list, const char *reply, const char *want, bool hit)
{
    for (int step = 0; step < 3; step++) {
        sink k = {0};
        stop_filter f;
        ck_assert_int_eq(stop_filter_init(&f, list), 0);
        size_t n = strlen(reply), chunk = step == 0 ? 1 : step == 1 ? 3 : n ? n : 1;
        int rc = 0;
        for (size_t i = 0; i < n && rc == 0; i += chunk)
            rc = stop_filter_push(&f, reply + i, n - i < chunk ? n - i : chunk, collect, &k);
        ck_assert_int_ge(rc, 0);
        stop_filter_flush(&f, collect, &k);
        ck_assert_msg(!strcmp(k.out, want), "list '%s', reply '%s' (chunk %zu): '%s', want '%s'", list, reply,
                      chunk, k.out, want);
        ck_assert_msg(f.hit == hit, "list '%s', reply '%s': hit %d", list, reply, f.hit);
        stop_filter_free(&f);
    }
}

START_TEST(no_stops_pass_through)
{
    check("", "Hello world", "Hello world", false);
}
END_TEST

START_TEST(stop_ends_before_it)
{
    check("world", "Hello world and more", "Hello ", true);
    check("and|wor", "Hello world and more", "Hello ", true);   /* the earliest wins */
    check("xyz|Hello", "Hello world", "", true);                /* at the very start */
    check("worlds", "Hello world", "Hello world", false);       /* a held start that was not one */
    check("ll|llo w", "Hello world", "He", true);
}
END_TEST

START_TEST(escapes)
{
    check("\\n\\n", "one\ntwo\n\nthree", "one\ntwo", true);
    check("a\\|b", "xx a|b yy", "xx ", true);
    check("\\\\end", "path\\end here", "path", true);
    check("\\sa\\s", "was a dog", "was", true);
    check("|||", "nothing stops", "nothing stops", false);      /* empty strings are skipped */
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("stopstr");
    TCase *tc = tcase_create("filter");
    tcase_add_test(tc, no_stops_pass_through);
    tcase_add_test(tc, stop_ends_before_it);
    tcase_add_test(tc, escapes);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(make_suite());
}
