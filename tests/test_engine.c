/* The engine through llmfs.h with the real test models: fixtures, concurrency, chat
 * cache reuse, commands, errors, unloading. */
#include "gguf.h"
#include "llmfs.h"
#include "testutil.h"
#include "tokenizer.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers ---- */

static llmfs *lf;

static void setup(void)
{
    if (!test_shared_dir())
        test_skip_no_shared("engine tests");
    llmfs_error e = {0};
    lf = llmfs_new(&e);
    ck_assert_ptr_nonnull(lf);
}

static void teardown(void)
{
    llmfs_free(lf);
    lf = NULL;
}

static void load(const char *name, const char *file, const char *const *settings, int n)
{
    char path[4096];
    char rel[256];
    snprintf(rel, sizeof rel, "models/%s", file);
    test_shared_path(rel, path, sizeof path);
    llmfs_error e = {0};
    int rc = llmfs_model_load(lf, name, path, settings, n, &e);
    ck_assert_msg(rc == 0, "loading %s: %d %s", file, rc, e.msg);
}

static char *prompt_and_read(llmfs_session *s, const char *text)
{
    llmfs_error e = {0};
    int rc = llmfs_session_prompt(s, text, strlen(text), &e);
    ck_assert_msg(rc == 0, "prompt: %d %s", rc, e.msg);
    llmfs_stream *st = llmfs_session_output(s);
    char *out = test_stream_text(st, NULL);
    llmfs_stream_put(st);
    return out;
}

static void ctl(llmfs_session *s, const char *line)
{
    llmfs_error e = {0};
    int rc = llmfs_session_ctl(s, line, &e);
    ck_assert_msg(rc == 0, "ctl '%s': %d %s", line, rc, e.msg);
}

static void mctl(llmfs_model *m, const char *line)
{
    llmfs_error e = {0};
    int rc = llmfs_model_ctl(m, line, &e);
    ck_assert_msg(rc == 0, "model ctl '%s': %d %s", line, rc, e.msg);
}

/* The fixture's greedy continuation as text, up to the first step whose llama.cpp
 * top-2 margin is below 0.5 (where a legitimate rounding difference may pick the
 * other token). *complete says whether every step was clear. */
typedef struct fixture {
    char *prompt;
    char *expect;
    int n_prompt_tokens;
    int n_clear, n_greedy;
} fixture;

static fixture load_fixture(const char *model_file, const char *stem, const char *cas)
{
    fixture f = {0};
    char rel[512], path[4096];
    snprintf(rel, sizeof rel, "fixtures/%s/%s/prompt.txt", stem, cas);
    f.prompt = test_read_file(test_shared_path(rel, path, sizeof path), NULL);
    ck_assert_ptr_nonnull(f.prompt);
    int32_t *toks, *greedy;
    float *margin;
    snprintf(rel, sizeof rel, "fixtures/%s/%s/tokens.txt", stem, cas);
    f.n_prompt_tokens = test_read_ints(test_shared_path(rel, path, sizeof path), &toks);
    snprintf(rel, sizeof rel, "fixtures/%s/%s/greedy.txt", stem, cas);
    f.n_greedy = test_read_ints(test_shared_path(rel, path, sizeof path), &greedy);
    snprintf(rel, sizeof rel, "fixtures/%s/%s/greedy_margin.txt", stem, cas);
    int nm = test_read_floats(test_shared_path(rel, path, sizeof path), &margin);
    ck_assert_int_eq(nm, f.n_greedy);
    f.n_clear = 0;
    while (f.n_clear < f.n_greedy && margin[f.n_clear] >= 0.5f)
        f.n_clear++;

    snprintf(rel, sizeof rel, "models/%s", model_file);
    llmfs_error e = {0};
    gguf_file *g = gguf_open(test_shared_path(rel, path, sizeof path), NULL, &e);
    ck_assert_msg(g != NULL, "%s", e.msg);
    tokenizer *tok = tokenizer_load(g, &e);
    ck_assert_msg(tok != NULL, "%s", e.msg);
    size_t cap = 4096, o = 0;
    f.expect = malloc(cap);
    /* the pieces as a streaming reader gets them: an invalid UTF-8 sequence of byte tokens
     * (common with random weights) comes out as U+FFFD, the rest as the concatenation */
    detok_state ds = {0};
    size_t po = 0;
    char *pieces = malloc(cap);
    for (int i = 0; i < f.n_clear; i++) {
        char piece[256];
        int n = tokenizer_piece(tok, greedy[i], false, piece, sizeof piece);
        ck_assert_int_lt(n, (int)sizeof piece);
        if (o + 3 * (size_t)n + 16 > cap || po + (size_t)n + 1 > cap) {
            cap *= 2;
            f.expect = realloc(f.expect, cap);
            pieces = realloc(pieces, cap);
        }
        memcpy(pieces + po, piece, (size_t)n);
        po += (size_t)n;
        o += (size_t)detok_push(tok, &ds, greedy[i], f.expect + o, (int)(cap - o));
    }
    f.expect[o] = 0;
    pieces[po] = 0;
    if (strstr(stem, "llama-tiny") == NULL)
        ck_assert_msg(strncmp(pieces, f.expect, o) == 0, "pieces '%s' vs streamed '%s'", pieces, f.expect);
    free(pieces);
    tokenizer_free(tok);
    gguf_close(g);
    free(toks);
    free(greedy);
    free(margin);
    return f;
}

static void fixture_free(fixture *f)
{
    free(f->prompt);
    free(f->expect);
}

static void assert_starts_with(const char *out, const fixture *f, const char *what)
{
    ck_assert_msg(strncmp(out, f->expect, strlen(f->expect)) == 0,
                  "%s: output\n  '%s'\ndoes not start with the fixture's greedy text (%d clear steps)\n  '%s'",
                  what, out, f->n_clear, f->expect);
}

/* ---- raw mode against the fixtures ---- */

static void check_raw_fixture(const char *model_file, const char *stem, const char *cas)
{
    static const char *opts[] = {"mode=raw", "temp=0", "n_predict=32", "ctx=512", "threads=2"};
    load("m", model_file, opts, 5);
    llmfs_model *m = llmfs_model_get(lf, "m");
    llmfs_session *s = llmfs_session_default(m);
    fixture f = load_fixture(model_file, stem, cas);
    char *out = prompt_and_read(s, f.prompt);
    assert_starts_with(out, &f, cas);
    if (f.n_clear == f.n_greedy)
        ck_assert_str_eq(out, f.expect);
    llmfs_session_stats st;
    llmfs_session_stats_get(s, &st);
    ck_assert_str_eq(st.state, "idle");
    ck_assert_str_eq(st.stop_reason, f.n_greedy == 32 ? "length" : "eos");
    ck_assert_int_eq(st.n_gen, f.n_greedy);
    ck_assert_int_eq(st.n_prompt + st.n_cached, f.n_prompt_tokens);
    ck_assert_int_eq(st.turns, 1);
    ck_assert(st.ttft_ms > 0);
    ck_assert_int_eq(st.kv_size, 512);
    ck_assert_int_eq(st.kv_used, f.n_prompt_tokens + f.n_greedy - 1);
    /* the same prompt again reuses all but the last prompt token and gives the same text */
    char *again = prompt_and_read(s, f.prompt);
    ck_assert_str_eq(again, out);
    llmfs_session_stats_get(s, &st);
    ck_assert_int_eq(st.n_cached, f.n_prompt_tokens - 1);
    ck_assert_int_eq(st.n_prompt, 1);
    llmfs_model_stats ms;
    llmfs_model_stats_get(m, &ms);
    ck_assert_uint_eq(ms.n_gen_tokens, 2 * (uint64_t)f.n_greedy);
    ck_assert_uint_eq(ms.requests, 2);
    ck_assert_str_eq(ms.state, "ready");
    free(again);
    free(out);
    fixture_free(&f);
    llmfs_session_put(s);
    llmfs_model_put(m);
    ck_assert_int_eq(llmfs_model_unload(lf, "m", NULL), 0);
}

START_TEST(raw_greedy_stories)
{
    check_raw_fixture("stories260K.gguf", "stories260K", "once-upon-a-time");
    check_raw_fixture("stories260K.gguf", "stories260K", "lily-and-tom");
}
END_TEST

START_TEST(raw_greedy_llama_tiny)
{
    check_raw_fixture("llama-tiny-q8_0.gguf", "llama-tiny-q8_0", "story");
    check_raw_fixture("llama-tiny-f16.gguf", "llama-tiny-f16", "cat");
}
END_TEST

START_TEST(raw_greedy_qwen)
{
    check_raw_fixture("qwen2-tiny-q8_0.gguf", "qwen2-tiny-q8_0", "fox");
    check_raw_fixture("qwen3-tiny-q4_k.gguf", "qwen3-tiny-q4_k", "price");
}
END_TEST

/* Hybrid models: a recurrent state instead of K/V in most layers. The same prompt
 * again still reuses all but its last token, from the checkpoint taken there. */
START_TEST(raw_greedy_hybrid)
{
    check_raw_fixture("qwen35moe-tiny-q8_0.gguf", "qwen35moe-tiny-q8_0", "fox");
    check_raw_fixture("qwen3next-tiny-q8_0.gguf", "qwen3next-tiny-q8_0", "price");
    check_raw_fixture("qwen35-tiny-q8_0.gguf", "qwen35-tiny-q8_0", "price");
}
END_TEST

/* Three chat turns equal one raw prompt holding the whole conversation; turns 2 and 3
 * resume from the state the earlier turns left; a reply cut short (n_predict), then a
 * follow-up, and a reset all continue correctly. */
START_TEST(hybrid_chat_three_turns)
{
    static const char *opts[] = {"temp=0", "n_predict=16", "ctx=1024", "threads=2", "parallel=2"};
    load("h", "qwen35moe-tiny-q8_0.gguf", opts, 5);
    llmfs_model *m = llmfs_model_get(lf, "h");
    llmfs_session *s = llmfs_session_default(m);
    const char *user[3] = {"Hi", "Tell me about the fox.", "And the dog?"};
    char *reply[3];
    char conv[16384] = "";
    size_t at = 0;
    llmfs_session_stats st;
    for (int k = 0; k < 3; k++) {
        reply[k] = prompt_and_read(s, user[k]);
        llmfs_session_stats_get(s, &st);
        ck_assert_int_eq(st.turns, k + 1);
        if (k)
            ck_assert_msg(st.n_cached > 0, "turn %d reused nothing", k + 1);
        /* the same conversation as raw text, in a fresh session */
        at += (size_t)snprintf(conv + at, sizeof conv - at, "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n", user[k]);
        llmfs_error e = {0};
        llmfs_session *fresh = llmfs_session_new(m, &e);
        ck_assert_ptr_nonnull(fresh);
        ctl(fresh, "mode raw");
        char whole[16400];
        snprintf(whole, sizeof whole, "%s\n", conv); /* a prompt loses one trailing newline */
        char *r = prompt_and_read(fresh, whole);
        ck_assert_msg(!strcmp(r, reply[k]), "turn %d: '%s' in the chat, '%s' from one prompt", k + 1, reply[k], r);
        free(r);
        ctl(fresh, "close");
        llmfs_session_put(fresh);
        at += (size_t)snprintf(conv + at, sizeof conv - at, "%s<|im_end|>\n", reply[k]);
    }
    llmfs_model_info info;
    llmfs_model_info_get(m, &info);
    ck_assert_str_eq(info.arch, "qwen35moe");
    /* the recurrent state: 143,360 bytes per sequence (2 DeltaNet layers), checkpoints held */
    llmfs_kv_info kvi;
    llmfs_model_kv_info(m, &kvi);
    ck_assert_uint_eq(kvi.state_bytes, 143360);
    ck_assert_int_eq(kvi.n_recurrent_layers, 2);
    ck_assert_int_gt(kvi.checkpoints, 0);
    /* its parts, per layer: 3 x 512 conv floats and 4 heads of 64 x 64 */
    ck_assert_uint_eq(kvi.conv_bytes, 3 * 512 * 4);
    ck_assert_uint_eq(kvi.ssm_bytes, 4 * 64 * 64 * 4);
    ck_assert_uint_eq(kvi.state_bytes, 2 * (kvi.conv_bytes + kvi.ssm_bytes));
    /* the chat's sequence holds checkpoints of its own, at most all of them */
    ck_assert_int_gt(st.checkpoints, 0);
    ck_assert_int_le(st.checkpoints, kvi.checkpoints);
    llmfs_model_stats ms;
    llmfs_model_stats_get(m, &ms);
    ck_assert_uint_eq(ms.state_bytes, 2 * 143360);
    ck_assert_uint_ge(ms.kv_bytes, ms.state_bytes + 2ull * 1024 * 2 * 2 * 128 * 2);

    /* reset keeps nothing of the conversation: the first turn again */
    ctl(s, "reset");
    char *r = prompt_and_read(s, user[0]);
    ck_assert_str_eq(r, reply[0]);
    free(r);
    /* a reply cut short, then a follow-up: the state continues from the short reply */
    ctl(s, "n_predict 3");
    char *short1 = prompt_and_read(s, user[1]);
    ctl(s, "n_predict 16");
    char *follow = prompt_and_read(s, user[2]);
    llmfs_session_stats_get(s, &st);
    ck_assert_int_gt(st.n_cached, 0);
    snprintf(conv, sizeof conv,
             "<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n%s<|im_end|>\n<|im_start|>user\n%s<|im_end|>\n"
             "<|im_start|>assistant\n%s<|im_end|>\n<|im_start|>user\n%s<|im_end|>\n<|im_start|>assistant\n\n",
             user[0], reply[0], user[1], short1, user[2]);
    llmfs_error e = {0};
    llmfs_session *fresh = llmfs_session_new(m, &e);
    ctl(fresh, "mode raw");
    char *want = prompt_and_read(fresh, conv);
    ck_assert_msg(!strcmp(want, follow), "after a short reply: '%s' in the chat, '%s' from one prompt", follow, want);
    free(want);
    free(short1);
    free(follow);
    llmfs_session_put(fresh);
    for (int k = 0; k < 3; k++)
        free(reply[k]);
    llmfs_session_put(s);
    llmfs_model_put(m);
}
END_TEST

/* Eight sessions at once on eight sequences of recurrent state give what each gives alone. */
START_TEST(hybrid_eight_sessions)
{
    const char *opts[] = {"mode=raw", "temp=0", "n_predict=32", "ctx=256", "threads=2", "parallel=8", "batch=512"};
    load("m", "qwen3next-tiny-q8_0.gguf", opts, 7);
    llmfs_model *m = llmfs_model_get(lf, "m");
    fixture f[2] = {load_fixture("qwen3next-tiny-q8_0.gguf", "qwen3next-tiny-q8_0", "fox"),
                    load_fixture("qwen3next-tiny-q8_0.gguf", "qwen3next-tiny-q8_0", "price")};
    llmfs_session *s[8];
    for (int i = 0; i < 8; i++) {
        llmfs_error e = {0};
        s[i] = llmfs_session_new(m, &e);
        ck_assert_msg(s[i] != NULL, "%s", e.msg);
    }
    for (int i = 0; i < 8; i++) {
        llmfs_error e = {0};
        const char *p = f[i % 2].prompt;
        ck_assert_int_eq(llmfs_session_prompt(s[i], p, strlen(p), &e), 0);
    }
    for (int i = 0; i < 8; i++) {
        llmfs_stream *st = llmfs_session_output(s[i]);
        char *out = test_stream_text(st, NULL);
        char what[32];
        snprintf(what, sizeof what, "session %d", i + 1);
        assert_starts_with(out, &f[i % 2], what);
        if (f[i % 2].n_clear == f[i % 2].n_greedy)
            ck_assert_str_eq(out, f[i % 2].expect);
        llmfs_stream_put(st);
        free(out);
        test_wait_idle(s[i], 120);
        ctl(s[i], "close");
        llmfs_session_put(s[i]);
    }
    fixture_free(&f[0]);
    fixture_free(&f[1]);
    llmfs_model_put(m);
    ck_assert_int_eq(llmfs_model_unload(lf, "m", NULL), 0);
}
END_TEST

/* ---- many sessions at once ---- */

static void check_concurrent(int parallel, int n_sessions)
{
    char par[32];
    snprintf(par, sizeof par, "parallel=%d", parallel);
    const char *opts[] = {"mode=raw", "temp=0", "n_predict=32", "ctx=256", "threads=2", par, "batch=512"};
    load("m", "llama-tiny-q8_0.gguf", opts, 7);
    llmfs_model *m = llmfs_model_get(lf, "m");
    fixture f[2] = {load_fixture("llama-tiny-q8_0.gguf", "llama-tiny-q8_0", "story"),
                    load_fixture("llama-tiny-q8_0.gguf", "llama-tiny-q8_0", "cat")};
    llmfs_session **s = calloc((size_t)n_sessions, sizeof *s);
    for (int i = 0; i < n_sessions; i++) {
        llmfs_error e = {0};
        s[i] = llmfs_session_new(m, &e);
        ck_assert_msg(s[i] != NULL, "%s", e.msg);
        ck_assert_int_eq(llmfs_session_id(s[i]), i + 1);
    }
    for (int i = 0; i < n_sessions; i++) {
        llmfs_error e = {0};
        const char *p = f[i % 2].prompt;
        ck_assert_int_eq(llmfs_session_prompt(s[i], p, strlen(p), &e), 0);
    }
    llmfs_model_stats ms;
    llmfs_model_stats_get(m, &ms);
    ck_assert_int_eq(ms.n_sessions, n_sessions + 1);
    ck_assert_int_eq(ms.n_slots, parallel);
    for (int i = 0; i < n_sessions; i++) {
        llmfs_stream *st = llmfs_session_output(s[i]);
        char *out = test_stream_text(st, NULL);
        char what[32];
        snprintf(what, sizeof what, "session %d", i + 1);
        assert_starts_with(out, &f[i % 2], what);
        llmfs_stream_put(st);
        free(out);
        test_wait_idle(s[i], 120);
        llmfs_session_stats ss;
        llmfs_session_stats_get(s[i], &ss);
        ck_assert_str_eq(ss.stop_reason, "length");
        ck_assert_int_eq(ss.n_gen, 32);
    }
    int ids[64];
    ck_assert_int_eq(llmfs_session_ids(m, ids, 64), n_sessions);
    for (int i = 0; i < n_sessions; i++) {
        ctl(s[i], "close");
        llmfs_session_put(s[i]);
    }
    ck_assert_int_eq(llmfs_session_ids(m, ids, 64), 0);
    free(s);
    fixture_free(&f[0]);
    fixture_free(&f[1]);
    llmfs_model_put(m);
    ck_assert_int_eq(llmfs_model_unload(lf, "m", NULL), 0);
}

START_TEST(sixteen_sessions_at_once)
{
    check_concurrent(16, 16);
}
END_TEST

START_TEST(more_sessions_than_slots)
{
    check_concurrent(3, 10);
}
END_TEST

/* ---- chat mode ---- */

START_TEST(chat_second_turn_reuses_the_cache)
{
    static const char *opts[] = {"temp=0", "n_predict=24", "ctx=1024", "threads=2", "parallel=2"};
    load("q", "qwen2-tiny-q8_0.gguf", opts, 5);
    llmfs_model *m = llmfs_model_get(lf, "q");
    llmfs_model_info info;
    llmfs_model_info_get(m, &info);
    ck_assert_str_eq(info.arch, "qwen2");
    ck_assert_ptr_nonnull(info.chat_template);
    llmfs_session *s = llmfs_session_default(m);
    char mode[32];
    ck_assert_int_gt(llmfs_session_settings_text(s, mode, 0), 0);
    char text[8192];
    llmfs_session_settings_text(s, text, sizeof text);
    ck_assert_msg(strstr(text, "mode chat\n"), "a model with a template starts in chat mode:\n%s", text);

    ctl(s, "system You are a helpful assistant.");
    char *r1 = prompt_and_read(s, "Hi\n");
    llmfs_session_stats st;
    llmfs_session_stats_get(s, &st);
    ck_assert_int_eq(st.turns, 1);
    int first_total = st.n_prompt + st.n_cached;
    char *r2 = prompt_and_read(s, "Tell me about the fox.");
    llmfs_session_stats_get(s, &st);
    ck_assert_int_eq(st.turns, 2);
    ck_assert_msg(st.n_cached > first_total / 2, "turn 2 reused only %d tokens (turn 1 had %d)", st.n_cached,
                  first_total);
    ck_assert_int_gt(st.n_prompt, 0);

    /* a fresh session given the same conversation as raw text gives the same reply */
    llmfs_error e = {0};
    llmfs_session *fresh = llmfs_session_new(m, &e);
    ck_assert_ptr_nonnull(fresh);
    ctl(fresh, "mode raw");
    char conv[16384];
    snprintf(conv, sizeof conv,
             "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
             "<|im_start|>assistant\n%s<|im_end|>\n<|im_start|>user\nTell me about the fox.<|im_end|>\n"
             "<|im_start|>assistant\n\n",
             r1); /* the extra newline: a prompt loses one trailing newline */
    char *r3 = prompt_and_read(fresh, conv);
    ck_assert_str_eq(r3, r2);

    /* the transcript has both turns in order with their end lines */
    llmfs_stream *tr = llmfs_session_transcript(s);
    size_t tl;
    char *t = malloc(65536);
    tl = llmfs_stream_read(tr, t, 65535, 0);
    t[tl] = 0;
    char *u1 = strstr(t, ">>> user\nHi\n<<< assistant\n");
    ck_assert_msg(u1 != NULL, "transcript:\n%s", t);
    ck_assert_ptr_nonnull(strstr(t, ">>> system\nYou are a helpful assistant.\n"));
    ck_assert_ptr_nonnull(strstr(u1, r1));
    char *u2 = strstr(u1, ">>> user\nTell me about the fox.\n<<< assistant\n");
    ck_assert_ptr_nonnull(u2);
    ck_assert_ptr_nonnull(strstr(t, "### turn 1 chat "));
    ck_assert_ptr_nonnull(strstr(t, "### turn 2 chat "));
    ck_assert_ptr_nonnull(strstr(u2, "### end "));
    ck_assert_ptr_null(strstr(u2, ">>> system")); /* only when it changes */
    free(t);
    llmfs_stream_put(tr);

    /* reset: the next turn is a fresh conversation again */
    ctl(s, "reset");
    char *r4 = prompt_and_read(s, "Hi");
    ck_assert_str_eq(r4, r1);
    llmfs_session_stats_get(s, &st);
    ck_assert_int_eq(st.n_prompt + st.n_cached, first_total);

    char *lp = llmfs_session_last_prompt(s);
    ck_assert_str_eq(lp, "Hi");
    free(lp);
    free(r1);
    free(r2);
    free(r3);
    free(r4);
    llmfs_session_put(fresh);
    llmfs_session_put(s);
    llmfs_model_put(m);
}
END_TEST

/* Gemma 4 MoE through the engine: the file's template (its built-in stand-in) renders
 * the turn as the chat fixture's prompt, the reply comes, and the cache is what the
 * metadata says: per layer n_kv_heads x head size x 2 bytes (f16) x (K + V) per cell */
START_TEST(chat_gemma4_moe)
{
    static const char *opts[] = {"temp=0", "n_predict=8", "ctx=256", "threads=2", "parallel=1"};
    load("g", "gemma4moe-tiny-q8_0.gguf", opts, 5);
    llmfs_model *m = llmfs_model_get(lf, "g");
    llmfs_model_info info;
    llmfs_model_info_get(m, &info);
    ck_assert_str_eq(info.arch, "gemma4");
    /* layers S S S F: 2 x 32 and 1 x 64 values per cell, K and V, f16 */
    const uint64_t per_cell = 3 * (2 * 32 * 2 * 2) + 1 * (1 * 64 * 2 * 2);
    llmfs_session *s = llmfs_session_default(m);
    char *r = prompt_and_read(s, "Hi");
    llmfs_session_stats st;
    llmfs_session_stats_get(s, &st);
    ck_assert_int_eq(st.turns, 1);
    /* the fixture's chat prompt is 16 tokens, BOS included */
    ck_assert_int_eq(st.n_prompt + st.n_cached, 16);
    ck_assert_int_gt((int)strlen(r), 0);
    llmfs_model_stats ms;
    llmfs_model_stats_get(m, &ms);
    ck_assert_msg(ms.kv_bytes == per_cell * (uint64_t)ms.n_ctx * (uint64_t)ms.n_slots,
                  "KV %llu bytes for %d x %d cells", (unsigned long long)ms.kv_bytes, ms.n_ctx, ms.n_slots);
    free(r);
    llmfs_session_put(s);
    llmfs_model_put(m);
}
END_TEST

START_TEST(chat_needs_a_template)
{
    static const char *opts[] = {"threads=2"};
    load("st", "stories260K.gguf", opts, 1);
    llmfs_model *m = llmfs_model_get(lf, "st");
    llmfs_session *s = llmfs_session_default(m);
    char v[8192];
    llmfs_session_settings_text(s, v, sizeof v);
    ck_assert_msg(strstr(v, "mode raw\n"), "no template: raw mode by default\n%s", v);
    /* family defaults for llama fill the sampling settings nobody set */
    ck_assert_msg(strstr(v, "top_k 40\n") && strstr(v, "min_p 0.05\n"), "%s", v);
    llmfs_error e = {0};
    ck_assert_int_eq(llmfs_session_ctl(s, "mode chat", &e), -EINVAL);
    ck_assert_ptr_nonnull(strstr(e.msg, "template"));
    llmfs_session_put(s);
    llmfs_model_put(m);
}
END_TEST

/* ---- commands and errors ---- */

/* long replies: a big context, so a reply outlives any delay of the test thread */
static const char *long_opts[] = {"mode=raw", "temp=1", "seed=5", "n_predict=-1", "ctx=16384", "threads=2"};

START_TEST(stop_ends_the_reply)
{
    load("m", "llama-tiny-q8_0.gguf", long_opts, 6);
    llmfs_model *m = llmfs_model_get(lf, "m");
    llmfs_session *s = llmfs_session_default(m);
    ctl(s, "repeat_penalty 1.0");
    llmfs_error e = {0};
    ck_assert_int_eq(llmfs_session_prompt(s, "Once upon a time", 16, &e), 0);
    /* a second prompt while the first runs is refused */
    ck_assert_int_eq(llmfs_session_prompt(s, "again", 5, &e), -EBUSY);
    ck_assert_int_eq(e.code, EBUSY);
    char err[256];
    llmfs_session_error(s, err, sizeof err);
    ck_assert_ptr_nonnull(strstr(err, "busy"));
    llmfs_stream *st = llmfs_session_output(s);
    ck_assert_int_eq(llmfs_stream_wait(st, 20, 60000), 1);
    ctl(s, "stop");
    char *out = test_stream_text(st, NULL);
    ck_assert_uint_ge(strlen(out), 1);
    llmfs_session_stats ss;
    llmfs_session_stats_get(s, &ss);
    ck_assert_str_eq(ss.state, "idle");
    ck_assert(strcmp(ss.stop_reason, "stopped") == 0 || strcmp(ss.stop_reason, "eos") == 0);
    ck_assert_int_lt(ss.n_gen, 16000);
    /* idle again: a new prompt is taken, with a new output stream */
    ck_assert_int_eq(llmfs_session_prompt(s, "The cat", 7, &e), 0);
    llmfs_stream *st2 = llmfs_session_output(s);
    ck_assert_ptr_ne(st, st2);
    ctl(s, "stop");
    free(test_stream_text(st2, NULL));
    /* the old stream still holds the old reply */
    char buf[64];
    ck_assert_uint_eq(llmfs_stream_read(st, buf, 4, 0), strlen(out) < 4 ? strlen(out) : 4);
    ctl(s, "stop"); /* idle: nothing to stop */
    llmfs_stream_put(st);
    llmfs_stream_put(st2);
    free(out);
    llmfs_session_put(s);
    llmfs_model_put(m);
}
END_TEST

START_TEST(context_full_and_too_big)
{
    static const char *opts[] = {"mode=raw", "temp=0", "ctx=32", "threads=2"};
    load("m", "stories260K.gguf", opts, 4);
    llmfs_model *m = llmfs_model_get(lf, "m");
    llmfs_session *s = llmfs_session_default(m);
    llmfs_error e = {0};
    const char *big = "Once upon a time there was a little girl who liked to play in the park with "
                      "her dog and her cat and her bird and her fish every single day of the week";
    ck_assert_int_eq(llmfs_session_prompt(s, big, strlen(big), &e), -E2BIG);
    ck_assert_ptr_nonnull(strstr(e.msg, "context"));
    /* a prompt that fits generates until the context is full */
    char *out = prompt_and_read(s, "Once upon a time");
    llmfs_session_stats ss;
    llmfs_session_stats_get(s, &ss);
    ck_assert_str_eq(ss.stop_reason, "context");
    ck_assert_int_eq(ss.n_prompt + ss.n_cached + ss.n_gen, 32 + 1);
    free(out);
    /* the byte limit */
    ck_assert_int_eq(llmfs_set(lf, "max_prompt_bytes", "8", &e), 0);
    ck_assert_int_eq(llmfs_session_prompt(s, "Once upon a time", 16, &e), -E2BIG);
    ck_assert_int_eq(llmfs_session_prompt(s, "", 0, &e), -EINVAL);
    ck_assert_int_eq(llmfs_session_prompt(s, "\n", 1, &e), -EINVAL);
    ck_assert_int_eq(llmfs_session_prompt(s, "a\xff", 2, &e), -EINVAL);
    ck_assert_int_eq(llmfs_session_prompt(s, "a\0b", 3, &e), -EINVAL);
    llmfs_session_put(s);
    llmfs_model_put(m);
}
END_TEST

START_TEST(bad_ctl_lines)
{
    static const char *opts[] = {"threads=2", "mode=raw"};
    load("m", "stories260K.gguf", opts, 2);
    llmfs_model *m = llmfs_model_get(lf, "m");
    llmfs_session *s = llmfs_session_default(m);
    char before[8192], after[8192];
    llmfs_session_settings_text(s, before, sizeof before);
    static const struct {
        const char *line;
        int rc;
    } bad[] = {
        {"temp abc", -EINVAL}, {"temp -1", -EINVAL}, {"top_k", -EINVAL}, {"bogus 1", -ENOENT},
        {"ctx 1024", -EINVAL}, {"mountpoint /x", -EINVAL}, {"stop now", -EINVAL}, {"mode sing", -EINVAL},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        llmfs_error e = {0};
        int rc = llmfs_session_ctl(s, bad[i].line, &e);
        ck_assert_msg(rc == bad[i].rc, "'%s' gave %d", bad[i].line, rc);
        ck_assert_msg(e.msg[0], "'%s' gave no reason", bad[i].line);
        char msg[256];
        llmfs_session_error(s, msg, sizeof msg);
        ck_assert_str_eq(msg, e.msg);
    }
    llmfs_session_settings_text(s, after, sizeof after);
    ck_assert_str_eq(before, after);
    llmfs_error e = {0};
    ck_assert_int_eq(llmfs_session_ctl(s, "close", &e), -EINVAL); /* the default session stays */
    ck_assert_int_eq(llmfs_model_ctl(m, "ctx 9", &e), -EINVAL);
    ck_assert_int_eq(llmfs_model_ctl(m, "nonsense", &e), -ENOENT);
    ck_assert_int_eq(llmfs_model_ctl(m, "max_sessions 4", &e), -EINVAL);
    ck_assert_int_eq(llmfs_model_ctl(m, "ngl 3", &e), -EBUSY);
    char merr[256];
    llmfs_model_error(m, merr, sizeof merr);
    ck_assert_ptr_nonnull(strstr(merr, "ngl"));
    /* single values, as the daemon's idle timers read them */
    char one[64];
    ck_assert_int_eq(llmfs_model_setting(m, "idle_unload", one, sizeof one), 1);
    ck_assert_str_eq(one, "0");
    mctl(m, "idle_unload 30");
    llmfs_model_setting(m, "idle_unload", one, sizeof one);
    ck_assert_str_eq(one, "30");
    ck_assert_int_eq(llmfs_model_setting(m, "nope", one, sizeof one), -ENOENT);
    ck_assert_int_eq(llmfs_session_setting(s, "nope", one, sizeof one), -ENOENT);
    /* a session setting on the model sets the default session and new ones */
    mctl(m, "temp 0.25");
    llmfs_session_settings_text(s, after, sizeof after);
    ck_assert_ptr_nonnull(strstr(after, "temp 0.25\n"));
    llmfs_session *c = llmfs_session_new(m, &e);
    llmfs_session_settings_text(c, after, sizeof after);
    ck_assert_ptr_nonnull(strstr(after, "temp 0.25\n"));
    ctl(c, "temp 0.5");
    llmfs_session_settings_text(s, after, sizeof after);
    ck_assert_ptr_nonnull(strstr(after, "temp 0.25\n"));
    llmfs_session_setting(c, "temp", one, sizeof one);
    ck_assert_str_eq(one, "0.5");
    /* the model's settings text can be written back line by line as it is */
    char *all = malloc(65536);
    llmfs_model_settings_text(m, all, 65536);
    ck_assert_ptr_nonnull(strstr(all, "ctx 4096\n"));
    char *save = NULL;
    for (char *l = strtok_r(all, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
        mctl(m, l);
    free(all);
    /* KV settings reallocate the cache while nothing runs */
    mctl(m, "ctx 256");
    mctl(m, "parallel 2");
    llmfs_kv_info kv;
    llmfs_model_kv_info(m, &kv);
    ck_assert_int_eq(kv.n_ctx, 256);
    ck_assert_int_eq(kv.n_slots, 2);
    ck_assert_str_eq(kv.type_k, "f16");
    ck_assert_uint_gt(kv.bytes, 0);
    /* stories260K's head size (8) cannot hold q8_0 blocks: refused, nothing changes */
    ck_assert_int_eq(llmfs_model_ctl(m, "ctk q8_0", &e), -EINVAL);
    llmfs_kv_info kv2;
    llmfs_model_kv_info(m, &kv2);
    ck_assert_mem_eq(&kv, &kv2, sizeof kv);
    char *out = prompt_and_read(s, "Once upon a time");
    ck_assert_uint_gt(strlen(out), 0);
    free(out);
    ctl(c, "close");
    ck_assert_ptr_null(llmfs_session_get(m, llmfs_session_id(c)));
    ck_assert_int_eq(llmfs_session_prompt(c, "x", 1, &e), -ENOENT);
    llmfs_session_put(c);
    llmfs_session_put(s);
    llmfs_model_put(m);
}
END_TEST

typedef struct reader_arg {
    llmfs_stream *st;
    size_t got;
    bool ended;
} reader_arg;

static void *reader(void *p)
{
    reader_arg *a = p;
    uint64_t off = 0;
    char buf[256];
    for (;;) {
        llmfs_stream_wait(a->st, off, -1);
        size_t n = llmfs_stream_read(a->st, buf, sizeof buf, off);
        off += n;
        bool done;
        if (n == 0 && llmfs_stream_size(a->st, &done) == off && done)
            break;
    }
    a->got = (size_t)off;
    a->ended = true;
    return NULL;
}

START_TEST(unload_while_generating)
{
    load("m", "llama-tiny-q8_0.gguf", long_opts, 6);
    llmfs_model *m = llmfs_model_get(lf, "m");
    llmfs_session *s = llmfs_session_default(m);
    llmfs_error e = {0};
    llmfs_session *c = llmfs_session_new(m, &e);
    ck_assert_int_eq(llmfs_session_prompt(s, "Once upon a time", 16, &e), 0);
    ck_assert_int_eq(llmfs_session_prompt(c, "The cat", 7, &e), 0);
    llmfs_stream *st = llmfs_session_output(s), *st2 = llmfs_session_output(c);
    llmfs_stream *tr = llmfs_session_transcript(s);
    reader_arg a = {st, 0, false}, b = {st2, 0, false}, t = {tr, 0, false};
    pthread_t th[3];
    pthread_create(&th[0], NULL, reader, &a);
    pthread_create(&th[1], NULL, reader, &b);
    pthread_create(&th[2], NULL, reader, &t);
    ck_assert_int_eq(llmfs_stream_wait(st, 10, 60000), 1);
    ck_assert_int_eq(llmfs_model_unload(lf, "m", &e), 0);
    for (int i = 0; i < 3; i++)
        pthread_join(th[i], NULL);
    ck_assert(a.ended && b.ended && t.ended);
    ck_assert_uint_gt(a.got, 0);
    ck_assert_ptr_null(llmfs_model_get(lf, "m"));
    llmfs_session_stats ss;
    llmfs_session_stats_get(s, &ss);
    ck_assert_str_eq(ss.state, "idle");
    ck_assert(strcmp(ss.stop_reason, "error") == 0 || strcmp(ss.stop_reason, "eos") == 0);
    ck_assert_int_eq(llmfs_session_prompt(s, "x", 1, &e), -ENODEV);
    ck_assert_int_eq(llmfs_model_ctl(m, "temp 1", &e), -ENODEV);
    ck_assert_ptr_null(llmfs_session_new(m, &e));
    char *tx = malloc(t.got + 1);
    tx[llmfs_stream_read(tr, tx, t.got, 0)] = 0;
    ck_assert_msg(strstr(tx, "### closed\n"), "%s", tx);
    free(tx);
    llmfs_stream_put(st);
    llmfs_stream_put(st2);
    llmfs_stream_put(tr);
    llmfs_session_put(s);
    llmfs_session_put(c);
    llmfs_model_put(m); /* the last reference: the weights go now */
    /* the daemon goes on */
    static const char *opts[] = {"threads=2", "mode=raw", "n_predict=4"};
    load("m", "stories260K.gguf", opts, 3);
    m = llmfs_model_get(lf, "m");
    s = llmfs_session_default(m);
    free(prompt_and_read(s, "Once"));
    llmfs_session_put(s);
    llmfs_model_put(m);
}
END_TEST

/* A prompt of more than 512 tokens: about 12 tokens a sentence on stories260K. */
static char *long_prompt(int sentences)
{
    const char *one = "Once upon a time there was a little girl who liked the park. ";
    size_t n = strlen(one);
    char *p = malloc(n * (size_t)sentences + 1);
    for (int i = 0; i < sentences; i++)
        memcpy(p + n * (size_t)i, one, n);
    p[n * (size_t)sentences - 1] = 0; /* no trailing space */
    return p;
}

/* The reproduction of a crash: a model loaded at the default ubatch (512), then
 * `ubatch 1024` on its ctl, then a prompt of more than 512 tokens evaluated one
 * micro-batch of 1024 in buffers sized for 512. The new size must take effect safely
 * and give what a model loaded with it gives. */
START_TEST(ubatch_change_on_a_live_model)
{
    static const char *opts[] = {"threads=2", "mode=raw", "temp=0", "ctx=2048", "n_predict=6"};
    load("m", "stories260K.gguf", opts, 5);
    static const char *opts_big[] = {"threads=2", "mode=raw", "temp=0", "ctx=2048", "n_predict=6",
                                     "ubatch=1024"};
    load("ref", "stories260K.gguf", opts_big, 6);
    llmfs_model *m = llmfs_model_get(lf, "m"), *ref = llmfs_model_get(lf, "ref");
    llmfs_session *s = llmfs_session_default(m), *rs = llmfs_session_default(ref);
    char *text = long_prompt(35);
    mctl(m, "ubatch 1024");
    char v[64];
    llmfs_model_setting(m, "ubatch", v, sizeof v);
    ck_assert_str_eq(v, "1024");
    char *out = prompt_and_read(s, text);
    llmfs_session_stats ss;
    llmfs_session_stats_get(s, &ss);
    ck_assert_str_eq(ss.stop_reason, "length");
    ck_assert_int_gt(ss.n_prompt, 512);
    ck_assert_int_lt(ss.n_prompt, 1024);
    char *want = prompt_and_read(rs, text);
    ck_assert_str_eq(out, want);
    free(out);
    /* smaller than before, and back up: the same reply again (nothing cached: reset) */
    ctl(s, "reset");
    mctl(m, "ubatch 1024");
    mctl(m, "ubatch 700");
    mctl(m, "ubatch 1024");
    out = prompt_and_read(s, text);
    ck_assert_str_eq(out, want);
    free(out);
    /* refused while a session generates, with the reason; nothing changes */
    ctl(s, "n_predict 100000");
    ctl(s, "repeat_penalty 1");
    llmfs_error e = {0};
    ck_assert_int_eq(llmfs_session_prompt(s, "Once", 4, &e), 0);
    llmfs_stream *st = llmfs_session_output(s);
    ck_assert_int_eq(llmfs_stream_wait(st, 1, 60000), 1);
    ck_assert_int_eq(llmfs_model_ctl(m, "ubatch 2048", &e), -EBUSY);
    ck_assert_ptr_nonnull(strstr(e.msg, "generates"));
    char merr[256];
    llmfs_model_error(m, merr, sizeof merr);
    ck_assert_ptr_nonnull(strstr(merr, "ubatch"));
    llmfs_model_setting(m, "ubatch", v, sizeof v);
    ck_assert_str_eq(v, "1024");
    ctl(s, "stop");
    free(test_stream_text(st, NULL));
    llmfs_stream_put(st);
    test_wait_idle(s, 60);
    /* idle again: taken, and the next long prompt still matches */
    mctl(m, "ubatch 2048");
    ctl(s, "n_predict 6");
    ctl(s, "reset");
    out = prompt_and_read(s, text);
    ck_assert_str_eq(out, want);
    free(out);
    free(want);
    free(text);
    llmfs_session_put(s);
    llmfs_session_put(rs);
    llmfs_model_put(m);
    llmfs_model_put(ref);
}
END_TEST

/* Every model setting of the table changed on a live, idle model, then used by a prompt
 * longer than the old micro-batch: each is taken (and the model keeps answering) or
 * refused with EBUSY and its reason, as its applies column says. */
START_TEST(every_model_setting_on_a_live_model)
{
    static const char *opts[] = {"threads=2", "mode=raw", "temp=0", "ctx=1024", "n_predict=4",
                                 "ubatch=32", "batch=64"};
    load("m", "llama-tiny-q8_0.gguf", opts, 7);
    llmfs_model *m = llmfs_model_get(lf, "m");
    llmfs_session *s = llmfs_session_default(m);
    static const struct {
        const char *key, *value;
    } vals[] = {
        {"profile", "mtp"}, {"ctx", "1536"}, {"parallel", "3"}, {"batch", "4096"}, {"ubatch", "200"},
        {"cache_type_k", "q8_0"}, {"cache_type_v", "q8_0"}, {"flash_attn", "on"}, {"threads", "3"},
        {"threads_batch", "5"}, {"ngl", "0"}, {"override_tensor", "blk=CPU"}, {"n_cpu_moe", "2"},
        {"offload_batch", "64"}, {"fit", "off"}, {"fit_target", "2"}, {"fit_ctx", "512"},
        {"vram_limit", "7"}, {"mmap", "off"}, {"mlock", "on"}, {"idle_unload", "100000"},
        {"session_idle", "100000"}, {"cpu_affinity", "0"}, {"priority", "1"},
        {"spec_type", "ngram"}, {"spec_draft_model", "/nowhere/draft.gguf"}, {"spec_draft_n_max", "2"},
        {"spec_draft_n_min", "1"}, {"spec_draft_p_min", "0.5"}, {"spec_draft_ngl", "0"},
        {"spec_draft_threads", "1"}, {"spec_draft_ctk", "q8_0"}, {"spec_draft_ctv", "q8_0"},
        {"spec_ngram_n", "2"}, {"spec_ngram_min_hits", "2"}, {"swa_full", "on"},
        {"mmproj", "/nonexistent-mmproj.gguf"}, {"mmproj_offload", "off"}, {"image_min_tokens", "4"},
        {"image_max_tokens", "8"},
    };
    const llmfs_setting_info *t;
    int n = llmfs_settings_table(&t), seen = 0;
    char *text = long_prompt(40);
    for (int i = 0; i < n; i++) {
        if (t[i].scope != 3) /* model scope: daemon and model ctl */
            continue;
        const char *value = NULL;
        for (size_t k = 0; k < sizeof vals / sizeof vals[0]; k++)
            if (strcmp(vals[k].key, t[i].name) == 0)
                value = vals[k].value;
        ck_assert_msg(value, "no test value for the model setting %s", t[i].name);
        seen++;
        char line[128];
        snprintf(line, sizeof line, "%s %s", t[i].name, value);
        llmfs_error e = {0};
        int rc = llmfs_model_ctl(m, line, &e);
        if (strcmp(t[i].applies, "load") == 0) {
            ck_assert_msg(rc == -EBUSY, "%s: %d %s", line, rc, e.msg);
            ck_assert_ptr_nonnull(strstr(e.msg, "when the model is loaded"));
        } else {
            ck_assert_msg(rc == 0, "%s: %d %s", line, rc, e.msg);
            char got[128];
            llmfs_model_setting(m, t[i].name, got, sizeof got);
            ck_assert_str_eq(got, value);
        }
        /* a new first word: nothing of it is cached, all of it is evaluated */
        char *p = malloc(strlen(text) + 64);
        snprintf(p, strlen(text) + 64, "%s. %s", t[i].name, text);
        ctl(s, "reset");
        free(prompt_and_read(s, p));
        free(p);
        llmfs_session_stats ss;
        llmfs_session_stats_get(s, &ss);
        ck_assert_msg(strcmp(ss.stop_reason, "length") == 0, "after %s: %s", line, ss.stop_reason);
        ck_assert_int_gt(ss.n_prompt, 300);
    }
    ck_assert_int_eq(seen, (int)(sizeof vals / sizeof vals[0]));
    free(text);
    llmfs_session_put(s);
    llmfs_model_put(m);
}
END_TEST

START_TEST(load_errors)
{
    llmfs_error e = {0};
    char path[4096];
    ck_assert_int_eq(llmfs_model_load(lf, "x", "/nonexistent/model.gguf", NULL, 0, &e), -ENOENT);
    ck_assert(e.msg[0]);
    /* a file that is not a GGUF */
    char bad[] = "/tmp/llmfs-test-bad-XXXXXX";
    int fd = mkstemp(bad);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, "GGUF\x03\0\0\0garbage, not a model file", 31), 31);
    close(fd);
    e = (llmfs_error){0};
    ck_assert_int_eq(llmfs_model_load(lf, "x", bad, NULL, 0, &e), -EINVAL);
    ck_assert(e.msg[0]);
    /* a truncated copy of a real model */
    char *data;
    size_t len;
    data = test_read_file(test_shared_path("models/stories260K.gguf", path, sizeof path), &len);
    ck_assert_ptr_nonnull(data);
    fd = open(bad, O_WRONLY | O_TRUNC);
    ck_assert_int_eq(write(fd, data, len / 2), (ssize_t)(len / 2));
    close(fd);
    free(data);
    e = (llmfs_error){0};
    ck_assert_int_eq(llmfs_model_load(lf, "x", bad, NULL, 0, &e), -EINVAL);
    unlink(bad);
    char *names[4];
    ck_assert_int_eq(llmfs_model_names(lf, names, 4), 0);
    /* bad names, bad settings, a taken name, folders */
    ck_assert_int_eq(llmfs_model_load(lf, "a/b", path, NULL, 0, &e), -EINVAL);
    ck_assert_int_eq(llmfs_model_load(lf, "", path, NULL, 0, &e), -EINVAL);
    static const char *badset[] = {"ctx=abc"};
    ck_assert_int_eq(llmfs_model_load(lf, "x", path, badset, 1, &e), -EINVAL);
    static const char *daemonset[] = {"max_sessions=3"};
    ck_assert_int_eq(llmfs_model_load(lf, "x", path, daemonset, 1, &e), -EINVAL);
    static const char *ok[] = {"threads=2"};
    ck_assert_int_eq(llmfs_model_load(lf, "x", path, ok, 1, &e), 0);
    ck_assert_int_eq(llmfs_model_load(lf, "x", path, ok, 1, &e), -EEXIST);
    /* a folder that exists but does not hold the model: a new empty one, since the
     * shared assets may themselves live anywhere, /tmp included */
    char empty[] = "/tmp/llmfs-test-dirs-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(empty));
    char dirs[4096];
    snprintf(dirs, sizeof dirs, "/nonexistent:%s", empty);
    ck_assert_int_eq(llmfs_set(lf, "model_dirs", dirs, &e), 0);
    ck_assert_int_eq(llmfs_model_load(lf, "y", path, ok, 1, &e), -EACCES);
    ck_assert_ptr_nonnull(strstr(e.msg, "model_dirs"));
    rmdir(empty);
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/models", test_shared_dir());
    ck_assert_int_eq(llmfs_set(lf, "model_dirs", dir, &e), 0);
    ck_assert_int_eq(llmfs_model_load(lf, "y", path, ok, 1, &e), 0);
    int n = llmfs_model_names(lf, names, 4);
    ck_assert_int_eq(n, 2);
    for (int i = 0; i < n; i++)
        free(names[i]);
    ck_assert_int_eq(llmfs_model_unload(lf, "nope", &e), -ENOENT);
    /* root ctl commands */
    char line[8192];
    snprintf(line, sizeof line, "load z %s threads=2 temp=0.5", path);
    ck_assert_int_eq(llmfs_ctl(lf, line, &e), 0);
    llmfs_model *z = llmfs_model_get(lf, "z");
    ck_assert_ptr_nonnull(z);
    llmfs_session *s = llmfs_session_default(z);
    char v[8192];
    llmfs_session_settings_text(s, v, sizeof v);
    ck_assert_ptr_nonnull(strstr(v, "temp 0.5\n"));
    llmfs_session_put(s);
    llmfs_model_put(z);
    ck_assert_int_eq(llmfs_ctl(lf, "unload z", &e), 0);
    ck_assert_int_eq(llmfs_ctl(lf, "unload", &e), -EINVAL);
    ck_assert_int_eq(llmfs_ctl(lf, "temp 0.3", &e), 0);
    ck_assert_int_eq(llmfs_ctl(lf, "tmep 0.3", &e), -ENOENT);
    ck_assert_int_eq(llmfs_get(lf, "temp", v, sizeof v), 3);
    ck_assert_str_eq(v, "0.3");
    /* the root settings text is accepted back line by line */
    ck_assert_int_eq(llmfs_ctl(lf, "system Be brief.\\nVery brief.", &e), 0);
    ck_assert_int_eq(llmfs_ctl(lf, "profile text-24gb", &e), 0);
    len = (size_t)llmfs_settings_text(lf, 7, NULL, 0);
    char *all = malloc(len + 1), *copy = malloc(len + 1);
    llmfs_settings_text(lf, 7, all, len + 1);
    memcpy(copy, all, len + 1);
    ck_assert_ptr_nonnull(strstr(all, "\nctx 131072\n"));
    ck_assert_ptr_nonnull(strstr(all, "\nsystem Be brief.\\nVery brief.\n"));
    ck_assert_ptr_nonnull(strstr(all, "\nmountpoint \n"));
    char *save = NULL;
    for (char *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save))
        ck_assert_msg(llmfs_ctl(lf, l, &e) == 0, "'%s': %s", l, e.msg);
    char *again = malloc(len + 1);
    llmfs_settings_text(lf, 7, again, len + 1);
    ck_assert_str_eq(again, all);
    free(all);
    free(copy);
    free(again);
}
END_TEST

START_TEST(info_placement_stats)
{
    static const char *opts[] = {"threads=2", "ctx=128", "parallel=2"};
    load("m", "qwen3moe-tiny-q8_0.gguf", opts, 3);
    llmfs_model *m = llmfs_model_get(lf, "m");
    llmfs_model_info info;
    llmfs_model_info_get(m, &info);
    ck_assert_str_eq(info.arch, "qwen3moe");
    ck_assert_int_eq(info.n_layer, 2);
    ck_assert_int_eq(info.n_expert, 8);
    ck_assert_int_eq(info.n_vocab, 8224);
    ck_assert_str_eq(info.tokenizer, "bpe");
    ck_assert_str_eq(info.state, "ready");
    llmfs_placement_row rows[64];
    int n = llmfs_model_placement(m, rows, 64);
    /* token_embd, 2 x (attn, ffn, ffn_exps), output, total */
    ck_assert_int_eq(n, 1 + 2 * 3 + 1 + 1);
    ck_assert_str_eq(rows[0].group, "token_embd");
    ck_assert_str_eq(rows[1].group, "blk.0.attn");
    ck_assert_str_eq(rows[2].group, "blk.0.ffn");
    ck_assert_str_eq(rows[3].group, "blk.0.ffn_exps");
    ck_assert_str_eq(rows[7].group, "output");
    ck_assert_str_eq(rows[8].group, "total");
    uint64_t sum = 0;
    for (int i = 0; i < n - 1; i++) {
        ck_assert_str_eq(rows[i].device, "CPU");
        sum += rows[i].bytes;
    }
    ck_assert_str_eq(rows[3].type, "q8_0");
    ck_assert_str_eq(rows[7].type, "f32"); /* tied output: only output_norm */
    ck_assert_uint_eq(rows[8].bytes, sum);
    ck_assert_uint_le(sum, info.file_bytes);
    ck_assert_uint_gt(sum, info.file_bytes * 9 / 10);
    /* every weight on the CPU: nothing to stream, whatever offload_batch says */
    llmfs_stream_info si;
    llmfs_model_stream_info(m, &si);
    ck_assert_int_eq(si.layers, 0);
    ck_assert_uint_eq(si.bytes, 0);
    ck_assert_uint_eq(si.batches, 0);
    llmfs_model_stats ms;
    llmfs_model_stats_get(m, &ms);
    ck_assert_uint_eq(ms.weight_bytes_cpu, sum);
    ck_assert_int_eq(ms.n_ctx, 128);
    ck_assert_int_eq(ms.n_slots, 2);
    ck_assert_uint_eq(ms.kv_cells_total, 256);
    ck_assert_uint_eq(ms.kv_cells_used, 0);
    ck_assert_uint_gt(ms.ram_rss, 0);
    ck_assert_double_eq(llmfs_model_idle_seconds(m) >= 0, 1);
    llmfs_session *s = llmfs_session_default(m);
    ctl(s, "mode raw");
    ctl(s, "temp 0"); /* greedy: the fixture shows no end of generation in the first 32 */
    ctl(s, "n_predict 5");
    free(prompt_and_read(s, "The quick brown fox"));
    llmfs_model_stats_get(m, &ms);
    ck_assert_uint_eq(ms.kv_cells_used, 6 + 5 - 1);
    ck_assert_uint_eq(ms.n_gen_tokens, 5);
    ck_assert_uint_eq(ms.n_prompt_tokens, 6);
    ck_assert(ms.gen_seconds > 0 && ms.prompt_seconds > 0);
    test_wait_idle(s, 120);
    struct timespec ts = {0, 50 * 1000000L};
    nanosleep(&ts, NULL);
    ck_assert(llmfs_session_idle_seconds(s) >= 0.04);
    ck_assert(llmfs_model_idle_seconds(m) >= 0.04);
    llmfs_daemon_stats ds;
    llmfs_daemon_stats_get(lf, &ds);
    ck_assert_int_eq(ds.n_models, 1);
    ck_assert_int_eq(ds.n_sessions, 1);
    ck_assert_uint_gt(ds.ram_total, 0);
    llmfs_session_put(s);
    llmfs_model_put(m);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("engine");
    TCase *tc = tcase_create("engine");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, raw_greedy_stories);
    tcase_add_test(tc, raw_greedy_llama_tiny);
    tcase_add_test(tc, raw_greedy_qwen);
    tcase_add_test(tc, raw_greedy_hybrid);
    tcase_add_test(tc, hybrid_chat_three_turns);
    tcase_add_test(tc, hybrid_eight_sessions);
    tcase_add_test(tc, sixteen_sessions_at_once);
    tcase_add_test(tc, more_sessions_than_slots);
    tcase_add_test(tc, chat_second_turn_reuses_the_cache);
    tcase_add_test(tc, chat_needs_a_template);
    tcase_add_test(tc, chat_gemma4_moe);
    tcase_add_test(tc, stop_ends_the_reply);
    tcase_add_test(tc, context_full_and_too_big);
    tcase_add_test(tc, bad_ctl_lines);
    tcase_add_test(tc, unload_while_generating);
    tcase_add_test(tc, ubatch_change_on_a_live_model);
    tcase_add_test(tc, every_model_setting_on_a_live_model);
    tcase_add_test(tc, load_errors);
    tcase_add_test(tc, info_placement_stats);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (!test_shared_dir())
        test_skip_no_shared("engine tests");
    return test_run_suite(make_suite());
}
