/* Settings table: round trips, bad values, scopes, profiles. */
#include "settings.h"
#include "testutil.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char big_a[16384], big_b[16384];

START_TEST(defaults_are_valid_and_round_trip)
{
    llmfs_settings a, b;
    settings_init(&a);
    settings_init(&b);
    const llmfs_setting_info *t;
    int n = llmfs_settings_table(&t);
    ck_assert_int_eq(n, SETTINGS_N);
    static const char *required[] = {
        "temp", "top_k", "top_p", "min_p", "repeat_penalty", "repeat_last_n", "seed", "n_predict",
        "system", "mode", "ctx", "parallel", "batch", "ubatch", "cache_type_k", "cache_type_v",
        "flash_attn", "threads", "threads_batch", "ngl", "override_tensor", "n_cpu_moe", "fit",
        "fit_target", "fit_ctx", "vram_limit", "mmap", "mlock", "profile", "idle_unload",
        "session_idle", "mountpoint", "model_dirs", "max_prompt_bytes", "max_sessions",
        "max_ctl_line", "allow_other", "file_mode", "dir_mode"};
    for (size_t r = 0; r < sizeof required / sizeof required[0]; r++)
        ck_assert_msg(settings_find(required[r]) >= 0, "%s missing", required[r]);
    ck_assert_int_eq(settings_find("ctk"), settings_find("cache_type_k"));
    ck_assert_int_eq(settings_find("ctv"), settings_find("cache_type_v"));
    for (int i = 0; i < n; i++) {
        char v[256];
        ck_assert_int_ge(settings_get(&a, t[i].name, v, sizeof v), 0);
        /* the default text of the table parses to the value printed back */
        llmfs_error e = {0};
        ck_assert_msg(settings_set(&b, 7, t[i].name, t[i].def, &e) == 0, "%s: %s", t[i].name, e.msg);
        char w[256];
        settings_get(&b, t[i].name, w, sizeof w);
        ck_assert_str_eq(v, w);
        ck_assert_ptr_nonnull(t[i].help);
        ck_assert_int_ne(t[i].scope, 0);
        ck_assert_msg(t[i].applies && (strcmp(t[i].applies, "now") == 0 || strcmp(t[i].applies, "kv") == 0 ||
                                       strcmp(t[i].applies, "scratch") == 0 || strcmp(t[i].applies, "load") == 0),
                      "%s: applies '%s'", t[i].name, t[i].applies ? t[i].applies : "(null)");
    }
    settings_clear(&a);
    settings_clear(&b);
}
END_TEST

/* A value for each setting different from the default, valid for it. */
static const char *other_value(const llmfs_setting_info *in)
{
    static char buf[128];
    if (strcmp(in->type, "int") == 0) {
        long long lo, hi;
        sscanf(in->range, "%lld..%lld", &lo, &hi);
        long long v = atoll(in->def) + 3;
        if (v > hi)
            v = lo;
        snprintf(buf, sizeof buf, "%lld", v);
    } else if (strcmp(in->type, "octal") == 0) {
        snprintf(buf, sizeof buf, "%s", strcmp(in->def, "0640") == 0 ? "0600" : "0640");
    } else if (strcmp(in->type, "float") == 0) {
        const char *dots = strstr(in->range, "..");
        ck_assert_ptr_nonnull(dots);
        double lo = strtod(in->range, NULL), hi = strtod(dots + 2, NULL);
        snprintf(buf, sizeof buf, "%.9g", lo + (hi - lo) * 0.37);
    } else if (strcmp(in->type, "bool") == 0) {
        snprintf(buf, sizeof buf, "%s", strcmp(in->def, "on") == 0 ? "off" : "on");
    } else if (strcmp(in->type, "enum") == 0) {
        const char *bar = strrchr(in->range, '|');
        snprintf(buf, sizeof buf, "%s", bar ? bar + 1 : in->range);
    } else if (strcmp(in->type, "cpus") == 0) {
        snprintf(buf, sizeof buf, "0-1,3");
    } else if (strcmp(in->type, "text") == 0) {
        snprintf(buf, sizeof buf, "You are  a poet.\\nLine two \\\\ with backslash");
    } else {
        snprintf(buf, sizeof buf, "/some/path:with spaces");
    }
    return buf;
}

START_TEST(every_setting_round_trips_through_text)
{
    llmfs_settings a, b;
    settings_init(&a);
    settings_init(&b);
    const llmfs_setting_info *t;
    int n = llmfs_settings_table(&t);
    for (int i = 0; i < n; i++) {
        if (strcmp(t[i].name, "profile") == 0)
            continue; /* a preset changes other keys; tested below */
        char before[256], after[256];
        settings_get(&a, t[i].name, before, sizeof before);
        llmfs_error e = {0};
        const char *v = other_value(&t[i]);
        ck_assert_msg(settings_set(&a, 7, t[i].name, v, &e) == 0, "%s=%s: %s", t[i].name, v, e.msg);
        settings_get(&a, t[i].name, after, sizeof after);
        ck_assert_msg(strcmp(before, after) != 0, "%s did not change (%s)", t[i].name, after);
        ck_assert(settings_is_explicit(&a, t[i].name));
    }
    /* the whole text written back line by line reproduces every value */
    int len = settings_text(&a, 7, big_a, sizeof big_a);
    ck_assert_int_lt(len, (int)sizeof big_a);
    char *save = NULL;
    char *copy = strdup(big_a);
    int lines = 0;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        llmfs_error e = {0};
        ck_assert_msg(settings_set_line(&b, 7, line, &e) == 0, "line '%s': %s", line, e.msg);
        lines++;
    }
    free(copy);
    ck_assert_int_eq(lines, n);
    settings_text(&b, 7, big_b, sizeof big_b);
    ck_assert_str_eq(big_a, big_b);
    char sys[256];
    settings_get(&b, "system", sys, sizeof sys);
    ck_assert_str_eq(sys, "You are  a poet.\\nLine two \\\\ with backslash");
    ck_assert_str_eq(b.system, "You are  a poet.\nLine two \\ with backslash");
    settings_clear(&a);
    settings_clear(&b);
}
END_TEST

static void expect_rejected(llmfs_settings *s, int scope, const char *key, const char *value, int code)
{
    settings_text(s, 7, big_a, sizeof big_a);
    llmfs_error e = {0};
    int rc = settings_set(s, scope, key, value, &e);
    ck_assert_msg(rc == -code, "%s=%s gave %d, expected %d", key, value, rc, -code);
    ck_assert_int_eq(e.code, code);
    ck_assert_msg(e.msg[0] != 0, "no reason for %s=%s", key, value);
    settings_text(s, 7, big_b, sizeof big_b);
    ck_assert_msg(strcmp(big_a, big_b) == 0, "%s=%s changed the settings", key, value);
}

START_TEST(bad_values_are_refused_and_change_nothing)
{
    llmfs_settings s;
    settings_init(&s);
    expect_rejected(&s, 7, "temp", "hot", EINVAL);
    expect_rejected(&s, 7, "temp", "-0.1", EINVAL);
    expect_rejected(&s, 7, "temp", "101", EINVAL);
    expect_rejected(&s, 7, "temp", "nan", EINVAL);
    expect_rejected(&s, 7, "temp", "", EINVAL);
    expect_rejected(&s, 7, "top_k", "4.5", EINVAL);
    expect_rejected(&s, 7, "top_k", "-1", EINVAL);
    expect_rejected(&s, 7, "top_p", "1.5", EINVAL);
    expect_rejected(&s, 7, "ctx", "8", EINVAL);
    expect_rejected(&s, 7, "ctx", "99999999999999999999", EINVAL);
    expect_rejected(&s, 7, "seed", "-2", EINVAL);
    expect_rejected(&s, 7, "cache_type_k", "q5_1", EINVAL);
    expect_rejected(&s, 7, "ctv", "f32", EINVAL);
    expect_rejected(&s, 7, "flash_attn", "maybe", EINVAL);
    expect_rejected(&s, 7, "mode", "poem", EINVAL);
    expect_rejected(&s, 7, "file_mode", "0999", EINVAL);
    expect_rejected(&s, 7, "file_mode", "01777", EINVAL);
    expect_rejected(&s, 7, "profile", "text-1gb", EINVAL);
    expect_rejected(&s, 7, "model_dirs", "a\nb", EINVAL);
    expect_rejected(&s, 7, "tmep", "0.5", ENOENT);
    expect_rejected(&s, 7, "", "0.5", ENOENT);
    /* scopes: a session cannot set model or daemon settings, a model not daemon ones */
    expect_rejected(&s, LLMFS_SCOPE_SESSION, "ctx", "1024", EINVAL);
    expect_rejected(&s, LLMFS_SCOPE_SESSION, "mountpoint", "/x", EINVAL);
    expect_rejected(&s, LLMFS_SCOPE_MODEL | LLMFS_SCOPE_SESSION, "max_sessions", "3", EINVAL);
    llmfs_error e = {0};
    ck_assert_int_eq(settings_set(&s, LLMFS_SCOPE_SESSION, "temp", "0.25", &e), 0);
    ck_assert_int_eq(settings_set(&s, LLMFS_SCOPE_MODEL, "ctx", "1024", &e), 0);
    ck_assert_int_eq(s.ctx, 1024);
    ck_assert(s.temp == 0.25f);
    settings_clear(&s);
}
END_TEST

START_TEST(line_parsing)
{
    llmfs_settings s;
    settings_init(&s);
    llmfs_error e = {0};
    ck_assert_int_eq(settings_set_line(&s, 7, "temp 0.5\n", &e), 0);
    ck_assert(s.temp == 0.5f);
    ck_assert_int_eq(settings_set_line(&s, 7, "  top_k=7", &e), 0);
    ck_assert_int_eq(s.top_k, 7);
    ck_assert_int_eq(settings_set_line(&s, 7, "top_p = 0.5 \r\n", &e), 0);
    ck_assert(s.top_p == 0.5f);
    ck_assert_int_eq(settings_set_line(&s, 7, "ctk q4_0", &e), 0);
    ck_assert_int_eq(s.cache_type_k, CACHE_Q4_0);
    ck_assert_int_eq(settings_set_line(&s, 7, "ctv Q8_0", &e), 0);
    ck_assert_int_eq(s.cache_type_v, CACHE_Q8_0);
    ck_assert_int_eq(settings_set_line(&s, 7, "flash_attn true", &e), 0);
    ck_assert(s.flash_attn);
    ck_assert_int_eq(settings_set_line(&s, 7, "system   Be brief.   Very brief.  ", &e), 0);
    ck_assert_str_eq(s.system, "Be brief.   Very brief.");
    ck_assert_int_eq(settings_set_line(&s, 7, "", &e), 0);
    ck_assert_int_eq(settings_set_line(&s, 7, "# a comment", &e), 0);
    ck_assert_int_eq(settings_set_line(&s, 7, "temp 0.1\ntop_k 3", &e), -EINVAL);
    ck_assert_int_eq(settings_set_line(&s, 7, "bogus 1", &e), -ENOENT);
    ck_assert_int_eq(settings_set_line(&s, 7, "seed 4294967295", &e), 0);
    ck_assert_int_eq(s.seed, 4294967295LL);
    ck_assert_int_eq(settings_set_line(&s, 7, "file_mode 0640", &e), 0);
    ck_assert_int_eq(s.file_mode, 0640);
    char v[32];
    settings_get(&s, "file_mode", v, sizeof v);
    ck_assert_str_eq(v, "0640");
    settings_clear(&s);
}
END_TEST

/* Malformed ctl lines, one per row: the errno and the whole reason, and nothing changes. */
START_TEST(malformed_lines_are_refused_with_their_reason)
{
    static const struct {
        int scope;
        const char *line;
        int code;
        const char *msg;
    } bad[] = {
        {7, "temp hot", EINVAL, "temp: 'hot' is not a number"},
        {7, "temp", EINVAL, "temp: '' is not a number"},
        {7, "temp =", EINVAL, "temp: '' is not a number"},
        {7, "temp nan", EINVAL, "temp: 'nan' is not a number"},
        {7, "temp inf", EINVAL, "temp: 'inf' is not a number"},
        {7, "temp 1e999", EINVAL, "temp: '1e999' is not a number"},
        {7, "temp 0.5x", EINVAL, "temp: '0.5x' is not a number"},
        {7, "temp -0.5", EINVAL, "temp: -0.5 is out of range 0..100"},
        {7, "temp 100.5", EINVAL, "temp: 100.5 is out of range 0..100"},
        {7, "top_p = 1.01", EINVAL, "top_p: 1.01 is out of range 0..1"},
        {7, "top_k 4.5", EINVAL, "top_k: '4.5' is not an integer"},
        {7, "top_k 0x10", EINVAL, "top_k: '0x10' is not an integer"},
        {7, "top_k 1 2", EINVAL, "top_k: '1 2' is not an integer"},
        {7, "top_k -1", EINVAL, "top_k: -1 is out of range 0..1000000"},
        {7, "top_k 99999999999999999999", EINVAL, "top_k: '99999999999999999999' is not an integer"},
        {7, "seed -2", EINVAL, "seed: -2 is out of range -1..4294967295"},
        {7, "seed 4294967296", EINVAL, "seed: 4294967296 is out of range -1..4294967295"},
        {7, "ctx 15", EINVAL, "ctx: 15 is out of range 16..16777216"},
        {7, "file_mode 0999", EINVAL, "file_mode: '0999' is not an octal number"},
        {7, "file_mode 01000", EINVAL, "file_mode: 01000 is out of range 0..0777"},
        {7, "flash_attn maybe", EINVAL, "flash_attn: 'maybe' is not on or off"},
        {7, "flash_attn", EINVAL, "flash_attn: '' is not on or off"},
        {7, "mode poem", EINVAL, "mode: 'poem' is not one of chat|raw"},
        {7, "ctk q5_1", EINVAL, "cache_type_k: 'q5_1' is not one of f16|q8_0|q4_0"},
        {7, "cache_type_v f16|q8_0", EINVAL, "cache_type_v: 'f16|q8_0' is not one of f16|q8_0|q4_0"},
        {7, "profile text-1gb", EINVAL, "profile: no profile 'text-1gb' (have text-12gb|text-24gb|vision-12gb|mtp)"},
        {7, "model_dirs a\\nb", EINVAL, "model_dirs: value has a newline"},
        {7, "temp 0.1\ntop_k 3", EINVAL, "temp: one setting per line"},
        {7, "system two\nlines", EINVAL, "system: one setting per line"},
        {7, "bogus 1", ENOENT, "unknown setting 'bogus'"},
        {7, "=5", ENOENT, "unknown setting ''"},
        {7, "Temp 0.5", ENOENT, "unknown setting 'Temp'"},
        {7, "te\x01mp 0.5", ENOENT, "unknown setting 'te mp'"},
        {7, "temp 0.\x01", EINVAL, "temp: '0. ' is not a number"},
        {LLMFS_SCOPE_SESSION, "ctx 1024", EINVAL, "ctx is a model setting and cannot be set here"},
        {LLMFS_SCOPE_SESSION, "mountpoint /x", EINVAL, "mountpoint is a daemon (root ctl) setting and cannot be set here"},
        {LLMFS_SCOPE_MODEL, "max_sessions 3", EINVAL, "max_sessions is a daemon (root ctl) setting and cannot be set here"},
    };
    llmfs_settings s;
    settings_init(&s);
    llmfs_error e = {0};
    ck_assert_int_eq(settings_set_line(&s, 7, "system kept", &e), 0);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        settings_text(&s, 7, big_a, sizeof big_a);
        uint8_t marks[SETTINGS_N];
        memcpy(marks, s.explicit_set, sizeof marks);
        e = (llmfs_error){0};
        int rc = settings_set_line(&s, bad[i].scope, bad[i].line, &e);
        ck_assert_msg(rc == -bad[i].code, "'%s' gave %d, expected %d", bad[i].line, rc, -bad[i].code);
        ck_assert_int_eq(e.code, bad[i].code);
        ck_assert_str_eq(e.msg, bad[i].msg);
        settings_text(&s, 7, big_b, sizeof big_b);
        ck_assert_msg(strcmp(big_a, big_b) == 0, "'%s' changed the settings", bad[i].line);
        ck_assert_msg(memcmp(marks, s.explicit_set, sizeof marks) == 0, "'%s' changed the marks", bad[i].line);
    }
    /* a long key is refused by its first 63 bytes */
    char line[200];
    memset(line, 'k', 100);
    strcpy(line + 100, " 1");
    ck_assert_int_eq(settings_set_line(&s, 7, line, &e), -ENOENT);
    ck_assert_int_eq((int)strlen(e.msg), (int)strlen("unknown setting ''") + 63);
    settings_clear(&s);
}
END_TEST

/* Values that look like the line syntax still come back from the settings text. */
START_TEST(text_values_that_look_like_syntax_round_trip)
{
    static const char *const lines[] = {
        "system ==x", "system = = two equals", "system #not a comment", "model_dirs =/a:/b",
        "mountpoint a\\\\nb", "system tab\there",
    };
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        llmfs_settings a, b;
        settings_init(&a);
        settings_init(&b);
        llmfs_error e = {0};
        ck_assert_msg(settings_set_line(&a, 7, lines[i], &e) == 0, "%s: %s", lines[i], e.msg);
        settings_text(&a, 7, big_a, sizeof big_a);
        char *save = NULL, *copy = strdup(big_a);
        for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
            ck_assert_msg(settings_set_line(&b, 7, l, &e) == 0, "%s: %s", l, e.msg);
        free(copy);
        settings_text(&b, 7, big_b, sizeof big_b);
        ck_assert_msg(strcmp(big_a, big_b) == 0, "'%s' did not survive the text", lines[i]);
        settings_clear(&a);
        settings_clear(&b);
    }
    llmfs_settings s;
    settings_init(&s);
    ck_assert_int_eq(settings_set_line(&s, 7, "system ==x", NULL), 0);
    ck_assert_str_eq(s.system, "=x");
    ck_assert_int_eq(settings_set_line(&s, 7, "mountpoint a\\\\nb", NULL), 0);
    ck_assert_str_eq(s.mountpoint, "a\\nb");
    settings_clear(&s);
}
END_TEST

START_TEST(profiles_apply_their_presets)
{
    static const struct {
        const char *name;
        int fit_target, ctx, ctk, ctv, parallel, batch, ubatch;
    } want[] = {
        {"text-12gb", 512, 65536, CACHE_Q8_0, CACHE_Q8_0, 1, 1024, -1},
        {"text-24gb", 768, 131072, CACHE_Q8_0, CACHE_Q8_0, 2, 1024, -1},
        {"vision-12gb", 2048, 65536, CACHE_Q8_0, CACHE_Q8_0, 1, 256, 512},
        {"mtp", 512, 65536, CACHE_F16, CACHE_F16, 1, 1024, -1},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        llmfs_settings s;
        settings_init(&s);
        s.ubatch = 77;
        ck_assert_ptr_nonnull(llmfs_profile(want[i].name));
        llmfs_error e = {0};
        ck_assert_int_eq(settings_set_line(&s, LLMFS_SCOPE_MODEL, want[i].name[0] ? "profile x" : "", &e),
                         -EINVAL);
        char line[64];
        snprintf(line, sizeof line, "profile %s", want[i].name);
        ck_assert_msg(settings_set_line(&s, LLMFS_SCOPE_MODEL, line, &e) == 0, "%s", e.msg);
        ck_assert_int_eq(s.fit_target, want[i].fit_target);
        ck_assert_int_eq(s.ctx, want[i].ctx);
        ck_assert_int_eq(s.cache_type_k, want[i].ctk);
        ck_assert_int_eq(s.cache_type_v, want[i].ctv);
        ck_assert_int_eq(s.parallel, want[i].parallel);
        ck_assert_int_eq(s.batch, want[i].batch);
        ck_assert_int_eq(s.ubatch, want[i].ubatch < 0 ? 77 : want[i].ubatch);
        ck_assert_str_eq(s.profile, want[i].name);
        ck_assert(settings_is_explicit(&s, "ctx"));
        /* text written back applies the preset first, then the later explicit values */
        ck_assert_int_eq(settings_set_line(&s, 7, "ctx 2048", &e), 0);
        settings_text(&s, 7, big_a, sizeof big_a);
        ck_assert(strstr(big_a, "profile ") < strstr(big_a, "\nctx "));
        llmfs_settings b;
        settings_init(&b);
        char *save = NULL, *copy = strdup(big_a);
        for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
            ck_assert_int_eq(settings_set_line(&b, 7, l, &e), 0);
        free(copy);
        ck_assert_int_eq(b.ctx, 2048);
        ck_assert_int_eq(b.fit_target, want[i].fit_target);
        settings_clear(&b);
        settings_clear(&s);
    }
    ck_assert_ptr_null(llmfs_profile("nope"));
    ck_assert_ptr_null(llmfs_profile(NULL));
}
END_TEST

START_TEST(copy_is_deep_and_explicit_marks_follow)
{
    llmfs_settings a, b;
    settings_init(&a);
    ck_assert(!settings_is_explicit(&a, "temp"));
    ck_assert_int_eq(settings_set_default(&a, "temp", "0.3"), 0);
    ck_assert(!settings_is_explicit(&a, "temp"));
    ck_assert_int_eq(settings_set(&a, 7, "system", "hello", NULL), 0);
    settings_copy(&b, &a);
    ck_assert(settings_is_explicit(&b, "system"));
    ck_assert_int_eq(settings_set(&a, 7, "system", "changed", NULL), 0);
    ck_assert_str_eq(b.system, "hello");
    ck_assert(b.temp == 0.3f);
    settings_clear(&a);
    settings_clear(&b);
}
END_TEST

START_TEST(markdown_lists_every_setting)
{
    int n = settings_markdown(NULL, 0);
    char *md = malloc((size_t)n + 1);
    settings_markdown(md, (size_t)n + 1);
    const llmfs_setting_info *t;
    int k = llmfs_settings_table(&t);
    for (int i = 0; i < k; i++) {
        char cell[80];
        snprintf(cell, sizeof cell, "| `%s` |", t[i].name);
        ck_assert_msg(strstr(md, cell), "%s missing", t[i].name);
    }
    free(md);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("settings");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, defaults_are_valid_and_round_trip);
    tcase_add_test(tc, every_setting_round_trips_through_text);
    tcase_add_test(tc, bad_values_are_refused_and_change_nothing);
    tcase_add_test(tc, line_parsing);
    tcase_add_test(tc, malformed_lines_are_refused_with_their_reason);
    tcase_add_test(tc, text_values_that_look_like_syntax_round_trip);
    tcase_add_test(tc, profiles_apply_their_presets);
    tcase_add_test(tc, copy_is_deep_and_explicit_marks_follow);
    tcase_add_test(tc, markdown_lists_every_setting);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(make_suite());
}
