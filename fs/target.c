/* target.c — a folder's model and session, looked up again for every operation, and
 * the folder's error (see server.h). */
#include "server.h"

#include <errno.h>

int fs_resolve(const fs_dir *d, llmfs_model **m, llmfs_session **s)
{
    if (m)
        *m = NULL;
    if (s)
        *s = NULL;
    if (node_type(d) == DIR_ROOT)
        return 0;
    llmfs_model *mm = llmfs_model_get(fs_srv.lf, node_model(d));
    if (!mm)
        return -ENOENT;
    if (s || node_type(d) == DIR_SESSION) {
        llmfs_session *ss = node_type(d) == DIR_MODEL ? llmfs_session_default(mm)
                                                      : llmfs_session_get(mm, node_sid(d));
        if (!ss) {
            llmfs_model_put(mm);
            return -ENOENT;
        }
        if (s)
            *s = ss;
        else
            llmfs_session_put(ss);
    }
    if (m)
        *m = mm;
    else
        llmfs_model_put(mm);
    return 0;
}

int fs_target_get(fs_dir *d, bool session, fs_target *t)
{
    t->dir = d;
    t->s = NULL;
    return fs_resolve(d, &t->m, session ? &t->s : NULL);
}

void fs_target_put(fs_target *t)
{
    if (t->s)
        llmfs_session_put(t->s);
    if (t->m)
        llmfs_model_put(t->m);
    t->s = NULL;
    t->m = NULL;
}

bool fs_dir_exists(const fs_dir *d)
{
    return fs_resolve(d, NULL, NULL) == 0;
}

void fs_core_error(const fs_dir *d, char *buf, size_t cap)
{
    buf[0] = '\0';
    llmfs_model *m;
    llmfs_session *s;
    if (node_type(d) == DIR_ROOT || fs_resolve(d, &m, &s) < 0)
        return;
    if (node_type(d) == DIR_MODEL)
        llmfs_model_error(m, buf, cap);
    if (!buf[0])
        llmfs_session_error(s, buf, cap);
    llmfs_session_put(s);
    llmfs_model_put(m);
}

void fs_record_error(fs_dir *d, const llmfs_error *err)
{
    char core[256];
    fs_core_error(d, core, sizeof core);
    node_set_error(d, err->msg, core);
}
