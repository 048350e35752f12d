/* fs.c — `llmfs mount`: options, configuration, daemon start-up, mount and unmount.
 *
 * Start-up order: read the options and the configuration (errors go to the terminal),
 * clear a stale mount a crash left behind, fork unless -f (the parent waits on a pipe
 * until the child reports the mount ready, so a script may use it as soon as the
 * command returns), create the core, apply settings, mount, start the FUSE threads,
 * load the configured models, report ready, then run the control loop until a
 * termination signal. Shutdown: stop the FUSE threads, unmount, free the core.
 */
#include "fs.h"

#include "conf.h"
#include "ctl.h"
#include "http.h"
#include "loop.h"
#include "server.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <unistd.h>

#define FUSE_SUPER_MAGIC 0x65735546
/* No request waits in a FUSE thread for long (a blocked read of output is a deferred
 * reply, see stream_io.h; only a model load or a KV cache reallocation holds its thread for long), so a few threads serve
 * any number of readers. */
#define FUSE_MAX_THREADS 32
#define FUSE_IDLE_THREADS 8

extern char **environ;

fs_server fs_srv;

typedef struct mount_opts {
    const char *conf_path;
    bool foreground;
    const char *mountpoint;
    char **keys, **values; /* --set KEY=VALUE and --KEY VALUE, in order */
    int n;
} mount_opts;

/* ---- reporting: to the terminal, or through the pipe to the waiting parent ---- */

static int report_fd = -1;

static void report(const char *kind, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report(const char *kind, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (report_fd >= 0)
        dprintf(report_fd, "%s %s\n", kind, msg);
    else if (strcmp(kind, "OK") != 0)
        fprintf(stderr, "llmfs mount: %s%s\n", strcmp(kind, "W") == 0 ? "warning: " : "", msg);
}

static void usage(FILE *f)
{
    fprintf(f,
            "usage: llmfs mount [-c CONF] [-f] [--set KEY=VALUE] [--KEY VALUE] [MOUNTPOINT]\n"
            "  -c CONF          configuration file (default: ~/.config/llmfs/llmfs.ini if present)\n"
            "  -f               stay in the foreground (otherwise return once mounted)\n"
            "  --set KEY=VALUE  any daemon setting or default; overrides the file\n"
            "  --KEY VALUE      the same\n"
            "The files are described in llmfs(4) (docs/llmfs.4.md).\n");
}

static int add_kv(mount_opts *o, const char *key, size_t klen, const char *value)
{
    char **k = realloc(o->keys, sizeof *k * (size_t)(o->n + 1));
    if (!k)
        return -1;
    o->keys = k;
    char **v = realloc(o->values, sizeof *v * (size_t)(o->n + 1));
    if (!v)
        return -1;
    o->values = v;
    k[o->n] = strndup(key, klen);
    v[o->n] = strdup(value);
    o->n++;
    return k[o->n - 1] && v[o->n - 1] ? 0 : -1;
}

/* 0 to go on, or an exit status. */
static int parse_args(int argc, char **argv, mount_opts *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage(stdout);
            return -1;
        } else if (strcmp(a, "-f") == 0) {
            o->foreground = true;
        } else if (strcmp(a, "-c") == 0 && i + 1 < argc) {
            o->conf_path = argv[++i];
        } else if (strcmp(a, "--set") == 0 && i + 1 < argc) {
            const char *kv = argv[++i];
            const char *eq = strchr(kv, '=');
            if (!eq || eq == kv) {
                fprintf(stderr, "llmfs mount: --set wants KEY=VALUE, not '%s'\n", kv);
                return 2;
            }
            if (add_kv(o, kv, (size_t)(eq - kv), eq + 1) < 0)
                return 1;
        } else if (strncmp(a, "--", 2) == 0 && a[2]) {
            const char *key = a + 2;
            const char *eq = strchr(key, '=');
            size_t klen = eq ? (size_t)(eq - key) : strlen(key);
            char name[128];
            snprintf(name, sizeof name, "%.*s", (int)klen, key);
            if (!llmfs_setting_find(name) || (!eq && i + 1 >= argc)) {
                fprintf(stderr, "llmfs mount: unknown option or missing value: %s\n", a);
                usage(stderr);
                return 2;
            }
            if (add_kv(o, key, klen, eq ? eq + 1 : argv[++i]) < 0)
                return 1;
        } else if (a[0] == '-') {
            fprintf(stderr, "llmfs mount: unknown option %s\n", a);
            usage(stderr);
            return 2;
        } else if (!o->mountpoint) {
            o->mountpoint = a;
        } else {
            fprintf(stderr, "llmfs mount: more than one mount point given\n");
            return 2;
        }
    }
    return 0;
}

/* ---- the mount point ---- */

static int run_fusermount(const char *mnt)
{
    char *args[] = {"fusermount3", "-u", "-z", (char *)mnt, NULL};
    pid_t pid;
    if (posix_spawnp(&pid, "fusermount3", NULL, NULL, args, environ) != 0)
        return -1;
    int status;
    if (waitpid(pid, &status, 0) < 0)
        return -1;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0 ? 0 : -1;
}

/* A daemon killed without unmounting leaves a mount whose every access fails with
 * ENOTCONN; it is detached so the new daemon can mount in its place. A live mount is
 * left alone and refused. */
static int prepare_mountpoint(const char *mnt, char *msg, size_t cap)
{
    struct stat st;
    if (stat(mnt, &st) < 0 && errno == ENOTCONN) {
        if (umount2(mnt, MNT_DETACH) < 0 && run_fusermount(mnt) < 0) {
            snprintf(msg, cap, "%s: a stale mount is in the way and cannot be removed", mnt);
            return -1;
        }
    }
    if (stat(mnt, &st) < 0) {
        snprintf(msg, cap, "%s: %s", mnt, strerror(errno));
        return -1;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(msg, cap, "%s: not a folder", mnt);
        return -1;
    }
    struct statfs sf;
    char parent[PATH_MAX + 4];
    snprintf(parent, sizeof parent, "%s/..", mnt);
    struct stat pst;
    if (statfs(mnt, &sf) == 0 && sf.f_type == FUSE_SUPER_MAGIC && stat(parent, &pst) == 0 &&
        pst.st_dev != st.st_dev) {
        snprintf(msg, cap, "%s is already mounted (fusermount3 -u %s to unmount it)", mnt, mnt);
        return -1;
    }
    return 0;
}

/* ---- the daemon ---- */

static pthread_t fuse_thread;
static bool fuse_thread_running;

static void *fuse_main(void *arg)
{
    (void)arg;
    /* The workers inherit the name: `top -H` and scripts/bench-fs.sh tell them apart. */
    pthread_setname_np(pthread_self(), "llmfs-fuse");
    struct fuse_loop_config *cfg = fuse_loop_cfg_create();
    if (cfg) {
        fuse_loop_cfg_set_max_threads(cfg, FUSE_MAX_THREADS);
        fuse_loop_cfg_set_idle_threads(cfg, FUSE_IDLE_THREADS);
    }
    fuse_session_loop_mt(fs_srv.se, cfg);
    if (cfg)
        fuse_loop_cfg_destroy(cfg);
    loop_stop(); /* unmounted from outside: end the daemon too */
    return NULL;
}

static void on_wake_signal(int sig)
{
    (void)sig;
}

/* The FUSE loop's main thread waits on a semaphore that only a worker posts after it
 * reads the next request; a signal interrupts that wait so it sees the exit flag. */
static void stop_fuse_thread(void)
{
    if (!fuse_thread_running)
        return;
    fuse_session_exit(fs_srv.se);
    while (pthread_tryjoin_np(fuse_thread, NULL) != 0) {
        pthread_kill(fuse_thread, SIGUSR1);
        usleep(20000);
    }
    fuse_thread_running = false;
}

static int read_daemon_settings(llmfs_error *err)
{
    char v[64];
    struct {
        const char *key;
        int *i;
        uint64_t *u;
        int base;
    } want[] = {
        {"file_mode", &fs_srv.file_mode, NULL, 8},
        {"dir_mode", &fs_srv.dir_mode, NULL, 8},
        {"max_prompt_bytes", NULL, &fs_srv.max_prompt_bytes, 10},
        {"max_ctl_line", NULL, &fs_srv.max_ctl_line, 10},
        {"max_image_bytes", NULL, &fs_srv.max_image_bytes, 10},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (llmfs_get(fs_srv.lf, want[i].key, v, sizeof v) < 0)
            return llmfs_errorf(err, ENOENT, "the core has no setting %s", want[i].key);
        unsigned long long x = strtoull(v, NULL, want[i].base);
        if (want[i].i)
            *want[i].i = (int)x;
        else
            *want[i].u = x;
    }
    if (llmfs_get(fs_srv.lf, "allow_other", v, sizeof v) < 0)
        return llmfs_errorf(err, ENOENT, "the core has no setting allow_other");
    fs_srv.allow_other = strcmp(v, "on") == 0 || strcmp(v, "true") == 0 || strcmp(v, "1") == 0;
    return 0;
}

static int apply_settings(const fs_conf *conf, const mount_opts *o)
{
    ctl_target root = {.kind = CTL_ROOT, .lf = fs_srv.lf, .trusted = true};
    llmfs_error err = {0};
    for (int i = 0; i < conf->n; i++)
        if (ctl_set(&root, conf->keys[i], conf->values[i], &err) < 0) {
            report("E", "configuration [llmfs] %s: %s", conf->keys[i], err.msg);
            return -1;
        }
    for (int i = 0; i < o->n; i++)
        if (ctl_set(&root, o->keys[i], o->values[i], &err) < 0) {
            report("E", "--%s: %s", o->keys[i], err.msg);
            return -1;
        }
    if (read_daemon_settings(&err) < 0) {
        report("E", "%s", err.msg);
        return -1;
    }
    char dirs[16];
    if (fs_srv.allow_other && (llmfs_get(fs_srv.lf, "model_dirs", dirs, sizeof dirs) < 0 || !dirs[0])) {
        /* Other users could otherwise make the daemon read any file its owner can. */
        report("E", "allow_other needs model_dirs: the folders models may be loaded from");
        return -1;
    }
    return 0;
}

/* The HTTP endpoint, when http_listen is set: started before the mount, so a refused
 * address (or one without its key) stops the daemon before anything is served. */
static int start_http(void)
{
    char msg[512];
#ifdef LLMFS_HAVE_HTTP
    if (http_start(fs_srv.lf, msg, sizeof msg) < 0) {
        report("E", "%s", msg);
        return -1;
    }
#else
    if (llmfs_get(fs_srv.lf, "http_listen", msg, sizeof msg) >= 0 && msg[0]) {
        report("E", "http_listen is set but this llmfs was built without the HTTP endpoint");
        return -1;
    }
#endif
    return 0;
}

static int mount_fs(void)
{
    char opts[256];
    snprintf(opts, sizeof opts, "fsname=llmfs,subtype=llmfs,default_permissions%s",
             fs_srv.allow_other ? ",allow_other" : "");
    char *argv[] = {"llmfs", "-o", opts, NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    fs_srv.se = fuse_session_new(&args, &fs_ops, sizeof fs_ops, NULL);
    fuse_opt_free_args(&args);
    if (!fs_srv.se) {
        report("E", "cannot start a FUSE session (is /dev/fuse there?)");
        return -1;
    }
    if (fuse_session_mount(fs_srv.se, fs_srv.mountpoint) != 0) {
        report("E", "cannot mount on %s", fs_srv.mountpoint);
        fuse_session_destroy(fs_srv.se);
        fs_srv.se = NULL;
        return -1;
    }
    return 0;
}

static void load_models(const fs_conf *conf)
{
    for (int i = 0; i < conf->n_models; i++) {
        const conf_model *m = &conf->models[i];
        llmfs_error err = {0};
        if (ctl_load(fs_srv.lf, m->name, m->path, (const char *const *)m->settings,
                     m->n_settings, &err) < 0) {
            /* The mount stays up: the other models and the ctl file still work. */
            char msg[sizeof err.msg + 80];
            snprintf(msg, sizeof msg, "model %s: %s", m->name, err.msg);
            report("W", "%s", msg);
            node_set_error(node_root(), msg, "");
        }
    }
}

static void detach_stdio(void)
{
    int fd = open("/dev/null", O_RDWR);
    if (fd < 0)
        return;
    dup2(fd, STDIN_FILENO);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    if (fd > STDERR_FILENO)
        close(fd);
}

static int serve(const fs_conf *conf, const mount_opts *o, bool daemon)
{
    llmfs_error err = {0};
    clock_gettime(CLOCK_REALTIME, &fs_srv.started);
    fs_srv.uid = getuid();
    fs_srv.gid = getgid();
    fs_srv.lf = llmfs_new(&err);
    if (!fs_srv.lf) {
        report("E", "%s", err.msg);
        return 1;
    }
    int status = 1;
    node_init();
    if (apply_settings(conf, o) < 0 || start_http() < 0 || mount_fs() < 0)
        goto out_core;
    if (loop_init() < 0) {
        report("E", "cannot start the control loop");
        goto out_unmount;
    }
    if (pthread_create(&fuse_thread, NULL, fuse_main, NULL) != 0) {
        report("E", "cannot start the FUSE threads");
        goto out_loop;
    }
    fuse_thread_running = true;
    load_models(conf);
    report("OK", "%s", fs_srv.mountpoint);
    if (daemon) {
        close(report_fd);
        report_fd = -1;
        (void)!chdir("/"); /* the mount does not depend on the working folder */
        detach_stdio();
    }
    loop_run();
    status = 0;
    stop_fuse_thread();
    fs_close_all();
out_loop:
    loop_fini();
out_unmount:
    fuse_session_unmount(fs_srv.se);
    fuse_session_destroy(fs_srv.se);
    fs_srv.se = NULL;
out_core:
#ifdef LLMFS_HAVE_HTTP
    http_stop(); /* its requests hold sessions of the core */
#endif
    llmfs_free(fs_srv.lf);
    fs_srv.lf = NULL;
    node_fini();
    return status;
}

/* The parent's side: relays the child's messages and exits when it reports ready. */
static int wait_for_daemon(int fd)
{
    FILE *f = fdopen(fd, "r");
    if (!f)
        return 1;
    char line[1200];
    int status = 1;
    bool said = false;
    while (fgets(line, sizeof line, f)) {
        line[strcspn(line, "\n")] = '\0';
        if (strncmp(line, "OK ", 3) == 0) {
            status = 0;
            break;
        }
        said = true;
        fprintf(stderr, "llmfs mount: %s%s\n", line[0] == 'W' ? "warning: " : "",
                line + (line[0] ? 2 : 0));
    }
    fclose(f);
    if (status != 0 && !said)
        fprintf(stderr, "llmfs mount: the daemon exited before the file system was ready\n");
    return status;
}

static const char *default_conf(char *buf, size_t cap)
{
    const char *xdg = getenv("XDG_CONFIG_HOME");
    const char *home = getenv("HOME");
    if (xdg && xdg[0])
        snprintf(buf, cap, "%s/llmfs/llmfs.ini", xdg);
    else if (home && home[0])
        snprintf(buf, cap, "%s/.config/llmfs/llmfs.ini", home);
    else
        return NULL;
    return access(buf, R_OK) == 0 ? buf : NULL;
}

static void free_opts(mount_opts *o)
{
    for (int i = 0; i < o->n; i++) {
        free(o->keys[i]);
        free(o->values[i]);
    }
    free(o->keys);
    free(o->values);
}

int fs_mount_main(int argc, char **argv)
{
    mount_opts o = {0};
    fs_conf conf = {0};
    int status = parse_args(argc, argv, &o);
    if (status != 0) {
        free_opts(&o);
        return status < 0 ? 0 : status;
    }
    char defbuf[PATH_MAX], msg[1024];
    const char *conf_path = o.conf_path ? o.conf_path : default_conf(defbuf, sizeof defbuf);
    if (conf_path && conf_load(conf_path, &conf, msg, sizeof msg) < 0) {
        fprintf(stderr, "llmfs mount: %s\n", msg);
        free_opts(&o);
        return 1;
    }
    const char *mnt = o.mountpoint;
    for (int i = 0; !o.mountpoint && i < o.n; i++)
        if (strcmp(o.keys[i], "mountpoint") == 0)
            mnt = o.values[i];
    if (!mnt)
        mnt = conf_get(&conf, "mountpoint");
    status = 1;
    if (!mnt || !mnt[0]) {
        fprintf(stderr, "llmfs mount: no mount point (give one, or set mountpoint in [llmfs])\n");
        usage(stderr);
        status = 2;
        goto out;
    }
    if (prepare_mountpoint(mnt, msg, sizeof msg) < 0) {
        fprintf(stderr, "llmfs mount: %s\n", msg);
        goto out;
    }
    fs_srv.mountpoint = realpath(mnt, NULL);
    if (!fs_srv.mountpoint) {
        fprintf(stderr, "llmfs mount: %s: %s\n", mnt, strerror(errno));
        goto out;
    }
    signal(SIGPIPE, SIG_IGN);
    struct sigaction sa = {.sa_handler = on_wake_signal}; /* no SA_RESTART: sem_wait returns */
    sigaction(SIGUSR1, &sa, NULL);
    if (o.foreground) {
        status = serve(&conf, &o, false);
        goto out;
    }
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        perror("llmfs mount: pipe");
        goto out;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("llmfs mount: fork");
        close(fds[0]);
        close(fds[1]);
        goto out;
    }
    if (pid > 0) {
        close(fds[1]);
        status = wait_for_daemon(fds[0]);
        goto out;
    }
    close(fds[0]);
    report_fd = fds[1];
    setsid();
    status = serve(&conf, &o, true);
out:
    free(fs_srv.mountpoint);
    fs_srv.mountpoint = NULL;
    conf_free(&conf);
    free_opts(&o);
    return status;
}
