/* What the shell cannot drive: O_NONBLOCK reads, poll(2) wake-ups and a signal during a
 * blocked read, on a real mount served by this process (fs_mount_main -f in a thread,
 * ended by SIGTERM like the daemon). Needs /dev/fuse and ../shared. */
#include "testutil.h"

#ifdef LLMFS_HAVE_FS
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char mnt[64], arg_dirs[4200];
static pthread_t server;
static int server_status = -1;

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void *serve(void *arg)
{
    (void)arg;
    char *argv[] = {"mount", "-f", "--set", arg_dirs, mnt, NULL};
    server_status = fs_mount_main(5, argv);
    return NULL;
}

static void put(const char *rel, const char *text)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", mnt, rel);
    int fd = open(path, O_WRONLY | O_TRUNC);
    ck_assert_msg(fd >= 0, "%s: %s", path, strerror(errno));
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    ck_assert_int_eq(close(fd), 0);
}

static int open_rel(const char *rel, int flags)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", mnt, rel);
    int fd = open(path, flags);
    ck_assert_msg(fd >= 0, "%s: %s", path, strerror(errno));
    return fd;
}

static void setup(void)
{
    char model[4096];
    test_shared_path("models/stories260K.gguf", model, sizeof model);
    snprintf(arg_dirs, sizeof arg_dirs, "model_dirs=%s/models", test_shared_dir());
    snprintf(mnt, sizeof mnt, "/tmp/llmfs-mount.XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(mnt));
    ck_assert_int_eq(pthread_create(&server, NULL, serve, NULL), 0);
    char ctl[128];
    snprintf(ctl, sizeof ctl, "%s/ctl", mnt);
    for (int i = 0; i < 200 && access(ctl, F_OK) != 0; i++)
        usleep(20000);
    ck_assert_msg(access(ctl, F_OK) == 0, "the mount did not come up");
    char line[4200];
    snprintf(line, sizeof line, "load m %s", model);
    put("ctl", line);
    put("m/ctl", "mode raw\ntemp 0\nn_predict 24\n");
}

static void teardown(void)
{
    kill(getpid(), SIGTERM); /* the control loop takes it and unmounts */
    pthread_join(server, NULL);
    ck_assert_int_eq(server_status, 0);
    rmdir(mnt);
}

START_TEST(nonblocking_reads_and_poll)
{
    int fd = open_rel("m/output", O_RDONLY | O_NONBLOCK);
    char buf[4096];
    errno = 0;
    ck_assert_int_eq(read(fd, buf, sizeof buf), -1);
    ck_assert_int_eq(errno, EAGAIN);
    struct pollfd p = {.fd = fd, .events = POLLIN};
    ck_assert_int_eq(poll(&p, 1, 200), 0); /* nothing before the prompt */
    put("m/prompt", "Once upon a time");
    size_t total = 0;
    int wakeups = 0;
    for (;;) {
        ck_assert_msg(poll(&p, 1, 10000) == 1, "poll did not wake for new output");
        ck_assert(p.revents & POLLIN);
        wakeups++;
        ssize_t n = read(fd, buf + total, sizeof buf - total);
        if (n == 0)
            break;
        if (n < 0) {
            ck_assert_int_eq(errno, EAGAIN); /* a wake-up for bytes a read already took */
            continue;
        }
        total += (size_t)n;
    }
    close(fd);
    ck_assert_uint_gt(total, 0);
    /* what the nonblocking reader got is the whole reply */
    fd = open_rel("m/output", O_RDONLY);
    char whole[4096];
    ssize_t n = read(fd, whole, sizeof whole);
    close(fd);
    ck_assert_int_eq(n, (ssize_t)total);
    ck_assert_int_eq(memcmp(buf, whole, total), 0);
    struct stat st;
    char path[128];
    snprintf(path, sizeof path, "%s/m/output", mnt);
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(st.st_size, (off_t)total);
    ck_assert_int_ge(wakeups, 2);
}
END_TEST

static void on_alarm(int sig)
{
    (void)sig;
}

START_TEST(a_signal_interrupts_a_blocked_read)
{
    int sfd = open_rel("m/clone", O_RDONLY);
    char id[16] = {0};
    ck_assert_int_gt(read(sfd, id, sizeof id - 1), 0);
    close(sfd);
    id[strcspn(id, "\n")] = 0;
    char rel[64];
    snprintf(rel, sizeof rel, "m/%s/output", id);
    int fd = open_rel(rel, O_RDONLY);
    struct sigaction sa = {.sa_handler = on_alarm}; /* no SA_RESTART */
    sigaction(SIGALRM, &sa, NULL);
    alarm(1);
    double t0 = now_ms();
    char buf[64];
    errno = 0;
    ssize_t n = read(fd, buf, sizeof buf);
    double took = now_ms() - t0;
    ck_assert_int_eq(n, -1);
    ck_assert_int_eq(errno, EINTR);
    ck_assert_msg(took < 1800, "the read returned %.0f ms after it started", took);
    close(fd);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("fs_mount");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, nonblocking_reads_and_poll);
    tcase_add_test(tc, a_signal_interrupts_a_blocked_read);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    /* Skips are decided here: Check runs each test in a child, where exit(77) is a failure. */
    if (access("/dev/fuse", R_OK | W_OK) != 0) {
        fprintf(stderr, "\n*** SKIPPED test_fs_mount: /dev/fuse is not usable ***\n\n");
        return 77;
    }
    if (!test_shared_dir())
        test_skip_no_shared("test_fs_mount");
    return test_run_suite(make_suite());
}
#else
#include <stdio.h>
int main(void)
{
    fprintf(stderr, "\n*** SKIPPED test_fs_mount: built without the file server ***\n\n");
    return 77;
}
#endif
