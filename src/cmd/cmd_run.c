/* cmd_run.c — `llmfs run`: generate from a prompt and stream the text to stdout.
 *
 * It goes through the public API exactly as the file server does (load a model with
 * settings, write a prompt to the default session, read its output stream until done),
 * so the command and the file system share one path. The flags are only spellings of
 * entries in the settings table: each maps to a key=value pair, --set passes any key,
 * and --NAME VALUE works for every setting NAME (dashes for underscores).
 */
#include "cmd.h"

#include "llmfs.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void usage(void)
{
    printf("usage: llmfs run -m MODEL [-p PROMPT | -f FILE] [-n N] [--temp T] [--top-k K] [--top-p P]\n"
           "                 [--min-p P] [--repeat-penalty R] [--seed S] [--chat] [-c CTX] [-t N]\n"
           "                 [-ctk T] [-ctv T] [--fa on|off] [--no-mmap] [--mlock] [--set KEY=VALUE]...\n"
           "  streams the generated text to stdout (the prompt is not echoed); without -p or -f\n"
           "  the prompt is read from stdin. --chat sends it as a user turn through the model's\n"
           "  chat template instead of completing it as raw text. --stats prints speeds on stderr.\n"
           "  -md DRAFT drafts with a draft model (speculative decoding; -nd N tokens a step);\n"
           "  --spec-type mtp drafts with the model's own MTP head (-md then names an MTP file);\n"
           "  with --stats the reply is generated again without it, for the speed to compare.\n"
           "  Every setting can be given as --set KEY=VALUE or --KEY VALUE:\n");
    const llmfs_setting_info *t;
    int n = llmfs_settings_table(&t);
    for (int i = 0; i < n; i++)
        if (t[i].scope & (LLMFS_SCOPE_MODEL | LLMFS_SCOPE_SESSION))
            printf("    %-16s %s (default %s)\n", t[i].name, t[i].help, t[i].def[0] ? t[i].def : "\"\"");
}

/* Flag spellings of settings; a NULL value means the flag takes one. */
static const struct {
    const char *flags, *key, *value;
} flag_map[] = {
    {"-n|--n-predict", "n_predict", NULL},
    {"--temp", "temp", NULL},
    {"--top-k", "top_k", NULL},
    {"--top-p", "top_p", NULL},
    {"--min-p", "min_p", NULL},
    {"--repeat-penalty", "repeat_penalty", NULL},
    {"--repeat-last-n", "repeat_last_n", NULL},
    {"-s|--seed", "seed", NULL},
    {"-c|--ctx-size", "ctx", NULL},
    {"-t|--threads", "threads", NULL},
    {"-tb|--threads-batch", "threads_batch", NULL},
    {"-b|--batch-size", "batch", NULL},
    {"-ub|--ubatch-size", "ubatch", NULL},
    {"-ctk|--cache-type-k", "cache_type_k", NULL},
    {"-ctv|--cache-type-v", "cache_type_v", NULL},
    {"-fa|--fa|--flash-attn", "flash_attn", NULL},
    {"-ngl|--n-gpu-layers", "ngl", NULL},
    {"-sys|--system", "system", NULL},
    {"-md|--model-draft", "spec_draft_model", NULL},
    {"-nd|--draft-max", "spec_draft_n_max", NULL},
    {"--draft-p-min", "spec_draft_p_min", NULL},
    {"--spec-type", "spec_type", NULL},
    {"--no-mmap", "mmap", "off"},
    {"--mlock", "mlock", "on"},
    {"--chat", "mode", "chat"},
    {"--raw", "mode", "raw"},
};
#define N_FLAGS ((int)(sizeof flag_map / sizeof flag_map[0]))

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

/* --stats with speculation: the acceptance, and the same reply again without drafts (not
 * printed) for the speed to compare with. */
static void spec_compare(llmfs_session *s, const char *text, size_t len, const llmfs_session_stats *with)
{
    fprintf(stderr, "llmfs: run: speculation: drafted %d, accepted %d (%.1f%%), %.2f accepted per step\n",
            with->draft_n, with->draft_accepted, with->draft_n ? 100.0 * with->draft_accepted / with->draft_n : 0.0,
            (double)with->draft_accepted / with->spec_steps);
    llmfs_error err = {0};
    if (llmfs_session_ctl(s, "spec off", &err) < 0 || llmfs_session_prompt(s, text, len, &err) < 0) {
        fprintf(stderr, "llmfs: run: no comparison without speculation: %s\n", err.msg);
        return;
    }
    llmfs_stream *st = llmfs_session_output(s);
    uint64_t off = 0;
    char buf[4096];
    for (;;) {
        if (!llmfs_stream_wait(st, off, 1000))
            continue;
        size_t n = llmfs_stream_read(st, buf, sizeof buf, off);
        off += n;
        bool done;
        if (n == 0 && llmfs_stream_size(st, &done) == off && done)
            break;
    }
    llmfs_stream_put(st);
    while (llmfs_session_busy(s))
        usleep(1000);
    llmfs_session_stats ss;
    llmfs_session_stats_get(s, &ss);
    fprintf(stderr, "llmfs: run: without speculation: generated %d tokens, %.2f t/s (speedup %.2fx)\n", ss.n_gen,
            ss.tg_tps, ss.tg_tps > 0 ? with->tg_tps / ss.tg_tps : 0.0);
}

/* The scope of a setting, 0 if there is none of that name. */
static int setting_scope(const char *key)
{
    const llmfs_setting_info *t;
    int n = llmfs_settings_table(&t);
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].name, key) == 0)
            return t[i].scope;
    return 0;
}

typedef struct kvlist {
    char **v;
    int n, cap;
} kvlist;

static int kv_add(kvlist *l, const char *key, const char *value)
{
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        char **v = realloc(l->v, sizeof *v * (size_t)cap);
        if (!v)
            return -1;
        l->v = v;
        l->cap = cap;
    }
    size_t n = strlen(key) + strlen(value) + 2;
    if (!(l->v[l->n] = malloc(n)))
        return -1;
    snprintf(l->v[l->n++], n, "%s=%s", key, value);
    return 0;
}

static void kv_clear(kvlist *l)
{
    for (int i = 0; i < l->n; i++)
        free(l->v[i]);
    free(l->v);
}

/* Copies the stream to stdout as bytes arrive; returns 0, or -1 if stdout failed. */
static int pump(llmfs_session *s, llmfs_stream *st, bool *ends_nl, uint64_t *total)
{
    char buf[8192];
    uint64_t off = 0;
    bool stop_sent = false;
    for (;;) {
        size_t n = llmfs_stream_read(st, buf, sizeof buf, off);
        if (n) {
            if (fwrite(buf, 1, n, stdout) != n || fflush(stdout))
                return -1;
            *ends_nl = buf[n - 1] == '\n';
            off += n;
            continue;
        }
        bool done = false;
        uint64_t size = llmfs_stream_size(st, &done);
        if (done && size <= off)
            break;
        if (interrupted && !stop_sent) {
            llmfs_session_ctl(s, "stop", NULL);
            stop_sent = true;
        }
        llmfs_stream_wait(st, off, 200);
    }
    *total = off;
    return 0;
}

int cmd_run(int argc, char **argv)
{
    const char *C = "run";
    const char *path = NULL, *prompt = NULL, *file = NULL;
    bool stats = false;
    kvlist model_kv = {0}, daemon_kv = {0};
    int rc = CMD_USAGE;
    char *text = NULL;
    size_t len = 0;

    /* The command completes text unless --chat says otherwise. */
    if (kv_add(&model_kv, "mode", "raw") < 0)
        return cmd_fail(C, "out of memory");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            usage();
            rc = CMD_OK;
            goto out;
        }
        if (strcmp(a, "--stats") == 0) {
            stats = true;
            continue;
        }
        int k = -1;
        for (int j = 0; j < N_FLAGS && k < 0; j++)
            if (cmd_opt_matches(flag_map[j].flags, a))
                k = j;
        bool takes_value = k < 0 || !flag_map[k].value;
        const char *key = NULL, *value = NULL;
        char keybuf[64];
        if (takes_value && !v && (k >= 0 || a[0] == '-')) {
            cmd_usage_error(C, "%s needs a value", a);
            goto out;
        }
        if (strcmp(a, "-m") == 0 || strcmp(a, "--model") == 0) {
            path = argv[++i];
            continue;
        }
        if (strcmp(a, "-p") == 0 || strcmp(a, "--prompt") == 0) {
            prompt = argv[++i];
            continue;
        }
        if (strcmp(a, "-f") == 0 || strcmp(a, "--file") == 0) {
            file = argv[++i];
            continue;
        }
        if (strcmp(a, "--set") == 0) {
            const char *eq = strchr(v, '=');
            if (!eq || eq == v || (size_t)(eq - v) >= sizeof keybuf) {
                cmd_usage_error(C, "--set wants KEY=VALUE, not '%s'", v);
                goto out;
            }
            memcpy(keybuf, v, (size_t)(eq - v));
            keybuf[eq - v] = 0;
            key = keybuf;
            value = eq + 1;
            i++;
        } else if (k >= 0) {
            key = flag_map[k].key;
            value = flag_map[k].value ? flag_map[k].value : argv[++i];
        } else if (a[0] == '-' && a[1] == '-' && strlen(a + 2) < sizeof keybuf) {
            /* --NAME VALUE for any setting */
            snprintf(keybuf, sizeof keybuf, "%s", a + 2);
            for (char *p = keybuf; *p; p++)
                if (*p == '-')
                    *p = '_';
            if (!setting_scope(keybuf)) {
                cmd_usage_error(C, "unknown option '%s' (see 'llmfs run --help')", a);
                goto out;
            }
            key = keybuf;
            value = argv[++i];
        } else {
            cmd_usage_error(C, a[0] == '-' ? "unknown option '%s' (see 'llmfs run --help')"
                                           : "unexpected argument '%s' (the prompt goes after -p)", a);
            goto out;
        }
        int scope = setting_scope(key);
        if (!scope) {
            cmd_usage_error(C, "unknown setting '%s'", key);
            goto out;
        }
        kvlist *l = scope & (LLMFS_SCOPE_MODEL | LLMFS_SCOPE_SESSION) ? &model_kv : &daemon_kv;
        if (kv_add(l, key, value) < 0) {
            rc = cmd_fail(C, "out of memory");
            goto out;
        }
    }
    if (!path) {
        cmd_usage_error(C, "missing -m MODEL");
        goto out;
    }
    /* -md alone means drafting with that model */
    bool has_draft = false, has_type = false;
    for (int i = 0; i < model_kv.n; i++) {
        has_draft |= strncmp(model_kv.v[i], "spec_draft_model=", 17) == 0;
        has_type |= strncmp(model_kv.v[i], "spec_type=", 10) == 0;
    }
    if (has_draft && !has_type && kv_add(&model_kv, "spec_type", "draft") < 0) {
        rc = cmd_fail(C, "out of memory");
        goto out;
    }
    if (prompt && file) {
        cmd_usage_error(C, "give the prompt with -p or -f, not both");
        goto out;
    }
    if (prompt) {
        len = strlen(prompt);
        if (!(text = strdup(prompt))) {
            rc = cmd_fail(C, "out of memory");
            goto out;
        }
    } else {
        const char *src = file ? file : "-";
        if (!file && isatty(STDIN_FILENO)) {
            cmd_usage_error(C, "no prompt: give -p PROMPT, -f FILE or text on stdin");
            goto out;
        }
        if (!(text = cmd_read_file(src, &len))) {
            rc = cmd_fail(C, "cannot read %s: %s", file ? file : "stdin", strerror(errno));
            goto out;
        }
    }

    rc = CMD_FAIL;
    llmfs_error err = {0};
    llmfs *lf = llmfs_new(&err);
    if (!lf) {
        cmd_fail(C, "%s", err.msg);
        goto out;
    }
    for (int i = 0; i < daemon_kv.n; i++) {
        char *eq = strchr(daemon_kv.v[i], '=');
        *eq = 0;
        if (llmfs_set(lf, daemon_kv.v[i], eq + 1, &err) < 0) {
            cmd_usage_error(C, "%s", err.msg);
            rc = CMD_USAGE;
            llmfs_free(lf);
            goto out;
        }
    }
    const char *name = "run";
    int lr = llmfs_model_load(lf, name, path, (const char *const *)model_kv.v, model_kv.n, &err);
    if (lr < 0) {
        cmd_fail(C, "%s", err.msg);
        llmfs_free(lf);
        goto out;
    }
    llmfs_model *m = llmfs_model_get(lf, name);
    if (m) { /* a refused draft: the reply comes without speculation, and says why */
        char why[256];
        llmfs_model_error(m, why, sizeof why);
        if (why[0])
            fprintf(stderr, "llmfs: run: %s\n", why);
    }
    llmfs_session *s = m ? llmfs_session_default(m) : NULL;
    llmfs_stream *st = s ? llmfs_session_output(s) : NULL;
    if (!st) {
        cmd_fail(C, "the model has no default session");
    } else {
        struct sigaction sa = {0}, old_sa;
        sa.sa_handler = on_sigint;
        sigemptyset(&sa.sa_mask);
        interrupted = 0;
        sigaction(SIGINT, &sa, &old_sa);
        if (llmfs_session_prompt(s, text, len, &err) < 0) {
            cmd_fail(C, "%s", err.msg);
        } else {
            bool ends_nl = true;
            uint64_t total = 0;
            if (pump(s, st, &ends_nl, &total) < 0) {
                cmd_fail(C, "cannot write: %s", strerror(errno));
            } else {
                if (total && !ends_nl && isatty(STDOUT_FILENO))
                    putchar('\n');
                llmfs_session_stats ss;
                llmfs_session_stats_get(s, &ss);
                if (strcmp(ss.stop_reason, "error") == 0) {
                    char msg[256];
                    llmfs_session_error(s, msg, sizeof msg);
                    cmd_fail(C, "%s", msg[0] ? msg : "generation failed");
                } else {
                    rc = CMD_OK;
                    if (stats)
                        fprintf(stderr, "llmfs: run: prompt %d tokens (%d cached), %.2f t/s; generated %d tokens, "
                                        "%.2f t/s; first token after %.1f ms; stop: %s\n",
                                ss.n_prompt, ss.n_cached, ss.pp_tps, ss.n_gen, ss.tg_tps, ss.ttft_ms,
                                ss.stop_reason[0] ? ss.stop_reason : "-");
                    if (stats && ss.spec_steps > 0)
                        spec_compare(s, text, len, &ss);
                }
            }
        }
        sigaction(SIGINT, &old_sa, NULL);
    }
    if (st)
        llmfs_stream_put(st);
    if (s)
        llmfs_session_put(s);
    if (m)
        llmfs_model_put(m);
    llmfs_free(lf);
out:
    free(text);
    kv_clear(&model_kv);
    kv_clear(&daemon_kv);
    return rc;
}
