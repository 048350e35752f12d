/* The file server's ctl lines and configuration file, without a mount: line splitting,
 * limits, the mount's policy for root lines, and the INI reader. */
#include "testutil.h"

#ifdef LLMFS_HAVE_FS
#include "conf.h"
#include "ctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static llmfs *lf;
static char dir[64];

static void setup(void)
{
    llmfs_error err = {0};
    lf = llmfs_new(&err);
    ck_assert_msg(lf != NULL, "%s", err.msg);
    snprintf(dir, sizeof dir, "/tmp/llmfs-fsctl.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void teardown(void)
{
    llmfs_free(lf);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}

static const char *get(const char *key)
{
    static char v[256];
    ck_assert_int_ge(llmfs_get(lf, key, v, sizeof v), 0);
    return v;
}

static int write_str(const ctl_target *t, const char *s, llmfs_error *err)
{
    return ctl_write(t, s, strlen(s), 100, err);
}

START_TEST(lines_apply_in_order_and_stop_at_the_first_failure)
{
    ctl_target root = {.kind = CTL_ROOT, .lf = lf};
    llmfs_error err = {0};
    ck_assert_int_eq(write_str(&root, "temp 0.25\n\n# a comment\ntop_k 7", &err), 0);
    ck_assert_str_eq(get("temp"), "0.25");
    ck_assert_str_eq(get("top_k"), "7");
    ck_assert_int_eq(write_str(&root, "temp 0.5\nno_such_key 1\ntop_k 9\n", &err), -ENOENT);
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_ptr_nonnull(strstr(err.msg, "no_such_key"));
    ck_assert_str_eq(get("temp"), "0.5");
    ck_assert_str_eq(get("top_k"), "7");
    ck_assert_int_eq(write_str(&root, "top_k lots\n", &err), -EINVAL);
    ck_assert_str_eq(get("top_k"), "7");
}
END_TEST

START_TEST(limits_and_bad_bytes)
{
    ctl_target root = {.kind = CTL_ROOT, .lf = lf};
    llmfs_error err = {0};
    char line[300];
    memset(line, 'x', sizeof line);
    memcpy(line, "system ", 7);
    ck_assert_int_eq(ctl_write(&root, line, sizeof line, 100, &err), -E2BIG);
    ck_assert_ptr_nonnull(strstr(err.msg, "max_ctl_line"));
    ck_assert_int_eq(ctl_write(&root, "temp 0.1\0x", 10, 100, &err), -EINVAL);
    ck_assert_str_ne(get("temp"), "0.1");
    /* a line of exactly the limit is fine */
    ck_assert_int_eq(ctl_write(&root, "top_k 123456789", 15, 15, &err), -EINVAL); /* out of range, not E2BIG */
    ck_assert_int_eq(ctl_write(&root, "top_k 12", 8, 8, &err), 0);
}
END_TEST

START_TEST(the_mounted_root_ctl_cannot_set_daemon_settings)
{
    ctl_target root = {.kind = CTL_ROOT, .lf = lf};
    ctl_target conf = {.kind = CTL_ROOT, .lf = lf, .trusted = true};
    llmfs_error err = {0};
    ck_assert_int_eq(write_str(&root, "model_dirs /", &err), -EPERM);
    ck_assert_int_eq(write_str(&root, "model_dirs=/", &err), -EPERM);
    ck_assert_int_eq(write_str(&root, "file_mode 0777", &err), -EPERM);
    ck_assert_int_eq(write_str(&root, "max_sessions 100000", &err), -EPERM);
    ck_assert_str_eq(get("model_dirs"), "");
    ck_assert_int_eq(ctl_set(&conf, "model_dirs", dir, &err), 0);
    ck_assert_str_eq(get("model_dirs"), dir);
    ck_assert_int_eq(ctl_set(&conf, "max_sessions", "5", &err), 0);
    ck_assert_str_eq(get("max_sessions"), "5");
}
END_TEST

START_TEST(load_names_and_paths)
{
    ctl_target root = {.kind = CTL_ROOT, .lf = lf};
    llmfs_error err = {0};
    ck_assert(ctl_model_name_ok("qwen3-8b_Q4.K"));
    ck_assert(!ctl_model_name_ok(""));
    ck_assert(!ctl_model_name_ok(".hidden"));
    ck_assert(!ctl_model_name_ok("a/b"));
    ck_assert(!ctl_model_name_ok("a b"));
    ck_assert(!ctl_model_name_ok("stats"));
    ck_assert(!ctl_model_name_ok("metrics"));
    char long_name[80];
    memset(long_name, 'a', 64);
    long_name[64] = 0;
    ck_assert(!ctl_model_name_ok(long_name));
    long_name[63] = 0;
    ck_assert(ctl_model_name_ok(long_name));
    ck_assert_int_eq(write_str(&root, "load ctl /tmp/x.gguf", &err), -EINVAL);
    ck_assert_int_eq(write_str(&root, "load m relative/x.gguf", &err), -EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "absolute"));
    ck_assert_int_eq(write_str(&root, "load m", &err), -EINVAL);
    ck_assert_int_eq(write_str(&root, "unload nothing", &err), -ENOENT);
    ck_assert_int_eq(ctl_load(lf, "m", "x.gguf", NULL, 0, &err), -EINVAL);
    ck_assert_int_eq(ctl_load(lf, "models", "/x.gguf", NULL, 0, &err), -EINVAL);
    ck_assert_int_eq(llmfs_model_names(lf, NULL, 0), 0);
}
END_TEST

START_TEST(root_text_explains_how_to_load)
{
    fs_text t = {0};
    ck_assert_int_eq(ctl_root_text(lf, &t), 0);
    ck_assert_ptr_nonnull(strstr(t.buf, "load NAME"));
    ck_assert_ptr_nonnull(strstr(t.buf, "profile=text-12gb"));
    /* every line is a comment: writing the text back is harmless */
    ctl_target root = {.kind = CTL_ROOT, .lf = lf};
    llmfs_error err = {0};
    ck_assert_int_eq(ctl_write(&root, t.buf, t.len, 1000, &err), 0);
    text_free(&t);
}
END_TEST

static const char *write_file(const char *name, const char *text)
{
    static char path[160];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs(text, f);
    fclose(f);
    return path;
}

START_TEST(conf_sections_and_relative_paths)
{
    const char *p = write_file("a.ini", "; comment\n[llmfs]\nmodel_dirs = /srv\ntemp = 0.5\n"
                                        "temp = 0.6\n\n[model small]\npath = models/s.gguf\n"
                                        "profile = text-12gb\nsystem = You are terse.\n"
                                        "[model abs]\npath = /m/a.gguf\n");
    fs_conf c;
    char msg[256];
    ck_assert_int_eq(conf_load(p, &c, msg, sizeof msg), 0);
    ck_assert_int_eq(c.n, 3);
    ck_assert_str_eq(conf_get(&c, "temp"), "0.6");
    ck_assert_str_eq(conf_get(&c, "model_dirs"), "/srv");
    ck_assert_ptr_null(conf_get(&c, "top_k"));
    ck_assert_int_eq(c.n_models, 2);
    char want[200];
    snprintf(want, sizeof want, "%s/models/s.gguf", dir);
    ck_assert_str_eq(c.models[0].name, "small");
    ck_assert_str_eq(c.models[0].path, want);
    ck_assert_int_eq(c.models[0].n_settings, 2);
    ck_assert_str_eq(c.models[0].settings[0], "profile=text-12gb");
    ck_assert_str_eq(c.models[0].settings[1], "system=You are terse.");
    ck_assert_str_eq(c.models[1].path, "/m/a.gguf");
    ck_assert_int_eq(c.models[1].n_settings, 0);
    conf_free(&c);
}
END_TEST

START_TEST(conf_errors_name_the_line)
{
    fs_conf c;
    char msg[256];
    const char *p = write_file("b.ini", "[llmfs]\ntemp = 1\n[models]\nx = 1\n");
    ck_assert_int_eq(conf_load(p, &c, msg, sizeof msg), -EINVAL);
    ck_assert_ptr_nonnull(strstr(msg, ":4:"));
    ck_assert_ptr_nonnull(strstr(msg, "[models]"));
    p = write_file("c.ini", "[model a]\nctx = 512\n");
    ck_assert_int_eq(conf_load(p, &c, msg, sizeof msg), -EINVAL);
    ck_assert_ptr_nonnull(strstr(msg, "no path"));
    p = write_file("d.ini", "temp = 1\n");
    ck_assert_int_eq(conf_load(p, &c, msg, sizeof msg), -EINVAL);
    char big[400];
    snprintf(big, sizeof big, "[llmfs]\nsystem = %0250d\n", 0);
    p = write_file("e.ini", big);
    ck_assert_int_eq(conf_load(p, &c, msg, sizeof msg), -EINVAL);
    ck_assert_ptr_nonnull(strstr(msg, ":2: line longer"));
    p = write_file("f.ini", "[llmfs]\nnot a pair\n");
    ck_assert_int_eq(conf_load(p, &c, msg, sizeof msg), -EINVAL);
    ck_assert_ptr_nonnull(strstr(msg, ":2:"));
    char missing[160];
    snprintf(missing, sizeof missing, "%s/none.ini", dir);
    ck_assert_int_eq(conf_load(missing, &c, msg, sizeof msg), -ENOENT);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("fs_ctl");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, lines_apply_in_order_and_stop_at_the_first_failure);
    tcase_add_test(tc, limits_and_bad_bytes);
    tcase_add_test(tc, the_mounted_root_ctl_cannot_set_daemon_settings);
    tcase_add_test(tc, load_names_and_paths);
    tcase_add_test(tc, root_text_explains_how_to_load);
    tcase_add_test(tc, conf_sections_and_relative_paths);
    tcase_add_test(tc, conf_errors_name_the_line);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(make_suite());
}
#else
#include <stdio.h>
int main(void)
{
    fprintf(stderr, "\n*** SKIPPED test_fs_ctl: built without the file server ***\n\n");
    return 77;
}
#endif
