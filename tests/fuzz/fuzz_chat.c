/* fuzz_chat.c — libFuzzer target for chat-template rendering.
 *
 * Input layout: the template, up to the first NUL. Without a NUL it is rendered for a
 * fixed conversation, with and without the generation prompt. After a NUL come
 * NUL-separated parts: a flags part (its first byte: generation prompt, bos and eos
 * tokens), then up to eight (role, content) pairs making the conversation.
 *
 * Whatever the template and the conversation, chat_render must return a NUL-terminated
 * text no longer than the render limit, or NULL with an errno and a one-line reason; and
 * it must give the same answer twice. The built-in renderer of the template's family
 * gets the same conversation and is held to the same rules. Time and memory are bounded
 * by libFuzzer's -timeout and -rss_limit_mb.
 */
#include "chat.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(c)                                                                   \
    do {                                                                           \
        if (!(c)) {                                                                \
            fprintf(stderr, "fuzz_chat: check failed: %s (line %d)\n", #c, __LINE__); \
            abort();                                                               \
        }                                                                          \
    } while (0)

#define MAX_MSGS 8
/* The interpreter's limit on rendered text. */
#define MAX_RENDER ((size_t)64 << 20)

static const chat_msg fixed_conv[] = {
    {"system", "You are terse."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", " Bye \n"},
};

static void check_result(const char *text, const llmfs_error *err, bool empty_template)
{
    if (text) {
        CHECK(strlen(text) <= MAX_RENDER);
        return;
    }
    CHECK(err->code == EINVAL || err->code == ENOMEM || err->code == EFBIG ||
          (empty_template && err->code == ENOENT));
    CHECK(err->msg[0] != 0);
    CHECK(!strchr(err->msg, '\n'));
}

static void render(const char *tmpl, const chat_msg *msgs, int n_msgs, bool gen, const char *bos,
                   const char *eos)
{
    llmfs_error err = {0};
    char *a = chat_render(tmpl, msgs, n_msgs, gen, bos, eos, &err);
    check_result(a, &err, !*tmpl);
    llmfs_error err2 = {0};
    char *b = chat_render(tmpl, msgs, n_msgs, gen, bos, eos, &err2);
    CHECK(!a == !b);
    if (a)
        CHECK(strcmp(a, b) == 0);
    else
        CHECK(err.code == err2.code && strcmp(err.msg, err2.msg) == 0);
    free(a);
    free(b);

    const char *family = chat_template_name(tmpl);
    CHECK(family && *family);
    if (strcmp(family, "jinja") != 0 && strcmp(family, "none") != 0) {
        err = (llmfs_error){0};
        char *c = chat_render_builtin(family, msgs, n_msgs, gen, bos, eos, &err);
        check_result(c, &err, false);
        if (c && strcmp(family, "chatml") == 0) /* ChatML copies every content verbatim */
            for (int i = 0; i < n_msgs; i++)
                CHECK(strstr(c, msgs[i].content));
        free(c);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* One copy with a NUL after it, cut in place at every NUL. */
    char *buf = malloc(size + 1);
    CHECK(buf);
    memcpy(buf, data, size);
    buf[size] = 0;
    const char *tmpl = buf;
    size_t tlen = strlen(buf);
    if (tlen == size) {
        for (int gen = 0; gen < 2; gen++)
            render(tmpl, fixed_conv, 4, gen, "<s>", "</s>");
        free(buf);
        return 0;
    }
    const char *parts[1 + 2 * MAX_MSGS];
    int n_parts = 0;
    for (char *p = buf + tlen + 1; p <= buf + size && n_parts < 1 + 2 * MAX_MSGS;) {
        parts[n_parts++] = p;
        p += strlen(p) + 1;
    }
    uint8_t flags = n_parts ? (uint8_t)parts[0][0] : 0;
    chat_msg msgs[MAX_MSGS];
    int n_msgs = 0;
    for (int k = 1; k + 1 < n_parts; k += 2)
        msgs[n_msgs++] = (chat_msg){parts[k], parts[k + 1]};
    render(tmpl, msgs, n_msgs, flags & 1, flags & 2 ? "<s>" : NULL,
           flags & 4 ? "</s>" : (flags & 8 ? "" : NULL));
    free(buf);
    return 0;
}
