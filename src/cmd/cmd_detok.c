/* cmd_detok.c — `llmfs detok`: the text of token ids, concatenated. */
#include "cmd.h"

#include "gguf.h"
#include "tokenizer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void usage(void)
{
    printf("usage: llmfs detok -m MODEL [--no-special] ID...\n"
           "  prints the bytes the ids stand for, with no newline added; an argument may hold\n"
           "  several space-separated ids\n"
           "  --no-special  control tokens print nothing\n");
}

int cmd_detok(int argc, char **argv)
{
    const char *C = "detok";
    const char *path = NULL;
    bool no_special = false;
    const cmd_opt opts[] = {
        {"-m|--model", OPT_STR, &path, 0, 0},
        {"--no-special", OPT_FLAG, &no_special, 0, 0},
    };
    char *pos[4096];
    int np = cmd_parse(C, argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), pos, 4096);
    if (np == CMD_PARSE_HELP) {
        usage();
        return CMD_OK;
    }
    if (np < 0)
        return CMD_USAGE;
    if (!path)
        return cmd_usage_error(C, "missing -m MODEL");

    llmfs_error err = {0};
    gguf_open_opts go = {0};
    gguf_file *f = gguf_open(path, &go, &err);
    if (!f)
        return cmd_fail(C, "%s", err.msg);
    tokenizer *tok = tokenizer_load(f, &err);
    if (!tok) {
        gguf_close(f);
        return cmd_fail(C, "%s: %s", path, err.msg);
    }
    int n_vocab = tokenizer_n_vocab(tok), rc = CMD_OK;
    int cap = 256;
    char *piece = malloc((size_t)cap);
    /* Checked before anything is printed, so a bad id leaves no partial text. */
    for (int i = 0; i < np && rc == CMD_OK; i++) {
        for (char *p = pos[i], *end; *p; p = end) {
            while (*p == ' ' || *p == '\t' || *p == '\n' || *p == ',')
                p++;
            if (!*p)
                break;
            errno = 0;
            long id = strtol(p, &end, 10);
            if (end == p || errno || id < 0 || id >= n_vocab) {
                rc = cmd_usage_error(C, "'%s' is not a token id of this vocab (0..%d)", pos[i], n_vocab - 1);
                break;
            }
        }
    }
    for (int i = 0; i < np && rc == CMD_OK && piece; i++) {
        for (char *p = pos[i], *end; *p; p = end) {
            while (*p == ' ' || *p == '\t' || *p == '\n' || *p == ',')
                p++;
            if (!*p)
                break;
            int32_t id = (int32_t)strtol(p, &end, 10);
            int k = tokenizer_piece(tok, id, !no_special, piece, cap);
            if (k > cap) {
                char *np2 = realloc(piece, (size_t)k);
                if (!np2)
                    break;
                piece = np2;
                cap = k;
                k = tokenizer_piece(tok, id, !no_special, piece, cap);
            }
            if (k > 0)
                fwrite(piece, 1, (size_t)k, stdout);
        }
    }
    if (!piece)
        rc = cmd_fail(C, "out of memory");
    if (rc == CMD_OK && fflush(stdout))
        rc = cmd_fail(C, "cannot write: %s", strerror(errno));
    free(piece);
    tokenizer_free(tok);
    gguf_close(f);
    return rc;
}
