/* cpuset.h — CPU lists, the hybrid (P-core / E-core) layout, and placing threads.
 *
 * The cpu_affinity setting names cores the way the kernel does ("0-11,16", as in
 * /sys/devices/system/cpu/online) or by kind ("p-cores", "e-cores" on a hybrid CPU);
 * empty means the default: every core, except on a hybrid CPU, where the model's threads
 * stay on the P-cores (an E-core takes several times longer for the same slice of a
 * matrix product, and every step waits for its slowest thread). The priority setting
 * (0-3) raises the model's threads over the rest of the machine as far as the user's
 * rights allow. Topology is read through sysroot.h; what the process may run on is
 * the kernel's answer (sched_getaffinity), which no fabricated root can change.
 */
#ifndef LLMFS_CPUSET_H
#define LLMFS_CPUSET_H

#include "llmfs.h"

#include <stdbool.h>
#include <stdint.h>

enum { CPU_LIST_MAX = 1024 };

typedef struct cpu_list {
    uint64_t bits[CPU_LIST_MAX / 64];
} cpu_list;

static inline bool cpu_list_has(const cpu_list *l, int cpu)
{
    return cpu >= 0 && cpu < CPU_LIST_MAX && (l->bits[cpu / 64] >> (cpu % 64) & 1);
}
static inline void cpu_list_add(cpu_list *l, int cpu)
{
    if (cpu >= 0 && cpu < CPU_LIST_MAX)
        l->bits[cpu / 64] |= (uint64_t)1 << (cpu % 64);
}
int cpu_list_count(const cpu_list *l);
/* a & b into out (out may be a or b). */
void cpu_list_and(cpu_list *out, const cpu_list *a, const cpu_list *b);
/* Every cpu of a in b. */
bool cpu_list_subset(const cpu_list *a, const cpu_list *b);

/* Parses a kernel cpu list ("0-3,8,10-11"). -EINVAL with the reason. An empty text is an
 * empty list. */
int cpu_list_parse(const char *text, cpu_list *out, llmfs_error *err);
/* The kernel form of the list ("0-3,8"), "" when empty; the length like snprintf. */
int cpu_list_format(const cpu_list *l, char *buf, size_t cap);

/* The hybrid layout from /sys/devices/cpu_core/cpus and /sys/devices/cpu_atom/cpus:
 * true (both lists filled) on a hybrid CPU, false otherwise (both cleared). */
bool cpu_hybrid(cpu_list *p_cores, cpu_list *e_cores);
/* The CPUs this process may run on. */
void cpu_allowed(cpu_list *out);
/* Distinct physical cores (package, core_id) among the list, at least 1 for a non-empty
 * list (hyper-thread siblings count once). */
int cpu_list_physical(const cpu_list *l);

/* Checks a cpu_affinity value without the machine: a cpu list, "p-cores", "e-cores" or
 * "" (default). -EINVAL with the reason. */
int cpu_affinity_check(const char *value, llmfs_error *err);
/* The cores the value means on this machine. Returns 1 with *out filled when threads
 * are to be pinned, 0 when they run anywhere (the default on a non-hybrid CPU), -EINVAL
 * with the reason for a list this machine cannot honour (a core it lacks or this process
 * may not use; p-cores or e-cores without a hybrid CPU). */
int cpu_affinity_resolve(const char *value, cpu_list *out, llmfs_error *err);

/* What priority p means, for messages and docs: "normal", "nice -5", ... */
const char *cpu_priority_name(int p);
/* Pins thread tid (0: the calling thread) to the list (when non-NULL and non-empty) and
 * gives it priority p (0 leaves the niceness and policy alone). -EPERM/-EINVAL with the
 * reason and what to change. */
int cpu_place_thread(int tid, const cpu_list *l, int priority, llmfs_error *err);

#endif
