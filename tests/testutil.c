#include "testutil.h"
#include "llmfs.h"
#include "quant.h"

#include <math.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

const char *test_shared_dir(void)
{
    static char dir[4096];
    static int done;
    if (done)
        return dir[0] ? dir : NULL;
    done = 1;
    const char *env = getenv("LLMFS_SHARED");
    struct stat st;
    if (env && *env && stat(env, &st) == 0 && S_ISDIR(st.st_mode)) {
        snprintf(dir, sizeof dir, "%s", env);
        return dir;
    }
    snprintf(dir, sizeof dir, "%s/../shared", LLMFS_SOURCE_DIR);
    if (stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
        return dir;
    dir[0] = 0;
    return NULL;
}

int test_skip_code(void)
{
    const char *req = getenv("LLMFS_TEST_REQUIRE");
    if (req && *req && strcmp(req, "0") != 0) {
        fprintf(stderr, "*** LLMFS_TEST_REQUIRE is set: a test that cannot run here fails ***\n");
        return 1;
    }
    return 77;
}

void test_skip_no_shared(const char *what)
{
    fprintf(stderr,
            "\n*** SKIPPED %s: test assets not found (looked in $LLMFS_SHARED and %s/../shared) ***\n\n",
            what, LLMFS_SOURCE_DIR);
    exit(test_skip_code());
}

const char *test_shared_path(const char *rel, char *buf, size_t cap)
{
    const char *d = test_shared_dir();
    if (!d)
        test_skip_no_shared(rel);
    snprintf(buf, cap, "%s/%s", d, rel);
    return buf;
}

char *test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    if (!b)
        return NULL;
    b[n] = 0;
    if (len)
        *len = (size_t)n;
    return b;
}

int test_read_ints(const char *path, int32_t **out)
{
    char *s = test_read_file(path, NULL);
    if (!s)
        return -1;
    int n = 0, cap = 64;
    int32_t *v = malloc(sizeof *v * (size_t)cap);
    char *p = s, *end;
    for (;;) {
        long x = strtol(p, &end, 10);
        if (end == p)
            break;
        if (n == cap)
            v = realloc(v, sizeof *v * (size_t)(cap *= 2));
        v[n++] = (int32_t)x;
        p = end;
    }
    free(s);
    *out = v;
    return n;
}

int test_read_floats(const char *path, float **out)
{
    char *s = test_read_file(path, NULL);
    if (!s)
        return -1;
    int n = 0, cap = 64;
    float *v = malloc(sizeof *v * (size_t)cap);
    char *p = s, *end;
    for (;;) {
        float x = strtof(p, &end);
        if (end == p)
            break;
        if (n == cap)
            v = realloc(v, sizeof *v * (size_t)(cap *= 2));
        v[n++] = x;
        p = end;
    }
    free(s);
    *out = v;
    return n;
}

int test_meta_get(const char *path, const char *key, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char line[1024];
    size_t kl = strlen(key);
    int rc = -1;
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ' ') {
            char *v = line + kl + 1;
            v[strcspn(v, "\r\n")] = 0;
            snprintf(buf, cap, "%s", v);
            rc = 0;
            break;
        }
    }
    fclose(f);
    return rc;
}

int test_run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}

static uint64_t rand_state;

void test_rand_seed(uint64_t seed) { rand_state = seed; }

uint64_t test_rand(void)
{
    uint64_t z = (rand_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

float test_uniform(void) { return (float)(test_rand() >> 40) * 0x1p-24f; }

float test_normal(void)
{
    float u = test_uniform() + 1e-7f, v = test_uniform();
    return sqrtf(-2 * logf(u)) * cosf(6.2831853f * v);
}

char *test_stream_text(llmfs_stream *st, size_t *len)
{
    size_t cap = 1024, off = 0;
    char *buf = malloc(cap);
    ck_assert_ptr_nonnull(buf);
    for (int idle = 0;; idle++) {
        ck_assert_msg(idle < 6000, "the stream did not end in 10 minutes");
        if (!llmfs_stream_wait(st, off, 100))
            continue;
        if (off + 512 > cap)
            ck_assert_ptr_nonnull(buf = realloc(buf, cap *= 2));
        size_t n = llmfs_stream_read(st, buf + off, cap - off - 1, off);
        if (n == 0) {
            bool done;
            if (llmfs_stream_size(st, &done) == off && done)
                break;
            continue;
        }
        off += n;
        idle = 0;
    }
    buf[off] = 0;
    if (len)
        *len = off;
    return buf;
}

void test_wait_idle(llmfs_session *s, int seconds)
{
    for (int i = 0; i < seconds * 100; i++) {
        llmfs_session_stats st;
        llmfs_session_stats_get(s, &st);
        if (strcmp(st.state, "idle") == 0)
            return;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    ck_abort_msg("session did not become idle in %d s", seconds);
}

int test_run_suite_each_isa(Suite *(*make)(void))
{
    const char *only = getenv("LLMFS_TEST_ISA");
    const char *def = quant_isa();
    const char *isas[] = {"default", "scalar", "avx2", "avx512"};
    int rc = EXIT_SUCCESS;
    for (size_t i = 0; i < sizeof isas / sizeof isas[0]; i++) {
        if (only && strcmp(only, isas[i]))
            continue;
        if (i && (!quant_force_isa(isas[i]) || (!only && !strcmp(isas[i], def))))
            continue;
        printf("==== kernels: %s\n", quant_isa());
        if (test_run_suite(make()) != EXIT_SUCCESS)
            rc = EXIT_FAILURE;
    }
    quant_force_isa(NULL);
    return rc;
}
