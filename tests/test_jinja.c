/* Jinja interpreter tests: each feature of the subset on its own, with the text Jinja2
 * (Hugging Face's settings) renders for it; the errors and limits a template meets
 * instead of crashing or hanging the daemon; and the real templates of the test models
 * (gpt-oss, Gemma 4, Qwen) rendered by the interpreter itself, byte for byte as the
 * chat fixtures and as the built-in renderers lay the same conversations out. */
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
    {"system", "Be brief."},
    {"user", "Hello!"},
    {"assistant", "Hi."},
};
#define N_CONV 3

/* 2026-12-06, the day of the gpt-oss chat fixture */
static struct tm fixture_day(void)
{
    struct tm day = {0};
    day.tm_year = 2026 - 1900;
    day.tm_mon = 11;
    day.tm_mday = 6;
    day.tm_hour = 12;
    day.tm_isdst = -1;
    mktime(&day);
    return day;
}

static int render_in(const char *tmpl, const jinja_input *in, char **out, llmfs_error *err)
{
    memset(err, 0, sizeof *err);
    return jinja_render(tmpl, in, out, err);
}

static void expect_in(const char *tmpl, const jinja_input *in, const char *want)
{
    char *out = NULL;
    llmfs_error err;
    int rc = render_in(tmpl, in, &out, &err);
    ck_assert_msg(rc == 0, "'%s': rc %d (%s)", tmpl, rc, err.msg);
    ck_assert_msg(strcmp(out, want) == 0, "'%s':\n--- got ---\n%s\n--- want ---\n%s", tmpl, out, want);
    free(out);
}

static void expect(const char *tmpl, const char *want)
{
    struct tm day = fixture_day();
    jinja_input in = {conv, N_CONV, false, "<s>", "</s>", NULL, 0, &day};
    expect_in(tmpl, &in, want);
}

static void expect_err(const char *tmpl, int rc_want, const char *needle)
{
    jinja_input in = {conv, N_CONV, false, "", "", NULL, 0, NULL};
    char *out = NULL;
    llmfs_error err;
    int rc = render_in(tmpl, &in, &out, &err);
    ck_assert_msg(rc == rc_want, "'%s': rc %d, want %d (%s) out '%s'", tmpl, rc, rc_want, err.msg, out ? out : "");
    ck_assert_ptr_null(out);
    ck_assert_msg(strstr(err.msg, needle), "'%s': message '%s' lacks '%s'", tmpl, err.msg, needle);
    ck_assert_msg(!strchr(err.msg, '\n'), "%s", err.msg);
}

START_TEST(test_macros)
{
    expect("{% macro greet(name, punct='!') %}Hi {{ name }}{{ punct }}{% endmacro %}"
           "{{ greet('a') }}|{{ greet('b', '?') }}|{{ greet(punct='.', name='c') }}",
           "Hi a!|Hi b?|Hi c.");
    /* recursion, and a parameter without an argument is undefined */
    expect("{% macro count(n, tail) %}{% if n > 0 %}{{ n }}{{ count(n - 1) }}{% else %}{{ tail is defined }}"
           "{% endif %}{% endmacro %}{{ count(3) }}",
           "321False");
    /* a macro sees the top-level variables and other macros, defined before or after it,
     * but not its caller's loop variables */
    expect("{% set g = 'G' %}{% macro m() %}{{ g }}{{ x is defined }}{{ b() }}{% endmacro %}"
           "{% macro b() %}B{% endmacro %}{% for x in [1] %}{{ m() }}{% endfor %}",
           "GFalseB");
    /* a set inside a macro stays inside; the macro's text is a string value */
    expect("{% set v = 'out' %}{% macro m() %}{% set v = 'in' %} {{ v }} {% endmacro %}[{{ m() | trim }}]{{ v }}"
           "{{ m() | length }}",
           "[in]out4");
    /* defaults are evaluated at the call and see earlier parameters */
    expect("{% macro f(a, b=a * 2) %}{{ a }},{{ b }}{% endmacro %}{{ f(3) }} {{ f(3, b=1) }}", "3,6 3,1");
    /* keyword arguments passed on */
    expect("{% macro fmt(x, q=True) %}{% if x is mapping %}{% for k, v in x | dictsort %}{{ k }}:{{ fmt(v, q=q) }}"
           "{% endfor %}{% elif q %}'{{ x }}'{% else %}{{ x }}{% endif %}{% endmacro %}"
           "{{ fmt({'b': 1, 'a': {'c': 2}}) }} {{ fmt({'a': 1}, q=False) }}",
           "a:c:'2'b:'1' a:1");
}
END_TEST

START_TEST(test_namespaces)
{
    expect("{% set ns = namespace(n=0, s='') %}{% for i in range(3) %}{% set ns.n = ns.n + i %}"
           "{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}",
           "3 012");
    /* a plain set in a loop does not leak; a namespace attribute does, new ones too */
    expect("{% set x = 1 %}{% set ns = namespace() %}{% for i in [1] %}{% set x = 2 %}{% set ns.y = 'y' %}"
           "{% endfor %}{{ x }}{{ ns.y }}",
           "1y");
    /* shared through a macro's argument */
    expect("{% macro mark(ns) %}{% set ns.hit = true %}{% endmacro %}{% set ns = namespace(hit=false) %}"
           "{{ mark(ns) }}{{ ns.hit }}",
           "True");
}
END_TEST

START_TEST(test_mappings)
{
    expect("{% set d = {'a': 1, 'b': 'x'} %}{{ d.a }}{{ d['b'] }}{{ d.get('c', 'z') }}{{ d.get('c') }}"
           "{{ 'a' in d }}{{ 'c' in d }}{{ 'c' not in d }}{{ d | length }}{{ d.zz is defined }}",
           "1xzNoneTrueFalseTrue2False");
    expect("{% set d = {'a': 1, 'b': 'x'} %}{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}"
           "{{ d.keys() | list }}{{ d.values() | list }}{{ d.items() | list }}{% for k in d %}{{ k }}{% endfor %}",
           "a=1;b=x;['a', 'b'][1, 'x'][('a', 1), ('b', 'x')]ab");
    expect("{{ {'a': [1, none, true], 'b': {}} }}|{{ {} }}|{{ dict(x=1) }}", "{'a': [1, None, True], 'b': {}}|{}|{'x': 1}");
    expect("{% for k, v in {'a': 1} | items %}{{ k }}{{ v }}{% endfor %}{{ nothing | items | list }}", "a1[]");
    /* dictsort ignores case unless asked, and sorts by value when asked */
    expect("{% for k, v in {'b': 1, 'A': 2, 'c': 0} | dictsort %}{{ k }}{{ v }}{% endfor %} "
           "{% for k, v in {'b': 1, 'A': 2, 'c': 0} | dictsort(true) %}{{ k }}{% endfor %} "
           "{% for k, v in {'b': 1, 'A': 2, 'c': 0} | dictsort(by='value') %}{{ k }}{% endfor %}",
           "A2b1c0 Abc cbA");
    /* messages are mappings; the fields llmfs does not carry are absent */
    expect("{{ messages[0] }}{{ 'content' in messages[0] }}{{ 'thinking' in messages[0] }}"
           "{{ messages[0].tool_calls is defined }}{{ messages[0].get('reasoning_content') }}{{ tools is defined }}"
           "{{ messages[1] is mapping }}",
           "{'role': 'system', 'content': 'Be brief.'}TrueFalseFalseNoneFalseTrue");
}
END_TEST

START_TEST(test_tojson)
{
    expect("{{ {'a': [1, 'x\"y\\n', none, true], 'b': {}, 'c': []} | tojson }}",
           "{\"a\": [1, \"x\\\"y\\n\", null, true], \"b\": {}, \"c\": []}");
    expect("{{ {'a': [1, 2], 'b': '\xc3\xa9', 'c': {}} | tojson(indent=2) }}",
           "{\n  \"a\": [\n    1,\n    2\n  ],\n  \"b\": \"\xc3\xa9\",\n  \"c\": {}\n}");
    expect("{{ {'b': 1, 'a': [2, 3]} | tojson(separators=[',', ':'], sort_keys=true) }}", "{\"a\":[2,3],\"b\":1}");
    expect("{{ 'tab\\there\\\\' | tojson }}{{ 5 | tojson }}{{ false | tojson }}", "\"tab\\there\\\\\"5false");
    const chat_msg ctl[] = {{"user", "a\x01\x1f\x7f\r\b\f"}};
    jinja_input in = {ctl, 1, false, "", "", NULL, 0, NULL};
    expect_in("{{ messages[0].content | tojson }}", &in, "\"a\\u0001\\u001f\x7f\\r\\b\\f\"");
    expect_in("{{ messages | tojson(indent=1) }}", &in,
              "[\n {\n  \"role\": \"user\",\n  \"content\": \"a\\u0001\\u001f\x7f\\r\\b\\f\"\n }\n]");
}
END_TEST

START_TEST(test_filters)
{
    expect("{{ ['a', 'b', 'c'] | join(', ') }}|{{ [1, 2] | join }}|{{ messages | join('/', attribute='role') }}",
           "a, b, c|12|system/user/assistant");
    expect("{{ ['a', 'b'] | map('upper') | list }}{{ messages | map(attribute='role') | join(',') }}"
           "{{ [{'x': 1}, {}] | map(attribute='x', default=0) | list }}{{ ['a b'] | map('replace', ' ', '_') | list }}",
           "['A', 'B']system,user,assistant[1, 0]['a_b']");
    expect("{{ messages | selectattr('role', 'equalto', 'user') | map(attribute='content') | join }}|"
           "{{ messages | rejectattr('role', 'eq', 'user') | list | length }}|"
           "{{ [{'a': 1}, {'a': 0}, {}] | selectattr('a') | list }}|{{ [{'a': 1}, {}] | rejectattr('a', 'defined') | list }}",
           "Hello!|2|[{'a': 1}]|[{}]");
    expect("{{ '42' | int + 1 }} {{ 'x' | int }} {{ ' -3.7 ' | int }} {{ 'x' | int(7) }} {{ true | int }}",
           "43 0 -3 7 1");
    expect("{{ 'hello WORLD' | capitalize }}|{{ 'hello big-world (x)' | title }}|{{ \"they're\" | title }}|"
           "{{ \"they're\".title() }}|{{ 'aXbX' | replace('X', '-') }}|{{ '<b>' | safe }}|{{ 'abc'.capitalize() }}",
           "Hello world|Hello Big-World (X)|They're|They'Re|a-b-|<b>|Abc");
    expect("{{ [1, 2, 3] | reverse | list }}{{ 'h\xc3\xa9llo' | reverse }}{{ 'h\xc3\xa9' | list }}",
           "[3, 2, 1]oll\xc3\xa9h['h', '\xc3\xa9']");
}
END_TEST

START_TEST(test_strings_and_slices)
{
    expect("{{ 'a,b,,c'.split(',') }}{{ '  a  b '.split() }}{{ 'a b c'.split(' ', 1) }}{{ 'ab'.split('x') }}",
           "['a', 'b', '', 'c']['a', 'b']['a', 'b c']['ab']");
    expect("{{ 'hello'[1:3] }}|{{ 'hello'[::-1] }}|{{ [1, 2, 3, 4][::2] }}|{{ [1, 2, 3][-2:] }}|{{ [1, 2, 3][:-1] }}|"
           "{{ [1, 2, 3, 4, 5][3:0:-2] }}|{{ [1, 2][5:] }}|{{ 'abc' + 'def' }}|{{ 'x' ~ 1 }}",
           "el|olleh|[1, 3]|[2, 3]|[1, 2]|[4, 2]|[]|abcdef|x1");
    expect("{{ 'a<|c|>b'.split('<|c|>')[0] }}{{ ' x '.strip() }}{{ 'xa'.startswith('x') }}", "axTrue");
    /* steps and bounds at the ends of the integers */
    expect("{{ [1, 2, 3][::9223372036854775807] }}{{ [1, 2, 3][::-9223372036854775807] }}"
           "{{ range(-9223372036854775807, 9223372036854775807, 4611686018427387904) | list }}",
           "[1][3][-9223372036854775807, -4611686018427387903, 1, 4611686018427387905]");
}
END_TEST

START_TEST(test_loops_and_tests)
{
    expect("{% for x in [1, 2, 3] %}{{ loop.previtem | default('-') }}{{ x }}{{ loop.nextitem | default('-') }} "
           "{% endfor %}",
           "-12 123 23- ");
    expect("{% for i in range(3, -1, -1) %}{{ i }}{% endfor %}{% for i in range(0, 7, 3) %}{{ i }}{% endfor %}"
           "{{ range(2, 0) | list }}",
           "3210036[]");
    expect("{{ 'a' is string }}{{ {} is mapping }}{{ [] is sequence }}{{ {} is sequence }}{{ 'a' is sequence }}"
           "{{ x is defined }}{{ none is none }}{{ true is true }}{{ 1 is true }}{{ false is false }}{{ 3 is odd }}"
           "{{ 3 is eq(3) }}{{ 'a' is ne('a') }}{{ {} is iterable }}{{ 1 is iterable }}{{ true is boolean }}",
           "TrueTrueTrueTrueTrueFalseTrueTrueFalseTrueTrueTrueFalseTrueFalseTrue");
}
END_TEST

START_TEST(test_inputs)
{
    struct tm day = fixture_day();
    jinja_input in = {conv, N_CONV, true, "", "", NULL, 0, &day};
    static const char t[] = "{{ strftime_now('%Y-%m-%d %A %B') }}|{{ reasoning_effort | default('unset') }}|"
                            "{{ enable_thinking is defined }}{{ enable_thinking | default('') }}|{{ add_generation_prompt }}";
    expect_in(t, &in, "2026-12-06 Sunday December|unset|False|True");
    in.reasoning_effort = "high";
    in.enable_thinking = 1;
    expect_in(t, &in, "2026-12-06 Sunday December|high|TrueTrue|True");
    in.enable_thinking = -1;
    expect_in(t, &in, "2026-12-06 Sunday December|high|TrueFalse|True");
    /* without a fixed time: today, in local time */
    in.now = NULL;
    char today[32], *out = NULL;
    time_t now = time(NULL);
    struct tm tm;
    localtime_r(&now, &tm);
    strftime(today, sizeof today, "%Y-%m-%d", &tm);
    llmfs_error err;
    ck_assert_int_eq(render_in("{{ strftime_now('%Y-%m-%d') }}", &in, &out, &err), 0);
    ck_assert_str_eq(out, today);
    free(out);
}
END_TEST

/* Errors end the render with a reason; constructs outside the subset say so (-ENOTSUP,
 * so that chat_render can fall back on a family's built-in renderer). */
START_TEST(test_errors)
{
    expect_err("{{ m() }}{% macro m() %}x{% endmacro %}", -EINVAL, "'m' is undefined");
    expect_err("{% set m = 1 %}{{ m() }}{% macro m() %}x{% endmacro %}", -EINVAL, "not callable");
    expect_err("{{ nosuch() }}", -ENOTSUP, "function 'nosuch' is not supported");
    expect_err("{% macro m(a) %}{% endmacro %}{{ m(1, 2) }}", -EINVAL, "too many arguments");
    expect_err("{% macro m(a) %}{% endmacro %}{{ m(b=1) }}", -EINVAL, "no parameter 'b'");
    expect_err("{% macro m(a) %}{% endmacro %}{{ m(1, a=1) }}", -EINVAL, "given twice");
    expect_err("{% macro m(a) %}{% endmacro %}{{ m(a=1, 2) }}", -EINVAL, "positional argument follows");
    expect_err("{% macro m() %}x", -EINVAL, "missing {% endmacro %}");
    expect_err("{% macro m() %}{% for x in y %}{% endmacro %}", -EINVAL, "endmacro");
    expect_err("x{% endmacro %}", -EINVAL, "without a matching");
    expect_err("{% macro (a) %}{% endmacro %}", -EINVAL, "macro name expected");
    expect_err("{% macro m(a %}{% endmacro %}", -EINVAL, "unclosed {% tag");
    expect_err("{% macro m(a b) %}{% endmacro %}", -EINVAL, "expected");
    expect_err("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", -EINVAL, "nested too deeply");
    expect_err("{% macro f(n) %}{% if n < 40 %}{{ f(n + 1) }}{{ f(n + 1) }}{% endif %}{% endmacro %}{{ f(0) }}",
               -ETIME, "runs too long");
    expect_err("{% macro f(n) %}{% if n < 30 %}{{ f(n + 1) ~ f(n + 1) }}{% else %}xxxxxxxxxxxxxxxx{% endif %}"
               "{% endmacro %}{{ f(0) }}",
               -ETIME, "runs too long");
    expect_err("{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns }}", -EINVAL, "nested too deeply");
    expect_err("{% set ns = namespace(a=1) %}{% set ns.me = ns %}{{ ns == ns.me.me }}{{ ns.me == {} }}{{ ns | tojson }}",
               -EINVAL, "no JSON form");
    expect_err("{% set d = {} %}{% set d.x = 1 %}", -EINVAL, "not a namespace");
    expect_err("{% set nothing.x = 1 %}", -EINVAL, "not a namespace");
    expect_err("{{ namespace(1) }}", -EINVAL, "keyword arguments only");
    expect_err("{{ nothing | tojson }}", -EINVAL, "no JSON form");
    expect_err("{{ 1 | tojson(indent=-1) }}", -EINVAL, "indent");
    expect_err("{{ 1 | tojson(bogus=1) }}", -EINVAL, "unexpected keyword argument 'bogus'");
    expect_err("{% for a, b in [1] %}{% endfor %}", -EINVAL, "cannot unpack");
    expect_err("{% for a, b, c in [] %}{% endfor %}", -ENOTSUP, "more than two");
    expect_err("{{ [1][::0] }}", -EINVAL, "step cannot be zero");
    expect_err("{{ range(1, 2, 0) }}", -EINVAL, "step must not be zero");
    expect_err("{{ {'a': 1}.nope() }}", -ENOTSUP, "method 'nope'");
    expect_err("{{ 'a'.items() }}", -EINVAL, "no method 'items'");
    expect_err("{{ [1] | map('nofilter') }}", -ENOTSUP, "filter 'nofilter'");
    expect_err("{{ [{}] | selectattr('a', 'notatest') | list }}", -ENOTSUP, "test 'notatest'");
    expect_err("{{ {[1]: 2} }}", -EINVAL, "mapping keys");
    expect_err("{{ {'a' 1} }}", -EINVAL, "expected");
    expect_err("{{ 'a'.split('') }}", -EINVAL, "non-empty separator");
    expect_err("{{ strftime_now(1) }}", -EINVAL, "needs a string");
    expect_err("{% macro m() %}{{ raise_exception('from the macro') }}{% endmacro %}{{ m() }}", -EINVAL,
               "from the macro");
}
END_TEST

/* A macro that renders a lot of text is held to the output limit, and a deep chain of
 * macro calls to the depth limit, whatever the call pattern. */
START_TEST(test_macro_limits)
{
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl,
             "{%% set ns = namespace(s='x') %%}{%% for i in range(22) %%}{%% set ns.s = ns.s ~ ns.s %%}{%% endfor %%}"
             "{%% macro big() %%}{{ ns.s }}{{ ns.s }}{%% endmacro %%}{%% for i in range(40) %%}{{ big() }}{%% endfor %%}");
    jinja_input in = {conv, N_CONV, false, "", "", NULL, 0, NULL};
    char *out = NULL;
    llmfs_error err;
    int rc = render_in(tmpl, &in, &out, &err);
    ck_assert_msg(rc == -EFBIG || rc == -EINVAL, "rc %d", rc);
    ck_assert_ptr_null(out);
    ck_assert_msg(strstr(err.msg, "too long") || strstr(err.msg, "too much memory"), "%s", err.msg);
    /* macros calling each other in a ring meet the depth limit */
    expect_err("{% macro a(n) %}{{ b(n) }}{% endmacro %}{% macro b(n) %}{{ a(n) }}{% endmacro %}{{ a(1) }}", -EINVAL,
               "nested too deeply");
}
END_TEST

/* ---- the test models' own templates ---- */

static char *model_template(const char *model, gguf_file **f)
{
    char buf[4096];
    llmfs_error err = {0};
    *f = gguf_open(test_shared_path(model, buf, sizeof buf), NULL, &err);
    ck_assert_msg(*f, "%s: %s", model, err.msg);
    size_t len;
    const char *tmpl = gguf_get_str(*f, "tokenizer.chat_template", &len);
    ck_assert_msg(tmpl, "%s has no chat template", model);
    return (char *)tmpl;
}

static char *fixture_prompt(const char *rel)
{
    char buf[4096];
    size_t fl;
    char *p = test_read_file(test_shared_path(rel, buf, sizeof buf), &fl);
    ck_assert_msg(p, "%s", rel);
    return p;
}

/* The interpreter renders tmpl (rc 0) as want. */
static void expect_model(const char *tmpl, const jinja_input *in, const char *want, const char *what)
{
    char *out = NULL;
    llmfs_error err;
    int rc = render_in(tmpl, in, &out, &err);
    ck_assert_msg(rc == 0, "%s: rc %d (%s)", what, rc, err.msg);
    ck_assert_msg(strcmp(out, want) == 0, "%s:\n--- got ---\n%s\n--- want ---\n%s", what, out, want);
    free(out);
}

/* The interpreter and the family's built-in renderer agree on a conversation. */
static void expect_like_builtin(const char *tmpl, const char *family, const chat_msg *m, int n, bool gen,
                                const char *bos, const chat_opts *opts, const char *what)
{
    llmfs_error err = {0};
    char *want;
    if (opts) { /* the built-in harmony renderer reads the options: through chat_render_opts's fallback */
        char fake[] = "<|start|><|channel|><|message|>{% frobnicate %}";
        want = chat_render_opts(fake, m, n, gen, bos, "", opts, &err);
    } else {
        want = chat_render_builtin(family, m, n, gen, bos, "", &err);
    }
    ck_assert_msg(want, "%s: %s", what, err.msg);
    struct tm day = fixture_day();
    jinja_input in = {m, n, gen, bos, "", opts ? opts->reasoning_effort : NULL, 0, &day};
    expect_model(tmpl, &in, want, what);
    free(want);
}

START_TEST(test_gptoss_template)
{
    gguf_file *f;
    const char *tmpl = model_template("models/gptoss-tiny-mxfp4.gguf", &f);
    char *fixture = fixture_prompt("fixtures/gptoss-tiny-mxfp4/chat/prompt.txt");
    const chat_msg hi[] = {{"user", "Hi"}};
    struct tm day = fixture_day();
    jinja_input in = {hi, 1, true, "<|startoftext|>", "<|return|>", NULL, 0, &day};
    expect_model(tmpl, &in, fixture, "gpt-oss, the template's default effort");
    in.reasoning_effort = "medium";
    expect_model(tmpl, &in, fixture, "gpt-oss, medium effort");
    free(fixture);
    /* more turns, a developer message, efforts, a closing assistant turn */
    const chat_opts high = {"high", "2026-12-06"}, low = {"low", "2026-12-06"};
    const chat_msg talk[] = {{"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "Bye"}};
    expect_like_builtin(tmpl, "harmony", talk, 4, true, "", &high, "gpt-oss, four turns");
    expect_like_builtin(tmpl, "harmony", talk, 3, false, "", &low, "gpt-oss, closing assistant turn");
    const chat_msg dev[] = {{"developer", "Rules."}, {"user", "Q"}};
    expect_like_builtin(tmpl, "harmony", dev, 2, true, "", &high, "gpt-oss, developer message");
    /* the template's own exception for channel tags in a message */
    const chat_msg bad[] = {{"user", "Hi"}, {"assistant", "<|channel|>final<|message|>x"}};
    in = (jinja_input){bad, 2, true, "", "", "high", 0, &day};
    char *out = NULL;
    llmfs_error err;
    ck_assert_int_eq(render_in(tmpl, &in, &out, &err), -EINVAL);
    ck_assert_msg(strstr(err.msg, "<|channel|> tags in the content field"), "%s", err.msg);
    /* chat_render_opts goes through the interpreter: same text as the fixture */
    const chat_opts day_opts = {NULL, "2026-12-06"};
    char *p = chat_render_opts(tmpl, hi, 1, true, "", "", &day_opts, &err);
    ck_assert_msg(p, "%s", err.msg);
    ck_assert_msg(strstr(p, "Current date: 2026-12-06\n"), "%s", p);
    free(p);
    gguf_close(f);
}
END_TEST

START_TEST(test_gemma4_template)
{
    static const char *const models[][2] = {
        {"models/gemma4-tiny-q8_0.gguf", "fixtures/gemma4-tiny-q8_0/chat/prompt.txt"},
        {"models/gemma4e-tiny-q8_0.gguf", "fixtures/gemma4e-tiny-q8_0/chat/prompt.txt"},
        {"models/gemma4moe-tiny-q8_0.gguf", "fixtures/gemma4moe-tiny-q8_0/chat/prompt.txt"},
    };
    for (size_t k = 0; k < sizeof models / sizeof models[0]; k++) {
        gguf_file *f;
        const char *tmpl = model_template(models[k][0], &f);
        char *fixture = fixture_prompt(models[k][1]);
        const chat_msg hi[] = {{"user", "Hi"}};
        jinja_input in = {hi, 1, true, "", "", NULL, 0, NULL};
        expect_model(tmpl, &in, fixture, models[k][0]);
        /* thinking asked off explicitly: the same; on: the system turn asks for it */
        in.enable_thinking = -1;
        expect_model(tmpl, &in, fixture, models[k][0]);
        in.enable_thinking = 1;
        in.bos_token = "<bos>";
        expect_model(tmpl, &in, "<bos><|turn>system\n<|think|>\n<turn|>\n<|turn>user\nHi<turn|>\n<|turn>model\n",
                     "gemma4, thinking on");
        free(fixture);
        /* a system turn, the model's thinking dropped from its past turns, consecutive
         * assistant messages as one turn: as the built-in renderer lays them out */
        const chat_msg conv4[] = {{"system", " Be brief. "}, {"user", "Hi"},
                                  {"assistant", "<|channel>thought\nhm<channel|>Hello!"}, {"assistant", "More."},
                                  {"user", "Bye"}};
        for (int gen = 0; gen < 2; gen++)
            expect_like_builtin(tmpl, "gemma4", conv4, 5, gen, "<bos>", NULL, "gemma4, five messages");
        if (k == 0) {
            /* The template looks back over the conversation for every message: 400
             * messages are rendered by it, 3000 run past the interpreter's work budget
             * (-ETIME), and chat_render lays them out with the built-in renderer. */
            enum { N_LONG = 3000 };
            chat_msg *lc = malloc(sizeof *lc * N_LONG);
            ck_assert_ptr_nonnull(lc);
            for (int i = 0; i < N_LONG; i++)
                lc[i] = (chat_msg){i % 2 ? "assistant" : "user", "Some words of a long conversation."};
            expect_like_builtin(tmpl, "gemma4", lc, 400, true, "", NULL, "gemma4, 400 messages");
            in = (jinja_input){lc, N_LONG, true, "", "", NULL, 0, NULL};
            char *out = NULL;
            llmfs_error err;
            ck_assert_int_eq(render_in(tmpl, &in, &out, &err), -ETIME);
            ck_assert_ptr_null(out);
            char *p = chat_render(tmpl, lc, N_LONG, true, "", "", &err);
            ck_assert_msg(p, "%s", err.msg);
            char *b = chat_render_builtin("gemma4", lc, N_LONG, true, "", "", &err);
            ck_assert_msg(b, "%s", err.msg);
            ck_assert_str_eq(p, b);
            free(p);
            free(b);
            free(lc);
        }
        gguf_close(f);
    }
}
END_TEST

START_TEST(test_qwen_templates)
{
    static const char *const models[][2] = {
        {"models/qwen3-tiny-q4_k.gguf", "fixtures/qwen3-tiny-q4_k/chat/prompt.txt"},
        {"models/qwen35-tiny-q8_0.gguf", "fixtures/qwen35-tiny-q8_0/chat/prompt.txt"},
        {"models/qwen3next-tiny-q8_0.gguf", "fixtures/qwen3next-tiny-q8_0/chat/prompt.txt"},
        {"models/qwen2-tiny-q8_0.gguf", "fixtures/qwen2-tiny-q8_0/chat/prompt.txt"},
        {"models/qwen35moe-tiny-q8_0.gguf", "fixtures/qwen35moe-tiny-q8_0/chat/prompt.txt"},
        {"models/qwen3moe-tiny-q8_0.gguf", "fixtures/qwen3moe-tiny-q8_0/chat/prompt.txt"},
    };
    for (size_t k = 0; k < sizeof models / sizeof models[0]; k++) {
        char buf[4096];
        size_t fl;
        char *fixture = test_read_file(test_shared_path(models[k][1], buf, sizeof buf), &fl);
        if (!fixture)
            continue; /* not every model has a chat fixture */
        gguf_file *f;
        const char *tmpl = model_template(models[k][0], &f);
        const chat_msg hi[] = {{"user", "Hi"}};
        jinja_input in = {hi, 1, true, "", "<|im_end|>", NULL, 0, NULL};
        expect_model(tmpl, &in, fixture, models[k][0]);
        free(fixture);
        gguf_close(f);
    }
}
END_TEST

/* A template in the style of Qwen3's (ChatML with thinking): the last user query found
 * by walking the messages backwards (a [::-1] slice and a namespace), the reasoning of
 * earlier assistant turns cut out with split/rstrip/lstrip, the reasoning of turns after
 * the last query kept, and enable_thinking=false closing an empty think block. The
 * expected texts are Jinja2's. */
static const char tmpl_qwen3[] =
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {{- messages[0].content + '\\n\\n' }}\n"
    "    {%- endif %}\n"
    "    {{- \"# Tools\\n\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0].role == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}\n"
    "{%- for message in messages[::-1] %}\n"
    "    {%- set index = (messages|length - 1) - loop.index0 %}\n"
    "    {%- if ns.multi_step_tool and message.role == \"user\" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}\n"
    "        {%- set ns.multi_step_tool = false %}\n"
    "        {%- set ns.last_query_index = index %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- for message in messages %}\n"
    "    {%- if message.content is string %}\n"
    "        {%- set content = message.content %}\n"
    "    {%- else %}\n"
    "        {%- set content = '' %}\n"
    "    {%- endif %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {%- set reasoning_content = '' %}\n"
    "        {%- if message.reasoning_content is string %}\n"
    "            {%- set reasoning_content = message.reasoning_content %}\n"
    "        {%- else %}\n"
    "            {%- if '</think>' in content %}\n"
    "                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}\n"
    "                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}\n"
    "            {%- endif %}\n"
    "        {%- endif %}\n"
    "        {%- if loop.index0 > ns.last_query_index %}\n"
    "            {%- if loop.last or (not loop.last and reasoning_content) %}\n"
    "                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}\n"
    "            {%- else %}\n"
    "                {{- '<|im_start|>' + message.role + '\\n' + content }}\n"
    "            {%- endif %}\n"
    "        {%- else %}\n"
    "            {{- '<|im_start|>' + message.role + '\\n' + content }}\n"
    "        {%- endif %}\n"
    "        {%- if message.tool_calls %}\n"
    "            {%- for tool_call in message.tool_calls %}\n"
    "                {%- if (loop.first and content) or (not loop.first) %}\n"
    "                    {{- '\\n' }}\n"
    "                {%- endif %}\n"
    "                {%- if tool_call.function %}\n"
    "                    {%- set tool_call = tool_call.function %}\n"
    "                {%- endif %}\n"
    "                {{- '<tool_call>\\n{\"name\": \"' }}\n"
    "                {{- tool_call.name }}\n"
    "                {{- '\", \"arguments\": ' }}\n"
    "                {%- if tool_call.arguments is string %}\n"
    "                    {{- tool_call.arguments }}\n"
    "                {%- else %}\n"
    "                    {{- tool_call.arguments | tojson }}\n"
    "                {%- endif %}\n"
    "                {{- '}\\n</tool_call>' }}\n"
    "            {%- endfor %}\n"
    "        {%- endif %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if loop.first or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "    {%- if enable_thinking is defined and enable_thinking is false %}\n"
    "        {{- '<think>\\n\\n</think>\\n\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    ;

START_TEST(test_qwen3_style_template)
{
    const chat_msg talk[] = {{"system", "Sys"}, {"user", "Hi"}, {"assistant", "<think>\nhmm\n</think>\n\nHello"},
                             {"user", "Again"}};
    jinja_input in = {talk, 4, true, "", "", NULL, -1, NULL};
    expect_model(tmpl_qwen3, &in,
                 "<|im_start|>system\n"
        "Sys<|im_end|>\n"
        "<|im_start|>user\n"
        "Hi<|im_end|>\n"
        "<|im_start|>assistant\n"
        "Hello<|im_end|>\n"
        "<|im_start|>user\n"
        "Again<|im_end|>\n"
        "<|im_start|>assistant\n"
        "<think>\n"
        "\n"
        "</think>\n"
        "\n",
                 "qwen3 style, thinking off");
    in.enable_thinking = 0;
    expect_model(tmpl_qwen3, &in,
                 "<|im_start|>system\n"
        "Sys<|im_end|>\n"
        "<|im_start|>user\n"
        "Hi<|im_end|>\n"
        "<|im_start|>assistant\n"
        "Hello<|im_end|>\n"
        "<|im_start|>user\n"
        "Again<|im_end|>\n"
        "<|im_start|>assistant\n",
                 "qwen3 style, the template's default");
    const chat_msg last[] = {{"user", "Hi"}, {"assistant", "<think>r</think>Ans"}};
    in = (jinja_input){last, 2, false, "", "", NULL, 1, NULL};
    expect_model(tmpl_qwen3, &in,
                 "<|im_start|>user\n"
        "Hi<|im_end|>\n"
        "<|im_start|>assistant\n"
        "<think>\n"
        "r\n"
        "</think>\n"
        "\n"
        "Ans<|im_end|>\n",
                 "qwen3 style, closing assistant turn");
}
END_TEST

static Suite *make_suite(void)
{
    Suite *s = suite_create("jinja");
    TCase *tc = tcase_create("features");
    tcase_add_test(tc, test_macros);
    tcase_add_test(tc, test_namespaces);
    tcase_add_test(tc, test_mappings);
    tcase_add_test(tc, test_tojson);
    tcase_add_test(tc, test_filters);
    tcase_add_test(tc, test_strings_and_slices);
    tcase_add_test(tc, test_loops_and_tests);
    tcase_add_test(tc, test_inputs);
    tcase_add_test(tc, test_errors);
    tcase_add_test(tc, test_macro_limits);
    tcase_add_test(tc, test_qwen3_style_template);
    suite_add_tcase(s, tc);
    TCase *tm = tcase_create("model templates");
    tcase_add_test(tm, test_gptoss_template);
    tcase_add_test(tm, test_gemma4_template);
    tcase_add_test(tm, test_qwen_templates);
    suite_add_tcase(s, tm);
    return s;
}

int main(void)
{
    if (!test_shared_dir()) /* the model templates and fixtures live there */
        test_skip_no_shared("jinja tests");
    return test_run_suite(make_suite());
}
