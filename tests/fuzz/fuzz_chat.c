/* fuzz_chat.c — libFuzzer target for the chat-template interpreter.
 *
 * The input is a template. Rendering it for a fixed conversation must either succeed
 * or fail with an errno and a one-line reason; nothing else (no crash, no leak). */
#include "chat.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const chat_msg conv[] = {
    {"system", "You are terse."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", " Bye \n"},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *tmpl = malloc(size + 1);
    if (!tmpl)
        return 0;
    memcpy(tmpl, data, size);
    tmpl[size] = 0; /* a template is a C string: an embedded NUL ends it */
    for (int gen = 0; gen < 2; gen++) {
        llmfs_error err = {0};
        char *out = chat_render(tmpl, conv, 4, gen, "<s>", "</s>", &err);
        if (!out && (err.code == 0 || !err.msg[0] || strchr(err.msg, '\n'))) {
            fprintf(stderr, "fuzz_chat: failure without a one-line reason (code %d)\n", err.code);
            abort();
        }
        free(out);
    }
    free(tmpl);
    return 0;
}
