/* main.c — the llmfs command: git-style subcommands. */
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "help") == 0) {
        printf("usage: llmfs COMMAND [ARGS]\n");
        return argc < 2;
    }
    fprintf(stderr, "llmfs: unknown command '%s' (try 'llmfs help')\n", argv[1]);
    return 1;
}
