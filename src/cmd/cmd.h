/* cmd.h — the llmfs command's subcommands and the argument helpers they share.
 *
 * Each subcommand is int cmd_NAME(int argc, char **argv) with argv[0] the subcommand's
 * name and the options after it, as main() passes them. They print results on stdout
 * and at most one error line on stderr ("llmfs: NAME: reason"), and return the process
 * exit status: 0, CMD_FAIL, or CMD_USAGE for bad arguments. Being plain functions, tests
 * call them in-process.
 */
#ifndef LLMFS_CMD_H
#define LLMFS_CMD_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum { CMD_OK = 0, CMD_FAIL = 1, CMD_USAGE = 2 };

int cmd_run(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detok(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_info(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_mkmodel(int argc, char **argv);
int cmd_fit(int argc, char **argv);
int cmd_diag(int argc, char **argv);

/* cmd_bench_spec.c: `bench -md DRAFT` / `--spec TYPE`: greedy generation of n_gen tokens
 * through the engine with speculation off and on, reps times; prints the table. */
int bench_spec(const char *path, const char *draft, const char *spec_type, const char *prompt_file, int n_max,
               double p_min, int n_gen, int reps,
               int threads, int ngl, const char *ctk, const char *ctv, bool fa);

/* ---- helpers (cmdline.c) ---- */

/* Prints "llmfs: CMD: message" as one line on stderr; return CMD_USAGE / CMD_FAIL. */
int cmd_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int cmd_fail(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

enum cmd_opt_kind {
    OPT_STR,   /* const char ** */
    OPT_INT,   /* int *, within [lo, hi] */
    OPT_FLOAT, /* double *, within [lo, hi] */
    OPT_U64,   /* uint64_t * */
    OPT_FLAG,  /* bool *, set to true; takes no value */
    OPT_ONOFF, /* bool *: on|off (also 1/0, true/false, yes/no) */
};

typedef struct cmd_opt {
    const char *names;      /* "-m|--model" */
    enum cmd_opt_kind kind;
    void *dst;
    double lo, hi;          /* OPT_INT, OPT_FLOAT */
} cmd_opt;

enum { CMD_PARSE_ERROR = -1, CMD_PARSE_HELP = -2 };

/* Parses argv[1..argc): options anywhere, "--" ends them, other words are positionals
 * (up to pos_cap, stored in pos). Returns the positional count, CMD_PARSE_HELP for -h or
 * --help, or CMD_PARSE_ERROR after printing the one-line error. */
int cmd_parse(const char *cmd, int argc, char **argv, const cmd_opt *opts, int n_opts, char **pos,
              int pos_cap);

/* True if name is one of the '|'-separated names. */
bool cmd_opt_matches(const char *names, const char *name);

/* "f16", "q8_0", "q4_0" -> the KV cache type (enum ggml_type), -1 otherwise. */
int cmd_kv_type(const char *name);

/* Whole file (or stdin for "-") into a malloc'd NUL-terminated buffer; NULL on error. */
char *cmd_read_file(const char *path, size_t *len);

/* Writes a token piece so that it stays on one line: \n, \t, \\ and other control bytes
 * are escaped. */
void cmd_print_escaped(FILE *f, const char *s, int n);

#endif
