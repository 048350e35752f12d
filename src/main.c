/* main.c — the llmfs command: git-style subcommands. */
#ifdef LLMFS_HAVE_FS
#include "../fs/fs.h"
#endif

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "help") == 0) {
        printf("usage: llmfs COMMAND [ARGS]\n");
        return argc < 2;
    }
#ifdef LLMFS_HAVE_FS
    if (strcmp(argv[1], "mount") == 0)
        return fs_mount_main(argc - 1, argv + 1);
#endif
    fprintf(stderr, "llmfs: unknown command '%s' (try 'llmfs help')\n", argv[1]);
    return 1;
}
