/* test_reasoning.c — a reply split into answer and reasoning: harmony channels and
 * <think> tags, fed whole and one byte at a time (markers cut anywhere). */
#include "testutil.h"

#include "reasoning.h"

#include <string.h>

typedef struct sink {
    char out[512], reason[512];
    size_t n_out, n_reason;
} sink;

static void collect(void *arg, bool reasoning, const char *t, size_t n)
{
    sink *k = arg;
    char *dst = reasoning ? k->reason : k->out;
    size_t *len = reasoning ? &k->n_reason : &k->n_out;
    ck_assert(*len + n < sizeof k->out);
    memcpy(dst + *len, t, n);
    *len += n;
    dst[*len] = 0;
}

static void check(reason_mode mode, const char *reply, const char *want_out, const char *want_reason)
{
    for (size_t step = 1; step <= 2; step++) {
        /* step 1: a byte at a time; step 2: the whole reply */
        sink k = {0};
        reason_split r;
        reason_split_init(&r, mode);
        size_t n = strlen(reply), chunk = step == 1 ? 1 : n;
        for (size_t i = 0; i < n; i += chunk)
            reason_split_push(&r, reply + i, n - i < chunk ? n - i : chunk, collect, &k);
        reason_split_flush(&r, collect, &k);
        ck_assert_msg(!strcmp(k.out, want_out), "'%s' (chunk %zu): answer '%s', want '%s'", reply, chunk, k.out,
                      want_out);
        ck_assert_msg(!strcmp(k.reason, want_reason), "'%s' (chunk %zu): reasoning '%s', want '%s'", reply, chunk,
                      k.reason, want_reason);
    }
}

START_TEST(harmony_channels)
{
    check(REASON_HARMONY,
          "<|channel|>analysis<|message|>User says hi.<|end|><|start|>assistant<|channel|>final<|message|>Hello!",
          "Hello!", "User says hi.");
    /* no channels at all: everything is the answer; a lone '<' is text */
    check(REASON_HARMONY, "a < b <|", "a < b <|", "");
    check(REASON_HARMONY,
          "<|channel|>commentary to=functions.f <|constrain|>json<|message|>{}<|call|>",
          "", "{}");
    ck_assert_int_eq(reason_mode_of("{{ '<|start|>' }}<|channel|>x<|message|>"), REASON_HARMONY);
}
END_TEST

START_TEST(think_tags)
{
    check(REASON_THINK, "<think>\nLet me see.\n</think>\n\nThe answer.", "The answer.", "\nLet me see.\n");
    check(REASON_THINK, "No thinking <thin", "No thinking <thin", "");
    check(REASON_NONE, "<think>x</think>y", "<think>x</think>y", "");
    ck_assert_int_eq(reason_mode_of("<|im_start|>{% if x %}<think>\n\n</think>{% endif %}"), REASON_THINK);
    ck_assert_int_eq(reason_mode_of("<|im_start|>"), REASON_NONE);
}
END_TEST

START_TEST(gemma4_channel)
{
    check(REASON_GEMMA4, "<|channel>thought\nThe user greets me.<channel|>\nHello there!", "Hello there!",
          "The user greets me.");
    /* thinking off: the template closed the channel in the prompt, the reply is all answer */
    check(REASON_GEMMA4, "Hello <there>!", "Hello <there>!", "");
    /* a channel line cut anywhere still routes the same way */
    check(REASON_GEMMA4, "<|channel>thought\n\nStep 1.\nStep 2.<channel|>Done.", "Done.", "\nStep 1.\nStep 2.");
    ck_assert_int_eq(reason_mode_of("<|turn>model\n{{ '<|channel>thought\n<channel|>' }}"), REASON_GEMMA4);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("reasoning");
    TCase *tc = tcase_create("split");
    tcase_add_test(tc, harmony_channels);
    tcase_add_test(tc, think_tags);
    tcase_add_test(tc, gemma4_channel);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    return test_run_suite(make_suite());
}
