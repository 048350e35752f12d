/* Diagnostics: every check against fabricated machines (LLMFS_SYSROOT), the model
 * warnings from stated facts and from loaded models, cpu lists, and the placement of a
 * model's threads (cpu_affinity, priority) as the kernel reports it. */
#include "cpuset.h"
#include "diag.h"
#include "llmfs.h"
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- a fabricated machine ---- */

static char root[PATH_MAX];

static void mkdirs(const char *path)
{
    char p[PATH_MAX];
    snprintf(p, sizeof p, "%s", path);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') {
            *s = 0;
            mkdir(p, 0755);
            *s = '/';
        }
    mkdir(p, 0755);
}

/* Writes root/rel with the given bytes (the folders are made). */
static void put_bytes(const char *rel, const void *data, size_t n)
{
    char path[PATH_MAX];
    snprintf(path, sizeof path, "%s%s", root, rel);
    char *slash = strrchr(path, '/');
    *slash = 0;
    mkdirs(path);
    *slash = '/';
    FILE *f = fopen(path, "w");
    ck_assert_msg(f != NULL, "cannot write %s", path);
    ck_assert_uint_eq(fwrite(data, 1, n, f), n);
    fclose(f);
}

static void put(const char *rel, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(const char *rel, const char *fmt, ...)
{
    char text[4096];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    put_bytes(rel, text, strlen(text));
}

static void rm_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d) {
        struct dirent *de;
        while ((de = readdir(d))) {
            if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
                continue;
            char p[PATH_MAX];
            snprintf(p, sizeof p, "%s/%s", path, de->d_name);
            rm_tree(p);
        }
        closedir(d);
        rmdir(path);
    } else {
        unlink(path);
    }
}

static void setup(void)
{
    snprintf(root, sizeof root, "/tmp/llmfs-diag-XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(root));
    setenv("LLMFS_SYSROOT", root, 1);
}

static void teardown(void)
{
    unsetenv("LLMFS_SYSROOT");
    rm_tree(root);
}

/* The line of check `name` in the diag text (without the newline), or "" when none. */
static const char *line_of(const char *text, const char *name)
{
    static char line[1024];
    line[0] = 0;
    size_t nl = strlen(name);
    for (const char *p = text; p && *p;) {
        const char *e = strchr(p, '\n');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (l > nl && strncmp(p, name, nl) == 0 && p[nl] == ' ') {
            snprintf(line, sizeof line, "%.*s", (int)l, p);
            break;
        }
        p = e ? e + 1 : NULL;
    }
    return line;
}

/* Asserts that the check's line starts with "name expect" (value, expected, verdict). */
static void expect_line(const char *text, const char *name, const char *expect)
{
    const char *l = line_of(text, name);
    char want[512];
    snprintf(want, sizeof want, "%s %s", name, expect);
    ck_assert_msg(strncmp(l, want, strlen(want)) == 0 && (l[strlen(want)] == 0 || l[strlen(want)] == ' '),
                  "want '%s', got '%s'\nwhole text:\n%s", want, l, text);
}

static char *diag(llmfs *lf)
{
    char *t = diag_text(lf);
    ck_assert_ptr_nonnull(t);
    return t;
}

/* Every line: four one-word fields, a known verdict, then nothing or "# reason". */
static void check_format(const char *text)
{
    int lines = 0;
    for (const char *p = text; *p;) {
        const char *e = strchr(p, '\n');
        ck_assert_msg(e != NULL, "unterminated last line: %s", p);
        char l[1024];
        snprintf(l, sizeof l, "%.*s", (int)(e - p), p);
        char *hash = strstr(l, " # ");
        if (hash)
            *hash = 0;
        char f[5][256];
        int n = sscanf(l, "%255s %255s %255s %255s %255s", f[0], f[1], f[2], f[3], f[4]);
        ck_assert_msg(n == 4, "not four fields: '%.*s'", (int)(e - p), p);
        ck_assert_msg(strcmp(f[3], "ok") == 0 || strcmp(f[3], "warn") == 0 || strcmp(f[3], "unknown") == 0,
                      "verdict '%s' in '%s'", f[3], l);
        if (strcmp(f[3], "unknown") == 0)
            ck_assert_msg(hash != NULL, "unknown without a reason: '%s'", l);
        lines++;
        p = e + 1;
    }
    ck_assert_int_gt(lines, 10);
}

static const char *const every_check[] = {
    "mem_speed", "cpu_governor", "cpu_epp", "cpu_freq", "cpu_hybrid", "model_cpus", "vram_free", "pcie",
    "thermal", "top_cpu", "swap_mount", "swap_generation", "swappiness", "memlock", "transparent_hugepage",
    "power_profiles_daemon",
};

static void check_every_check(const char *text)
{
    for (size_t i = 0; i < sizeof every_check / sizeof every_check[0]; i++) {
        char a[64], b[64];
        snprintf(a, sizeof a, "\n%s ", every_check[i]);
        snprintf(b, sizeof b, "\n%s.", every_check[i]);
        bool first = strncmp(text, every_check[i], strlen(every_check[i])) == 0;
        ck_assert_msg(first || strstr(text, a) || strstr(text, b), "no line for %s:\n%s", every_check[i], text);
    }
}

/* ---- the format, on this machine and on an empty one ---- */

START_TEST(this_machine_answers_every_check)
{
    unsetenv("LLMFS_SYSROOT");
    char *t = diag(NULL);
    check_format(t);
    check_every_check(t);
    free(t);
}
END_TEST

START_TEST(empty_machine_answers_unknown)
{
    char *t = diag(NULL);
    check_format(t);
    check_every_check(t);
    expect_line(t, "mem_speed", "- rated unknown");
    expect_line(t, "cpu_governor", "- performance unknown");
    expect_line(t, "thermal", "- - unknown");
    expect_line(t, "pcie", "- - unknown");
    expect_line(t, "swappiness", "- <=10 unknown");
    expect_line(t, "swap_mount", "- 0 unknown");
    free(t);
}
END_TEST

START_TEST(garbage_files_do_not_crash)
{
    put("/sys/firmware/dmi/entries/17-0/raw", "\x11");
    put("/sys/devices/system/cpu/cpufreq/policy0/scaling_governor", "%s", "");
    put("/sys/devices/system/cpu/cpufreq/policy0/cpuinfo_max_freq", "many");
    put("/sys/class/thermal/thermal_zone0/temp", "hot");
    put("/sys/class/thermal/thermal_zone1/temp", "50000");
    put("/sys/class/thermal/thermal_zone1/trip_point_0_type", "passive");
    put("/sys/class/thermal/thermal_zone1/trip_point_0_temp", "x");
    put("/proc/uptime", "12");
    put("/proc/7/stat", "7 (no closing paren R 1 2");
    put("/proc/8/stat", "8 (short) R");
    put("/proc/vmstat", "pswpin\npswpout -\n");
    put("/proc/sys/vm/swappiness", "sixty");
    put("/proc/self/limits", "Max locked memory\n");
    put("/sys/kernel/mm/transparent_hugepage/enabled", "[never");
    put("/sys/devices/cpu_core/cpus", "0-");
    put("/sys/devices/cpu_atom/cpus", "99999999999");
    put("/sys/bus/pci/devices/0000:01:00.0/class", "0x030000");
    put("/sys/bus/pci/devices/0000:01:00.0/vendor", "0x10de");
    put("/sys/bus/pci/devices/0000:01:00.0/current_link_speed", "Unknown");
    char *t = diag(NULL);
    check_format(t);
    check_every_check(t);
    expect_line(t, "cpu_hybrid", "no - ok");
    expect_line(t, "pcie.0000:01:00.0", "- - unknown");
    expect_line(t, "thermal.zone1", "50C - unknown");
    free(t);
}
END_TEST

/* ---- one fabricated fault per check ---- */

START_TEST(memory_below_rated_speed)
{
    /* SMBIOS type 17, formatted part 0x5C bytes, then its strings */
    unsigned char raw[0x5C + 16] = {0};
    raw[0] = 17;
    raw[1] = 0x5C;
    raw[0x0C] = 0x00, raw[0x0D] = 0x40;   /* 16 GiB */
    raw[0x10] = 1;                        /* locator: string 1 */
    raw[0x15] = 5600 & 0xFF, raw[0x16] = 5600 >> 8;
    raw[0x20] = 4800 & 0xFF, raw[0x21] = 4800 >> 8;
    memcpy(raw + 0x5C, "DIMM A1\0\0", 9);
    put_bytes("/sys/firmware/dmi/entries/17-0/raw", raw, 0x5C + 9);
    /* an empty slot (size 0) says nothing */
    unsigned char empty[0x28] = {17, 0x28};
    put_bytes("/sys/firmware/dmi/entries/17-1/raw", empty, sizeof empty);
    /* a module at its rated speed, reported in the extended fields */
    unsigned char ext[0x5C + 8] = {0};
    ext[0] = 17, ext[1] = 0x5C, ext[0x0C] = 0x00, ext[0x0D] = 0x40, ext[0x10] = 1;
    ext[0x15] = ext[0x16] = ext[0x20] = ext[0x21] = 0xFF;
    unsigned long s = 70000;
    for (int k = 0; k < 4; k++)
        ext[0x54 + k] = ext[0x58 + k] = (unsigned char)(s >> (8 * k));
    memcpy(ext + 0x5C, "B2\0\0", 4);
    put_bytes("/sys/firmware/dmi/entries/17-2/raw", ext, 0x5C + 4);
    char *t = diag(NULL);
    expect_line(t, "mem_speed.DIMM_A1", "4800MT/s 5600MT/s warn");
    expect_line(t, "mem_speed.B2", "70000MT/s 70000MT/s ok");
    ck_assert_ptr_null(strstr(t, "mem_speed.17-1"));
    free(t);
}
END_TEST

static void policy(int i, const char *gov, const char *epp, long cur, long max, long smax)
{
    char d[128];
    snprintf(d, sizeof d, "/sys/devices/system/cpu/cpufreq/policy%d", i);
    char p[256];
    snprintf(p, sizeof p, "%s/scaling_governor", d), put(p, "%s\n", gov);
    if (epp)
        snprintf(p, sizeof p, "%s/energy_performance_preference", d), put(p, "%s\n", epp);
    snprintf(p, sizeof p, "%s/scaling_cur_freq", d), put(p, "%ld\n", cur);
    snprintf(p, sizeof p, "%s/cpuinfo_max_freq", d), put(p, "%ld\n", max);
    snprintf(p, sizeof p, "%s/scaling_max_freq", d), put(p, "%ld\n", smax);
}

START_TEST(hybrid_cpu_on_powersave)
{
    /* P-cores 0-1 (policy0/1, 5.4 GHz), E-cores 2-3 (policy2/3, 3.9 GHz); policy10 sorts last */
    policy(0, "powersave", "balance_power", 800000, 5400000, 5400000);
    policy(1, "performance", "performance", 5100000, 5400000, 5400000);
    policy(2, "powersave", "power", 700000, 3900000, 3900000);
    policy(10, "performance", NULL, 700000, 3900000, 3900000);
    put("/sys/devices/cpu_core/cpus", "0-1\n");
    put("/sys/devices/cpu_atom/cpus", "2-3\n");
    char *t = diag(NULL);
    expect_line(t, "cpu_governor.policy0", "powersave performance warn");
    expect_line(t, "cpu_governor.policy1", "performance performance ok");
    expect_line(t, "cpu_governor.policy2", "powersave performance warn");
    expect_line(t, "cpu_governor.policy10", "performance performance ok");
    ck_assert(strstr(t, "cpu_governor.policy2") < strstr(t, "cpu_governor.policy10"));
    expect_line(t, "cpu_epp.policy0", "balance_power performance warn");
    expect_line(t, "cpu_epp.policy1", "performance performance ok");
    expect_line(t, "cpu_epp.policy2", "power performance warn");
    /* the fastest cores are the P-cores: the highest current frequency among them */
    expect_line(t, "cpu_freq", "5100MHz 5400MHz ok");
    expect_line(t, "cpu_hybrid", "p=0-1;e=2-3 - ok");
    free(t);

    /* cores capped below their maximum */
    policy(1, "performance", "performance", 3000000, 5400000, 3000000);
    t = diag(NULL);
    expect_line(t, "cpu_freq", "3000MHz 5400MHz warn");
    ck_assert_ptr_nonnull(strstr(line_of(t, "cpu_freq"), "policy1"));
    free(t);
}
END_TEST

START_TEST(affinity_on_a_hybrid_cpu)
{
    /* this machine's cpu 0 as the P-core, the rest E-cores */
    cpu_list all;
    cpu_allowed(&all);
    int first = -1;
    for (int c = 0; c < CPU_LIST_MAX && first < 0; c++)
        if (cpu_list_has(&all, c))
            first = c;
    ck_assert_int_ge(first, 0);
    put("/sys/devices/cpu_core/cpus", "%d\n", first);
    put("/sys/devices/cpu_atom/cpus", "%d-%d\n", first + 1, first + 7);
    cpu_list l;
    llmfs_error e = {0};
    ck_assert_int_eq(cpu_affinity_resolve("", &l, &e), 1);
    ck_assert_int_eq(cpu_list_count(&l), 1);
    ck_assert(cpu_list_has(&l, first));
    ck_assert_int_eq(cpu_affinity_resolve("p-cores", &l, &e), 1);
    ck_assert(cpu_list_has(&l, first));
    char *t = diag(NULL);
    char want[64];
    snprintf(want, sizeof want, "%d p-cores ok", first);
    expect_line(t, "model_cpus", want);
    free(t);
    /* without the hybrid layout: the default pins nothing, p-cores is refused */
    unlink(strcat(strcpy((char[PATH_MAX]){0}, root), "/sys/devices/cpu_atom/cpus"));
    ck_assert_int_eq(cpu_affinity_resolve("", &l, &e), 0);
    ck_assert_int_eq(cpu_affinity_resolve("p-cores", &l, &e), -EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "hybrid"));
}
END_TEST

START_TEST(throttling_thermal_zone)
{
    put("/sys/class/thermal/thermal_zone0/type", "x86_pkg_temp\n");
    put("/sys/class/thermal/thermal_zone0/temp", "99000\n");
    put("/sys/class/thermal/thermal_zone0/trip_point_0_type", "active\n");
    put("/sys/class/thermal/thermal_zone0/trip_point_0_temp", "60000\n");
    put("/sys/class/thermal/thermal_zone0/trip_point_1_type", "passive\n");
    put("/sys/class/thermal/thermal_zone0/trip_point_1_temp", "95000\n");
    put("/sys/class/thermal/thermal_zone0/trip_point_2_type", "critical\n");
    put("/sys/class/thermal/thermal_zone0/trip_point_2_temp", "105000\n");
    put("/sys/class/thermal/thermal_zone1/type", "acpitz\n");
    put("/sys/class/thermal/thermal_zone1/temp", "40000\n");
    put("/sys/class/thermal/thermal_zone1/trip_point_0_type", "critical\n");
    put("/sys/class/thermal/thermal_zone1/trip_point_0_temp", "100000\n");
    char *t = diag(NULL);
    /* the active (fan) trip at 60 C does not count; the passive one at 95 C does */
    expect_line(t, "thermal.zone0", "99C <95C warn");
    ck_assert_ptr_nonnull(strstr(line_of(t, "thermal.zone0"), "throttled"));
    expect_line(t, "thermal.zone1", "40C <100C ok");
    free(t);
}
END_TEST

START_TEST(pcie_link_at_gen1)
{
    const char *d = "/sys/bus/pci/devices/0000:01:00.0";
    char p[256];
    snprintf(p, sizeof p, "%s/class", d), put(p, "0x030000\n");
    snprintf(p, sizeof p, "%s/vendor", d), put(p, "0x10de\n");
    snprintf(p, sizeof p, "%s/current_link_speed", d), put(p, "2.5 GT/s PCIe\n");
    snprintf(p, sizeof p, "%s/max_link_speed", d), put(p, "16.0 GT/s PCIe\n");
    snprintf(p, sizeof p, "%s/current_link_width", d), put(p, "16\n");
    snprintf(p, sizeof p, "%s/max_link_width", d), put(p, "16\n");
    /* a GPU at full speed but half width */
    d = "/sys/bus/pci/devices/0000:02:00.0";
    snprintf(p, sizeof p, "%s/class", d), put(p, "0x030200\n");
    snprintf(p, sizeof p, "%s/vendor", d), put(p, "0x10de\n");
    snprintf(p, sizeof p, "%s/current_link_speed", d), put(p, "32.0 GT/s PCIe\n");
    snprintf(p, sizeof p, "%s/max_link_speed", d), put(p, "32.0 GT/s PCIe\n");
    snprintf(p, sizeof p, "%s/current_link_width", d), put(p, "8\n");
    snprintf(p, sizeof p, "%s/max_link_width", d), put(p, "16\n");
    /* not a GPU: a network card */
    d = "/sys/bus/pci/devices/0000:03:00.0";
    snprintf(p, sizeof p, "%s/class", d), put(p, "0x020000\n");
    snprintf(p, sizeof p, "%s/vendor", d), put(p, "0x10de\n");
    char *t = diag(NULL);
    expect_line(t, "pcie.0000:01:00.0", "gen1x16 gen4x16 warn");
    expect_line(t, "pcie.0000:02:00.0", "gen5x8 gen5x16 warn");
    ck_assert_ptr_null(strstr(t, "0000:03:00.0"));
    free(t);
    d = "/sys/bus/pci/devices/0000:02:00.0";
    snprintf(p, sizeof p, "%s/current_link_width", d), put(p, "16\n");
    t = diag(NULL);
    expect_line(t, "pcie.0000:02:00.0", "gen5x16 gen5x16 ok");
    free(t);
}
END_TEST

START_TEST(swapping_machine)
{
    put("/proc/vmstat", "nr_free_pages 1\npswpin 100\npswpout 50\n");
    llmfs_error e = {0};
    llmfs *lf = llmfs_new(&e);
    ck_assert_ptr_nonnull(lf);
    char *t = diag(lf);
    expect_line(t, "swap_mount", "0 0 ok");
    expect_line(t, "swap_generation", "- 0 unknown");
    free(t);
    put("/proc/vmstat", "nr_free_pages 1\npswpin 130\npswpout 70\n");
    t = diag(lf);
    expect_line(t, "swap_mount", "50 0 warn");
    free(t);
    llmfs_free(lf);
    /* without a mount: since boot, as a reason */
    t = diag(NULL);
    expect_line(t, "swap_mount", "- 0 unknown");
    ck_assert_ptr_nonnull(strstr(line_of(t, "swap_mount"), "200 pages"));
    free(t);
}
END_TEST

START_TEST(memory_settings)
{
    put("/proc/sys/vm/swappiness", "60\n");
    put("/sys/kernel/mm/transparent_hugepage/enabled", "always madvise [never]\n");
    put("/proc/self/limits", "Limit                     Soft Limit           Hard Limit           Units\n"
                             "Max locked memory         65536                65536                bytes\n");
    char *t = diag(NULL);
    expect_line(t, "swappiness", "60 <=10 warn");
    expect_line(t, "transparent_hugepage", "never always|madvise warn");
    expect_line(t, "memlock", "0MiB - ok");
    free(t);
    put("/proc/sys/vm/swappiness", "1\n");
    put("/sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n");
    put("/proc/self/limits", "Max locked memory         unlimited            unlimited            bytes\n");
    t = diag(NULL);
    expect_line(t, "swappiness", "1 <=10 ok");
    expect_line(t, "transparent_hugepage", "madvise always|madvise ok");
    expect_line(t, "memlock", "unlimited - ok");
    free(t);
}
END_TEST

START_TEST(busy_processes_and_power_profiles)
{
    put("/proc/uptime", "1000.00 1500.00\n");
    /* 900 s of CPU over 1000 s of life: 90% */
    put("/proc/100/stat", "100 (burn er) R 1 100 100 0 -1 4194304 0 0 0 0 90000 0 0 0 20 0 1 0 0 1 1\n");
    put("/proc/101/stat", "101 (llmfs) R 1 100 100 0 -1 4194304 0 0 0 0 99000 0 0 0 20 0 1 0 0 1 1\n");
    put("/proc/102/stat", "102 (quiet) S 1 100 100 0 -1 4194304 0 0 0 0 100 100 0 0 20 0 1 0 0 1 1\n");
    put("/proc/103/comm", "power-profiles-\n");
    put("/var/lib/power-profiles-daemon/state.ini", "[State]\nDriver=intel_pstate\nProfile=balanced\n");
    char *t = diag(NULL);
    expect_line(t, "top_cpu.1", "burn_er/100:90% <50% warn");
    expect_line(t, "top_cpu.2", "quiet/102:0% <50% ok");
    ck_assert_ptr_null(strstr(t, "llmfs/101"));
    expect_line(t, "power_profiles_daemon", "active:balanced inactive|performance warn");
    free(t);
    put("/var/lib/power-profiles-daemon/state.ini", "[State]\nProfile=performance\n");
    t = diag(NULL);
    expect_line(t, "power_profiles_daemon", "active:performance inactive|performance ok");
    free(t);
    unlink(strcat(strcpy((char[PATH_MAX]){0}, root), "/proc/103/comm"));
    t = diag(NULL);
    expect_line(t, "power_profiles_daemon", "inactive inactive|performance ok");
    free(t);
}
END_TEST

/* ---- model warnings from stated facts ---- */

static diag_model_facts healthy(void)
{
    diag_model_facts f = {0};
    snprintf(f.profile, sizeof f.profile, "%s", "");
    f.parallel = 1;
    f.ctx = 4096;
    f.n_ctx_train = 32768;
    snprintf(f.cache_k, sizeof f.cache_k, "f16");
    snprintf(f.cache_v, sizeof f.cache_v, "f16");
    f.fit = true;
    f.mmap = true;
    f.fit_target = 1024;
    f.weights_cpu = 100 << 20;
    f.kv_bytes = 50 << 20;
    f.mem_available = 8ull << 30;
    f.rss = 200 << 20;
    f.swap_gen_delta = -1;
    return f;
}

static int warnings(const diag_model_facts *f, const char *needle)
{
    char w[DIAG_MAX_WARNINGS][DIAG_WARN_LEN];
    int n = diag_model_warnings(f, w, DIAG_MAX_WARNINGS), hits = 0;
    for (int i = 0; i < n; i++)
        hits += needle && strstr(w[i], needle) != NULL;
    return needle ? hits : n;
}

START_TEST(warning_rules)
{
    diag_model_facts f = healthy();
    ck_assert_int_eq(warnings(&f, NULL), 0);

    /* speculative decoding with a quantized cache, and the fix */
    snprintf(f.profile, sizeof f.profile, "mtp");
    snprintf(f.cache_k, sizeof f.cache_k, "q8_0");
    ck_assert_int_eq(warnings(&f, "set cache_type_k f16 and cache_type_v f16"), 1);
    snprintf(f.cache_k, sizeof f.cache_k, "f16");
    ck_assert_int_eq(warnings(&f, NULL), 0);

    /* a GPU fit with little headroom (the simulated device's numbers) */
    f = healthy();
    f.n_gpus = 1;
    f.weights_gpu = 1ull << 30;
    f.vram_free = 300ull << 20;
    ck_assert_int_eq(warnings(&f, "set fit_target 512 or more"), 1);
    f.vram_free = 2ull << 30;
    f.fit_target = 256;
    ck_assert_int_eq(warnings(&f, "set fit_target 512 or more"), 1);
    f.fit_target = 512;
    ck_assert_int_eq(warnings(&f, NULL), 0);
    f.weights_gpu = 0; /* nothing on the GPU: its memory is no concern */
    f.vram_free = 1;
    ck_assert_int_eq(warnings(&f, NULL), 0);

    /* a vision projector on the GPU (mmproj, mmproj_offload) with a small fit target */
    f = healthy();
    f.vision = true;
    f.n_gpus = 1;
    f.vram_free = 4ull << 30;
    f.weights_gpu = 1ull << 30;
    ck_assert_int_eq(warnings(&f, "set fit_target 2048 or more"), 1);
    f.fit_target = 2048;
    ck_assert_int_eq(warnings(&f, NULL), 0);
    /* one meant for the GPU that runs on the CPU: the reason, and what to set */
    f.vision = false;
    snprintf(f.projector_cpu, sizeof f.projector_cpu, "mmproj: no room on CUDA for v.blk.0.ln1.weight (512 bytes)");
    ck_assert_int_eq(warnings(&f, "no room on CUDA for v.blk.0.ln1.weight"), 1);
    ck_assert_int_eq(warnings(&f, "set mmproj_offload off"), 1);

    /* threads on E-cores */
    f = healthy();
    f.hybrid = true;
    cpu_list_add(&f.e_cores, 1);
    cpu_list_add(&f.cpus, 0);
    cpu_list_add(&f.cpus, 1);
    ck_assert_int_eq(warnings(&f, "set cpu_affinity p-cores"), 1);
    memset(&f.cpus, 0, sizeof f.cpus);
    cpu_list_add(&f.cpus, 0);
    ck_assert_int_eq(warnings(&f, NULL), 0);

    /* swapping during the last generation */
    f = healthy();
    f.swap_gen_delta = 12;
    ck_assert_int_eq(warnings(&f, "12 pages were swapped"), 1);
    f.swap_gen_delta = 0;
    ck_assert_int_eq(warnings(&f, NULL), 0);

    /* model + KV over the free RAM with mmap on */
    f = healthy();
    f.mem_available = 10 << 20;
    f.rss = 20 << 20;
    ck_assert_int_eq(warnings(&f, "with mmap on"), 1);
    f.kv_bytes = 1 << 20;
    f.weights_cpu = 20 << 20;
    ck_assert_int_eq(warnings(&f, NULL), 0);

    /* parallel above 1 on a single-user profile */
    f = healthy();
    snprintf(f.profile, sizeof f.profile, "text-12gb");
    f.parallel = 4;
    ck_assert_int_eq(warnings(&f, "set parallel 1"), 1);
    snprintf(f.profile, sizeof f.profile, "text-24gb"); /* a preset for two users */
    ck_assert_int_eq(warnings(&f, NULL), 0);
    snprintf(f.profile, sizeof f.profile, "text-12gb");
    f.parallel = 1;
    ck_assert_int_eq(warnings(&f, NULL), 0);

    /* a context beyond training */
    f = healthy();
    f.ctx = 65536;
    ck_assert_int_eq(warnings(&f, "set ctx 32768 or less"), 1);

    /* several at once, all reported; a short array takes the first */
    f.swap_gen_delta = 3;
    f.parallel = 2;
    snprintf(f.profile, sizeof f.profile, "mtp");
    snprintf(f.cache_v, sizeof f.cache_v, "q4_0");
    ck_assert_int_eq(warnings(&f, NULL), 4);
    char one[1][DIAG_WARN_LEN];
    ck_assert_int_eq(diag_model_warnings(&f, one, 1), 4);
    ck_assert_ptr_nonnull(strstr(one[0], "ctx 65536"));
}
END_TEST

/* ---- cpu lists and settings ---- */

START_TEST(cpu_lists)
{
    cpu_list l;
    llmfs_error e = {0};
    char s[128];
    ck_assert_int_eq(cpu_list_parse("0-3,8,10-11", &l, &e), 0);
    ck_assert_int_eq(cpu_list_count(&l), 7);
    cpu_list_format(&l, s, sizeof s);
    ck_assert_str_eq(s, "0-3,8,10-11");
    ck_assert_int_eq(cpu_list_parse("5", &l, &e), 0);
    cpu_list_format(&l, s, sizeof s);
    ck_assert_str_eq(s, "5");
    static const char *bad[] = {"3-1", "a", "1,,2", "1-", "-1", "0-99999", "1 2", "1;2"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&e, 0, sizeof e);
        ck_assert_msg(cpu_list_parse(bad[i], &l, &e) == -EINVAL, "'%s' accepted", bad[i]);
        ck_assert_int_eq(e.code, EINVAL);
        ck_assert_ptr_nonnull(strstr(e.msg, bad[i]));
    }
    /* through the settings table: refused at once, with the setting's name */
    llmfs *lf = llmfs_new(&e);
    ck_assert_int_eq(llmfs_set(lf, "cpu_affinity", "0-1,x", &e), -EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "cpu_affinity"));
    ck_assert_int_eq(llmfs_set(lf, "cpu_affinity", "p-cores", &e), 0);
    ck_assert_int_eq(llmfs_set(lf, "cpu_affinity", "0-3", &e), 0);
    char v[64];
    llmfs_get(lf, "cpu_affinity", v, sizeof v);
    ck_assert_str_eq(v, "0-3");
    ck_assert_int_eq(llmfs_set(lf, "priority", "4", &e), -EINVAL);
    ck_assert_int_eq(llmfs_set(lf, "priority", "2", &e), 0);
    llmfs_free(lf);
}
END_TEST

/* ---- models ---- */

static llmfs *load(const char *name, const char *const *settings, int n, llmfs_error *e)
{
    char path[4096];
    test_shared_path("models/qwen3-tiny-q4_k.gguf", path, sizeof path);
    llmfs *lf = llmfs_new(e);
    ck_assert_ptr_nonnull(lf);
    int rc = llmfs_model_load(lf, name, path, settings, n, e);
    if (rc < 0) {
        llmfs_free(lf);
        return NULL;
    }
    return lf;
}

/* Threads of this process whose Cpus_allowed_list is exactly want. */
static int threads_on(const char *want)
{
    DIR *d = opendir("/proc/self/task");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[300], buf[8192];
        snprintf(path, sizeof path, "/proc/self/task/%s/status", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t l = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[l] = 0;
        char *p = strstr(buf, "Cpus_allowed_list:");
        if (!p)
            continue;
        p += strlen("Cpus_allowed_list:");
        while (*p == ' ' || *p == '\t')
            p++;
        char *nl = strchr(p, '\n');
        if (nl)
            *nl = 0;
        n += strcmp(p, want) == 0;
    }
    closedir(d);
    return n;
}

START_TEST(cpu_affinity_pins_the_threads)
{
    unsetenv("LLMFS_SYSROOT");
    if (!test_shared_dir())
        test_skip_no_shared("cpu_affinity");
    cpu_list all;
    cpu_allowed(&all);
    int last = -1;
    for (int c = 0; c < CPU_LIST_MAX; c++)
        if (cpu_list_has(&all, c))
            last = c;
    char want[16], set[48];
    snprintf(want, sizeof want, "%d", last);
    snprintf(set, sizeof set, "cpu_affinity=%d", last);
    int before = threads_on(want);
    const char *opts[] = {set, "threads=3", "mode=raw", "ctx=256"};
    llmfs_error e = {0};
    llmfs *lf = load("m", opts, 4, &e);
    ck_assert_msg(lf != NULL, "load: %s", e.msg);
    /* two helpers of the pool, then the scheduler once it has started */
    for (int spins = 0; threads_on(want) - before < 3 && spins < 500; spins++)
        usleep(10000);
    ck_assert_int_eq(threads_on(want) - before, 3);
    llmfs_model *m = llmfs_model_get(lf, "m");
    llmfs_model_stats ms;
    llmfs_model_stats_get(m, &ms);
    ck_assert_str_eq(ms.cpus, want);
    ck_assert_int_eq(ms.n_threads, 3);
    /* a load-time setting: refused while loaded unless unchanged */
    ck_assert_int_eq(llmfs_model_ctl(m, "cpu_affinity 0-1000", &e), -EBUSY);
    ck_assert_int_eq(llmfs_model_ctl(m, "cpu_affinity 0-x", &e), -EINVAL);
    llmfs_model_put(m);
    llmfs_free(lf);

    /* a core this process may not use is refused with the reason */
    snprintf(set, sizeof set, "cpu_affinity=%d", last + 1);
    const char *bad[] = {set};
    ck_assert_ptr_null(load("m", bad, 1, &e));
    ck_assert_int_eq(e.code, EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "may only use"));
    const char *bad2[] = {"cpu_affinity=zero"};
    ck_assert_ptr_null(load("m", bad2, 1, &e));
    ck_assert_int_eq(e.code, EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "cpu_affinity"));
}
END_TEST

START_TEST(priority_raises_or_explains)
{
    unsetenv("LLMFS_SYSROOT");
    if (!test_shared_dir())
        test_skip_no_shared("priority");
    const char *opts[] = {"priority=2", "threads=2", "ctx=256"};
    llmfs_error e = {0};
    llmfs *lf = load("m", opts, 3, &e);
    if (!lf) {
        /* without the right to raise priority: EPERM and what to do */
        ck_assert_int_eq(e.code, EPERM);
        ck_assert_ptr_nonnull(strstr(e.msg, "priority 2"));
        ck_assert_ptr_nonnull(strstr(e.msg, "use priority 1"));
        return;
    }
    /* the pool's helper runs at nice -10 (field 19 of its stat) */
    DIR *d = opendir("/proc/self/task");
    int raised = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        char path[300], buf[1024];
        snprintf(path, sizeof path, "/proc/self/task/%s/stat", de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t l = fread(buf, 1, sizeof buf - 1, f);
        fclose(f);
        buf[l] = 0;
        char *p = strrchr(buf, ')');
        int field = 2;
        long nice = 0;
        for (char *tok = strtok(p + 1, " "); tok; tok = strtok(NULL, " "))
            if (++field == 19) {
                nice = atol(tok);
                break;
            }
        raised += nice == -10;
    }
    closedir(d);
    ck_assert_int_ge(raised, 1);
    llmfs_model *m = llmfs_model_get(lf, "m");
    llmfs_model_stats ms;
    llmfs_model_stats_get(m, &ms);
    ck_assert_int_eq(ms.priority, 2);
    llmfs_model_put(m);
    llmfs_free(lf);
}
END_TEST

/* The warning text in the model's stats, warnings and the diag text. */
static void expect_warning(llmfs *lf, const char *name, const char *needle, bool present)
{
    llmfs_model *m = llmfs_model_get(lf, name);
    ck_assert_ptr_nonnull(m);
    char w[4096];
    llmfs_model_warnings(m, w, sizeof w);
    llmfs_model_stats ms;
    llmfs_model_stats_get(m, &ms);
    char *t = llmfs_diag_text(lf);
    ck_assert_ptr_nonnull(t);
    if (present) {
        ck_assert_msg(strstr(w, needle) && strncmp(w, "warning ", 8) == 0, "'%s' not in warnings: %s", needle, w);
        ck_assert_msg(strstr(ms.warning, needle) != NULL, "'%s' not in stats warning: %s", needle, ms.warning);
        ck_assert_msg(strstr(t, needle) != NULL, "'%s' not in diag:\n%s", needle, t);
        check_format(t);
    } else {
        ck_assert_msg(strstr(w, needle) == NULL, "'%s' still in warnings: %s", needle, w);
        ck_assert_msg(strstr(ms.warning, needle) == NULL, "'%s' still in stats: %s", needle, ms.warning);
        ck_assert_msg(strstr(t, needle) == NULL, "'%s' still in diag", needle);
    }
    free(t);
    llmfs_model_put(m);
}

static void ctl(llmfs *lf, const char *line)
{
    llmfs_model *m = llmfs_model_get(lf, "m");
    llmfs_error e = {0};
    ck_assert_msg(llmfs_model_ctl(m, line, &e) == 0, "%s: %s", line, e.msg);
    llmfs_model_put(m);
}

START_TEST(warnings_of_loaded_models)
{
    if (!test_shared_dir())
        test_skip_no_shared("model warnings");
    put("/proc/meminfo", "MemTotal: 16000000 kB\nMemAvailable: 8000000 kB\n");
    put("/proc/vmstat", "pswpin 0\npswpout 0\n");
    llmfs_error e = {0};
    /* speculative decoding with a quantized KV cache */
    const char *mtp[] = {"profile=mtp", "ctx=256", "cache_type_k=q8_0", "threads=1"};
    llmfs *lf = load("m", mtp, 4, &e);
    ck_assert_msg(lf != NULL, "%s", e.msg);
    expect_warning(lf, "m", "set cache_type_k f16 and cache_type_v f16", true);
    ctl(lf, "cache_type_k f16");
    expect_warning(lf, "m", "cache_type_k f16", false);

    /* parallel above 1 on the single-user preset */
    ctl(lf, "parallel 3");
    expect_warning(lf, "m", "set parallel 1", true);
    ctl(lf, "parallel 1");
    expect_warning(lf, "m", "set parallel 1", false);

    /* model + KV over the free RAM with mmap on */
    put("/proc/meminfo", "MemTotal: 16000000 kB\nMemAvailable: 1 kB\n");
    llmfs_model *m = llmfs_model_get(lf, "m");
    llmfs_model_info mi;
    llmfs_model_info_get(m, &mi);
    char line[64];
    snprintf(line, sizeof line, "ctx %d", mi.n_ctx_train < 8192 ? mi.n_ctx_train : 8192);
    ctl(lf, line);
    ctl(lf, "parallel 64");
    llmfs_model_stats ms;
    llmfs_model_stats_get(m, &ms);
    llmfs_model_put(m);
    /* the rule compares with what is free plus what is resident: a KV cache not yet
     * touched is not resident, so a large one exceeds it */
    ck_assert_msg(ms.weight_bytes_cpu + ms.kv_bytes > ms.ram_rss, "KV %llu rss %llu",
                  (unsigned long long)ms.kv_bytes, (unsigned long long)ms.ram_rss);
    {
        expect_warning(lf, "m", "with mmap on", true);
        ctl(lf, "parallel 1");
        ctl(lf, "ctx 256");
        put("/proc/meminfo", "MemTotal: 16000000 kB\nMemAvailable: 8000000 kB\n");
        expect_warning(lf, "m", "with mmap on", false);
    }
    llmfs_free(lf);
}
END_TEST

START_TEST(swap_during_generation)
{
    if (!test_shared_dir())
        test_skip_no_shared("swap warning");
    put("/proc/vmstat", "pswpin 10\npswpout 10\n");
    llmfs_error e = {0};
    const char *opts[] = {"mode=raw", "temp=0", "n_predict=-1", "ctx=4096", "threads=1"};
    llmfs *lf = load("m", opts, 5, &e);
    ck_assert_msg(lf != NULL, "%s", e.msg);
    llmfs_model *m = llmfs_model_get(lf, "m");
    llmfs_session *s = llmfs_session_default(m);
    ck_assert_int_eq(llmfs_session_prompt(s, "Once upon a time", 16, &e), 0);
    /* the machine swaps while the reply is generated */
    put("/proc/vmstat", "pswpin 40\npswpout 17\n");
    llmfs_session_ctl(s, "stop", &e);
    test_wait_idle(s, 120);
    expect_warning(lf, "m", "37 pages were swapped", true);
    char *t = llmfs_diag_text(lf);
    expect_line(t, "swap_generation", "37 0 warn");
    expect_line(t, "swap_mount", "37 0 warn");
    free(t);
    /* the next generation runs without swapping: the warning goes */
    ck_assert_int_eq(llmfs_session_prompt(s, "The cat", 7, &e), 0);
    llmfs_session_ctl(s, "stop", &e);
    test_wait_idle(s, 120);
    expect_warning(lf, "m", "pages were swapped", false);
    t = llmfs_diag_text(lf);
    expect_line(t, "swap_generation", "0 0 ok");
    free(t);
    llmfs_session_put(s);
    llmfs_model_put(m);
    llmfs_free(lf);
}
END_TEST

START_TEST(e_core_threads_warn)
{
    if (!test_shared_dir())
        test_skip_no_shared("E-core warning");
    cpu_list all;
    cpu_allowed(&all);
    if (cpu_list_count(&all) < 2)
        return; /* needs two cores to make one an E-core */
    int c0 = -1, c1 = -1;
    for (int c = 0; c < CPU_LIST_MAX && c1 < 0; c++)
        if (cpu_list_has(&all, c)) {
            if (c0 < 0)
                c0 = c;
            else
                c1 = c;
        }
    put("/sys/devices/cpu_core/cpus", "%d\n", c0);
    put("/sys/devices/cpu_atom/cpus", "%d\n", c1);
    char both[32], ecore[32];
    snprintf(both, sizeof both, "cpu_affinity=%d,%d", c0, c1);
    snprintf(ecore, sizeof ecore, "E-cores %d", c1);
    const char *opts[] = {both, "threads=2", "ctx=256"};
    llmfs_error e = {0};
    llmfs *lf = load("m", opts, 3, &e);
    ck_assert_msg(lf != NULL, "%s", e.msg);
    expect_warning(lf, "m", ecore, true);
    char *t = llmfs_diag_text(lf);
    ck_assert_ptr_nonnull(strstr(line_of(t, "model_cpus.m"), "warn"));
    free(t);
    llmfs_free(lf);
    /* the default on a hybrid CPU: the P-cores only, one thread per P-core */
    const char *def[] = {"ctx=256"};
    lf = load("m", def, 1, &e);
    ck_assert_msg(lf != NULL, "%s", e.msg);
    expect_warning(lf, "m", ecore, false);
    llmfs_model *m = llmfs_model_get(lf, "m");
    llmfs_model_stats ms;
    llmfs_model_stats_get(m, &ms);
    char want[16];
    snprintf(want, sizeof want, "%d", c0);
    ck_assert_str_eq(ms.cpus, want);
    ck_assert_int_eq(ms.n_threads, 1);
    llmfs_model_put(m);
    llmfs_free(lf);
}
END_TEST

START_TEST(memlock_below_the_locked_weights)
{
    if (!test_shared_dir())
        test_skip_no_shared("memlock");
    put("/proc/self/limits", "Max locked memory         65536                65536                bytes\n");
    const char *opts[] = {"mlock=on", "ctx=256", "threads=1"};
    llmfs_error e = {0};
    llmfs *lf = load("m", opts, 3, &e);
    ck_assert_msg(lf != NULL, "%s", e.msg);
    char *t = diag(lf);
    const char *l = line_of(t, "memlock");
    ck_assert_msg(strncmp(l, "memlock 0MiB >=", 15) == 0 && strstr(l, "MiB warn # "), "%s", l);
    free(t);
    put("/proc/self/limits", "Max locked memory         unlimited            unlimited            bytes\n");
    t = diag(lf);
    l = line_of(t, "memlock");
    ck_assert_msg(strncmp(l, "memlock unlimited >=", 20) == 0 && strstr(l, "MiB ok # 1 model"), "%s", l);
    free(t);
    llmfs_free(lf);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("diag");
    TCase *tc = tcase_create("diag");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, this_machine_answers_every_check);
    tcase_add_test(tc, empty_machine_answers_unknown);
    tcase_add_test(tc, garbage_files_do_not_crash);
    tcase_add_test(tc, memory_below_rated_speed);
    tcase_add_test(tc, hybrid_cpu_on_powersave);
    tcase_add_test(tc, affinity_on_a_hybrid_cpu);
    tcase_add_test(tc, throttling_thermal_zone);
    tcase_add_test(tc, pcie_link_at_gen1);
    tcase_add_test(tc, swapping_machine);
    tcase_add_test(tc, memory_settings);
    tcase_add_test(tc, busy_processes_and_power_profiles);
    tcase_add_test(tc, warning_rules);
    tcase_add_test(tc, cpu_lists);
    tcase_add_test(tc, cpu_affinity_pins_the_threads);
    tcase_add_test(tc, priority_raises_or_explains);
    tcase_add_test(tc, warnings_of_loaded_models);
    tcase_add_test(tc, swap_during_generation);
    tcase_add_test(tc, e_core_threads_warn);
    tcase_add_test(tc, memlock_below_the_locked_weights);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(make_suite());
}
