/* main.c — the llmfs command: git-style subcommands. */
#include "cmd.h"
#ifdef LLMFS_HAVE_FS
#include "fs.h"
#endif

#include <stdio.h>
#include <string.h>

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} command;

static const command commands[] = {
#ifdef LLMFS_HAVE_FS
    {"mount", fs_mount_main, "serve models as a file system"},
#endif
    {"run", cmd_run, "generate text from a prompt, streamed to stdout"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
    {"detok", cmd_detok, "print the text of token ids"},
    {"logits", cmd_logits, "evaluate token ids in one batch and write every position's logits"},
    {"info", cmd_info, "describe a model file: shape, tensor types, tokenizer, template"},
    {"bench", cmd_bench, "measure prompt processing and generation speed"},
    {"mkmodel", cmd_mkmodel, "write a random-weight model with a real model's shape"},
    {"fit", cmd_fit, "show the placement fit would choose, without loading the model"},
    {"diag", cmd_diag, "check the machine for what slows inference (the diag file, without a mount)"},
};
#define N_COMMANDS ((int)(sizeof commands / sizeof commands[0]))

static const command *find(const char *name)
{
    for (int i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

static void help(FILE *f)
{
    fprintf(f, "usage: llmfs COMMAND [ARGS]    ('llmfs COMMAND --help' for its options)\n\ncommands:\n");
    for (int i = 0; i < N_COMMANDS; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "  %-10s %s\n", "help", "list the commands, or 'help COMMAND' for one");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        help(stderr);
        return CMD_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "help") == 0 || strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0) {
        if (argc > 2) {
            const command *c = find(argv[2]);
            if (!c) {
                fprintf(stderr, "llmfs: unknown command '%s' (try 'llmfs help')\n", argv[2]);
                return CMD_USAGE;
            }
            char *sub[] = {argv[2], "--help", NULL};
            return c->fn(2, sub);
        }
        help(stdout);
        return CMD_OK;
    }
    const command *c = find(name);
    if (!c) {
        fprintf(stderr, "llmfs: unknown command '%s' (try 'llmfs help')\n", name);
        return CMD_USAGE;
    }
    return c->fn(argc - 1, argv + 1);
}
