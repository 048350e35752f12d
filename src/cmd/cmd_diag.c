/* cmd_diag.c — `llmfs diag`: the checks of the diag file, without a mount. */
#include "cmd.h"

#include "llmfs.h"

#include <stdlib.h>

static void usage(void)
{
    printf("usage: llmfs diag\n"
           "  checks this machine for what slows or breaks inference, one line per check:\n"
           "  CHECK VALUE EXPECTED VERDICT [# reason], VERDICT ok, warn or unknown (see llmfs(4), diag)\n");
}

int cmd_diag(int argc, char **argv)
{
    const char *C = "diag";
    char *pos[1];
    int np = cmd_parse(C, argc, argv, NULL, 0, pos, 1);
    if (np == CMD_PARSE_HELP) {
        usage();
        return CMD_OK;
    }
    if (np < 0)
        return CMD_USAGE;
    if (np > 0)
        return cmd_usage_error(C, "takes no arguments");
    char *t = llmfs_diag_text(NULL);
    if (!t)
        return cmd_fail(C, "out of memory");
    fputs(t, stdout);
    free(t);
    return fflush(stdout) == 0 ? CMD_OK : cmd_fail(C, "cannot write the output");
}
