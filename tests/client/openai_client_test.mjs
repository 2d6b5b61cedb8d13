// The official OpenAI Node client (the `openai` npm package, version pinned in package-lock.json) against
// `diffulex serve` on the shipped model, on the loopback: models.list, completions and chat.completions, each
// plain and streamed (the streamed chunks concatenate to the plain answer for the same seed, usage last), and
// errors as openai.APIError subclasses with the right status and param.
//
//   node tests/client/openai_client_test.mjs BUILD/diffulex models/kjv-dream-tiny
//
// Registered with ctest as OpenAIClient.Node (CMakeLists.txt). Exits 77 (ctest: skipped) when the npm packages
// are not installed (tools/setup_deps.sh --client-test installs them), unless DIFFULEX_REQUIRE_CLIENT_TEST=1
// (.ci/run), which makes that a failure.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { createInterface } from 'node:readline';

const [binary, modelDir] = process.argv.slice(2);
if (!binary || !modelDir) {
  console.error('usage: node openai_client_test.mjs DIFFULEX_BINARY MODEL_DIR');
  process.exit(2);
}

let OpenAI;
try {
  OpenAI = (await import('openai')).default;
} catch (e) {
  const msg = 'the openai npm package is not installed: run tools/setup_deps.sh --client-test';
  if (process.env.DIFFULEX_REQUIRE_CLIENT_TEST === '1') {
    console.error(`error: ${msg}`);
    process.exit(1);
  }
  console.log(`skipped: ${msg}`);
  process.exit(77);
}
const clientVersion = JSON.parse(readFileSync(new URL('./node_modules/openai/package.json', import.meta.url))).version;

// The server on a free port; its first stdout line names it.
const server = spawn(binary, ['serve', '--model', modelDir, '--port', '0', '--threads', '2', '--max-batch', '4'], {
  stdio: ['ignore', 'pipe', 'inherit'],
});
const serverExit = new Promise((resolve) => server.on('exit', (code, signal) => resolve({ code, signal })));
const baseURL = await new Promise((resolve, reject) => {
  const lines = createInterface({ input: server.stdout });
  const timer = setTimeout(() => reject(new Error('diffulex serve did not start within 60 s')), 60000);
  lines.once('line', (line) => {
    clearTimeout(timer);
    const m = /listening on (http:\/\/[^ ]+)/.exec(line);
    m ? resolve(`${m[1]}/v1`) : reject(new Error(`unexpected first line: ${line}`));
  });
  server.once('exit', () => reject(new Error('diffulex serve exited before listening')));
});

const client = new OpenAI({ baseURL, apiKey: 'not-checked', maxRetries: 0, timeout: 60000 });
const model = 'kjv-dream-tiny';
let failed = 0;
async function check(name, fn) {
  try {
    await fn();
    console.log(`ok - ${name}`);
  } catch (e) {
    failed++;
    console.log(`not ok - ${name}\n${e.stack ?? e}`);
  }
}
async function collect(stream) {
  const chunks = [];
  for await (const chunk of stream) chunks.push(chunk);
  return chunks;
}
// The error the call rejects with (fails when it resolves).
async function rejection(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  assert.fail('the call succeeded; an error was expected');
}

// Block-wise decoding, so a stream has several text chunks.
const gen = { max_tokens: 24, steps: 24, seed: 11, temperature: 0.5, block_length: 8 };

await check('models.list', async () => {
  const page = await client.models.list();
  assert.deepEqual(page.data.map((m) => m.id), [model]);
  assert.equal(page.data[0].object, 'model');
});

await check('completions.create', async () => {
  const r = await client.completions.create({ model, prompt: 'And God said,', ...gen });
  assert.equal(r.object, 'text_completion');
  assert.equal(r.choices.length, 1);
  assert.ok(r.choices[0].text.length > 0);
  assert.ok(['stop', 'length'].includes(r.choices[0].finish_reason));
  assert.equal(r.usage.total_tokens, r.usage.prompt_tokens + r.usage.completion_tokens);
});

await check('completions.create, stream: chunks concatenate to the answer, usage last', async () => {
  const req = { model, prompt: 'And God said,', ...gen };
  const plain = await client.completions.create(req);
  const chunks = await collect(
    await client.completions.create({ ...req, stream: true, stream_options: { include_usage: true } }));
  const text = chunks.flatMap((c) => c.choices.map((ch) => ch.text)).join('');
  assert.equal(text, plain.choices[0].text);
  assert.ok(chunks.filter((c) => c.choices.some((ch) => ch.text)).length >= 2, 'text in more than one chunk');
  const finish = chunks.flatMap((c) => c.choices).filter((ch) => ch.finish_reason);
  assert.deepEqual(finish.map((ch) => ch.finish_reason), [plain.choices[0].finish_reason]);
  const last = chunks.at(-1);
  assert.deepEqual(last.choices, []);
  assert.deepEqual(last.usage, plain.usage);
});

await check('completions.create, stream with stop strings', async () => {
  const req = { model, prompt: ['In the beginning', 'Blessed'], n: 2, stop: [',', ':'], ...gen };
  const plain = await client.completions.create(req);
  const chunks = await collect(await client.completions.create({ ...req, stream: true }));
  const byIndex = new Map();
  for (const c of chunks) for (const ch of c.choices) byIndex.set(ch.index, (byIndex.get(ch.index) ?? '') + ch.text);
  assert.equal(plain.choices.length, 4);
  for (const ch of plain.choices) assert.equal(byIndex.get(ch.index), ch.text, `choice ${ch.index}`);
});

const messages = [{ role: 'user', content: 'Who made the heaven and the earth?' }];

await check('chat.completions.create', async () => {
  const r = await client.chat.completions.create({ model, messages, ...gen });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.ok(r.choices[0].message.content.length > 0);
});

await check('chat.completions.create, stream: deltas concatenate to the message', async () => {
  const plain = await client.chat.completions.create({ model, messages, ...gen });
  const chunks = await collect(await client.chat.completions.create({ model, messages, ...gen, stream: true }));
  assert.equal(chunks[0].object, 'chat.completion.chunk');
  assert.equal(chunks[0].choices[0].delta.role, 'assistant');
  const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
  assert.equal(text, plain.choices[0].message.content);
  assert.equal(chunks.at(-1).choices[0].finish_reason, plain.choices[0].finish_reason);
});

await check('chat.completions.stream helper: finalChatCompletion', async () => {
  const plain = await client.chat.completions.create({ model, messages, ...gen });
  const runner = client.beta.chat.completions.stream({ model, messages, ...gen });
  const final = await runner.finalChatCompletion();
  assert.equal(final.choices[0].message.content, plain.choices[0].message.content);
});

await check('errors are APIError with the status and param', async () => {
  const bad = await rejection(client.completions.create({ model, prompt: 'In', max_tokens: 16, block_length: 5 }));
  assert.ok(bad instanceof OpenAI.APIError && bad instanceof OpenAI.BadRequestError, String(bad));
  assert.equal(bad.status, 400);
  assert.equal(bad.param, 'block_length');
  const badStream = await rejection(
    client.chat.completions.create({ model, messages, max_tokens: 16, block_length: 5, stream: true }));
  assert.ok(badStream instanceof OpenAI.BadRequestError, String(badStream));
  assert.equal(badStream.param, 'block_length');
  const wrongModel = await rejection(client.completions.create({ model: 'gpt-4', prompt: 'In' }));
  assert.equal(wrongModel.status, 400);
  assert.equal(wrongModel.param, 'model');
  const noRoute = await rejection(client.embeddings.create({ model, input: 'In' }));
  assert.ok(noRoute instanceof OpenAI.NotFoundError, String(noRoute));
  assert.equal(noRoute.status, 404);
});

server.kill('SIGTERM');
const exit = await serverExit;
await check('diffulex serve exits 0 on SIGTERM', async () => assert.deepEqual(exit, { code: 0, signal: null }));
console.log(`openai ${clientVersion}: ${failed ? `${failed} failed` : 'all passed'}`);
process.exit(failed ? 1 : 0);
