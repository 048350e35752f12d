/* sysroot.c — small readers of kernel text files, rooted at $LLMFS_SYSROOT. */
#include "sysroot.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *sysroot(void)
{
    const char *r = getenv("LLMFS_SYSROOT");
    return r ? r : "";
}

bool sysroot_path(char *buf, size_t cap, const char *path)
{
    int n = snprintf(buf, cap, "%s%s", sysroot(), path);
    return n >= 0 && (size_t)n < cap;
}

int sysroot_read(const char *path, char *buf, size_t cap)
{
    char full[4096];
    if (cap == 0)
        return -EINVAL;
    buf[0] = 0;
    if (!sysroot_path(full, sizeof full, path))
        return -ENAMETOOLONG;
    FILE *f = fopen(full, "re");
    if (!f)
        return -errno;
    size_t n = fread(buf, 1, cap - 1, f);
    int e = ferror(f) ? (errno ? errno : EIO) : 0;
    fclose(f);
    buf[n] = 0;
    return e ? -e : (int)n;
}

int sysroot_read_line(const char *path, char *buf, size_t cap)
{
    int n = sysroot_read(path, buf, cap);
    if (n < 0)
        return n;
    char *nl = strchr(buf, '\n');
    if (nl)
        *nl = 0;
    size_t l = strlen(buf);
    while (l && isspace((unsigned char)buf[l - 1]))
        buf[--l] = 0;
    return (int)l;
}

int sysroot_read_i64(const char *path, int64_t *out)
{
    char line[64];
    int n = sysroot_read_line(path, line, sizeof line);
    if (n < 0)
        return n;
    char *end;
    errno = 0;
    long long v = strtoll(line, &end, 10);
    if (end == line || errno)
        return -EINVAL;
    *out = v;
    return 0;
}

int sysroot_read_key(const char *path, const char *key, int64_t *out)
{
    char full[4096];
    if (!sysroot_path(full, sizeof full, path))
        return -ENAMETOOLONG;
    FILE *f = fopen(full, "re");
    if (!f)
        return -errno;
    char line[512];
    size_t kl = strlen(key);
    int rc = -ENOENT;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) != 0 || (line[kl] != ':' && line[kl] != ' ' && line[kl] != '\t'))
            continue;
        char *p = line + kl + (line[kl] == ':');
        char *end;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        rc = end == p || errno ? -EINVAL : 0;
        if (rc == 0)
            *out = v;
        break;
    }
    fclose(f);
    return rc;
}

int64_t sysroot_swap_pages(void)
{
    int64_t in, out;
    if (sysroot_read_key("/proc/vmstat", "pswpin", &in) < 0 ||
        sysroot_read_key("/proc/vmstat", "pswpout", &out) < 0)
        return -1;
    return in + out;
}

uint64_t sysroot_mem_available(void)
{
    int64_t kb;
    return sysroot_read_key("/proc/meminfo", "MemAvailable", &kb) == 0 && kb > 0 ? (uint64_t)kb * 1024 : 0;
}
