/* cpuset.c — cpu lists, the hybrid layout and thread placement (see cpuset.h). */
#include "cpuset.h"
#include "sysroot.h"

#include <ctype.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

int cpu_list_count(const cpu_list *l)
{
    int n = 0;
    for (int w = 0; w < CPU_LIST_MAX / 64; w++)
        n += __builtin_popcountll(l->bits[w]);
    return n;
}

void cpu_list_and(cpu_list *out, const cpu_list *a, const cpu_list *b)
{
    for (int w = 0; w < CPU_LIST_MAX / 64; w++)
        out->bits[w] = a->bits[w] & b->bits[w];
}

bool cpu_list_subset(const cpu_list *a, const cpu_list *b)
{
    for (int w = 0; w < CPU_LIST_MAX / 64; w++)
        if (a->bits[w] & ~b->bits[w])
            return false;
    return true;
}

static int parse_cpu(const char **p, int *out)
{
    if (!isdigit((unsigned char)**p))
        return -1;
    long v = 0;
    while (isdigit((unsigned char)**p)) {
        v = v * 10 + (**p - '0');
        if (v >= CPU_LIST_MAX)
            return -2;
        (*p)++;
    }
    *out = (int)v;
    return 0;
}

int cpu_list_parse(const char *text, cpu_list *out, llmfs_error *err)
{
    memset(out, 0, sizeof *out);
    const char *p = text ? text : "";
    while (*p == ' ')
        p++;
    if (!*p)
        return 0;
    for (;;) {
        int a, b, rc = parse_cpu(&p, &a);
        if (rc == 0 && *p == '-') {
            p++;
            rc = parse_cpu(&p, &b);
        } else {
            b = a;
        }
        if (rc == -2)
            return llmfs_errorf(err, EINVAL, "cpu list '%s': cpu numbers stop at %d", text, CPU_LIST_MAX - 1);
        if (rc < 0)
            return llmfs_errorf(err, EINVAL, "cpu list '%s': expected cpu numbers and ranges like 0-11,16",
                                text);
        if (b < a)
            return llmfs_errorf(err, EINVAL, "cpu list '%s': range %d-%d runs backwards", text, a, b);
        for (int c = a; c <= b; c++)
            cpu_list_add(out, c);
        while (*p == ' ' || *p == '\n')
            p++;
        if (!*p)
            return 0;
        if (*p != ',')
            return llmfs_errorf(err, EINVAL, "cpu list '%s': unexpected '%c'", text, *p);
        p++;
    }
}

int cpu_list_format(const cpu_list *l, char *buf, size_t cap)
{
    size_t o = 0;
    if (cap)
        buf[0] = 0;
    for (int c = 0; c < CPU_LIST_MAX; c++) {
        if (!cpu_list_has(l, c))
            continue;
        int e = c;
        while (e + 1 < CPU_LIST_MAX && cpu_list_has(l, e + 1))
            e++;
        const char *sep = o ? "," : "";
        int n = e > c ? snprintf(o < cap ? buf + o : NULL, o < cap ? cap - o : 0, "%s%d-%d", sep, c, e)
                      : snprintf(o < cap ? buf + o : NULL, o < cap ? cap - o : 0, "%s%d", sep, c);
        o += (size_t)n;
        c = e;
    }
    if (cap && o >= cap)
        buf[cap - 1] = 0;
    return (int)o;
}

static bool read_list(const char *path, cpu_list *out)
{
    char line[1024];
    memset(out, 0, sizeof *out);
    return sysroot_read_line(path, line, sizeof line) >= 0 && cpu_list_parse(line, out, NULL) == 0 &&
           cpu_list_count(out) > 0;
}

bool cpu_hybrid(cpu_list *p_cores, cpu_list *e_cores)
{
    /* Intel's hybrid parts register one PMU per core kind; each lists its cpus. */
    if (read_list("/sys/devices/cpu_core/cpus", p_cores) && read_list("/sys/devices/cpu_atom/cpus", e_cores))
        return true;
    memset(p_cores, 0, sizeof *p_cores);
    memset(e_cores, 0, sizeof *e_cores);
    return false;
}

void cpu_allowed(cpu_list *out)
{
    memset(out, 0, sizeof *out);
    cpu_set_t set;
    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        for (int c = 0; c < CPU_SETSIZE && c < CPU_LIST_MAX; c++)
            if (CPU_ISSET(c, &set))
                cpu_list_add(out, c);
        return;
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    for (long c = 0; c < n && c < CPU_LIST_MAX; c++)
        cpu_list_add(out, (int)c);
}

int cpu_list_physical(const cpu_list *l)
{
    int total = cpu_list_count(l);
    if (total == 0)
        return 0;
    int64_t *pk = malloc(sizeof *pk * (size_t)total * 2);
    if (!pk)
        return total;
    int64_t *co = pk + total;
    int n = 0;
    for (int c = 0; c < CPU_LIST_MAX; c++) {
        if (!cpu_list_has(l, c))
            continue;
        char path[128];
        int64_t a = -1, b = c;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/physical_package_id", c);
        sysroot_read_i64(path, &a);
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu%d/topology/core_id", c);
        if (sysroot_read_i64(path, &b) < 0)
            b = c; /* no topology: count every cpu */
        int j = 0;
        while (j < n && !(pk[j] == a && co[j] == b))
            j++;
        if (j == n) {
            pk[n] = a;
            co[n] = b;
            n++;
        }
    }
    free(pk);
    return n;
}

int cpu_affinity_check(const char *value, llmfs_error *err)
{
    if (!value || !*value || strcmp(value, "p-cores") == 0 || strcmp(value, "e-cores") == 0)
        return 0;
    cpu_list l;
    int rc = cpu_list_parse(value, &l, err);
    if (rc == 0 && cpu_list_count(&l) == 0)
        rc = llmfs_errorf(err, EINVAL, "cpu_affinity: empty cpu list");
    if (rc < 0 && err) {
        char msg[sizeof err->msg];
        snprintf(msg, sizeof msg, "%s", err->msg);
        llmfs_errorf(err, EINVAL, "cpu_affinity: %s (or p-cores, e-cores)", msg);
    }
    return rc;
}

int cpu_affinity_resolve(const char *value, cpu_list *out, llmfs_error *err)
{
    cpu_list allowed, p, e;
    cpu_allowed(&allowed);
    bool hybrid = cpu_hybrid(&p, &e);
    char have[256];
    cpu_list_format(&allowed, have, sizeof have);
    memset(out, 0, sizeof *out);
    if (!value || !*value) {
        /* default: P-cores on a hybrid CPU, as many of them as this process may use */
        if (!hybrid)
            return 0;
        cpu_list_and(out, &p, &allowed);
        return cpu_list_count(out) > 0;
    }
    if (strcmp(value, "p-cores") == 0 || strcmp(value, "e-cores") == 0) {
        if (!hybrid)
            return llmfs_errorf(err, EINVAL,
                                "cpu_affinity %s: not a hybrid CPU (no /sys/devices/cpu_core and cpu_atom); "
                                "name the cores, e.g. cpu_affinity %s", value, have);
        cpu_list_and(out, value[0] == 'p' ? &p : &e, &allowed);
        if (cpu_list_count(out) == 0)
            return llmfs_errorf(err, EINVAL, "cpu_affinity %s: none of them is among the cpus this process may use (%s)",
                                value, have);
        return 1;
    }
    int rc = cpu_affinity_check(value, err);
    if (rc < 0)
        return rc;
    cpu_list_parse(value, out, NULL);
    if (!cpu_list_subset(out, &allowed))
        return llmfs_errorf(err, EINVAL, "cpu_affinity %s: this process may only use cpus %s", value, have);
    return 1;
}

const char *cpu_priority_name(int p)
{
    static const char *names[] = {"normal", "nice -5", "nice -10", "SCHED_RR 1"};
    return p >= 0 && p < 4 ? names[p] : "?";
}

int cpu_place_thread(int tid, const cpu_list *l, int priority, llmfs_error *err)
{
    pid_t t = tid ? (pid_t)tid : (pid_t)syscall(SYS_gettid);
    if (l && cpu_list_count(l) > 0) {
        cpu_set_t set;
        CPU_ZERO(&set);
        for (int c = 0; c < CPU_LIST_MAX && c < CPU_SETSIZE; c++)
            if (cpu_list_has(l, c))
                CPU_SET(c, &set);
        if (sched_setaffinity(t, sizeof set, &set) < 0) {
            char s[256];
            cpu_list_format(l, s, sizeof s);
            return llmfs_errorf(err, errno == EPERM ? EPERM : EINVAL, "cpu_affinity %s: %s", s, strerror(errno));
        }
    }
    if (priority <= 0)
        return 0;
    if (priority >= 3) {
        /* the lowest real-time priority: above every normal thread, below the kernel's own */
        struct sched_param sp = {.sched_priority = 1};
        if (sched_setscheduler(t, SCHED_RR, &sp) < 0)
            return llmfs_errorf(err, errno == EPERM ? EPERM : EINVAL,
                                "priority 3 (SCHED_RR) is not allowed: %s; it needs CAP_SYS_NICE or "
                                "RLIMIT_RTPRIO >= 1 (ulimit -r); use priority 2 or lower",
                                strerror(errno));
        return 0;
    }
    int nice = priority == 1 ? -5 : -10;
    if (setpriority(PRIO_PROCESS, (id_t)t, nice) < 0)
        return llmfs_errorf(err, errno == EACCES || errno == EPERM ? EPERM : EINVAL,
                            "priority %d (nice %d) is not allowed: %s; it needs CAP_SYS_NICE or "
                            "RLIMIT_NICE >= %d (ulimit -e); use priority %d",
                            priority, nice, strerror(errno), 20 - nice, priority - 1);
    return 0;
}
