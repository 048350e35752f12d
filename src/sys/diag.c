/* diag.c — the machine checks and the model warnings (see diag.h).
 *
 * Each check is one function in the table at the bottom; it adds lines through emit().
 * A check that cannot read what it needs says so as "unknown" with the path it tried,
 * so every check answers on every machine.
 */
#include "diag.h"
#include "backend.h"
#include "engine.h"
#include "settings.h"
#include "sysroot.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIB 1048576.0

/* ---- output ---- */

typedef struct diag_buf {
    char *p;
    size_t n, cap;
    bool oom;
    llmfs *lf;
} diag_buf;

static void put(diag_buf *b, const char *s)
{
    size_t l = strlen(s);
    if (b->oom)
        return;
    if (b->n + l + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->n + l + 1 > cap)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, l + 1);
    b->n += l;
}

/* One field: no blanks inside (they would split it), "-" when empty. */
static void field(diag_buf *b, const char *s)
{
    char w[160];
    size_t o = 0;
    for (const char *p = s; *p && o + 1 < sizeof w; p++)
        w[o++] = isspace((unsigned char)*p) || (unsigned char)*p < 32 ? '_' : *p;
    w[o] = 0;
    put(b, o ? w : "-");
}

enum verdict { OK, WARN, UNKNOWN };

static void emit(diag_buf *b, const char *check, const char *value, const char *expected, enum verdict v,
                 const char *fmt, ...) __attribute__((format(printf, 6, 7)));

static void emit(diag_buf *b, const char *check, const char *value, const char *expected, enum verdict v,
                 const char *fmt, ...)
{
    static const char *names[] = {"ok", "warn", "unknown"};
    field(b, check);
    put(b, " ");
    field(b, value);
    put(b, " ");
    field(b, expected);
    put(b, " ");
    put(b, names[v]);
    char note[512] = "";
    if (fmt) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(note, sizeof note, fmt, ap);
        va_end(ap);
    }
    if (note[0]) {
        for (char *c = note; *c; c++)
            if (*c == '\n')
                *c = ' ';
        put(b, " # ");
        put(b, note);
    }
    put(b, "\n");
}

/* ---- helpers ---- */

/* Names in a directory under the root that start with prefix, sorted by the number
 * after it (policy0, policy2, policy10). Returns the count (malloc'd array of malloc'd
 * names), -errno when the directory is unreadable. */
static int list_dir(const char *dir, const char *prefix, char ***out)
{
    char full[4096];
    *out = NULL;
    if (!sysroot_path(full, sizeof full, dir))
        return -ENAMETOOLONG;
    DIR *d = opendir(full);
    if (!d)
        return -errno;
    char **v = NULL;
    int n = 0, cap = 0;
    size_t pl = strlen(prefix);
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, prefix, pl) != 0 || de->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            char **p = realloc(v, sizeof *v * (size_t)cap);
            if (!p)
                break;
            v = p;
        }
        if (!(v[n] = strdup(de->d_name)))
            break;
        n++;
    }
    closedir(d);
    /* insertion sort by the number after the prefix, then by name */
    for (int i = 1; i < n; i++) {
        char *x = v[i];
        long kx = strtol(x + pl, NULL, 10);
        int j = i - 1;
        while (j >= 0) {
            long kj = strtol(v[j] + pl, NULL, 10);
            if (kj < kx || (kj == kx && strcmp(v[j], x) <= 0))
                break;
            v[j + 1] = v[j];
            j--;
        }
        v[j + 1] = x;
    }
    *out = v;
    return n;
}

static void free_list(char **v, int n)
{
    for (int i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

/* ---- memory speed: SMBIOS type 17 (Memory Device) ---- */

static unsigned word_at(const unsigned char *r, int len, int off)
{
    return off + 2 <= len ? (unsigned)r[off] | (unsigned)r[off + 1] << 8 : 0;
}

static unsigned long dword_at(const unsigned char *r, int len, int off)
{
    return off + 4 <= len ? (unsigned long)word_at(r, len, off) | (unsigned long)word_at(r, len, off + 2) << 16 : 0;
}

/* String number idx (1-based) of a structure: the strings follow the formatted part. */
static void smbios_string(const unsigned char *r, int n, int len, int idx, char *out, size_t cap)
{
    out[0] = 0;
    if (idx <= 0 || len >= n)
        return;
    const char *s = (const char *)r + len;
    const char *end = (const char *)r + n;
    for (int k = 1; s < end && *s; k++) {
        size_t l = strnlen(s, (size_t)(end - s));
        if (k == idx) {
            snprintf(out, cap, "%.*s", (int)l, s);
            return;
        }
        s += l + 1;
    }
}

static void check_mem_speed(diag_buf *b)
{
    const char *dir = "/sys/firmware/dmi/entries";
    char **names;
    int n = list_dir(dir, "17-", &names);
    if (n < 0) {
        emit(b, "mem_speed", "", "rated", UNKNOWN, "cannot read %s: %s (SMBIOS is readable by root only, and absent in many VMs)",
             dir, strerror(-n));
        return;
    }
    int shown = 0;
    for (int i = 0; i < n; i++) {
        char path[512];
        unsigned char raw[512];
        snprintf(path, sizeof path, "%s/%s/raw", dir, names[i]);
        int got = sysroot_read(path, (char *)raw, sizeof raw);
        if (got < 0x17 || raw[0] != 17)
            continue;
        int len = raw[1] < got ? raw[1] : got;
        /* Size 0: an empty slot. */
        if (word_at(raw, len, 0x0C) == 0)
            continue;
        unsigned long rated = word_at(raw, len, 0x15), conf = word_at(raw, len, 0x20);
        /* 0xFFFF: the speed is in the 32-bit extended fields (SMBIOS 3.3) */
        if (rated == 0xFFFF)
            rated = dword_at(raw, len, 0x54) & 0x7FFFFFFF;
        if (conf == 0xFFFF)
            conf = dword_at(raw, len, 0x58) & 0x7FFFFFFF;
        char loc[64], check[96], v[32], e[32];
        smbios_string(raw, got, len, raw[0x10], loc, sizeof loc);
        snprintf(check, sizeof check, "mem_speed.%s", loc[0] ? loc : names[i]);
        snprintf(v, sizeof v, "%luMT/s", conf);
        snprintf(e, sizeof e, "%luMT/s", rated);
        shown++;
        if (!rated || !conf)
            emit(b, check, conf ? v : "", rated ? e : "rated", UNKNOWN, "the firmware does not report %s",
                 !rated ? "the rated speed" : "the configured speed");
        else if (conf < rated)
            emit(b, check, v, e, WARN,
                 "the memory runs below its rated speed and token generation is bound by it: enable the "
                 "memory profile (XMP/EXPO) in the firmware setup");
        else
            emit(b, check, v, e, OK, "%s", "");
    }
    if (!shown)
        emit(b, "mem_speed", "", "rated", UNKNOWN, "no populated memory device (type 17) under %s", dir);
    free_list(names, n);
}

/* ---- cpufreq: governor, energy_performance_preference, frequency ---- */

static const char *cpufreq_dir = "/sys/devices/system/cpu/cpufreq";

static void check_governor(diag_buf *b)
{
    char **pol;
    int n = list_dir(cpufreq_dir, "policy", &pol);
    if (n <= 0) {
        emit(b, "cpu_governor", "", "performance", UNKNOWN, "no %s/policy* (no cpufreq driver, as in most VMs)",
             cpufreq_dir);
        free_list(pol, n > 0 ? n : 0);
        return;
    }
    for (int i = 0; i < n; i++) {
        char path[512], gov[64], check[96];
        snprintf(path, sizeof path, "%s/%s/scaling_governor", cpufreq_dir, pol[i]);
        snprintf(check, sizeof check, "cpu_governor.%s", pol[i]);
        if (sysroot_read_line(path, gov, sizeof gov) <= 0)
            emit(b, check, "", "performance", UNKNOWN, "cannot read %s", path);
        else if (strcmp(gov, "performance") == 0)
            emit(b, check, gov, "performance", OK, "%s", "");
        else
            emit(b, check, gov, "performance", WARN,
                 "the cores ramp up late for the short bursts of a decode step: write performance to "
                 "%s/*/scaling_governor", cpufreq_dir);
    }
    free_list(pol, n);
}

static void check_epp(diag_buf *b)
{
    char **pol;
    int n = list_dir(cpufreq_dir, "policy", &pol);
    int shown = 0;
    for (int i = 0; i < n; i++) {
        char path[512], epp[64], check[96];
        snprintf(path, sizeof path, "%s/%s/energy_performance_preference", cpufreq_dir, pol[i]);
        if (sysroot_read_line(path, epp, sizeof epp) <= 0)
            continue;
        snprintf(check, sizeof check, "cpu_epp.%s", pol[i]);
        shown++;
        if (strcmp(epp, "performance") == 0 || strcmp(epp, "balance_performance") == 0)
            emit(b, check, epp, "performance", OK, "%s", "");
        else
            emit(b, check, epp, "performance", WARN,
                 "the hardware favours saving power over speed: write performance to "
                 "%s/*/energy_performance_preference", cpufreq_dir);
    }
    if (!shown)
        emit(b, "cpu_epp", "", "performance", UNKNOWN,
             "no %s/policy*/energy_performance_preference (only intel_pstate and amd-pstate in active mode have it)",
             cpufreq_dir);
    if (n > 0)
        free_list(pol, n);
}

static bool any_generating(llmfs *lf)
{
    bool busy = false;
    if (!lf)
        return false;
    pthread_mutex_lock(&lf->mu);
    for (llmfs_model *m = lf->models; m && !busy; m = m->next) {
        pthread_mutex_lock(&m->mu);
        for (int i = 0; i < m->n_sessions && !busy; i++)
            busy = m->sessions[i]->state == SS_GEN || m->sessions[i]->state == SS_PREFILL;
        pthread_mutex_unlock(&m->mu);
    }
    pthread_mutex_unlock(&lf->mu);
    return busy;
}

static void check_freq(diag_buf *b)
{
    char **pol;
    int n = list_dir(cpufreq_dir, "policy", &pol);
    int64_t best = 0, cur = 0, cap = 0;
    char capped[64] = "";
    for (int i = 0; i < n; i++) {
        char path[512];
        int64_t mx = 0, c = 0, sm = 0;
        snprintf(path, sizeof path, "%s/%s/cpuinfo_max_freq", cpufreq_dir, pol[i]);
        if (sysroot_read_i64(path, &mx) < 0 || mx <= 0)
            continue;
        snprintf(path, sizeof path, "%s/%s/scaling_cur_freq", cpufreq_dir, pol[i]);
        sysroot_read_i64(path, &c);
        snprintf(path, sizeof path, "%s/%s/scaling_max_freq", cpufreq_dir, pol[i]);
        if (sysroot_read_i64(path, &sm) < 0)
            sm = mx;
        /* the fastest cores: those with the highest maximum (P-cores, or the boosted CCD) */
        if (mx > best) {
            best = mx;
            cur = c;
            cap = sm;
            snprintf(capped, sizeof capped, "%s", pol[i]);
        } else if (mx == best) {
            if (c > cur)
                cur = c;
            if (sm < cap) {
                cap = sm;
                snprintf(capped, sizeof capped, "%s", pol[i]);
            }
        }
    }
    if (n > 0)
        free_list(pol, n);
    if (!best) {
        emit(b, "cpu_freq", "", "", UNKNOWN, "no %s/policy*/cpuinfo_max_freq (no cpufreq driver)", cpufreq_dir);
        return;
    }
    char v[32], e[32];
    snprintf(v, sizeof v, "%lldMHz", (long long)(cur / 1000));
    snprintf(e, sizeof e, "%lldMHz", (long long)(best / 1000));
    if (cap < best)
        emit(b, "cpu_freq", v, e, WARN,
             "scaling_max_freq of %s caps the fastest cores at %lld MHz: write cpuinfo_max_freq to "
             "%s/*/scaling_max_freq", capped, (long long)(cap / 1000), cpufreq_dir);
    else if (any_generating(b->lf) && cur * 10 < best * 7)
        emit(b, "cpu_freq", v, e, WARN,
             "the fastest cores run at under 70%% of their maximum during a generation: check cpu_governor, "
             "cpu_epp and thermal");
    else
        emit(b, "cpu_freq", v, e, OK, "idle cores clock down; compare while a model generates");
}

/* ---- hybrid layout and the model threads ---- */

static void check_hybrid(diag_buf *b)
{
    cpu_list p, e;
    if (!cpu_hybrid(&p, &e)) {
        emit(b, "cpu_hybrid", "no", "", OK, "one kind of core (no /sys/devices/cpu_core and cpu_atom)");
        return;
    }
    char ps[256], es[256], v[600];
    cpu_list_format(&p, ps, sizeof ps);
    cpu_list_format(&e, es, sizeof es);
    snprintf(v, sizeof v, "p=%s;e=%s", ps, es);
    emit(b, "cpu_hybrid", v, "", OK, "model threads default to the P-cores (cpu_affinity)");
}

static void threads_line(diag_buf *b, const char *check, const cpu_list *cpus, const char *who)
{
    cpu_list p, e, on_e, all;
    bool hybrid = cpu_hybrid(&p, &e);
    char v[256];
    cpu_allowed(&all);
    const cpu_list *eff = cpu_list_count(cpus) ? cpus : &all;
    if (cpu_list_count(cpus))
        cpu_list_format(cpus, v, sizeof v);
    else
        snprintf(v, sizeof v, "all");
    if (!hybrid) {
        emit(b, check, v, "", OK, "%s: no E-cores on this CPU", who);
        return;
    }
    cpu_list_and(&on_e, eff, &e);
    char es[256];
    cpu_list_format(&on_e, es, sizeof es);
    if (cpu_list_count(&on_e))
        emit(b, check, v, "p-cores", WARN, "%s: threads on E-cores %s wait-bound every step: set cpu_affinity p-cores",
             who, es);
    else
        emit(b, check, v, "p-cores", OK, "%s", who);
}

static void check_model_threads(diag_buf *b)
{
    int shown = 0;
    if (b->lf) {
        pthread_mutex_lock(&b->lf->mu);
        for (llmfs_model *m = b->lf->models; m; m = m->next) {
            char check[96];
            pthread_mutex_lock(&m->mu);
            cpu_list c = m->cpus;
            bool ready = m->mdl != NULL;
            pthread_mutex_unlock(&m->mu);
            if (!ready)
                continue;
            snprintf(check, sizeof check, "model_cpus.%s", m->name);
            threads_line(b, check, &c, "the model's threads");
            shown++;
        }
        pthread_mutex_unlock(&b->lf->mu);
    }
    if (!shown) {
        /* no model: what a model loaded now would get by default */
        cpu_list c;
        if (cpu_affinity_resolve("", &c, NULL) <= 0)
            memset(&c, 0, sizeof c);
        threads_line(b, "model_cpus", &c, "no model loaded; the default cpu_affinity");
    }
}

/* ---- GPUs: free memory, PCIe link ---- */

static void check_vram(diag_buf *b)
{
    llmfs_gpu_info g[16];
    int n = llmfs_gpus(g, 16);
    if (n <= 0) {
#ifdef LLMFS_HAVE_CUDA
        emit(b, "vram_free", "", "", UNKNOWN, "no CUDA device (no driver, or no GPU visible)");
#else
        emit(b, "vram_free", "", "", UNKNOWN, "llmfs was built without CUDA");
#endif
        return;
    }
    for (int i = 0; i < n; i++) {
        char check[32], v[32], e[32];
        snprintf(check, sizeof check, "vram_free.gpu%d", i);
        snprintf(v, sizeof v, "%.0fMiB", g[i].vram_free / MIB);
        snprintf(e, sizeof e, ">=%dMiB", DIAG_HEADROOM_MIB);
        if (g[i].vram_free < (uint64_t)DIAG_HEADROOM_MIB * 1048576)
            emit(b, check, v, e, WARN,
                 "%s has %.0f of %.0f MiB free: allocations during a long prompt can fail; raise fit_target or "
                 "lower ngl or ctx of the models on it", g[i].name, g[i].vram_free / MIB, g[i].vram_total / MIB);
        else
            emit(b, check, v, e, OK, "%s: %.0f MiB total", g[i].name, g[i].vram_total / MIB);
    }
}

/* "8.0 GT/s PCIe" -> 3 */
static int pcie_gen(const char *speed)
{
    double gts = strtod(speed, NULL);
    static const double rates[] = {2.5, 5.0, 8.0, 16.0, 32.0, 64.0, 128.0};
    for (int i = 0; i < 7; i++)
        if (gts > 0 && gts <= rates[i] + 0.01)
            return i + 1;
    return 0;
}

static void check_pcie(diag_buf *b)
{
    const char *dir = "/sys/bus/pci/devices";
    char **dev;
    int n = list_dir(dir, "", &dev), shown = 0;
    for (int i = 0; i < n; i++) {
        char path[512], cls[32], ven[32];
        snprintf(path, sizeof path, "%s/%s/class", dir, dev[i]);
        if (sysroot_read_line(path, cls, sizeof cls) <= 0 || strncmp(cls, "0x03", 4) != 0)
            continue; /* display controllers only */
        snprintf(path, sizeof path, "%s/%s/vendor", dir, dev[i]);
        if (sysroot_read_line(path, ven, sizeof ven) <= 0 || strcmp(ven, "0x10de") != 0)
            continue; /* the GPUs CUDA drives */
        char cs[64], ms[64], check[128], v[32], e[32];
        int64_t cw = 0, mw = 0;
        snprintf(check, sizeof check, "pcie.%s", dev[i]);
        snprintf(path, sizeof path, "%s/%s/current_link_speed", dir, dev[i]);
        int ok = sysroot_read_line(path, cs, sizeof cs) > 0;
        snprintf(path, sizeof path, "%s/%s/max_link_speed", dir, dev[i]);
        ok = ok && sysroot_read_line(path, ms, sizeof ms) > 0;
        snprintf(path, sizeof path, "%s/%s/current_link_width", dir, dev[i]);
        ok = ok && sysroot_read_i64(path, &cw) == 0;
        snprintf(path, sizeof path, "%s/%s/max_link_width", dir, dev[i]);
        ok = ok && sysroot_read_i64(path, &mw) == 0;
        shown++;
        int cg = ok ? pcie_gen(cs) : 0, mg = ok ? pcie_gen(ms) : 0;
        if (!ok || !cg || !mg) {
            emit(b, check, "", "", UNKNOWN, "no readable link speed and width under %s/%s", dir, dev[i]);
            continue;
        }
        snprintf(v, sizeof v, "gen%dx%lld", cg, (long long)cw);
        snprintf(e, sizeof e, "gen%dx%lld", mg, (long long)mw);
        if (cg < mg || cw < mw)
            emit(b, check, v, e, WARN,
                 "the link runs below its maximum, which slows loading and streamed weights (offload_batch); an "
                 "idle GPU may lower its speed to save power, so read this during a generation; otherwise use an "
                 "x%lld slot or set the slot's generation in the firmware setup", (long long)mw);
        else
            emit(b, check, v, e, OK, "%s", "");
    }
    if (n > 0)
        free_list(dev, n);
    if (!shown)
        emit(b, "pcie", "", "", UNKNOWN, "no NVIDIA display controller under %s", dir);
}

/* ---- thermal zones ---- */

static void check_thermal(diag_buf *b)
{
    const char *dir = "/sys/class/thermal";
    char **z;
    int n = list_dir(dir, "thermal_zone", &z), shown = 0;
    for (int i = 0; i < n; i++) {
        char path[512], type[64] = "", check[96], v[32], e[32];
        int64_t temp;
        snprintf(path, sizeof path, "%s/%s/temp", dir, z[i]);
        if (sysroot_read_i64(path, &temp) < 0)
            continue;
        snprintf(path, sizeof path, "%s/%s/type", dir, z[i]);
        sysroot_read_line(path, type, sizeof type);
        /* the lowest trip point where the platform acts on the CPU (passive throttling,
         * hot, critical); "active" trips only start fans */
        int64_t trip = 0;
        char trip_kind[32] = "";
        for (int k = 0; k < 32; k++) {
            char kind[32];
            int64_t t;
            snprintf(path, sizeof path, "%s/%s/trip_point_%d_type", dir, z[i], k);
            if (sysroot_read_line(path, kind, sizeof kind) < 0)
                break;
            snprintf(path, sizeof path, "%s/%s/trip_point_%d_temp", dir, z[i], k);
            if (strcmp(kind, "active") == 0 || sysroot_read_i64(path, &t) < 0 || t <= 0)
                continue;
            if (!trip || t < trip) {
                trip = t;
                snprintf(trip_kind, sizeof trip_kind, "%s", kind);
            }
        }
        shown++;
        snprintf(check, sizeof check, "thermal.%s", z[i] + strlen("thermal_"));
        snprintf(v, sizeof v, "%lldC", (long long)(temp / 1000));
        if (!trip) {
            emit(b, check, v, "", UNKNOWN, "%s has no passive, hot or critical trip point", type[0] ? type : z[i]);
            continue;
        }
        snprintf(e, sizeof e, "<%lldC", (long long)(trip / 1000));
        if (temp >= trip)
            emit(b, check, v, e, WARN,
                 "%s is at its %s trip point: the CPU is being throttled; improve cooling, or lower threads",
                 type[0] ? type : z[i], trip_kind);
        else
            emit(b, check, v, e, OK, "%s", type);
    }
    if (n > 0)
        free_list(z, n);
    if (!shown)
        emit(b, "thermal", "", "", UNKNOWN, "no %s/thermal_zone*/temp (no thermal driver, as in most VMs)", dir);
}

/* ---- other processes ---- */

typedef struct proc_use {
    int pid;
    char comm[32];
    double pct;
} proc_use;

static void check_top_cpu(diag_buf *b)
{
    char up[128];
    if (sysroot_read_line("/proc/uptime", up, sizeof up) <= 0) {
        emit(b, "top_cpu", "", "", UNKNOWN, "cannot read /proc/uptime");
        return;
    }
    double uptime = strtod(up, NULL);
    long hz = sysconf(_SC_CLK_TCK);
    if (hz <= 0)
        hz = 100;
    char **pids;
    int n = list_dir("/proc", "", &pids);
    proc_use top[3] = {0};
    const char *real = sysroot();
    for (int i = 0; i < n; i++) {
        if (!isdigit((unsigned char)pids[i][0]))
            continue;
        int pid = atoi(pids[i]);
        if (!real[0] && pid == getpid())
            continue;
        char path[128], st[1024];
        snprintf(path, sizeof path, "/proc/%s/stat", pids[i]);
        if (sysroot_read(path, st, sizeof st) <= 0)
            continue;
        /* "pid (comm) state ppid ..." with comm free to hold blanks and parentheses */
        char *lp = strchr(st, '('), *rp = strrchr(st, ')');
        if (!lp || !rp || rp < lp)
            continue;
        proc_use u = {.pid = pid};
        snprintf(u.comm, sizeof u.comm, "%.*s", (int)(rp - lp - 1), lp + 1);
        if (strcmp(u.comm, "llmfs") == 0)
            continue;
        /* fields after the comm start at 3 (state); utime 14, stime 15, starttime 22 */
        unsigned long long ut = 0, stt = 0, start = 0;
        char *p = rp + 1, *save = NULL;
        int f = 2;
        for (char *tok = strtok_r(p, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
            f++;
            if (f == 14)
                ut = strtoull(tok, NULL, 10);
            else if (f == 15)
                stt = strtoull(tok, NULL, 10);
            else if (f == 22) {
                start = strtoull(tok, NULL, 10);
                break;
            }
        }
        if (f < 22)
            continue;
        double life = uptime - (double)start / (double)hz;
        if (life < 1)
            continue;
        u.pct = 100.0 * (double)(ut + stt) / (double)hz / life;
        for (int k = 0; k < 3; k++)
            if (u.pct > top[k].pct) {
                memmove(&top[k + 1], &top[k], sizeof top[0] * (size_t)(2 - k));
                top[k] = u;
                break;
            }
    }
    if (n > 0)
        free_list(pids, n);
    if (n < 0) {
        emit(b, "top_cpu", "", "", UNKNOWN, "cannot list /proc");
        return;
    }
    int shown = 0;
    for (int k = 0; k < 3 && top[k].pid; k++) {
        char check[32], v[80];
        snprintf(check, sizeof check, "top_cpu.%d", k + 1);
        snprintf(v, sizeof v, "%s/%d:%.0f%%", top[k].comm, top[k].pid, top[k].pct);
        shown++;
        if (top[k].pct >= 50)
            emit(b, check, v, "<50%", WARN,
                 "%s (pid %d) averages %.0f%% of a core since it started and competes with the model's threads; "
                 "stop it, or keep it off the model's cores (cpu_affinity)", top[k].comm, top[k].pid, top[k].pct);
        else
            emit(b, check, v, "<50%", OK, "average share of one core since the process started");
    }
    if (!shown)
        emit(b, "top_cpu", "none", "<50%", OK, "no other process has used the CPU");
}

static void check_ppd(diag_buf *b)
{
    char **pids;
    int n = list_dir("/proc", "", &pids);
    if (n < 0) {
        emit(b, "power_profiles_daemon", "", "", UNKNOWN, "cannot list /proc");
        return;
    }
    int found = 0;
    for (int i = 0; i < n && !found; i++) {
        char path[128], comm[64];
        if (!isdigit((unsigned char)pids[i][0]))
            continue;
        snprintf(path, sizeof path, "/proc/%s/comm", pids[i]);
        /* comm holds 15 characters: "power-profiles-" */
        if (sysroot_read_line(path, comm, sizeof comm) > 0 && strncmp(comm, "power-profiles-", 15) == 0)
            found = atoi(pids[i]);
    }
    free_list(pids, n);
    if (!found) {
        emit(b, "power_profiles_daemon", "inactive", "inactive|performance", OK, "%s", "");
        return;
    }
    char state[1024], profile[64] = "";
    if (sysroot_read("/var/lib/power-profiles-daemon/state.ini", state, sizeof state) > 0) {
        char *p = strstr(state, "Profile=");
        if (p)
            sscanf(p + 8, "%63[^\n]", profile);
    }
    char v[96];
    snprintf(v, sizeof v, "active:%s", profile[0] ? profile : "?");
    if (strcmp(profile, "performance") == 0)
        emit(b, "power_profiles_daemon", v, "inactive|performance", OK, "pid %d", found);
    else
        emit(b, "power_profiles_daemon", v, "inactive|performance", WARN,
             "power-profiles-daemon (pid %d) sets the governor and energy_performance_preference by its "
             "profile%s%s: choose the performance profile, or stop the daemon", found,
             profile[0] ? " " : " (unknown)", profile);
}

/* ---- memory: swap, swappiness, mlock, huge pages ---- */

static void check_swap(diag_buf *b)
{
    int64_t now = sysroot_swap_pages();
    if (now < 0) {
        emit(b, "swap_mount", "", "0", UNKNOWN, "cannot read pswpin and pswpout of /proc/vmstat");
        emit(b, "swap_generation", "", "0", UNKNOWN, "cannot read pswpin and pswpout of /proc/vmstat");
        return;
    }
    char v[32];
    int64_t start = -1;
    if (b->lf) {
        pthread_mutex_lock(&b->lf->mu);
        start = b->lf->swap_at_start;
        pthread_mutex_unlock(&b->lf->mu);
    }
    if (start < 0) {
        snprintf(v, sizeof v, "%lld", (long long)now);
        emit(b, "swap_mount", "", "0", UNKNOWN, "no mount running; %lld pages swapped in and out since boot",
             (long long)now);
    } else {
        int64_t d = now - start;
        snprintf(v, sizeof v, "%lld", (long long)(d > 0 ? d : 0));
        if (d > 0)
            emit(b, "swap_mount", v, "0", WARN,
                 "pages swapped in and out since the mount started: memory is short; lower ctx or parallel of "
                 "the models, set cache_type_k q8_0, or unload one");
        else
            emit(b, "swap_mount", v, "0", OK, "pages swapped in and out since the mount started");
    }
    int64_t worst = -1;
    char who[64] = "";
    if (b->lf) {
        pthread_mutex_lock(&b->lf->mu);
        for (llmfs_model *m = b->lf->models; m; m = m->next) {
            pthread_mutex_lock(&m->mu);
            if (m->swap_gen_delta > worst) {
                worst = m->swap_gen_delta;
                snprintf(who, sizeof who, "%s", m->name);
            }
            pthread_mutex_unlock(&m->mu);
        }
        pthread_mutex_unlock(&b->lf->mu);
    }
    if (worst < 0) {
        emit(b, "swap_generation", "", "0", UNKNOWN, "no generation has finished yet");
        return;
    }
    snprintf(v, sizeof v, "%lld", (long long)worst);
    if (worst > 0)
        emit(b, "swap_generation", v, "0", WARN,
             "pages swapped during the last generation of %s: it does not fit in RAM; see its stats warning", who);
    else
        emit(b, "swap_generation", v, "0", OK, "during the last generation of %s", who);
}

static void check_swappiness(diag_buf *b)
{
    int64_t v;
    int rc = sysroot_read_i64("/proc/sys/vm/swappiness", &v);
    if (rc < 0) {
        emit(b, "swappiness", "", "<=10", UNKNOWN, "cannot read /proc/sys/vm/swappiness: %s", strerror(-rc));
        return;
    }
    char s[32];
    snprintf(s, sizeof s, "%lld", (long long)v);
    if (v > 10)
        emit(b, "swappiness", s, "<=10", WARN,
             "the kernel swaps idle model memory out readily and the next reply pays for it: write 10 to "
             "/proc/sys/vm/swappiness, or set mlock on");
    else
        emit(b, "swappiness", s, "<=10", OK, "%s", "");
}

/* RLIMIT_MEMLOCK as /proc/self/limits shows it (so a test can fabricate it): the soft
 * limit in bytes, -1 unlimited, -2 unreadable. */
static int64_t memlock_limit(void)
{
    char t[4096];
    if (sysroot_read("/proc/self/limits", t, sizeof t) <= 0)
        return -2;
    char *p = strstr(t, "Max locked memory");
    if (!p)
        return -2;
    p += strlen("Max locked memory");
    while (*p == ' ')
        p++;
    if (strncmp(p, "unlimited", 9) == 0)
        return -1;
    return strtoll(p, NULL, 10);
}

static void check_memlock(diag_buf *b)
{
    int64_t lim = memlock_limit();
    uint64_t need = 0;
    int n = 0;
    if (b->lf) {
        pthread_mutex_lock(&b->lf->mu);
        for (llmfs_model *m = b->lf->models; m; m = m->next) {
            pthread_mutex_lock(&m->mu);
            if (m->settings.mlock && m->mdl) {
                uint64_t cpu, gpu;
                engine_weight_bytes(m, &cpu, &gpu);
                need += cpu;
                n++;
            }
            pthread_mutex_unlock(&m->mu);
        }
        pthread_mutex_unlock(&b->lf->mu);
    }
    char v[32], e[32];
    if (lim == -2) {
        emit(b, "memlock", "", "", UNKNOWN, "cannot read Max locked memory in /proc/self/limits");
        return;
    }
    if (lim == -1)
        snprintf(v, sizeof v, "unlimited");
    else
        snprintf(v, sizeof v, "%.0fMiB", lim / MIB);
    if (!n) {
        emit(b, "memlock", v, "", OK, "no model has mlock on");
        return;
    }
    snprintf(e, sizeof e, ">=%.0fMiB", need / MIB);
    if (lim >= 0 && (uint64_t)lim < need)
        emit(b, "memlock", v, e, WARN,
             "RLIMIT_MEMLOCK is below the weights of the models with mlock on, so their pages are not locked: "
             "raise it (ulimit -l, LimitMEMLOCK= of the service) or set mlock off");
    else
        emit(b, "memlock", v, e, OK, "%d model(s) with mlock on", n);
}

static void check_thp(diag_buf *b)
{
    char t[256];
    const char *path = "/sys/kernel/mm/transparent_hugepage/enabled";
    if (sysroot_read_line(path, t, sizeof t) <= 0) {
        emit(b, "transparent_hugepage", "", "always|madvise", UNKNOWN, "cannot read %s", path);
        return;
    }
    /* "always [madvise] never": the bracketed word is the mode */
    char mode[32] = "";
    char *l = strchr(t, '['), *r = l ? strchr(l, ']') : NULL;
    if (l && r)
        snprintf(mode, sizeof mode, "%.*s", (int)(r - l - 1), l + 1);
    else
        snprintf(mode, sizeof mode, "%.31s", t);
    if (strcmp(mode, "never") == 0)
        emit(b, "transparent_hugepage", mode, "always|madvise", WARN,
             "the KV cache and activations use 4 KiB pages, costing TLB misses: write madvise or always to %s", path);
    else
        emit(b, "transparent_hugepage", mode, "always|madvise", OK, "%s", "");
}

/* ---- model warnings ---- */

/* A profile whose preset keeps one sequence (parallel=1) is meant for one user. */
static bool single_user_profile(const char *name)
{
    const char *pairs = name && *name ? llmfs_profile(name) : NULL;
    const char *p = pairs ? strstr(pairs, "parallel=1") : NULL;
    return p && (p[10] == ' ' || p[10] == 0);
}

int diag_model_warnings(const diag_model_facts *f, char (*out)[DIAG_WARN_LEN], int cap)
{
    int n = 0;
#define WARNF(...)                                            \
    do {                                                      \
        if (n < cap)                                          \
            snprintf(out[n], DIAG_WARN_LEN, __VA_ARGS__);     \
        n++;                                                  \
    } while (0)
    if (f->n_ctx_train > 0 && f->ctx > f->n_ctx_train)
        WARNF("ctx %d exceeds the %d tokens the model was trained on: set ctx %d or less", f->ctx, f->n_ctx_train,
              f->n_ctx_train);
    /* speculative decoding (the mtp preset, or spec_type mtp) compares draft and target
     * logits; a quantized cache shifts them enough to reject most drafts */
    if ((strcmp(f->profile, "mtp") == 0 || f->spec_mtp) &&
        (strcmp(f->cache_k, "f16") != 0 || strcmp(f->cache_v, "f16") != 0))
        WARNF("KV cache quantized (cache_type_k %s, cache_type_v %s) while speculative decoding (%s) is "
              "on: drafts are rejected more often; set cache_type_k f16 and cache_type_v f16",
              f->cache_k, f->cache_v, f->spec_mtp ? "spec_type mtp" : "profile mtp");
    if (f->weights_gpu > 0 && f->n_gpus > 0 &&
        ((f->fit && f->fit_target < DIAG_HEADROOM_MIB) || f->vram_free < (uint64_t)DIAG_HEADROOM_MIB * 1048576))
        WARNF("the GPU keeps %.0f MiB free (fit_target %d) with the model loaded, under %d MiB: a long prompt or "
              "another program can run it out of memory; set fit_target %d or more, or lower ngl or ctx",
              f->vram_free / MIB, f->fit_target, DIAG_HEADROOM_MIB, DIAG_HEADROOM_MIB);
    /* encoding an image on the GPU takes a burst of memory the text path never needs */
    if (f->vision && f->weights_gpu > 0 && f->fit && f->fit_target < DIAG_VISION_TARGET_MIB)
        WARNF("fit_target %d MiB leaves too little GPU memory for the vision projector's image batches: set "
              "fit_target %d or more (profile vision-12gb)", f->fit_target, DIAG_VISION_TARGET_MIB);
    if (f->projector_cpu[0])
        WARNF("the vision projector runs on the CPU, not the GPU (%.150s): images encode slower; lower ngl or ctx, "
              "or set mmproj_offload off to keep it on the CPU without this warning", f->projector_cpu);
    if (f->hybrid) {
        cpu_list all, on_e;
        cpu_allowed(&all);
        cpu_list_and(&on_e, cpu_list_count(&f->cpus) ? &f->cpus : &all, &f->e_cores);
        if (cpu_list_count(&on_e)) {
            char es[128];
            cpu_list_format(&on_e, es, sizeof es);
            WARNF("the model's threads run on E-cores %s and every step waits for the slowest of them: set "
                  "cpu_affinity p-cores", es);
        }
    }
    if (f->swap_gen_delta > 0)
        WARNF("%lld pages were swapped in or out during the last generation: the model and its KV cache do not "
              "fit in RAM; lower ctx or parallel, set cache_type_k q8_0 and cache_type_v q8_0, or set mlock on",
              (long long)f->swap_gen_delta);
    if (f->mem_available && f->weights_cpu + f->kv_bytes > f->mem_available + f->rss) {
        if (f->mmap)
            WARNF("weights and KV cache (%.0f MiB) exceed the available RAM (%.0f MiB) with mmap on: the kernel will "
                  "drop weight pages and read them again from disk every step; lower ctx or parallel, set "
                  "cache_type_k q8_0, or raise ngl", (f->weights_cpu + f->kv_bytes) / MIB,
                  (f->mem_available + f->rss) / MIB);
        else
            WARNF("weights and KV cache (%.0f MiB) exceed the available RAM (%.0f MiB): lower ctx or parallel, set "
                  "cache_type_k q8_0, or raise ngl", (f->weights_cpu + f->kv_bytes) / MIB,
                  (f->mem_available + f->rss) / MIB);
    }
    if (f->parallel > 1 && single_user_profile(f->profile))
        WARNF("parallel %d keeps %d KV sequences (%.0f MiB) on the single-user profile %s, memory the weights could "
              "use: set parallel 1", f->parallel, f->parallel, f->kv_bytes / MIB, f->profile);
#undef WARNF
    return n;
}

static uint64_t rss_now(void)
{
    FILE *fp = fopen("/proc/self/statm", "re");
    unsigned long long size = 0, res = 0;
    if (fp) {
        if (fscanf(fp, "%llu %llu", &size, &res) != 2)
            res = 0;
        fclose(fp);
    }
    return (uint64_t)res * (uint64_t)sysconf(_SC_PAGESIZE);
}

void diag_model_facts_get(llmfs_model *m, diag_model_facts *f)
{
    memset(f, 0, sizeof *f);
    /* the machine without the model's lock */
    f->mem_available = sysroot_mem_available();
    f->rss = rss_now();
    cpu_list p;
    f->hybrid = cpu_hybrid(&p, &f->e_cores);

    pthread_mutex_lock(&m->mu);
    const llmfs_settings *s = &m->settings;
    snprintf(f->profile, sizeof f->profile, "%s", s->profile ? s->profile : "");
    f->parallel = s->parallel;
    f->ctx = s->ctx;
    f->n_ctx_train = m->mdl ? m->mdl->hp.n_ctx_train : 0;
    settings_get(s, "cache_type_k", f->cache_k, sizeof f->cache_k);
    settings_get(s, "cache_type_v", f->cache_v, sizeof f->cache_v);
    f->fit = s->fit;
    f->mmap = s->mmap;
    f->spec_mtp = (s->spec_type & SPEC_MTP) != 0;
    f->fit_target = s->fit_target;
    engine_weight_bytes(m, &f->weights_cpu, &f->weights_gpu);
    f->kv_bytes = m->kv ? kv_cache_bytes(m->kv) : 0;
    f->cpus = m->cpus;
    f->swap_gen_delta = m->swap_gen_delta;
    f->vision = clip_on_device(m->clip);
    snprintf(f->projector_cpu, sizeof f->projector_cpu, "%s", m->clip_note);
    pthread_mutex_unlock(&m->mu);

    /* The GPU only for a model that uses one: asking the runtime costs a device context
     * in a process that has none yet. */
    if (f->weights_gpu > 0) {
        llmfs_gpu_info g[16];
        int ng = llmfs_gpus(g, 16);
        f->n_gpus = ng;
        for (int i = 0; i < ng; i++)
            if (i == 0 || g[i].vram_free < f->vram_free)
                f->vram_free = g[i].vram_free;
    }
}

static void check_warnings(diag_buf *b)
{
    if (!b->lf)
        return;
    char *names[64];
    int n = llmfs_model_names(b->lf, names, 64);
    for (int i = 0; i < n && i < 64; i++) {
        llmfs_model *m = llmfs_model_get(b->lf, names[i]);
        if (m) {
            diag_model_facts f;
            char w[DIAG_MAX_WARNINGS][DIAG_WARN_LEN];
            diag_model_facts_get(m, &f);
            int k = diag_model_warnings(&f, w, DIAG_MAX_WARNINGS);
            for (int j = 0; j < k && j < DIAG_MAX_WARNINGS; j++)
                emit(b, "warning", names[i], "none", WARN, "%s", w[j]);
            llmfs_model_put(m);
        }
        free(names[i]);
    }
}

/* ---- the table ---- */

static void (*const checks[])(diag_buf *) = {
    check_mem_speed, check_governor, check_epp,     check_freq,   check_hybrid,  check_model_threads,
    check_vram,      check_pcie,     check_thermal, check_top_cpu, check_swap,   check_swappiness,
    check_memlock,   check_thp,      check_ppd,     check_warnings,
};

char *diag_text(llmfs *lf)
{
    diag_buf b = {.lf = lf};
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++)
        checks[i](&b);
    put(&b, "");
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

char *llmfs_diag_text(llmfs *lf)
{
    return diag_text(lf);
}

int llmfs_model_warnings(llmfs_model *m, char *buf, size_t cap)
{
    diag_model_facts f;
    char w[DIAG_MAX_WARNINGS][DIAG_WARN_LEN];
    diag_model_facts_get(m, &f);
    int k = diag_model_warnings(&f, w, DIAG_MAX_WARNINGS);
    size_t o = 0;
    if (cap)
        buf[0] = 0;
    for (int i = 0; i < k && i < DIAG_MAX_WARNINGS; i++)
        o += (size_t)snprintf(o < cap ? buf + o : NULL, o < cap ? cap - o : 0, "warning %s\n", w[i]);
    if (cap && o >= cap)
        buf[cap - 1] = 0;
    return (int)o;
}
