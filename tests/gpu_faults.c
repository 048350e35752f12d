/* Fault injection on the CUDA backend (the simulated device, tests/fault_cuda.c): every
 * device and pinned allocation of loading a fully offloaded model and of a prompt and
 * its steps is made to fail in turn. Each failure must come back as ENOMEM or EIO with a
 * message, or end the reply with the reason `error` and a message, or be absorbed with
 * the same reply; a model on the CPU keeps serving throughout, and the next load and
 * prompt on the device work. Skipped without the simulated device. */
#include "fault.h"
#include "llmfs.h"
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#ifdef LLMFS_FAULT_CUDA

#define REPLY_MAX 65536

static llmfs *lf;

static const char *model_path(const char *file)
{
    static char path[4096];
    char rel[256];
    snprintf(rel, sizeof rel, "models/%s", file);
    return test_shared_path(rel, path, sizeof path);
}

/* No Check call while a failure is armed (Check allocates); 0 or -ETIMEDOUT. */
static int ask(llmfs_session *s, const char *text, char *out, llmfs_error *e)
{
    out[0] = 0;
    int rc = llmfs_session_prompt(s, text, strlen(text), e);
    if (rc < 0)
        return rc;
    llmfs_stream *st = llmfs_session_output(s);
    size_t off = 0;
    for (int spins = 0;; spins++) {
        if (spins > 3000 || off + 1 >= REPLY_MAX) {
            llmfs_stream_put(st);
            return -ETIMEDOUT;
        }
        if (!llmfs_stream_wait(st, off, 100))
            continue;
        size_t n = llmfs_stream_read(st, out + off, REPLY_MAX - 1 - off, off);
        bool done;
        if (n == 0 && llmfs_stream_size(st, &done) == off && done)
            break;
        off += n;
    }
    out[off] = 0;
    llmfs_stream_put(st);
    for (int i = 0; i < 30000; i++) {
        llmfs_session_stats ss;
        llmfs_session_stats_get(s, &ss);
        if (strcmp(ss.state, "idle") == 0)
            return 0;
        struct timespec ts = {0, 10 * 1000000L};
        nanosleep(&ts, NULL);
    }
    return -ETIMEDOUT;
}

static const char *const gpu_opts[] = {"threads=2", "mode=raw", "temp=0", "n_predict=3", "ctx=64",
                                       "ngl=99", "fit=off"};
static const char *const cpu_opts[] = {"threads=2", "mode=raw", "temp=0", "n_predict=3", "ctx=64", "ngl=0"};

START_TEST(device_allocations_fail_cleanly)
{
    llmfs_error e = {0};
    lf = llmfs_new(&e);
    ck_assert_ptr_nonnull(lf);
    const char *file = "llama-tiny-q8_0.gguf", *prompt = "Once upon a time";
    /* each backend's own greedy reply: the device's rounding may pick other tokens */
    static char want[REPLY_MAX], want_gpu[REPLY_MAX], got[REPLY_MAX];
    ck_assert_int_eq(llmfs_model_load(lf, "cpu", model_path(file), cpu_opts, 6, &e), 0);
    llmfs_model *cpu = llmfs_model_get(lf, "cpu");
    llmfs_session *cs = llmfs_session_default(cpu);
    ck_assert_int_eq(ask(cs, prompt, want, &e), 0);

    /* how many device allocations a load and a prompt make */
    fault_arm_device(0);
    ck_assert_int_eq(llmfs_model_load(lf, "g", model_path(file), gpu_opts, 7, &e), 0);
    llmfs_model *g = llmfs_model_get(lf, "g");
    llmfs_session *gs = llmfs_session_default(g);
    int rc = ask(gs, prompt, want_gpu, &e);
    fault_disarm_device();
    ck_assert_int_eq(rc, 0);
    ck_assert_uint_gt(strlen(want_gpu), 0);
    llmfs_session_put(gs);
    llmfs_model_put(g);
    ck_assert_int_eq(llmfs_model_unload(lf, "g", &e), 0);
    long total = fault_device_allocs();
    fprintf(stderr, "device allocations of a load and a prompt: %ld\n", total);
    ck_assert_int_gt(total, 0);

    for (long n = 1; n <= total; n++) {
        e = (llmfs_error){0};
        fault_arm_device(n);
        rc = llmfs_model_load(lf, "g", model_path(file), gpu_opts, 7, &e);
        char reply_err[256] = "";
        llmfs_session_stats ss = {0};
        if (rc == 0) {
            g = llmfs_model_get(lf, "g");
            /* a device that cannot start leaves every layer on the CPU (the placement
             * note says so): then the CPU's reply is the right one */
            llmfs_model_stats ms;
            llmfs_model_stats_get(g, &ms);
            const char *expect = ms.weight_bytes_gpu ? want_gpu : want;
            gs = llmfs_session_default(g);
            rc = ask(gs, prompt, got, &e);
            llmfs_session_stats_get(gs, &ss);
            llmfs_session_error(gs, reply_err, sizeof reply_err);
            llmfs_session_put(gs);
            llmfs_model_put(g);
            fault_disarm_device();
            ck_assert_msg(rc != -ETIMEDOUT, "failure %ld: the reply did not end", n);
            if (rc < 0) {
                ck_assert_msg(rc == -ENOMEM || rc == -EIO, "failure %ld: prompt %d %s", n, rc, e.msg);
                ck_assert_msg(e.msg[0], "failure %ld: no message", n);
            } else if (strcmp(ss.stop_reason, "error") == 0) {
                ck_assert_msg(reply_err[0], "failure %ld: a reply ended in error without a reason", n);
            } else {
                ck_assert_msg(strcmp(got, expect) == 0, "failure %ld absorbed, but '%s' not '%s'", n, got,
                              expect);
            }
            ck_assert_int_eq(llmfs_model_unload(lf, "g", &e), 0);
        } else {
            fault_disarm_device();
            ck_assert_msg(fault_device_fired(), "failure %ld: load %d (%s) without a failure", n, rc, e.msg);
            ck_assert_msg(rc == -ENOMEM || rc == -EIO, "failure %ld: load %d %s", n, rc, e.msg);
            ck_assert_msg(e.msg[0], "failure %ld: no message", n);
            ck_assert_ptr_null(llmfs_model_get(lf, "g"));
        }
        /* the CPU model serves on */
        llmfs_session_ctl(cs, "reset", NULL);
        ck_assert_int_eq(ask(cs, prompt, got, &e), 0);
        ck_assert_str_eq(got, want);
    }
    /* and the device works again */
    ck_assert_int_eq(llmfs_model_load(lf, "g", model_path(file), gpu_opts, 7, &e), 0);
    g = llmfs_model_get(lf, "g");
    gs = llmfs_session_default(g);
    ck_assert_int_eq(ask(gs, prompt, got, &e), 0);
    ck_assert_str_eq(got, want_gpu);
    llmfs_session_put(gs);
    llmfs_model_put(g);
    llmfs_session_put(cs);
    llmfs_model_put(cpu);
    llmfs_free(lf);
}
END_TEST

int main(void)
{
    if (!test_shared_dir())
        test_skip_no_shared("gpu fault injection");
    llmfs_gpu_info gi;
    if (llmfs_gpus(&gi, 1) < 1) {
        fprintf(stderr, "\n*** SKIPPED gpu_faults: no (simulated) device ***\n\n");
        return test_skip_code();
    }
    Suite *s = suite_create("gpu_faults");
    TCase *tc = tcase_create("gpu_faults");
    tcase_set_timeout(tc, 1800);
    tcase_add_test(tc, device_allocations_fail_cleanly);
    suite_add_tcase(s, tc);
    return test_run_suite(s);
}

#else

int main(void)
{
    fprintf(stderr, "\n*** SKIPPED gpu_faults: device faults are injected on the simulated device only "
                    "(-DLLMFS_CUDA=SIM) ***\n\n");
    return test_skip_code();
}

#endif
