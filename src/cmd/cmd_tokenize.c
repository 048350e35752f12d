/* cmd_tokenize.c — `llmfs tokenize`: the token ids of a text, the model's default way. */
#include "cmd.h"

#include "gguf.h"
#include "tokenizer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void usage(void)
{
    printf("usage: llmfs tokenize -m MODEL [--no-bos] [--no-special] [--ids | --pieces] (TEXT... | -f FILE)\n"
           "  prints the ids space-separated on one line; words of TEXT are joined by spaces\n"
           "  --no-bos      add no BOS/EOS (by default the vocab decides)\n"
           "  --no-special  treat special-token texts such as <|im_start|> as plain text\n"
           "  --pieces      one token per line: the id and its text (escaped)\n"
           "  -f FILE       tokenize the exact bytes of FILE ('-' for stdin)\n");
}

int cmd_tokenize(int argc, char **argv)
{
    const char *C = "tokenize";
    const char *path = NULL, *file = NULL;
    bool no_bos = false, no_special = false, ids = false, pieces = false;
    const cmd_opt opts[] = {
        {"-m|--model", OPT_STR, &path, 0, 0},
        {"-f|--file", OPT_STR, &file, 0, 0},
        {"--no-bos", OPT_FLAG, &no_bos, 0, 0},
        {"--no-special", OPT_FLAG, &no_special, 0, 0},
        {"--ids", OPT_FLAG, &ids, 0, 0},
        {"--pieces", OPT_FLAG, &pieces, 0, 0},
    };
    char *pos[256];
    int np = cmd_parse(C, argc, argv, opts, (int)(sizeof opts / sizeof opts[0]), pos, 256);
    if (np == CMD_PARSE_HELP) {
        usage();
        return CMD_OK;
    }
    if (np < 0)
        return CMD_USAGE;
    if (!path)
        return cmd_usage_error(C, "missing -m MODEL");
    if (ids && pieces)
        return cmd_usage_error(C, "--ids and --pieces contradict each other");
    if (file && np > 0)
        return cmd_usage_error(C, "give the text as arguments or with -f, not both");
    if (!file && np == 0)
        return cmd_usage_error(C, "no text to tokenize");

    char *text = NULL;
    size_t len = 0;
    if (file) {
        if (!(text = cmd_read_file(file, &len)))
            return cmd_fail(C, "cannot read %s: %s", file, strerror(errno));
    } else {
        for (int i = 0; i < np; i++)
            len += strlen(pos[i]) + 1;
        if (!(text = malloc(len + 1)))
            return cmd_fail(C, "out of memory");
        len = 0;
        for (int i = 0; i < np; i++) {
            size_t n = strlen(pos[i]);
            if (i)
                text[len++] = ' ';
            memcpy(text + len, pos[i], n);
            len += n;
        }
        text[len] = 0;
    }

    int rc = CMD_FAIL;
    llmfs_error err = {0};
    gguf_open_opts go = {0};
    gguf_file *f = gguf_open(path, &go, &err);
    tokenizer *tok = NULL;
    int32_t *out = NULL;
    if (!f) {
        cmd_fail(C, "%s", err.msg);
        goto done;
    }
    if (!(tok = tokenizer_load(f, &err))) {
        cmd_fail(C, "%s: %s", path, err.msg);
        goto done;
    }
    int cap = (int)(len < 1000000 ? len + 16 : 1000016), n;
    for (;;) {
        free(out);
        if (!(out = malloc(sizeof *out * (size_t)cap))) {
            cmd_fail(C, "out of memory");
            goto done;
        }
        n = tokenizer_encode(tok, text, len, !no_bos, !no_special, out, cap);
        if (n <= cap)
            break;
        cap = n;
    }
    if (n < 0) {
        cmd_fail(C, "cannot tokenize: %s", strerror(-n));
        goto done;
    }
    if (pieces) {
        char piece[1024];
        for (int i = 0; i < n; i++) {
            int k = tokenizer_piece(tok, out[i], true, piece, (int)sizeof piece);
            printf("%d\t", out[i]);
            cmd_print_escaped(stdout, piece, k < (int)sizeof piece ? k : (int)sizeof piece);
            putchar('\n');
        }
    } else {
        for (int i = 0; i < n; i++)
            printf(i ? " %d" : "%d", out[i]);
        putchar('\n');
    }
    rc = fflush(stdout) ? cmd_fail(C, "cannot write: %s", strerror(errno)) : CMD_OK;
done:
    free(out);
    if (tok)
        tokenizer_free(tok);
    if (f)
        gguf_close(f);
    free(text);
    return rc;
}
