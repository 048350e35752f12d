/* Chat template tests: the ChatML template of the Qwen test models and templates in
 * the style of the Llama 3, Llama 2, Mistral and Gemma families, rendered by the
 * Jinja-subset interpreter and by the built-in renderers. The expected texts are what
 * Jinja2 (with Hugging Face's trim_blocks and lstrip_blocks) renders for the same
 * templates and conversation. */
#include "chat.h"
#include "gguf.h"
#include "jinja.h"
#include "testutil.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const chat_msg conv[] = {
    {"system", "You are a helpful assistant."},
    {"user", "Hello!"},
    {"assistant", "Hi there. How can I help?"},
    {"user", " What is 2 + 2? \n"},
};
#define N_CONV 4

static const char tmpl_llama3[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>"
    "\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
    "{% set content = bos_token + content %}{% endif %}{{ content }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>"
    "assistant<|end_header_id|>\\n\\n' }}{% endif %}";
static const char want_llama3_nogen[] =
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n"
    "\n"
    "You are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>"
    "\n"
    "\n"
    "Hello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
    "\n"
    "\n"
    "Hi there. How can I help?<|eot_id|><|start_header_id|>user<|end_header_id|>"
    "\n"
    "\n"
    "What is 2 + 2?<|eot_id|>";
static const char want_llama3_gen[] =
    "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n"
    "\n"
    "You are a helpful assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>"
    "\n"
    "\n"
    "Hello!<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
    "\n"
    "\n"
    "Hi there. How can I help?<|eot_id|><|start_header_id|>user<|end_header_id|>"
    "\n"
    "\n"
    "What is 2 + 2?<|eot_id|><|start_header_id|>assistant<|end_header_id|>"
    "\n"
    "\n";
static const char tmpl_llama2[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
    "{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages "
    "%}{% set system_message = false %}{% endif %}{% for message in loop_messages %}"
    "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') "
    "}}{% endif %}{% if loop.index0 == 0 and system_message != false %}"
    "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
    "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' "
    "%}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
    "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
    "{% endif %}{% endfor %}";
static const char want_llama2_nogen[] =
    "<s>[INST] <<SYS>>\n"
    "You are a helpful assistant.\n"
    "<</SYS>>\n"
    "\n"
    "Hello! [/INST] Hi there. How can I help? </s><s>[INST] What is 2 + 2? [/INST]";
static const char want_llama2_gen[] =
    "<s>[INST] <<SYS>>\n"
    "You are a helpful assistant.\n"
    "<</SYS>>\n"
    "\n"
    "Hello! [/INST] Hi there. How can I help? </s><s>[INST] What is 2 + 2? [/INST]";
static const char tmpl_mistral[] =
    "{{- bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' %}\n"
    "    {%- set system_message = messages[0]['content'] %}\n"
    "    {%- set loop_messages = messages[1:] %}\n"
    "{%- else %}\n"
    "    {%- set loop_messages = messages %}\n"
    "{%- endif %}\n"
    "{%- for message in loop_messages %}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "\n"
    "        {{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') "
    "}}\n"
    "    {%- endif %}\n"
    "    {%- if message['role'] == 'user' %}\n"
    "        {%- if loop.first and system_message is defined %}\n"
    "            {{- '[INST] ' + system_message + '\\n\\n' + message['content'] + ' [/INST]' }}"
    "\n"
    "        {%- else %}\n"
    "            {{- '[INST] ' + message['content'] + ' [/INST]' }}"
    "\n"
    "        {%- endif %}\n"
    "    {%- elif message['role'] == 'assistant' %}\n"
    "        {{- message['content'] + eos_token }}\n"
    "    {%- else %}\n"
    "        {{- raise_exception('Only user and assistant roles are supported!') }}"
    "\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n";
static const char want_mistral_nogen[] =
    "<s>[INST] You are a helpful assistant.\n"
    "\n"
    "Hello! [/INST]Hi there. How can I help?</s>[INST]  What is 2 + 2? \n"
    " [/INST]";
static const char want_mistral_gen[] =
    "<s>[INST] You are a helpful assistant.\n"
    "\n"
    "Hello! [/INST]Hi there. How can I help?</s>[INST]  What is 2 + 2? \n"
    " [/INST]";
static const char tmpl_gemma[] =
    "{{ bos_token }}\n"
    "{%- if messages[0]['role'] == 'system' -%}\n"
    "    {%- set first_user_prefix = messages[0]['content'] + '\\n\\n' -%}"
    "\n"
    "    {%- set loop_messages = messages[1:] -%}\n"
    "{%- else -%}\n"
    "    {%- set first_user_prefix = \"\" -%}\n"
    "    {%- set loop_messages = messages -%}\n"
    "{%- endif -%}\n"
    "{%- for message in loop_messages -%}\n"
    "    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "\n"
    "        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") "
    "}}\n"
    "    {%- endif -%}\n"
    "    {%- if (message['role'] == 'assistant') -%}\n"
    "        {%- set role = \"model\" -%}\n"
    "    {%- else -%}\n"
    "        {%- set role = message['role'] -%}\n"
    "    {%- endif -%}\n"
    "    {{ '<start_of_turn>' + role + '\\n' + (first_user_prefix if loop.first else \"\") }}"
    "\n"
    "    {%- if message['content'] is string -%}\n"
    "        {{ message['content'] | trim }}\n"
    "    {%- endif -%}\n"
    "    {{ '<end_of_turn>\\n' }}\n"
    "{%- endfor -%}\n"
    "{%- if add_generation_prompt -%}\n"
    "    {{'<start_of_turn>model\\n'}}\n"
    "{%- endif -%}\n";
static const char want_gemma_nogen[] =
    "<bos><start_of_turn>user\n"
    "You are a helpful assistant.\n"
    "\n"
    "Hello!<end_of_turn>\n"
    "<start_of_turn>model\n"
    "Hi there. How can I help?<end_of_turn>\n"
    "<start_of_turn>user\n"
    "What is 2 + 2?<end_of_turn>\n";
static const char want_gemma_gen[] =
    "<bos><start_of_turn>user\n"
    "You are a helpful assistant.\n"
    "\n"
    "Hello!<end_of_turn>\n"
    "<start_of_turn>model\n"
    "Hi there. How can I help?<end_of_turn>\n"
    "<start_of_turn>user\n"
    "What is 2 + 2?<end_of_turn>\n"
    "<start_of_turn>model\n";
static const char tmpl_custom[] =
    "{# a layout no family uses #}\n"
    "{% for m in messages %}\n"
    "    {% if m.role == 'system' %}\n"
    "### System: {{ m.content | trim }}\n"
    "    {% elif m.role in ['user', 'human'] %}\n"
    "### {{ m.role | upper }} ({{ loop.index }}/{{ loop.length }}"
    "): {{ m.content.strip() }}\n"
    "    {% else %}\n"
    "### Assistant: {{ m['content'] ~ '' }}{{ ' [last]' if loop.last else '' }}"
    "\n"
    "    {% endif %}\n"
    "{% endfor %}\n"
    "{% if add_generation_prompt %}\n"
    "### Assistant:\n"
    "{%- endif %}\n";
static const char want_custom_nogen[] =
    "### System: You are a helpful assistant.\n"
    "### USER (2/4): Hello!\n"
    "### Assistant: Hi there. How can I help?\n"
    "### USER (4/4): What is 2 + 2?\n";
static const char want_custom_gen[] =
    "### System: You are a helpful assistant.\n"
    "### USER (2/4): Hello!\n"
    "### Assistant: Hi there. How can I help?\n"
    "### USER (4/4): What is 2 + 2?\n"
    "### Assistant:";
static const char want_chatml_nogen[] =
    "<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n"
    "Hello!<|im_end|>\n"
    "<|im_start|>assistant\n"
    "Hi there. How can I help?<|im_end|>\n"
    "<|im_start|>user\n"
    " What is 2 + 2? \n"
    "<|im_end|>\n";
static const char want_chatml_gen[] =
    "<|im_start|>system\n"
    "You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\n"
    "Hello!<|im_end|>\n"
    "<|im_start|>assistant\n"
    "Hi there. How can I help?<|im_end|>\n"
    "<|im_start|>user\n"
    " What is 2 + 2? \n"
    "<|im_end|>\n"
    "<|im_start|>assistant\n";
static const char tmpl_features[] =
    "{%- set n = messages | length -%}\n"
    "{{ n }} {{ n % 3 }} {{ -n + 10 }} {{ 2 * n - 1 }} {{ -7 % 3 }}"
    "|\n"
    "{%- for m in messages[-2:] %}{{ loop.index0 }}:{{ m.role[0] | upper }}"
    "{{ ',' if not loop.last }}{% endfor %}|\n"
    "{{- 'yes' if 'help' in messages[2].content else 'no' }}|\n"
    "{{- messages[0].content.startswith('You') }} {{ messages[0].content.endswith('x') }}"
    "|\n"
    "{{- messages[1].content.replace('!', '?') }}|\n"
    "{{- (messages | first).role }} {{ (messages | last).role }}|\n"
    "{{- undefined_var | default('dflt') }} {{ undefined_var is defined }}"
    " {{ messages is not none }}|\n"
    "{%- for i in range(3) %}{% for j in range(i) %}{{ loop.index }}"
    "{% endfor %}/{{ loop.index }}{% endfor %}|\n"
    "{%- set x = 'outer' %}{% for m in messages[:1] %}{% set x = 'inner' %}"
    "{{ x }}{% endfor %} {{ x }}|\n"
    "{{- 'user' not in ['system', 'assistant'] }} {{ 3 > 2 and 'b' >"
    "= 'a' }} {{ none }} {{ true }} {{ [1, 'a'] }}|\n"
    "{{- \"it's\" ~ ' \"q\"' }} {{ 'a\\tb' | length }} {{ messages[1:3] | length }}"
    " {{ messages[5:] | length }}|\n"
    "{{- 'x' if false }}{{ 0 or 'zero' }} {{ 'a' and 'b' }} {{ not '' }}"
    " {{ 1 == true }} {{ 'role' in messages[0] }}|\n"
    "{{- messages[0]['content'][:3] }}{{ '  pad  ' | trim }}{{ 'MiXeD' | lower }}"
    "{{ 'abc'.upper() }}|\n"
    "{%- if false %}A{% elif 1 > 2 %}B{% elif messages %}C{% else %}"
    "D{% endif %}\n";
static const char want_features[] =
    "4 1 6 7 2|0:A,1:U|yes|True False|Hello?|system user|dflt False True|/11/212/3|inner outer|True "
    "True None True [1, 'a']|it's \"q\" 3 2 0|zero b True True True|YoupadmixedABC|C";

typedef struct family_case {
    const char *family;
    const char *tmpl;
    const char *bos, *eos;
    const char *want_nogen, *want_gen;
} family_case;

static const family_case families[] = {
    {"llama3", tmpl_llama3, "<|begin_of_text|>", "<|eot_id|>", want_llama3_nogen, want_llama3_gen},
    {"llama2", tmpl_llama2, "<s>", "</s>", want_llama2_nogen, want_llama2_gen},
    {"mistral", tmpl_mistral, "<s>", "</s>", want_mistral_nogen, want_mistral_gen},
    {"gemma", tmpl_gemma, "<bos>", "<eos>", want_gemma_nogen, want_gemma_gen},
};
#define N_FAMILIES (int)(sizeof families / sizeof families[0])

static void check_render(const char *tmpl, const chat_msg *msgs, int n, bool gen, const char *bos,
                         const char *eos, const char *want, const char *what)
{
    llmfs_error err = {0};
    char *got = chat_render(tmpl, msgs, n, gen, bos, eos, &err);
    ck_assert_msg(got, "%s: %s", what, err.msg);
    ck_assert_msg(strcmp(got, want) == 0, "%s (generation prompt %d):\n--- got ---\n%s\n--- want ---\n%s", what,
                  gen, got, want);
    free(got);
}

/* gpt-oss's own (harmony) template, from the test model: the fixture's chat prompt
 * byte for byte (llama.cpp on 2026-12-06), the reasoning effort, a developer message
 * and earlier turns. */
START_TEST(test_harmony_from_model)
{
    char buf[4096];
    llmfs_error err = {0};
    gguf_file *f = gguf_open(test_shared_path("models/gptoss-tiny-mxfp4.gguf", buf, sizeof buf), NULL, &err);
    ck_assert_msg(f, "%s", err.msg);
    size_t len;
    const char *tmpl = gguf_get_str(f, "tokenizer.chat_template", &len);
    ck_assert(tmpl);
    ck_assert_str_eq(chat_template_name(tmpl), "harmony");
    const chat_opts day = {NULL, "2026-12-06"};
    const chat_msg hi[] = {{"user", "Hi"}};
    char *p = chat_render_opts(tmpl, hi, 1, true, "<|startoftext|>", "<|return|>", &day, &err);
    ck_assert_msg(p, "%s", err.msg);
    size_t fl;
    char *fixture = test_read_file(test_shared_path("fixtures/gptoss-tiny-mxfp4/chat/prompt.txt", buf, sizeof buf), &fl);
    ck_assert(fixture);
    ck_assert_str_eq(p, fixture);
    free(p);
    /* the interpreter renders the template itself: the built-in renderer is only a fallback */
    struct tm d = {.tm_year = 126, .tm_mon = 11, .tm_mday = 6, .tm_hour = 12, .tm_isdst = -1};
    mktime(&d);
    const jinja_input in = {hi, 1, true, "<|startoftext|>", "<|return|>", NULL, 0, &d};
    ck_assert_int_eq(jinja_render(tmpl, &in, &p, &err), 0);
    ck_assert_str_eq(p, fixture);
    free(fixture);
    free(p);

    const char *head = "<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
                       "Knowledge cutoff: 2024-06\nCurrent date: 2026-12-06\n\nReasoning: high\n\n"
                       "# Valid channels: analysis, commentary, final. Channel must be included for every message."
                       "<|end|>";
    const chat_opts high = {"high", "2026-12-06"};
    const chat_msg talk[] = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "Bye"}};
    p = chat_render_opts(tmpl, talk, 4, true, "", "", &high, &err);
    ck_assert_msg(p, "%s", err.msg);
    char want[2048];
    snprintf(want, sizeof want, "%s%s", head,
             "<|start|>developer<|message|># Instructions\n\nBe brief.\n\n<|end|>"
             "<|start|>user<|message|>Hi<|end|><|start|>assistant<|channel|>final<|message|>Hello.<|end|>"
             "<|start|>user<|message|>Bye<|end|><|start|>assistant");
    ck_assert_str_eq(p, want);
    free(p);
    /* a closing assistant turn without the generation prompt ends with <|return|> */
    p = chat_render_opts(tmpl, talk + 1, 2, false, "", "", &high, &err);
    ck_assert_msg(p, "%s", err.msg);
    snprintf(want, sizeof want, "%s%s", head,
             "<|start|>user<|message|>Hi<|end|><|start|>assistant<|channel|>final<|message|>Hello.<|return|>");
    ck_assert_str_eq(p, want);
    free(p);
    /* the date must be a day */
    const chat_opts bad_day = {NULL, "06/12/2026"};
    ck_assert_ptr_null(chat_render_opts(tmpl, hi, 1, true, "", "", &bad_day, &err));
    ck_assert_int_eq(err.code, EINVAL);
    ck_assert_msg(strstr(err.msg, "bad date"), "%s", err.msg);
    /* channel tags inside an assistant message are refused */
    const chat_msg bad[] = {{"user", "Hi"}, {"assistant", "<|channel|>final<|message|>x"}};
    ck_assert_ptr_null(chat_render_opts(tmpl, bad, 2, true, "", "", &high, &err));
    ck_assert_int_eq(err.code, EINVAL);
    gguf_close(f);
}
END_TEST

/* The ChatML template stored in the Qwen test models. */
START_TEST(test_chatml_from_model)
{
    char buf[4096];
    llmfs_error err = {0};
    gguf_file *f = gguf_open(test_shared_path("models/qwen3-tiny-q4_k.gguf", buf, sizeof buf), NULL, &err);
    ck_assert_msg(f, "%s", err.msg);
    size_t len;
    const char *tmpl = gguf_get_str(f, "tokenizer.chat_template", &len);
    ck_assert(tmpl);
    ck_assert_str_eq(chat_template_name(tmpl), "chatml");
    check_render(tmpl, conv, N_CONV, false, "", "<|im_end|>", want_chatml_nogen, "chatml");
    check_render(tmpl, conv, N_CONV, true, "", "<|im_end|>", want_chatml_gen, "chatml");
    /* the built-in renderer agrees */
    char *b = chat_render_builtin("chatml", conv, N_CONV, true, "", "<|im_end|>", &err);
    ck_assert_msg(b, "%s", err.msg);
    ck_assert_str_eq(b, want_chatml_gen);
    free(b);
    /* the fixture's chat prompt is this template's rendering of one user turn */
    const chat_msg hi[] = {{"user", "Hi"}};
    char *p = chat_render(tmpl, hi, 1, true, "", "<|im_end|>", &err);
    ck_assert(p);
    size_t fl;
    char *fixture = test_read_file(test_shared_path("fixtures/qwen3-tiny-q4_k/chat/prompt.txt", buf, sizeof buf), &fl);
    ck_assert(fixture);
    ck_assert_str_eq(p, fixture);
    free(p);
    const jinja_input in = {hi, 1, true, "", "<|im_end|>", NULL, 0, NULL};
    ck_assert_int_eq(jinja_render(tmpl, &in, &p, &err), 0);
    ck_assert_str_eq(p, fixture);
    free(fixture);
    free(p);
    gguf_close(f);
}
END_TEST

/* The Gemma models' own templates render the chat fixtures' prompts byte for byte (the
 * BOS the template emits is the tokenizer's to add: rendered with an empty bos_token). */
START_TEST(test_gemma_templates_from_models)
{
    static const struct { const char *model, *fixture, *family, *bos; } cases[] = {
        {"models/gemma3-tiny-q8_0.gguf", "fixtures/gemma3-tiny-q8_0/chat/prompt.txt", "gemma", "<s>"},
        {"models/gemma4-tiny-q8_0.gguf", "fixtures/gemma4-tiny-q8_0/chat/prompt.txt", "gemma4", "<bos>"},
        {"models/gemma4e-tiny-q8_0.gguf", "fixtures/gemma4e-tiny-q8_0/chat/prompt.txt", "gemma4", "<bos>"},
        {"models/gemma4moe-tiny-q8_0.gguf", "fixtures/gemma4moe-tiny-q8_0/chat/prompt.txt", "gemma4", "<bos>"},
    };
    const chat_msg hi[] = {{"user", "Hi"}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char buf[4096];
        llmfs_error err = {0};
        gguf_file *f = gguf_open(test_shared_path(cases[c].model, buf, sizeof buf), NULL, &err);
        ck_assert_msg(f, "%s", err.msg);
        size_t len, fl;
        const char *tmpl = gguf_get_str(f, "tokenizer.chat_template", &len);
        ck_assert(tmpl);
        ck_assert_str_eq(chat_template_name(tmpl), cases[c].family);
        char *fixture = test_read_file(test_shared_path(cases[c].fixture, buf, sizeof buf), &fl);
        ck_assert(fixture);
        char *p = chat_render(tmpl, hi, 1, true, "", "", &err);
        ck_assert_msg(p, "%s: %s", cases[c].model, err.msg);
        ck_assert_msg(!strcmp(p, fixture), "%s:\n--- got ---\n%s\n--- want ---\n%s", cases[c].model, p, fixture);
        free(p);
        /* by the interpreter itself, not the built-in fallback */
        const jinja_input in = {hi, 1, true, "", "", NULL, 0, NULL};
        ck_assert_msg(jinja_render(tmpl, &in, &p, &err) == 0, "%s: %s", cases[c].model, err.msg);
        ck_assert_str_eq(p, fixture);
        free(p);
        /* with the BOS: it leads */
        p = chat_render(tmpl, hi, 1, true, cases[c].bos, "", &err);
        ck_assert(p && !strncmp(p, cases[c].bos, strlen(cases[c].bos)) && !strcmp(p + strlen(cases[c].bos), fixture));
        free(p);
        free(fixture);
        gguf_close(f);
    }
    /* Gemma 4 specifics: a system turn of its own, the model's thinking dropped from its
     * past turns, consecutive assistant messages as one turn */
    const chat_msg conv4[] = {{"system", " Be brief. "}, {"user", "Hi"},
                              {"assistant", "<|channel>thought\nhm<channel|>Hello!"}, {"assistant", "More."},
                              {"user", "Bye"}};
    llmfs_error err = {0};
    char *p = chat_render_builtin("gemma4", conv4, 5, false, "", "", &err);
    ck_assert_msg(p, "%s", err.msg);
    ck_assert_str_eq(p, "<|turn>system\nBe brief.<turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\nHello!<turn|>\n"
                        "More.<turn|>\n<|turn>user\nBye<turn|>\n");
    free(p);
}
END_TEST

START_TEST(test_family_templates)
{
    const family_case *fc = &families[_i];
    ck_assert_str_eq(chat_template_name(fc->tmpl), fc->family);
    check_render(fc->tmpl, conv, N_CONV, false, fc->bos, fc->eos, fc->want_nogen, fc->family);
    check_render(fc->tmpl, conv, N_CONV, true, fc->bos, fc->eos, fc->want_gen, fc->family);
    /* the family's built-in renderer gives the same text */
    llmfs_error err = {0};
    for (int gen = 0; gen < 2; gen++) {
        char *b = chat_render_builtin(fc->family, conv, N_CONV, gen, fc->bos, fc->eos, &err);
        ck_assert_msg(b, "%s: %s", fc->family, err.msg);
        ck_assert_msg(strcmp(b, gen ? fc->want_gen : fc->want_nogen) == 0, "built-in %s:\n%s", fc->family, b);
        free(b);
    }
}
END_TEST

/* A template beyond the subset, of a known family, falls back to the built-in renderer. */
START_TEST(test_family_fallback)
{
    const family_case *fc = &families[_i];
    static const char prefix[] = "{%- if tools is defined %}{{ tools | tojson }}{% endif %}";
    size_t n = strlen(prefix) + strlen(fc->tmpl) + 1;
    char *tmpl = malloc(n);
    snprintf(tmpl, n, "%s%s", prefix, fc->tmpl);
    ck_assert_str_eq(chat_template_name(tmpl), fc->family);
    check_render(tmpl, conv, N_CONV, true, fc->bos, fc->eos, fc->want_gen, fc->family);
    check_render(tmpl, conv, N_CONV, false, fc->bos, fc->eos, fc->want_nogen, fc->family);
    free(tmpl);
}
END_TEST

/* A layout no family uses, written over several lines: rendered by the interpreter,
 * with Jinja's whitespace rules. */
START_TEST(test_custom_template)
{
    ck_assert_str_eq(chat_template_name(tmpl_custom), "jinja");
    check_render(tmpl_custom, conv, N_CONV, false, "<s>", "</s>", want_custom_nogen, "custom");
    check_render(tmpl_custom, conv, N_CONV, true, "<s>", "</s>", want_custom_gen, "custom");
    check_render(tmpl_features, conv, N_CONV, false, "", "", want_features, "features");
}
END_TEST

START_TEST(test_names)
{
    ck_assert_str_eq(chat_template_name(NULL), "none");
    ck_assert_str_eq(chat_template_name(""), "none");
    ck_assert_str_eq(chat_template_name("{{ messages[0].content }}"), "jinja");
    ck_assert_str_eq(chat_template_name("<|im_start|>{{ x }}"), "chatml");
    ck_assert_str_eq(chat_template_name("[INST] <<SYS>>"), "llama2");
    ck_assert_str_eq(chat_template_name("[INST]"), "mistral");
    llmfs_error err = {0};
    ck_assert_ptr_null(chat_render(NULL, conv, N_CONV, true, "", "", &err));
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_ptr_null(chat_render("", conv, N_CONV, true, "", "", &err));
    ck_assert_int_eq(err.code, ENOENT);
    ck_assert_ptr_null(chat_render_builtin("vicuna", conv, N_CONV, true, "", "", &err));
    ck_assert_int_eq(err.code, ENOENT);
    /* no messages at all */
    char *s = chat_render("{% for m in messages %}x{% endfor %}{{ messages | length }}", conv, 0, false, "", "", &err);
    ck_assert_ptr_nonnull(s);
    ck_assert_str_eq(s, "0");
    free(s);
}
END_TEST

/* Templates that reject the conversation: the error carries the template's message,
 * and a recognised family does not fall back to its built-in renderer. */
START_TEST(test_raise_exception)
{
    static const char gemma1[] =
        "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
        "{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
        "{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}"
        "{% endif %}{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}";
    llmfs_error err = {0};
    ck_assert_ptr_null(chat_render(gemma1, conv, N_CONV, true, "<bos>", "<eos>", &err));
    ck_assert_int_eq(err.code, EINVAL);
    ck_assert_msg(strstr(err.msg, "System role not supported"), "%s", err.msg);
    /* without the system message it renders */
    char *s = chat_render(gemma1, conv + 1, N_CONV - 1, true, "<bos>", "<eos>", &err);
    ck_assert_msg(s, "%s", err.msg);
    ck_assert_str_eq(s, "<bos><start_of_turn>user\nHello!<end_of_turn>\n<start_of_turn>model\nHi there. How can "
                        "I help?<end_of_turn>\n<start_of_turn>user\nWhat is 2 + 2?<end_of_turn>\n"
                        "<start_of_turn>model\n");
    free(s);

    /* roles out of order */
    const chat_msg bad[] = {{"system", "s"}, {"user", "a"}, {"user", "b"}};
    for (int i = 0; i < N_FAMILIES; i++) {
        if (!strcmp(families[i].family, "llama3"))
            continue; /* Llama 3's template accepts any order */
        memset(&err, 0, sizeof err);
        ck_assert_ptr_null(chat_render(families[i].tmpl, bad, 3, true, "<s>", "</s>", &err));
        ck_assert_int_eq(err.code, EINVAL);
        ck_assert_msg(strstr(err.msg, "Conversation roles must alternate"), "%s: %s", families[i].family, err.msg);
        memset(&err, 0, sizeof err);
        ck_assert_ptr_null(chat_render_builtin(families[i].family, bad, 3, true, "<s>", "</s>", &err));
        ck_assert_msg(strstr(err.msg, "Conversation roles must alternate"), "built-in %s: %s", families[i].family,
                      err.msg);
    }
    const chat_msg tool[] = {{"user", "a"}, {"tool", "b"}};
    ck_assert_ptr_null(chat_render(tmpl_mistral, tool, 2, true, "<s>", "</s>", &err));
    ck_assert_msg(strstr(err.msg, "Only user and assistant roles are supported!"), "%s", err.msg);
}
END_TEST

/* Templates outside the subset, or broken, with no family to fall back on. */
START_TEST(test_unsupported_and_malformed)
{
    static const struct {
        const char *tmpl;
        const char *needle; /* in the error message */
    } cases[] = {
        {"{% macro m() %}x{% endmacro %}{{ m(1) }}", "too many arguments"},
        {"{{ m() }}{% macro m() %}x{% endmacro %}", "undefined"},
        {"{{ frobnicate() }}", "function 'frobnicate'"},
        {"{% macro m() %}x", "missing {% endmacro %}"},
        {"{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "nested too deeply"},
        {"{{ messages | wordwrap }}", "wordwrap"},
        {"{% set ns.found = true %}", "namespace"},
        {"{{ 7 / 2 }}", "division"},
        {"{% for m in messages if m.role == 'user' %}{% endfor %}", "loop filters"},
        {"{% for a, b in messages %}{% endfor %}", "unpack"},
        {"{{ messages[0].content.zfill(3) }}", "zfill"},
        {"{% call m() %}{% endcall %}", "call"},
        {"{{ 1.5 }}", "integers only"},
        {"{% include 'other.jinja' %}", "include"},
        {"{% for m in messages %}{{ m.content }}", "missing {% endfor %}"},
        {"{% if true %}x", "missing {% endif %}"},
        {"x{% endif %}", "without a matching"},
        {"{{ 'abc }}", "unclosed {{"},
        {"{{ messages[0] ", "unclosed {{"},
        {"{# never closed", "unclosed {#"},
        {"{{ 1 + }}", "expected"},
        {"{{ messages ) }}", "unexpected"},
        {"{{ 'a' + 1 }}", "'+' needs"},
        {"{% for m in 5 %}{% endfor %}", "for needs a list"},
        {"{{ 5 % 0 }}", "modulo by zero"},
        {"{% if x is divisibleby(3) %}{% endif %}", "divisibleby"},
        {"{{ raise_exception('plain failure') }}", "plain failure"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        llmfs_error err = {0};
        char *s = chat_render(cases[i].tmpl, conv, N_CONV, true, "<s>", "</s>", &err);
        ck_assert_msg(!s, "'%s' rendered as '%s'", cases[i].tmpl, s ? s : "");
        ck_assert_msg(err.code == EINVAL, "'%s': code %d (%s)", cases[i].tmpl, err.code, err.msg);
        ck_assert_msg(strstr(err.msg, cases[i].needle), "'%s': message '%s' lacks '%s'", cases[i].tmpl, err.msg,
                      cases[i].needle);
    }
    /* the line of the problem is named */
    llmfs_error err = {0};
    ck_assert_ptr_null(chat_render("line one\n{{ x }}\n{{ y | frobnicate }}", conv, N_CONV, true, "", "", &err));
    ck_assert_msg(strstr(err.msg, "line 3"), "%s", err.msg);
}
END_TEST

/* Templates that would take the stack, the time or the arithmetic too far. */
START_TEST(test_limits)
{
    llmfs_error err = {0};
    char *deep = malloc(40000);
    size_t n = 0;
    n += (size_t)sprintf(deep + n, "{{ ");
    for (int i = 0; i < 5000; i++)
        deep[n++] = '(';
    deep[n++] = '1';
    for (int i = 0; i < 5000; i++) /* balanced: the tag ends at the last }} */
        deep[n++] = ')';
    strcpy(deep + n, " }}");
    ck_assert_ptr_null(chat_render(deep, conv, N_CONV, true, "", "", &err));
    ck_assert_msg(strstr(err.msg, "nested too deeply"), "%s", err.msg);
    n = 0;
    for (int i = 0; i < 3000; i++)
        n += (size_t)sprintf(deep + n, "{%% if 1 %%}");
    ck_assert_ptr_null(chat_render(deep, conv, N_CONV, true, "", "", &err));
    ck_assert_msg(strstr(err.msg, "nested too deeply"), "%s", err.msg);
    free(deep);
    ck_assert_ptr_null(chat_render("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
                                   conv, N_CONV, true, "", "", &err));
    ck_assert_msg(strstr(err.msg, "runs too long"), "%s", err.msg);
    ck_assert_ptr_null(chat_render("{{ 9223372036854775807 + 1 }}", conv, N_CONV, true, "", "", &err));
    ck_assert_msg(strstr(err.msg, "overflow"), "%s", err.msg);
    ck_assert_ptr_null(chat_render("{{ 99999999999999999999 }}", conv, N_CONV, true, "", "", &err));
    ck_assert_msg(strstr(err.msg, "too large"), "%s", err.msg);
    /* raised messages stay on one line */
    ck_assert_ptr_null(chat_render("{{ raise_exception('two\\nlines') }}", conv, N_CONV, true, "", "", &err));
    ck_assert_msg(!strchr(err.msg, '\n') && strstr(err.msg, "two lines"), "%s", err.msg);
    char *s = chat_render("{{ -7 % -3 }} {{ 7 % -3 }} {{ range(2, 5) }}", conv, N_CONV, true, "", "", &err);
    ck_assert_msg(s, "%s", err.msg);
    ck_assert_str_eq(s, "-1 -2 [2, 3, 4]");
    free(s);
}
END_TEST

/* The template text repeated n times between head and tail (malloc'd). */
static char *repeat(const char *head, const char *unit, int n, const char *tail)
{
    size_t hl = strlen(head), ul = strlen(unit), tl = strlen(tail);
    char *t = malloc(hl + ul * (size_t)n + tl + 1);
    ck_assert_ptr_nonnull(t);
    memcpy(t, head, hl);
    for (int i = 0; i < n; i++)
        memcpy(t + hl + ul * (size_t)i, unit, ul);
    memcpy(t + hl + ul * (size_t)n, tail, tl + 1);
    return t;
}

static void expect_refused(char *tmpl, int code, const char *reason)
{
    llmfs_error err = {0};
    char *s = chat_render(tmpl, conv, N_CONV, true, "", "", &err);
    ck_assert_msg(!s, "rendered %.40s...", s ? s : "");
    ck_assert_int_eq(err.code, code);
    ck_assert_msg(strstr(err.msg, reason), "'%s' lacks '%s'", err.msg, reason);
    free(tmpl);
}

/* Templates whose cost grows faster than their text: chains without parentheses,
 * doubling strings, lists sharing sublists, allocation in loops. Each is refused with a
 * reason instead of taking the stack, the memory or the time. */
START_TEST(test_resource_limits)
{
    expect_refused(repeat("{{ 1", "+1", 100000, " }}"), EINVAL, "nested too deeply");
    expect_refused(repeat("{% set x = [] %}", "{% set x = [x] %}", 1000, "{{ x }}"), EINVAL,
                   "lists nested too deeply");
    expect_refused(repeat("{{ 'aa'", ".replace('a', 'aa')", 40, " }}"), EINVAL, "runs too long");
    expect_refused(repeat("{% set a = range(2) %}{% set b = range(2) %}", "{% set a = [a, a] %}{% set b = [b, b] %}",
                          60, "{{ a == b }}"),
                   EINVAL, "runs too long");
    expect_refused(repeat("{% set a = [] %}", "{% set a = [a, a] %}", 60, "{{ a }}"), EFBIG, "too long");
    expect_refused(repeat("", "{% for i in range(1000) %}{% set y = range(1000000) %}{% endfor %}", 1, ""), EFBIG,
                   "too much memory");
    expect_refused(repeat("{% set s = 'a' %}", "{% set s = s ~ s %}", 24,
                          "{% for i in range(1000000) %}{% if s in s %}{% endif %}{% endfor %}"),
                   EINVAL, "runs too long");
    /* many string literals in one tag cost their own length each, not the tag's */
    char *many = repeat("{{ ''", " ~ ''", 20000, " }}");
    llmfs_error err = {0};
    char *s = chat_render(many, conv, N_CONV, true, "", "", &err);
    ck_assert_msg(s || strstr(err.msg, "nested too deeply"), "%s", err.msg);
    free(s);
    free(many);
    /* a long conversation stays well within the limits */
    enum { N_LONG = 4000 };
    chat_msg *lc = malloc(sizeof *lc * N_LONG);
    for (int i = 0; i < N_LONG; i++)
        lc[i] = (chat_msg){i % 2 ? "assistant" : "user", "Some words of a long conversation, again and again."};
    s = chat_render(tmpl_llama3, lc, N_LONG, true, "<|begin_of_text|>", "", &err);
    ck_assert_msg(s, "%s", err.msg);
    ck_assert_uint_gt(strlen(s), (size_t)N_LONG * 60);
    free(s);
    free(lc);
}
END_TEST

/* Whitespace control and Jinja's block settings, one rule at a time. */
START_TEST(test_whitespace)
{
    static const struct {
        const char *tmpl, *want;
    } cases[] = {
        {"a\n{% if true %}\nb\n{% endif %}\nc", "a\nb\nc"},       /* trim_blocks */
        {"a\n    {% if true %}\n    b\n    {% endif %}\nc", "a\n    b\nc"}, /* lstrip_blocks */
        {"a  {%- if true -%}  b  {%- endif -%}  c", "abc"},
        {"a  {{- 'x' -}}  b", "axb"},
        {"a  {{ 'x' }}\n b", "a  x\n b"},                         /* no block rules for {{ }} */
        {"a {# note #}\nb", "a b"},
        {"a\n  {#- note -#}\n  b", "ab"},
        {"x\n", "x"},                                             /* one trailing newline goes */
        {"x\n\n", "x\n"},
        {"a\n  {%+ if true %}b{% endif %}", "a\n  b"},
        {"{{ '%}' }}{{ \"}}\" }}", "%}}}"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        check_render(cases[i].tmpl, conv, N_CONV, false, "", "", cases[i].want, cases[i].tmpl);
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("chat");
    TCase *tc = tcase_create("templates");
    tcase_add_test(tc, test_chatml_from_model);
    tcase_add_test(tc, test_harmony_from_model);
    tcase_add_loop_test(tc, test_family_templates, 0, N_FAMILIES);
    tcase_add_loop_test(tc, test_family_fallback, 0, N_FAMILIES);
    tcase_add_test(tc, test_custom_template);
    tcase_add_test(tc, test_names);
    tcase_add_test(tc, test_raise_exception);
    tcase_add_test(tc, test_unsupported_and_malformed);
    tcase_add_test(tc, test_gemma_templates_from_models);
    tcase_add_test(tc, test_whitespace);
    tcase_add_test(tc, test_limits);
    tcase_add_test(tc, test_resource_limits);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    if (!test_shared_dir())
        test_skip_no_shared("chat tests");
    return test_run_suite(make_suite());
}
