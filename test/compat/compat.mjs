// compat.mjs — the official openai SDK (the version package-lock.json pins)
// against a voicegateway with the echo backend, as an app written for the
// OpenAI Realtime API uses it: baseURL pointed at the gateway, nothing else
// changed. `make compat` runs it behind TLS (hack/compat); it prints one
// line per scenario with the events it saw and exits 1 when one fails.
//
// Environment: VGW_BASE_URL (https://host:port/v1), VGW_API_KEY.

import OpenAI from 'openai';
import { VERSION } from 'openai/version';
import { OpenAIRealtimeWS } from 'openai/realtime/ws';
import { OpenAIRealtimeWebSocket } from 'openai/realtime/websocket';
import http from 'node:http';
// The gateway's own browser client (the demo page's), run here on Node's
// native WebSocket and fetch, as a page runs it.
import { VoiceGatewayClient } from '../../server/web/static/voicegateway-client.js';

const baseURL = process.env.VGW_BASE_URL;
const apiKey = process.env.VGW_API_KEY;
if (!baseURL || !apiKey) {
  console.error('compat.mjs: set VGW_BASE_URL and VGW_API_KEY (make compat does)');
  process.exit(2);
}
const MODEL = 'gpt-realtime';
const RATE = 24000;
const SCENARIO_TIMEOUT_MS = 20000;

// PCM16 helpers: a 440 Hz tone is speech to the echo's detector, zeros are not.
function tone(ms) {
  const n = Math.round(RATE * ms / 1000);
  const b = Buffer.alloc(n * 2);
  for (let i = 0; i < n; i++) b.writeInt16LE(Math.round(8000 * Math.sin(2 * Math.PI * 440 * i / RATE)), i * 2);
  return b;
}
const silence = (ms) => Buffer.alloc(Math.round(RATE * ms / 1000) * 2);

// A session: every event the SDK emits, in order, and waits on them.
class Session {
  constructor(rt) {
    this.rt = rt;
    this.events = [];
    this.audio = [];
    this.waiters = [];
    this.closed = null;
    rt.on('event', (ev) => {
      this.events.push(ev);
      if (ev.type === 'response.output_audio.delta') this.audio.push(Buffer.from(ev.delta, 'base64'));
      this.#wake();
    });
    // The SDK reports error events here too (and throws without a listener).
    rt.on('error', (err) => { this.lastError = err; this.#wake(); });
    const sock = rt.socket;
    const onClose = (code) => { this.closed = typeof code === 'number' ? code : (code && code.code); this.#wake(); };
    if (typeof sock.on === 'function') sock.on('close', onClose); else sock.addEventListener('close', onClose);
  }
  #wake() { for (const w of this.waiters.splice(0)) w(); }
  send(ev) { this.rt.send(ev); }
  count(type) { return this.events.filter((e) => e.type === type).length; }
  // until waits for an event matching pred (by type, or a function).
  async until(pred, what, timeoutMs = 10000) {
    const match = typeof pred === 'string' ? (e) => e.type === pred : pred;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const found = this.events.find(match);
      if (found) return found;
      if (this.closed !== null) throw new Error(`closed (${this.closed}) while waiting for ${what || pred}`);
      if (Date.now() > deadline) throw new Error(`no ${what || pred} within ${timeoutMs} ms`);
      await new Promise((resolve) => { this.waiters.push(resolve); setTimeout(resolve, 50); });
    }
  }
  // untilNth waits for the n-th event of a type.
  async untilNth(type, n, timeoutMs) {
    let seen = 0;
    return this.until((e) => e.type === type && ++seen === n, `${type} #${n}`, timeoutMs);
  }
  appendAudio(pcm) {
    // 100 ms appends, as a microphone sends them.
    for (let off = 0; off < pcm.length; off += RATE / 10 * 2) {
      this.send({ type: 'input_audio_buffer.append', audio: pcm.subarray(off, off + RATE / 10 * 2).toString('base64') });
    }
  }
  types() {
    // Runs of audio deltas collapse to one entry with a count.
    const out = [];
    for (const e of this.events) {
      const last = out[out.length - 1];
      if (e.type.endsWith('.delta') && last && last.type === e.type) last.n++;
      else out.push({ type: e.type, n: 1 });
    }
    return out.map((t) => (t.n > 1 ? `${t.type}×${t.n}` : t.type));
  }
  close() { this.rt.close(); }
}

// What a response's event set must be, in the GA API's order.
const RESPONSE_EVENTS = [
  'response.created', 'response.output_item.added', 'conversation.item.added', 'response.content_part.added',
  'response.output_audio.done', 'response.output_audio_transcript.delta', 'response.output_audio_transcript.done',
  'response.content_part.done', 'response.output_item.done', 'conversation.item.done', 'response.done',
];

function assert(cond, message) { if (!cond) throw new Error(message); }

function assertSequence(s, want, from = 0) {
  // want must appear in order (audio deltas and other events may interleave).
  const got = s.events.slice(from).map((e) => e.type).filter((t) => t !== 'response.output_audio.delta');
  let i = 0;
  for (const t of got) if (t === want[i]) i++;
  assert(i === want.length, `missing ${want[i]} in order; saw ${got.join(' ')}`);
}

const node = () => new OpenAI({ apiKey, baseURL });

// A Node app: the API key in the Authorization header (openai/realtime/ws).
async function nodeSession() {
  const rt = await OpenAIRealtimeWS.create(node(), { model: MODEL });
  const s = new Session(rt);
  await s.until('session.created');
  return s;
}

// A browser app: its backend mints a client secret, the page opens the
// socket with it as the SDK does in a browser (native WebSocket, the
// subprotocols realtime and openai-insecure-api-key.<secret>).
async function browserSession(session = { type: 'realtime', model: MODEL }) {
  const secret = await node().realtime.clientSecrets.create({ expires_after: { anchor: 'created_at', seconds: 120 }, session });
  assert(typeof secret.value === 'string' && secret.value.startsWith('ek_'), `client secret ${String(secret.value).slice(0, 8)}… does not start with ek_`);
  assert(secret.expires_at > Date.now() / 1000, 'expires_at is not in the future');
  assert(secret.session && secret.session.type === 'realtime', 'the answer names no realtime session');
  const page = new OpenAI({ apiKey: secret.value, baseURL, dangerouslyAllowBrowser: false });
  const rt = new OpenAIRealtimeWebSocket({ model: MODEL }, page);
  const s = new Session(rt);
  await s.until('session.created');
  return s;
}

const scenarios = {
  // The API key in Node: session.update is acknowledged.
  async 'node-api-key'() {
    const s = await nodeSession();
    s.send({ type: 'session.update', session: { type: 'realtime', instructions: 'Repeat after me.' } });
    const updated = await s.until('session.updated');
    assert(updated.session.instructions === 'Repeat after me.', 'session.updated lacks the instructions');
    return s;
  },

  // clientSecrets.create, then the browser login with the secret.
  async 'browser-client-secret'() {
    const s = await browserSession();
    const created = s.events[0];
    assert(created.session.model === MODEL, `session.model ${created.session.model}, want ${MODEL}`);
    return s;
  },

  // A long-lived API key where a browser would show it is refused.
  async 'browser-api-key-refused'() {
    const rt = new OpenAIRealtimeWebSocket({ model: MODEL, dangerouslyAllowBrowser: true }, node());
    const s = new Session(rt);
    await new Promise((resolve) => {
      const check = () => (s.closed !== null || s.lastError ? resolve() : setTimeout(check, 50));
      check();
    });
    assert(s.count('session.created') === 0, 'a session opened with an API key in the subprotocol');
    // A browser (and Node's WebSocket) hides the 401; the SDK reports the failed handshake.
    const why = s.lastError && s.lastError.message ? s.lastError.message.replace(/\s+/g, '_') : 'closed';
    s.events.push({ type: `handshake_refused(${why})` });
    return s;
  },

  // Server VAD: speech, then quiet, is one turn answered by itself.
  async 'server-vad-turn'() {
    const s = await browserSession();
    s.send({ type: 'session.update', session: { type: 'realtime', audio: { input: { turn_detection: {
      type: 'server_vad', threshold: 0.5, prefix_padding_ms: 300, silence_duration_ms: 500, create_response: true } } } } });
    await s.until('session.updated');
    s.appendAudio(Buffer.concat([silence(200), tone(600), silence(800)]));
    await s.until('response.done', 'response.done', 10000);
    assertSequence(s, ['input_audio_buffer.speech_started', 'input_audio_buffer.speech_stopped', 'input_audio_buffer.committed',
      'conversation.item.added', 'conversation.item.done', ...RESPONSE_EVENTS]);
    const done = s.events.find((e) => e.type === 'response.done');
    assert(done.response.status === 'completed' && done.response.output.length === 1, 'response.done has no output item');
    assert(s.audio.length > 0, 'no audio came back');
    return s;
  },

  // Manual turns: a commit only commits; response.create answers once.
  async 'manual-turn'() {
    const s = await nodeSession();
    s.send({ type: 'session.update', session: { type: 'realtime', audio: { input: { turn_detection: null } } } });
    await s.until('session.updated');
    const pcm = tone(300);
    s.appendAudio(pcm);
    s.send({ type: 'input_audio_buffer.commit' });
    await s.until('conversation.item.done');
    await new Promise((r) => setTimeout(r, 300));
    assert(s.count('response.created') === 0 && s.count('input_audio_buffer.speech_started') === 0,
      'turn detection is off, yet the commit was answered');
    s.send({ type: 'response.create' });
    await s.until('response.done');
    await new Promise((r) => setTimeout(r, 300));
    assert(s.count('response.done') === 1, `${s.count('response.done')} responses for one response.create`);
    assertSequence(s, ['input_audio_buffer.committed', 'conversation.item.added', 'conversation.item.done', ...RESPONSE_EVENTS]);
    assert(Buffer.concat(s.audio).equals(pcm), 'the echo is not the audio committed');
    return s;
  },

  // response.cancel: refused with nothing active, as OpenAI does; a
  // response in progress ends cancelled.
  async cancel() {
    const s = await nodeSession();
    s.send({ type: 'session.update', session: { type: 'realtime', audio: { input: { turn_detection: null } } } });
    await s.until('session.updated');
    s.send({ type: 'response.cancel' });
    const err = await s.until('error');
    assert(err.error.code === 'response_cancel_not_active', `error ${err.error.code}, want response_cancel_not_active`);
    s.appendAudio(tone(2000));
    s.send({ type: 'input_audio_buffer.commit' });
    s.send({ type: 'response.create' });
    await s.until('response.output_audio.delta');
    s.send({ type: 'response.cancel' });
    const done = await s.until('response.done');
    assert(done.response.status === 'cancelled', `response.done status ${done.response.status}, want cancelled`);
    return s;
  },

  // conversation.item.create: added and done; the next response says it.
  async 'item-create'() {
    const s = await nodeSession();
    s.send({ type: 'session.update', session: { type: 'realtime', audio: { input: { turn_detection: null } } } });
    await s.until('session.updated');
    s.send({ type: 'conversation.item.create', item: { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'Hello, gateway.' }] } });
    const added = await s.until('conversation.item.added');
    await s.until('conversation.item.done');
    assert(added.item.role === 'user' && added.item.content[0].text === 'Hello, gateway.', 'the item added is not the one created');
    s.send({ type: 'response.create' });
    const said = await s.until('response.output_audio_transcript.done');
    assert(said.transcript === 'Hello, gateway.', `transcript ${JSON.stringify(said.transcript)}`);
    await s.until('response.done');
    return s;
  },
};

// The gateway's web client, as a page uses it: clientSecretUrl names the
// app's backend, which mints with the SDK's clientSecrets.create; the client
// logs in with the secret in the subprotocol and talks, committing itself.
scenarios['web-client-secret-url'] = async () => {
  const minted = [];
  const backend = http.createServer(async (req, res) => {
    try {
      const secret = await node().realtime.clientSecrets.create({ session: { type: 'realtime', model: MODEL } });
      minted.push(secret.value);
      res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
      res.end(JSON.stringify(secret));
    } catch (err) {
      res.writeHead(502).end(String(err));
    }
  });
  await new Promise((resolve) => backend.listen(0, '127.0.0.1', resolve));
  const url = new URL(baseURL);
  url.protocol = 'wss:';
  url.pathname += '/realtime';
  const client = new VoiceGatewayClient({
    url: url.toString(), audio: 'base64', commitEveryMs: 200,
    clientSecretUrl: `http://127.0.0.1:${backend.address().port}/session`,
  });
  const events = [];
  let received = 0;
  client.addEventListener('server-event', (e) => events.push(e.detail.event));
  client.addEventListener('audio', (e) => { received += e.detail.pcm.length; });
  const s = { events, types: () => Session.prototype.types.call({ events }), close: () => client.close() };
  try {
    await client.connect();
    const pcm = tone(400);
    for (let off = 0; off < pcm.length; off += 960) {
      client.sendAudio(new Int16Array(pcm.buffer.slice(pcm.byteOffset + off, pcm.byteOffset + Math.min(off + 960, pcm.length))));
    }
    const deadline = Date.now() + 10000;
    while (!events.some((e) => e.type === 'response.done') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    assert(minted.length === 1 && minted[0].startsWith('ek_'), `minted ${minted.length} secrets`);
    assert(events.some((e) => e.type === 'response.done'), 'no response.done');
    assert(received > 0, 'no audio came back');
    assert(!events.some((e) => e.type === 'input_audio_buffer.speech_started'), 'turn detection stayed on although the client commits');
  } finally {
    backend.close();
  }
  return s;
};

let failed = 0;
for (const [name, run] of Object.entries(scenarios)) {
  let s;
  const started = Date.now();
  try {
    s = await Promise.race([
      run(),
      new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out after ${SCENARIO_TIMEOUT_MS} ms`)), SCENARIO_TIMEOUT_MS)),
    ]);
    console.log(`PASS ${name.padEnd(24)} ${Date.now() - started} ms  ${s.types().join(' ')}`);
  } catch (err) {
    failed++;
    console.log(`FAIL ${name.padEnd(24)} ${err && err.message ? err.message : err}`);
  } finally {
    try { if (s) s.close(); } catch { /* closed already */ }
  }
}
console.log(failed ? `${failed} of ${Object.keys(scenarios).length} scenarios failed` : `all ${Object.keys(scenarios).length} scenarios passed (openai ${VERSION})`);
process.exit(failed ? 1 : 0);
