/* prompt.c — prompt bytes gathered until close, then submitted (see prompt.h). */
#include "prompt.h"

#include "server.h"

#include <errno.h>

static int fail(fs_file *f, llmfs_error *err, int rc)
{
    fs_record_error(f->dir, err);
    return rc;
}

/* The first write checks that the session is free, so a shell's `echo` sees EBUSY as a
 * write error even where the shell ignores close(2)'s result. */
static int check_free(fs_file *f)
{
    fs_target t;
    int rc = fs_target_get(f->dir, true, &t);
    if (rc < 0)
        return rc;
    bool busy = llmfs_session_busy(t.s);
    fs_target_put(&t);
    if (!busy)
        return 0;
    llmfs_error err = {0};
    f->werr = EBUSY;
    return fail(f, &err,
                llmfs_errorf(&err, EBUSY, "a generation is running; write stop to ctl first"));
}

int prompt_write(fs_file *f, const char *buf, size_t size)
{
    llmfs_error err = {0};
    if (f->werr)
        return -f->werr;
    if (f->w.len + size > fs_srv.max_prompt_bytes) {
        f->werr = EFBIG;
        f->w.len = 0;
        return fail(f, &err,
                    llmfs_errorf(&err, EFBIG, "prompt longer than max_prompt_bytes %llu",
                                 (unsigned long long)fs_srv.max_prompt_bytes));
    }
    if (f->w.len == 0) {
        int rc = check_free(f);
        if (rc < 0)
            return rc;
    }
    text_put(&f->w, buf, size);
    if (f->w.oom) {
        text_free(&f->w); /* the prompt is dropped, and the buffer usable again */
        f->w.oom = false;
        return -ENOMEM;
    }
    return 0;
}

int prompt_flush(fs_file *f)
{
    if (f->werr) {
        int rc = -f->werr;
        f->werr = 0;
        return rc;
    }
    if (f->w.len == 0)
        return 0;
    size_t len = f->w.len;
    f->w.len = 0;
    fs_target t;
    int rc = fs_target_get(f->dir, true, &t);
    if (rc < 0)
        return rc;
    llmfs_error err = {0};
    rc = llmfs_session_prompt(t.s, f->w.buf, len, &err);
    fs_target_put(&t);
    return rc < 0 ? fail(f, &err, rc) : 0;
}
