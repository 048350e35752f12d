/* The file server's ctl lines, configuration file and file table, without a mount: line
 * splitting, limits, the mount's policy for root lines, the INI reader; each folder
 * holds the files llmfs(4) lists, in its order, only ctl and prompt are writable, the
 * files of a conversation need its session; and the core's rules the server asks for
 * (setting lookup, model names). */
#include "testutil.h"

#ifdef LLMFS_HAVE_FS
#include "conf.h"
#include "ctl.h"
#include "dirtab.h"

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
    /* a relative name is looked up in model_dirs, which is empty here */
    ck_assert_int_eq(write_str(&root, "load m relative/x.gguf", &err), -EACCES);
    ck_assert_ptr_nonnull(strstr(err.msg, "model_dirs"));
    ck_assert_int_eq(write_str(&root, "load m", &err), -EINVAL);
    ck_assert_int_eq(write_str(&root, "unload nothing", &err), -ENOENT);
    ck_assert_int_eq(ctl_load(lf, "m", "x.gguf", NULL, 0, &err), -EACCES);
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

/* The folder's file names in listing order, blank-separated. */
static void names(int type, char *buf, size_t cap)
{
    buf[0] = '\0';
    for (int k = dirtab_next(type, K_DIR); k; k = dirtab_next(type, k)) {
        ck_assert_int_lt(k, NODE_KINDS);
        size_t len = strlen(buf);
        snprintf(buf + len, cap - len, "%s%s", len ? " " : "", dirtab_row(k)->name);
    }
}

START_TEST(each_folder_holds_the_documented_files)
{
    char got[256];
    names(DIR_ROOT, got, sizeof got);
    ck_assert_str_eq(got, "ctl models stats metrics diag available error");
    names(DIR_MODEL, got, sizeof got);
    ck_assert_str_eq(got, "ctl prompt image output transcript reasoning stats placement kv info error clone");
    names(DIR_SESSION, got, sizeof got);
    ck_assert_str_eq(got, "ctl prompt image output transcript reasoning stats error");
    ck_assert_ptr_null(dirtab_row(K_DIR));
    ck_assert_ptr_null(dirtab_row(0));
    ck_assert_ptr_null(dirtab_row(NODE_KINDS));
}
END_TEST

START_TEST(lookups_find_a_file_only_in_its_folders)
{
    int k = dirtab_find(DIR_MODEL, "clone");
    ck_assert_int_gt(k, K_DIR);
    ck_assert_str_eq(dirtab_row(k)->name, "clone");
    ck_assert_int_eq(dirtab_find(DIR_SESSION, "clone"), 0);
    ck_assert_int_eq(dirtab_find(DIR_ROOT, "prompt"), 0);
    ck_assert_int_eq(dirtab_find(DIR_MODEL, "models"), 0);
    ck_assert_int_eq(dirtab_find(DIR_MODEL, "nothing"), 0);
    /* one row serves every folder that holds the file */
    ck_assert_int_eq(dirtab_find(DIR_ROOT, "ctl"), dirtab_find(DIR_SESSION, "ctl"));
}
END_TEST

START_TEST(rows_say_what_the_files_do)
{
    for (int k = K_DIR + 1; dirtab_row(k); k++) {
        const fs_filetab *t = dirtab_row(k);
        bool submits = strcmp(t->name, "prompt") == 0 || strcmp(t->name, "image") == 0;
        bool writable = strcmp(t->name, "ctl") == 0 || submits;
        ck_assert_msg((t->write != NULL) == writable, "%s: write", t->name);
        ck_assert_int_eq(t->perm, writable ? 0666 : 0444);
        ck_assert_msg((t->flush != NULL) == submits, "%s: flush", t->name);
        ck_assert_ptr_nonnull(t->open);
        bool stream = strcmp(t->name, "output") == 0 || strcmp(t->name, "transcript") == 0 ||
                      strcmp(t->name, "reasoning") == 0;
        ck_assert_msg((t->size != NULL) == stream, "%s: size", t->name);
        if (stream || strcmp(t->name, "prompt") == 0)
            ck_assert_msg(t->session, "%s needs the folder's session", t->name);
    }
}
END_TEST

START_TEST(the_core_decides_names_and_settings)
{
    /* one rule for model names: the core's, less the root's file names */
    ck_assert(llmfs_model_name_valid("qwen3-8b_Q4.K+x"));
    ck_assert(!llmfs_model_name_valid(".x"));
    ck_assert(!llmfs_model_name_valid("a/b"));
    ck_assert(!llmfs_model_name_valid(NULL));
    ck_assert(ctl_model_name_ok("qwen3-8b_Q4.K+x"));
    ck_assert(llmfs_model_name_valid("metrics"));
    ck_assert(!ctl_model_name_ok("metrics"));
    ck_assert(ctl_model_name_ok("clone")); /* a model folder's file, not a root file */

    const llmfs_setting_info *si = llmfs_setting_find("ctk");
    ck_assert_ptr_nonnull(si);
    ck_assert_str_eq(si->name, "cache_type_k");
    si = llmfs_setting_find("max_ctl_line");
    ck_assert_ptr_nonnull(si);
    ck_assert_int_eq(si->scope, LLMFS_SCOPE_DAEMON);
    ck_assert_ptr_null(llmfs_setting_find("no_such_setting"));
    ck_assert_ptr_null(llmfs_setting_find(NULL));
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
    TCase *tab = tcase_create("dirtab");
    tcase_add_test(tab, each_folder_holds_the_documented_files);
    tcase_add_test(tab, lookups_find_a_file_only_in_its_folders);
    tcase_add_test(tab, rows_say_what_the_files_do);
    tcase_add_test(tab, the_core_decides_names_and_settings);
    suite_add_tcase(s, tab);
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
