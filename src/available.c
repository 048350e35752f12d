/* available.c — model discovery: the GGUF files under model_dirs, described from their
 * headers (see llmfs_available_text in llmfs.h). gguf_open maps a file and reads only its
 * header, key/value table and tensor table; no weight page is touched. */
#include "engine.h"
#include "gguf.h"
#include "model.h"
#include "quant.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define AVAILABLE_DEPTH 4

typedef struct found {
    char **lines;
    int n, cap;
    bool oom;
} found;

static void human_count(uint64_t n, char *buf, size_t cap)
{
    if (n >= 1000000000ULL)
        snprintf(buf, cap, "%.2fB", n / 1e9);
    else if (n >= 1000000ULL)
        snprintf(buf, cap, "%.2fM", n / 1e6);
    else
        snprintf(buf, cap, "%.2fK", n / 1e3);
}

/* "ARCH PARAMS TYPE" of one file, from its header. */
static void describe(const char *path, char *buf, size_t cap)
{
    llmfs_error err = {0};
    gguf_file *f = gguf_open(path, &(gguf_open_opts){0}, &err);
    if (!f) {
        snprintf(buf, cap, "invalid invalid invalid");
        return;
    }
    const char *arch = gguf_get_str(f, "general.architecture", NULL);
    uint64_t params = 0;
    size_t bytes[64] = {0};
    int n = gguf_n_tensors(f);
    for (int i = 0; i < n; i++) {
        const gguf_tensor *t = gguf_tensor_at(f, i);
        params += (uint64_t)(t->ne[0] * t->ne[1] * t->ne[2] * t->ne[3]);
        if (t->ne[1] > 1 && t->type >= 0 && t->type < 64)
            bytes[t->type] += t->size;
    }
    uint32_t ft;
    const char *type = gguf_get_u32(f, "general.file_type", &ft) ? model_ftype_name((int)ft) : NULL;
    char dominant[32] = "unknown";
    if (!type) { /* no known file type: the type holding most weight bytes */
        int best = 0;
        for (int t = 1; t < 64; t++)
            if (bytes[t] > bytes[best])
                best = t;
        const type_traits *tt = type_info(best);
        if (tt && tt->name) {
            snprintf(dominant, sizeof dominant, "%s", tt->name);
            for (char *c = dominant; *c; c++)
                if (*c >= 'a' && *c <= 'z')
                    *c = (char)(*c - 'a' + 'A');
        }
        type = dominant;
    }
    char count[32];
    human_count(params, count, sizeof count);
    snprintf(buf, cap, "%s %s %s", arch && *arch && !strpbrk(arch, " \n") ? arch : "unknown", count, type);
    gguf_close(f);
}

static void add_line(found *fd, const char *rel, const char *path, off_t size)
{
    char desc[256];
    describe(path, desc, sizeof desc);
    if (fd->n == fd->cap) {
        int cap = fd->cap ? fd->cap * 2 : 16;
        char **l = realloc(fd->lines, sizeof *l * (size_t)cap);
        if (!l) {
            fd->oom = true;
            return;
        }
        fd->lines = l;
        fd->cap = cap;
    }
    size_t len = strlen(rel) + strlen(desc) + 32;
    char *line = malloc(len);
    if (!line) {
        fd->oom = true;
        return;
    }
    snprintf(line, len, "%s %s %lld\n", rel, desc, (long long)size);
    fd->lines[fd->n++] = line;
}

/* Walks dir (whose name relative to the model folder is rel, "" at the top). */
static void walk(found *fd, const char *dir, const char *rel, int depth)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) && !fd->oom) {
        if (e->d_name[0] == '.')
            continue;
        char path[PATH_MAX], name[PATH_MAX];
        if (snprintf(path, sizeof path, "%s/%s", dir, e->d_name) >= (int)sizeof path ||
            snprintf(name, sizeof name, "%s%s%s", rel, *rel ? "/" : "", e->d_name) >= (int)sizeof name)
            continue;
        /* names with blanks would break the line's fields */
        if (strpbrk(e->d_name, " \t\n"))
            continue;
        struct stat st;
        if (stat(path, &st) < 0)
            continue;
        size_t nl = strlen(e->d_name);
        if (S_ISDIR(st.st_mode) && depth < AVAILABLE_DEPTH)
            walk(fd, path, name, depth + 1);
        else if (S_ISREG(st.st_mode) && nl > 5 && strcmp(e->d_name + nl - 5, ".gguf") == 0)
            add_line(fd, name, path, st.st_size);
    }
    closedir(d);
}

static int cmp_lines(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *model_dirs_copy(llmfs *lf)
{
    pthread_mutex_lock(&lf->mu);
    char *dirs = strdup(lf->settings.model_dirs ? lf->settings.model_dirs : "");
    pthread_mutex_unlock(&lf->mu);
    return dirs;
}

char *llmfs_available_text(llmfs *lf)
{
    char *dirs = model_dirs_copy(lf);
    if (!dirs)
        return NULL;
    found fd = {0};
    char *save = NULL;
    for (char *d = strtok_r(dirs, ":", &save); d && !fd.oom; d = strtok_r(NULL, ":", &save))
        walk(&fd, d, "", 1);
    free(dirs);
    size_t total = 1;
    for (int i = 0; i < fd.n; i++)
        total += strlen(fd.lines[i]);
    char *out = fd.oom ? NULL : malloc(total);
    if (out) {
        qsort(fd.lines, (size_t)fd.n, sizeof *fd.lines, cmp_lines);
        size_t o = 0;
        for (int i = 0; i < fd.n; i++) {
            size_t l = strlen(fd.lines[i]);
            memcpy(out + o, fd.lines[i], l);
            o += l;
        }
        out[o] = 0;
    }
    for (int i = 0; i < fd.n; i++)
        free(fd.lines[i]);
    free(fd.lines);
    return out;
}

int llmfs_model_file_resolve(llmfs *lf, const char *file, char *out, size_t cap, llmfs_error *err)
{
    if (!file || !*file || file[0] == '/' || strcmp(file, "..") == 0 || strncmp(file, "../", 3) == 0 ||
        strstr(file, "/../") || (strlen(file) >= 3 && strcmp(file + strlen(file) - 3, "/..") == 0))
        return llmfs_errorf(err, EACCES, "%s: not a file name inside a model folder", file ? file : "");
    char *dirs = model_dirs_copy(lf);
    if (!dirs)
        return llmfs_errorf(err, ENOMEM, "out of memory");
    int rc = *dirs ? llmfs_errorf(err, ENOENT, "%s: no such file in the model folders (model_dirs)", file)
                   : llmfs_errorf(err, EACCES, "%s: a relative name needs model_dirs", file);
    char *save = NULL;
    for (char *d = strtok_r(dirs, ":", &save); d; d = strtok_r(NULL, ":", &save)) {
        char path[PATH_MAX];
        struct stat st;
        if (snprintf(path, sizeof path, "%s/%s", d, file) < (int)sizeof path && stat(path, &st) == 0 &&
            S_ISREG(st.st_mode)) {
            if (snprintf(out, cap, "%s", path) >= (int)cap) {
                rc = llmfs_errorf(err, ENAMETOOLONG, "%s: path too long", file);
            } else {
                rc = 0;
                if (err)
                    err->code = 0, err->msg[0] = 0;
            }
            break;
        }
    }
    free(dirs);
    return rc;
}
