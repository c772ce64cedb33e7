// app.js — the demo page: wires the microphone and speaker
// (voicegateway-audio.js) to a gateway session (voicegateway-client.js)
// and shows what happens. window.__vgw holds counters that tests read.

import { VoiceGatewayClient } from './voicegateway-client.js';
import { AudioIO } from './voicegateway-audio.js';

const MAX_LOG = 200;
const MAX_TRANSCRIPT = 50;
// Frequent events that would drown the log; they are still counted.
const QUIET_EVENTS = new Set([
  'session.created', 'input_audio_buffer.committed', 'response.created', 'response.done', 'response.output_audio.done',
  'response.output_audio.delta', 'response.output_audio_transcript.delta', 'response.output_audio_transcript.done',
]);

const $ = (id) => document.getElementById(id);
const ui = {
  talk: $('talk'), token: $('token'), processing: $('processing'), banner: $('banner'),
  state: $('state'), session: $('session'), format: $('format'), moves: $('moves'),
  inLevel: $('in-level'), outLevel: $('out-level'), counters: $('counters'),
  transcript: $('transcript'), log: $('log'),
};

// Counters for people and tests alike; plain data so that a test can read
// it with one evaluation.
const stats = {
  state: 'idle',
  sampleRate: 0,
  deviceRate: 0,
  audioState: '',
  chunksCaptured: 0,
  sessionIds: [],
  drainingEvents: 0,
  moves: [],
  // gateway.resumed events: the conversation kept across a move.
  resumes: [],
  errors: [],
  samplesSent: 0,
  samplesReceived: 0,
  rmsSent: 0,
  rmsReceived: 0,
  frequencySent: 0,
  frequencyReceived: 0,
  transcripts: 0,
  lastTranscript: '',
  maxReceiveGapMs: 0,
  underruns: 0,
  playedSamples: 0,
  droppedSamples: 0,
  cspViolations: 0,
  // What the banner shows now ('' when hidden), its kind, and the drain
  // notice's countdown in seconds (null when no drain is under way).
  banner: '',
  bannerKind: '',
  drainCountdown: null,
};
window.__vgw = stats;

// Energy and zero-crossing accumulators behind the rms and frequency figures.
class SignalMeter {
  constructor() { this.samples = 0; this.squares = 0; this.crossings = 0; this.last = 0; }
  add(pcm) {
    let squares = 0;
    let crossings = 0;
    let last = this.last;
    for (let i = 0; i < pcm.length; i++) {
      const s = pcm[i];
      squares += s * s;
      if ((s >= 0) !== (last >= 0)) crossings++;
      last = s;
    }
    this.last = last;
    this.samples += pcm.length;
    this.squares += squares;
    this.crossings += crossings;
  }
  get rms() { return this.samples ? Math.sqrt(this.squares / this.samples) / 0x8000 : 0; }
  frequency(rate) { return this.samples && rate ? this.crossings / 2 / (this.samples / rate) : 0; }
}

let client = null;
let audio = null;
// The drain notice's countdown ticker and the timer that clears the
// "Moved" banner; both are stopped on the next notice, move or hang-up.
let countdownTimer = null;
let bannerTimer = null;
const MOVED_BANNER_MS = 4000;
// What the banner says after a move that kept the conversation (gateway.resumed).
const KEPT_TEXT = 'Reconnected — conversation kept.';
let sent = new SignalMeter();
let received = new SignalMeter();
let lastReceiveAt = 0;

// meterValue maps an RMS level to a meter position on a decibel scale:
// -60 dBFS and below is empty, 0 dBFS is full.
function meterValue(level) {
  return level > 0 ? Math.max(0, 1 + Math.log10(level) / 3) : 0;
}

function log(text, kind = '') {
  const li = document.createElement('li');
  if (kind) li.className = kind;
  const time = document.createElement('time');
  time.textContent = new Date().toLocaleTimeString();
  li.append(time, text);
  ui.log.prepend(li);
  while (ui.log.childElementCount > MAX_LOG) ui.log.lastElementChild.remove();
}

function banner(text, kind) {
  clearTimeout(bannerTimer);
  bannerTimer = null;
  ui.banner.textContent = text;
  ui.banner.className = 'banner ' + (kind || '');
  ui.banner.hidden = !text;
  stats.banner = text;
  stats.bannerKind = text ? (kind || 'notice') : '';
}

function stopCountdown() {
  clearInterval(countdownTimer);
  countdownTimer = null;
  stats.drainCountdown = null;
}

// The drain notice counts down to the server's deadline, when calls still
// on it are closed; the page moves long before unless the move fails.
function startCountdown(deadline) {
  stopCountdown();
  const end = deadline ? Date.parse(deadline) : NaN;
  const show = () => {
    if (Number.isNaN(end)) {
      stats.drainCountdown = null;
      banner('This server is shutting down — moving your call to another one. Keep talking.', '');
      return;
    }
    const left = Math.max(0, Math.ceil((end - Date.now()) / 1000));
    stats.drainCountdown = left;
    banner(`This server is shutting down — moving your call to another one. Keep talking. (${left} s left on this server)`, '');
    if (left === 0) stopCountdown();
  };
  show();
  countdownTimer = setInterval(show, 1000);
}

function setState(state) {
  stats.state = state;
  ui.state.title = state === 'ended' ? 'You hung up.' : '';
  ui.state.textContent = state;
  ui.state.className = 'state ' + state;
}

function showCounters(extra) {
  const rate = stats.sampleRate || 1;
  ui.counters.textContent = `sent ${(stats.samplesSent / rate).toFixed(1)} s · received ${(stats.samplesReceived / rate).toFixed(1)} s` +
    ` · buffered ${Math.round(extra ? extra.bufferedMs : 0)} ms · underruns ${stats.underruns}`;
}

function wireAudio(io) {
  io.addEventListener('audio', (e) => {
    stats.chunksCaptured++;
    ui.inLevel.value = meterValue(e.detail.level);
    if (!client || !client.sendAudio(e.detail.pcm)) return;
    sent.add(e.detail.pcm);
    stats.samplesSent = sent.samples;
    stats.rmsSent = sent.rms;
    stats.frequencySent = sent.frequency(stats.sampleRate);
  });
  io.addEventListener('output', (e) => {
    const d = e.detail;
    ui.outLevel.value = meterValue(d.level);
    stats.underruns = d.underruns;
    stats.playedSamples = d.playedSamples;
    stats.droppedSamples = d.droppedSamples;
    showCounters(d);
  });
}

function wireClient(c) {
  c.addEventListener('state', (e) => {
    // After the user hung up, the client's own close is a normal end.
    if (c !== client && e.detail.state === 'closed') return;
    setState(e.detail.state);
  });
  c.addEventListener('session', (e) => {
    const d = e.detail;
    stats.sessionIds.push(d.sessionId);
    stats.sampleRate = d.sampleRate;
    if (audio) audio.sampleRate = d.sampleRate;
    ui.session.textContent = d.sessionId;
    ui.format.textContent = `PCM16 ${d.sampleRate} Hz, ${d.audioTransport}`;
    log(d.previousSessionId ? `session ${d.sessionId} (was ${d.previousSessionId})` : `session ${d.sessionId} created`, 'ok');
  });
  c.addEventListener('audio', (e) => {
    const now = performance.now();
    if (lastReceiveAt) stats.maxReceiveGapMs = Math.max(stats.maxReceiveGapMs, Math.round(now - lastReceiveAt));
    lastReceiveAt = now;
    received.add(e.detail.pcm);
    stats.samplesReceived = received.samples;
    stats.rmsReceived = received.rms;
    stats.frequencyReceived = received.frequency(stats.sampleRate);
    if (audio) audio.play(e.detail.pcm, e.detail.sampleRate);
  });
  c.addEventListener('transcript', (e) => {
    if (!e.detail.final) return;
    stats.transcripts++;
    stats.lastTranscript = e.detail.text;
    const li = document.createElement('li');
    li.textContent = e.detail.text;
    ui.transcript.prepend(li);
    while (ui.transcript.childElementCount > MAX_TRANSCRIPT) ui.transcript.lastElementChild.remove();
  });
  c.addEventListener('server-event', (e) => {
    const type = e.detail.event.type;
    if (!QUIET_EVENTS.has(type) && type !== 'error' && type !== 'gateway.draining') log(type);
  });
  c.addEventListener('draining', (e) => {
    stats.drainingEvents++;
    const d = e.detail;
    log(`gateway.draining: this server is shutting down; moving in ~${d.reconnectAfterMs} ms (deadline ${d.deadline})`, 'warn');
    startCountdown(d.deadline);
  });
  c.addEventListener('resumed', (e) => {
    const d = e.detail;
    stats.resumes.push(d);
    log(`gateway.resumed: reconnected — conversation kept (${d.restored} items restored, ${d.dropped} dropped)`, 'ok');
    if (stats.banner.startsWith('Moved')) {
      banner(KEPT_TEXT + ' Keep talking.', 'moved');
      bannerTimer = setTimeout(() => banner('', ''), MOVED_BANNER_MS);
    }
  });
  c.addEventListener('moved', (e) => {
    const d = e.detail;
    stats.moves.push(d);
    ui.moves.textContent = String(stats.moves.length);
    const text = d.resumed ? KEPT_TEXT : `Moved to a new server (session id ${d.to}).`;
    log(text + (d.afterDrainingMs !== null ? ` ${d.afterDrainingMs} ms after the notice.` : ''), 'ok');
    stopCountdown();
    banner(text + ' Keep talking.', 'moved');
    // The move is done: the notice goes after a moment.
    bannerTimer = setTimeout(() => banner('', ''), MOVED_BANNER_MS);
  });
  c.addEventListener('reconnecting', (e) => {
    log(`reconnecting in ${e.detail.delayMs} ms (${e.detail.reason})`, 'warn');
  });
  c.addEventListener('error', (e) => {
    const d = e.detail;
    stats.errors.push({ code: d.code, message: d.message, fatal: d.fatal });
    if (stats.errors.length > MAX_LOG) stats.errors.shift();
    log(`error ${d.code}: ${d.message}`, 'error');
    if (!d.fatal) return;
    stopCountdown();
    const hint = d.code === 'unauthorized'
      ? (ui.token.value.trim() ? ' Mint a new client secret and paste it above.' : ' This gateway has authentication on: paste a client secret (ek_…) above.')
      : '';
    banner(`Stopped — ${d.code}: ${d.message}.${hint}`, 'error');
  });
  c.addEventListener('close', () => { if (client === c) stop(); });
}

async function start() {
  ui.talk.disabled = true;
  banner('', '');
  sent = new SignalMeter();
  received = new SignalMeter();
  lastReceiveAt = 0;
  try {
    audio = await AudioIO.start({ voiceProcessing: ui.processing.checked });
    stats.deviceRate = audio.deviceRate;
    stats.audioState = audio.state;
    wireAudio(audio);
    const token = ui.token.value.trim();
    // The OpenAI login flow: a client secret (ek_…) minted by the app's
    // backend with POST /v1/realtime/client_secrets, pasted or handed in
    // the fragment, or fetched for every connection from a same-origin
    // endpoint named by ?client_secret_url=/path (the page may connect to
    // its own origin only). The page commits every 500 ms and asks for each
    // echo itself: you hear yourself half a second later.
    const secretPath = new URLSearchParams(location.search).get('client_secret_url') || '';
    const clientSecretUrl = secretPath.startsWith('/') && !secretPath.startsWith('//') ? secretPath : '';
    client = new VoiceGatewayClient({ token: token || null, clientSecretUrl, commitEveryMs: 500 });
    wireClient(client);
    ui.talk.textContent = 'Hang up';
    ui.talk.classList.add('stop');
    ui.talk.disabled = false;
    await client.connect();
  } catch (err) {
    const code = err && err.code ? err.code : (err && err.name) || 'error';
    // A refusal was shown by the client's error event; a hang-up is no error.
    if (!err || !err.code) {
      stats.errors.push({ code, message: String(err && err.message ? err.message : err), fatal: true });
      log(`${code}: ${err && err.message ? err.message : err}`, 'error');
      banner(`Could not start — ${code}: ${err && err.message ? err.message : err}`, 'error');
    }
    await stop();
  }
}

// stop ends the call; hungUp says the user pressed the button, which is a
// normal end, not a failure.
async function stop(hungUp = false) {
  const c = client;
  const io = audio;
  client = null;
  audio = null;
  stopCountdown();
  if (hungUp && c) {
    setState('ended');
    banner('Call ended. Press Start talking for a new one.', 'ended');
  }
  if (c) c.close();
  if (io) await io.stop();
  ui.talk.textContent = 'Start talking';
  ui.talk.classList.remove('stop');
  ui.talk.disabled = false;
  ui.inLevel.value = 0;
  ui.outLevel.value = 0;
}

// A token may arrive in the fragment (#token=…), which the browser never
// sends to a server; it is taken out of the address bar at once.
function takeTokenFromFragment() {
  const params = new URLSearchParams(location.hash.slice(1));
  const token = params.get('token');
  if (!token) return;
  ui.token.value = token;
  history.replaceState(null, '', location.pathname + location.search);
}

document.addEventListener('securitypolicyviolation', (e) => {
  stats.cspViolations++;
  log(`content security policy blocked ${e.blockedURI || 'inline code'} (${e.violatedDirective})`, 'error');
});

takeTokenFromFragment();
window.addEventListener('hashchange', takeTokenFromFragment);
if (new URLSearchParams(location.search).get('processing') === 'off') ui.processing.checked = false;
ui.talk.addEventListener('click', () => (client ? stop(true) : start()));
ui.talk.disabled = false;
