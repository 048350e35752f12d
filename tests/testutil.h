/* testutil.h — helpers shared by the Check test programs. */
#ifndef LLMFS_TESTUTIL_H
#define LLMFS_TESTUTIL_H

#include <check.h>
#include <stddef.h>
#include <stdint.h>

/* The test-asset folder ../shared beside the repository (or $LLMFS_SHARED), or NULL.
 * When it is absent, tests that need it call test_skip_no_shared(), which prints a loud
 * message and exits with 77 (ctest's skip code). */
const char *test_shared_dir(void);
void test_skip_no_shared(const char *what);
/* The exit code of a test program that cannot run here: 77 (ctest's skip), or 1 (a
 * failure) when $LLMFS_TEST_REQUIRE is set and not "0" — on a machine prepared for a
 * test (a GPU machine running scripts/gpu-run.sh) a skip would hide a broken build. */
int test_skip_code(void);
/* "<shared>/<rel>" in a static buffer (one per call site is enough for tests). */
const char *test_shared_path(const char *rel, char *buf, size_t cap);

/* Whole file into a malloc'd buffer (NUL-terminated; *len without the NUL), or NULL. */
char *test_read_file(const char *path, size_t *len);
/* Space-separated integers from a file; returns the count, *out malloc'd. */
int test_read_ints(const char *path, int32_t **out);
/* Space-separated floats from a file; returns the count, *out malloc'd. */
int test_read_floats(const char *path, float **out);
/* Value of KEY in a meta.txt-style "key value" file into buf; 0 if found, -1 if not. */
int test_meta_get(const char *path, const char *key, char *buf, size_t cap);

/* Reproducible random test data: splitmix64 from a seed (0 until test_rand_seed). Check
 * forks each test from the state the program had when the suite started. */
void test_rand_seed(uint64_t seed);
uint64_t test_rand(void);
float test_uniform(void); /* [0, 1) */
float test_normal(void);  /* mean 0, deviation 1 */

/* Waits until a session of the engine is idle again (its reply ended, or it stopped),
 * failing the running test after `seconds`. */
struct llmfs_session;
void test_wait_idle(struct llmfs_session *s, int seconds);

/* The whole text of an engine stream (a reply's output or reasoning), read as it grows
 * until it ends; NUL-terminated, malloc'd, its length into *len unless NULL. Fails the
 * running test when nothing comes for ten minutes. */
struct llmfs_stream;
char *test_stream_text(struct llmfs_stream *st, size_t *len);

/* Runs a suite built by make_suite with Check; returns the process exit code. */
int test_run_suite(Suite *s);
/* Runs the suite make() builds with the default kernels, then again with each other
 * instruction set this CPU has (LLMFS_TEST_ISA=default|scalar|avx2|avx512 runs one
 * only). EXIT_SUCCESS when every run passed. */
int test_run_suite_each_isa(Suite *(*make)(void));

#endif
