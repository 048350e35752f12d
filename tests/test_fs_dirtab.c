/* The file server's file table, without a mount: each folder holds the files llmfs(4)
 * lists, in its order; only ctl and prompt are writable; the files of a conversation
 * need its session; and the core's rules the server asks for (setting lookup, model
 * names). */
#include "testutil.h"

#ifdef LLMFS_HAVE_FS
#include "ctl.h"
#include "dirtab.h"

#include <stdio.h>
#include <string.h>

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
    ck_assert_str_eq(got, "ctl models stats metrics error");
    names(DIR_MODEL, got, sizeof got);
    ck_assert_str_eq(got, "ctl prompt output transcript stats placement kv info error clone");
    names(DIR_SESSION, got, sizeof got);
    ck_assert_str_eq(got, "ctl prompt output transcript stats error");
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
        bool writable = strcmp(t->name, "ctl") == 0 || strcmp(t->name, "prompt") == 0;
        ck_assert_msg((t->write != NULL) == writable, "%s: write", t->name);
        ck_assert_int_eq(t->perm, writable ? 0666 : 0444);
        ck_assert_msg((t->flush != NULL) == (strcmp(t->name, "prompt") == 0), "%s: flush", t->name);
        ck_assert_ptr_nonnull(t->open);
        bool stream = strcmp(t->name, "output") == 0 || strcmp(t->name, "transcript") == 0;
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
    Suite *s = suite_create("fs_dirtab");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, each_folder_holds_the_documented_files);
    tcase_add_test(tc, lookups_find_a_file_only_in_its_folders);
    tcase_add_test(tc, rows_say_what_the_files_do);
    tcase_add_test(tc, the_core_decides_names_and_settings);
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
    fprintf(stderr, "\n*** SKIPPED test_fs_dirtab: built without the file server ***\n\n");
    return 77;
}
#endif
