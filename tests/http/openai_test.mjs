// openai_test.mjs — drives llmfs's HTTP endpoint with the official `openai` npm client.
// Run by tests/shell/test_http.sh, which mounts the daemon, loads the models and writes
// the expected texts. Environment:
//   OPENAI_MODULE  path of the installed client's package folder
//   LLMFS_URL      http://127.0.0.1:PORT/v1      LLMFS_KEY  the bearer token
//   LLMFS_MNT      the mount point               EXPECT_DIR the expected texts
//   RAW_MODEL      a raw-completion model (stories260K), CHAT_MODEL (qwen3-tiny),
//   LONG_MODEL     one that generates long (for the abort), SMALL_MODEL (ctx 64)
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const { default: OpenAI } = await import(pathToFileURL(path.join(process.env.OPENAI_MODULE, 'index.mjs')).href);

const env = (k) => {
    if (!process.env[k]) throw new Error(`${k} is not set`);
    return process.env[k];
};
const url = env('LLMFS_URL'), key = env('LLMFS_KEY'), mnt = env('LLMFS_MNT'), exp = env('EXPECT_DIR');
const RAW = env('RAW_MODEL'), CHAT = env('CHAT_MODEL'), LONG = env('LONG_MODEL'), SMALL = env('SMALL_MODEL');
const client = new OpenAI({ baseURL: url, apiKey: key, maxRetries: 0, timeout: 120000 });

let failures = 0;
const fail = (msg) => { console.error(`FAIL: ${msg}`); failures++; };
const ok = (msg) => console.log(`ok - ${msg}`);
const read = (name) => fs.readFileSync(path.join(exp, name), 'utf8');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The expected text: exact (whole reply) or a prefix (up to a near tie), as test_greedy.sh.
function checkText(what, got, name) {
    const want = read(`${name}.want`);
    const exact = read(`${name}.exact`).trim() === '1';
    // the mount writes U+FFFD for stray bytes; the expected text has them removed
    const g = got.replaceAll('\uFFFD', '');
    if (exact ? g !== want : !g.startsWith(want))
        return fail(`${what}: got ${JSON.stringify(got)}, wanted ${exact ? '' : 'a start of '}${JSON.stringify(want)}`);
    ok(`${what}: the fixture's greedy text`);
}

async function collect(stream) {
    let text = '', reasoning = '', finish = null, usage = null, id = null;
    for await (const ev of stream) {
        id = id ?? ev.id;
        if (ev.usage) usage = ev.usage;
        for (const ch of ev.choices ?? []) {
            text += ch.delta?.content ?? ch.text ?? '';
            reasoning += ch.delta?.reasoning_content ?? '';
            if (ch.finish_reason) finish = ch.finish_reason;
        }
    }
    return { text, reasoning, finish, usage, id };
}

const greedy = { temperature: 0, max_tokens: 32, seed: 1 };
const rawPrompt = read('raw.prompt');
const nPromptRaw = Number(read('raw.n_tokens'));
const nGen = Number(read('raw.n_gen'));

// ---- models ----
{
    const list = await client.models.list();
    const ids = list.data.map((m) => m.id);
    for (const m of [RAW, CHAT, LONG, SMALL])
        if (!ids.includes(m)) fail(`/v1/models lacks ${m}: ${ids}`);
    ok(`/v1/models lists ${ids.join(' ')}`);
}

// ---- completions, not streaming and streaming ----
let rawText;
{
    const r = await client.completions.create({ model: RAW, prompt: rawPrompt, ...greedy });
    rawText = r.choices[0].text;
    checkText('completion', rawText, 'raw');
    if (r.usage.prompt_tokens !== nPromptRaw || r.usage.completion_tokens !== nGen ||
        r.usage.total_tokens !== nPromptRaw + nGen)
        fail(`completion usage ${JSON.stringify(r.usage)}, wanted ${nPromptRaw} + ${nGen}`);
    else ok(`completion usage ${nPromptRaw} + ${nGen}`);
    if (r.choices[0].finish_reason !== 'length') fail(`finish_reason ${r.choices[0].finish_reason}`);
    const s = await collect(await client.completions.create({
        model: RAW, prompt: rawPrompt, ...greedy, stream: true, stream_options: { include_usage: true } }));
    if (s.text !== rawText) fail(`streamed completion ${JSON.stringify(s.text)} != ${JSON.stringify(rawText)}`);
    else ok('streamed completion equals the whole one');
    if (!s.usage || s.usage.prompt_tokens !== nPromptRaw || s.usage.completion_tokens !== nGen)
        fail(`streamed usage ${JSON.stringify(s.usage)}`);
    else ok('streamed usage (stream_options.include_usage)');
    if (s.finish !== 'length') fail(`streamed finish_reason ${s.finish}`);
}

// ---- chat, not streaming and streaming ----
{
    const messages = [{ role: 'user', content: read('chat.user') }];
    const r = await client.chat.completions.create({ model: CHAT, messages, ...greedy });
    checkText('chat', r.choices[0].message.content, 'chat');
    if (r.choices[0].message.role !== 'assistant') fail(`chat role ${r.choices[0].message.role}`);
    const nChat = Number(read('chat.n_tokens'));
    if (r.usage.prompt_tokens !== nChat || r.usage.completion_tokens !== nGen)
        fail(`chat usage ${JSON.stringify(r.usage)}, wanted ${nChat} + ${nGen}`);
    else ok(`chat usage ${nChat} + ${nGen}`);
    const s = await collect(await client.chat.completions.create({ model: CHAT, messages, ...greedy, stream: true }));
    if (s.text !== r.choices[0].message.content) fail(`streamed chat ${JSON.stringify(s.text)}`);
    else ok('streamed chat equals the whole one');
    if (s.usage) fail('usage sent without stream_options.include_usage');
    // a conversation with a system message and an earlier turn renders and answers
    const r2 = await client.chat.completions.create({ model: CHAT, ...greedy, messages: [
        { role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Hi' },
        { role: 'assistant', content: r.choices[0].message.content }, { role: 'user', content: 'Again' }] });
    if (!(r2.usage.prompt_tokens > nChat + 10)) fail(`a longer conversation has ${r2.usage.prompt_tokens} prompt tokens`);
    else ok(`a three-message conversation: ${r2.usage.prompt_tokens} prompt tokens`);
}

// ---- stop strings: the reply ends before the first one, which is not sent ----
{
    const cut = rawText.indexOf(' ', 8);
    if (cut > 0) {
        const stop = rawText.slice(cut, cut + 3);
        const want = rawText.slice(0, rawText.indexOf(stop));
        const r = await client.completions.create({ model: RAW, prompt: rawPrompt, ...greedy, stop: [stop, 'zzzz'] });
        if (r.choices[0].text !== want || r.choices[0].finish_reason !== 'stop')
            fail(`stop ${JSON.stringify(stop)}: ${JSON.stringify(r.choices[0].text)} (${r.choices[0].finish_reason}), wanted ${JSON.stringify(want)}`);
        else ok(`stop ${JSON.stringify(stop)} ends the reply before it`);
        const s = await collect(await client.completions.create({ model: RAW, prompt: rawPrompt, ...greedy, stop, stream: true }));
        if (s.text !== want) fail(`streamed stop: ${JSON.stringify(s.text)}`);
        else ok('streamed stop string');
    } else fail(`the reference text ${JSON.stringify(rawText)} has no space to cut at`);
}

// ---- 16 concurrent streams, each with its own text ----
{
    const prompts = ['Once upon a time', 'The little dog', 'Lily and Tom went to', 'One day, a girl'];
    const alone = [];
    for (const p of prompts)
        alone.push((await client.completions.create({ model: RAW, prompt: p, ...greedy })).choices[0].text);
    const runs = [];
    for (let i = 0; i < 16; i++)
        runs.push(client.completions.create({ model: RAW, prompt: prompts[i % 4], ...greedy, stream: true }).then(collect));
    const got = await Promise.all(runs);
    let bad = 0;
    got.forEach((g, i) => {
        if (g.text !== alone[i % 4]) {
            bad++;
            fail(`concurrent stream ${i}: ${JSON.stringify(g.text)}, alone ${JSON.stringify(alone[i % 4])}`);
        }
    });
    if (!bad) ok('16 concurrent streams, each with its own text');
}

// ---- a client that goes away stops its generation ----
{
    const controller = new AbortController();
    const { data: stream, response } = await client.completions.create(
        { model: LONG, prompt: 'Once upon a time', temperature: 0, max_tokens: 100000, stream: true },
        { signal: controller.signal }).withResponse();
    const sid = response.headers.get('x-llmfs-session');
    const tpath = path.join(mnt, LONG, String(sid), 'transcript');
    // hold the transcript open: it lives on after the request's session closes
    const fd = fs.openSync(tpath, 'r');
    let chunks = 0;
    try {
        for await (const ev of stream) {
            if (ev.choices?.[0]?.text && ++chunks === 3) controller.abort();
        }
    } catch (e) {
        if (!controller.signal.aborted) fail(`the aborted stream failed otherwise: ${e}`);
    }
    let text = '';
    const buf = Buffer.alloc(65536);
    for (let i = 0; i < 100 && !text.includes('### closed'); i++) {
        let n;
        while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) text += buf.toString('utf8', 0, n);
        if (!text.includes('### closed')) await sleep(100);
    }
    fs.closeSync(fd);
    if (!/### end stopped/.test(text)) fail(`after the abort the transcript of session ${sid} ends: ${JSON.stringify(text.slice(-300))}`);
    else ok(`an aborted stream stops its generation (session ${sid}: ${text.match(/### end stopped[^\n]*/)[0]})`);
    const stats = fs.readFileSync(path.join(mnt, LONG, 'stats'), 'utf8');
    if (!/^generating 0$/m.test(stats)) fail(`model stats after the abort: ${stats}`);
}

// ---- bad requests get OpenAI-shaped errors ----
async function expectError(what, status, fn, code) {
    try {
        await fn();
        fail(`${what}: succeeded`);
    } catch (e) {
        if (e.status !== status) return fail(`${what}: status ${e.status} (${e.message}), wanted ${status}`);
        if (!e.error || typeof e.error.message !== 'string' || !e.error.type)
            return fail(`${what}: error body ${JSON.stringify(e.error)}`);
        if (code && e.code !== code) return fail(`${what}: code ${e.code}, wanted ${code}`);
        ok(`${what}: ${status} ${e.error.type} ${e.code ?? ''} (${e.error.message})`);
    }
}
await expectError('unknown model', 404,
    () => client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'Hi' }] }),
    'model_not_found');
await expectError('no messages', 400, () => client.chat.completions.create({ model: CHAT, messages: [] }));
await expectError('ends with an assistant message', 400, () => client.chat.completions.create(
    { model: CHAT, messages: [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: 'Hello' }] }));
await expectError('bad temperature', 400, () => client.completions.create({ model: RAW, prompt: 'x', temperature: 'hot' }));
await expectError('temperature out of range', 400, () => client.completions.create({ model: RAW, prompt: 'x', temperature: 500 }));
await expectError('context overflow', 400,
    () => client.completions.create({ model: SMALL, prompt: 'Once upon a time there was a dog. '.repeat(40), max_tokens: 4 }),
    'context_length_exceeded');
await expectError('no prompt', 400, () => client.completions.create({ model: RAW }));
{
    const r = await fetch(`${url}/chat/completions`, { method: 'POST', body: '{"model": ',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' } });
    const j = await r.json();
    if (r.status !== 400 || !j.error?.message) fail(`invalid JSON: ${r.status} ${JSON.stringify(j)}`);
    else ok(`invalid JSON: 400 (${j.error.message})`);
}

// ---- health and metrics ----
{
    const base = url.replace(/\/v1$/, '');
    const h = await fetch(`${base}/health`, { headers: { authorization: `Bearer ${key}` } });
    if (h.status !== 200 || (await h.json()).status !== 'ok') fail(`/health ${h.status}`);
    const m = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${key}` } });
    const text = await m.text();
    const file = fs.readFileSync(path.join(mnt, 'metrics'), 'utf8');
    const req = (t) => Number((t.match(new RegExp(`^llmfs_requests_total\\{model="${RAW}"\\} (\\d+)`, 'm')) ?? [])[1]);
    if (m.status !== 200 || !(req(text) >= 20) || req(file) !== req(text))
        fail(`/metrics ${m.status}: requests ${req(text)} (the file says ${req(file)})`);
    else ok(`/health, and /metrics is the metrics file (requests of ${RAW}: ${req(text)})`);
}

if (failures) {
    console.error(`${failures} failures`);
    process.exit(1);
}
