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

/* Gathers one write of a file submitted at close, up to max bytes (what names the limit
 * in the error). */
static int gather(fs_file *f, const char *buf, size_t size, uint64_t max, const char *what, const char *limit)
{
    llmfs_error err = {0};
    if (f->werr)
        return -f->werr;
    if (f->w.len + size > max) {
        f->werr = EFBIG;
        f->w.len = 0;
        return fail(f, &err, llmfs_errorf(&err, EFBIG, "%s longer than %s %llu", what, limit, (unsigned long long)max));
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

int prompt_write(fs_file *f, const char *buf, size_t size)
{
    return gather(f, buf, size, fs_srv.max_prompt_bytes, "prompt", "max_prompt_bytes");
}

int image_write(fs_file *f, const char *buf, size_t size)
{
    return gather(f, buf, size, fs_srv.max_image_bytes, "image", "max_image_bytes");
}

/* Hands what was written to submit (the session's prompt or image call). */
static int submit(fs_file *f, int (*fn)(llmfs_session *, const char *, size_t, llmfs_error *))
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
    rc = fn(t.s, f->w.buf, len, &err);
    fs_target_put(&t);
    return rc < 0 ? fail(f, &err, rc) : 0;
}

int prompt_flush(fs_file *f)
{
    return submit(f, llmfs_session_prompt);
}

static int add_image(llmfs_session *s, const char *buf, size_t len, llmfs_error *err)
{
    return llmfs_session_image(s, buf, len, err);
}

int image_flush(fs_file *f)
{
    return submit(f, add_image);
}
