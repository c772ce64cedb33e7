// voicegateway-client.js — a dependency-free ES module that speaks the
// voicegateway protocol (docs/protocol.md) from a browser: it opens a
// session, streams PCM16 audio over the binary fast path (or base64 JSON),
// commits it, hands back output audio and transcripts, reports errors with
// their codes, and moves to another server by itself when its server drains.
// Copy it into your app; docs/web-client.md describes its API.
//
// It does no audio I/O of its own (see voicegateway-audio.js for a
// microphone and a player): audio in and out is Int16Array PCM at the
// session's sample rate, which the 'session' event reports.
//
// Every timer and socket it creates is held by the client and released by
// close(); nothing it starts outlives it.

/** WebSocket close codes the gateway uses (docs/protocol.md). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  ABNORMAL: 1006, // no close frame: network failure or refused handshake
  POLICY: 1008,
  TOO_BIG: 1009,
  INTERNAL: 1011,
  SERVICE_RESTART: 1012,
  TRY_AGAIN_LATER: 1013,
});

// Close codes after which the client connects again (to the same URL, which
// routes to a ready server). Others end the client with an error.
const RECONNECT_CODES = new Set([CloseCode.GOING_AWAY, CloseCode.ABNORMAL, CloseCode.SERVICE_RESTART, CloseCode.TRY_AGAIN_LATER]);

// Handshake refusals (HTTP status of a refused upgrade) worth retrying.
const RETRY_CODES = new Set(['server_draining', 'session_limit', 'rate_limited', 'network']);

// OpenAI's browser login: the ephemeral key (a client secret, ek_…) rides in
// this subprotocol next to 'realtime', as the official SDKs send it.
const TOKEN_SUBPROTOCOL_PREFIX = 'openai-insecure-api-key.';
const PROTOCOL_NAME = 'realtime';
const MAX_BUFFERED_BYTES = 1 << 20; // audio is dropped (and counted) rather than queued beyond this
const MAX_HELD_SAMPLES_SECONDS = 10; // new server's audio held while the old one finishes its turn

const DEFAULTS = Object.freeze({
  url: '',
  token: null,
  clientSecretUrl: '',
  audio: 'binary',
  commitEveryMs: 'auto',
  reconnect: Object.freeze({ baseDelayMs: 250, maxDelayMs: 10000, maxAttempts: Infinity }),
  drainJitterMs: 500,
  finishTurnTimeoutMs: 3000,
  diagnoseRefusals: true,
  WebSocket: null,
  fetch: null,
});

/**
 * A voice session with a voicegateway, kept alive across server drains.
 *
 * Events (CustomEvent, data in `detail`): state, session, audio, transcript,
 * server-event, error, draining, moved, resumed, reconnecting, close. After a
 * drain the next session presents the notice's resume handle, and `resumed`
 * ({sessionId, restored, dropped}) says the conversation went on there.
 */
export class VoiceGatewayClient extends EventTarget {
  #opts;
  #state = 'idle';
  #conn = null; // the connection audio goes to
  #leaving = null; // the previous connection, finishing its turn after a move
  #connecting = null; // a connection being opened (first, reconnect or move)
  #timers = new Set();
  #closed = false;
  #moveScheduled = false;
  // The resume handle of the last gateway.draining: presented (?resume=)
  // by the next connection so that the conversation goes on there. A bearer
  // secret of the conversation: kept in memory only, never logged.
  #resumeHandle = null;
  #recovering = false; // a move or reconnect is opening the next session
  #held = []; // output audio of the new connection, held while #leaving still speaks
  #heldSamples = 0;
  #droppedSamples = 0;

  /**
   * @param {object} options
   * @param {string} [options.url] WebSocket URL of /v1/realtime; default: the page's own origin.
   * @param {string|(() => (string|Promise<string>))|null} [options.token] a client token, or a
   *   function returning one (called for every connection, so it can mint a fresh token).
   * @param {string} [options.clientSecretUrl] your backend's endpoint that mints a client secret:
   *   POSTed {"session":{"type":"realtime"}} before every connection, it answers as
   *   POST /v1/realtime/client_secrets does ({value, expires_at, session}), usually by calling it
   *   with your API key. The OpenAI login flow; takes the place of options.token.
   * @param {'binary'|'base64'} [options.audio] audio transport; default binary.
   * @param {number|'auto'} [options.commitEveryMs] commit the input buffer after this much audio
   *   (the client then turns the server's turn detection off and asks for each response itself);
   *   0 never (commit() yourself); 'auto' 500 ms unless the session has server-side turn detection,
   *   which then decides when a turn ends.
   */
  constructor(options = {}) {
    super();
    this.#opts = { ...DEFAULTS, ...options, reconnect: { ...DEFAULTS.reconnect, ...(options.reconnect || {}) } };
    if (!this.#opts.WebSocket) this.#opts.WebSocket = globalThis.WebSocket;
    if (!this.#opts.fetch && globalThis.fetch) this.#opts.fetch = globalThis.fetch.bind(globalThis);
    if (!this.#opts.url) {
      if (!globalThis.location) throw new Error('VoiceGatewayClient: options.url is required outside a page');
      const u = new URL('/v1/realtime', globalThis.location.href);
      u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
      this.#opts.url = u.toString();
    }
    if (this.#opts.audio !== 'binary' && this.#opts.audio !== 'base64') {
      throw new Error("VoiceGatewayClient: options.audio must be 'binary' or 'base64'");
    }
  }

  /** idle, connecting, open, draining, reconnecting or closed. */
  get state() { return this.#state; }
  /** The current session's id (changes when the client moves). */
  get sessionId() { return this.#conn ? this.#conn.sessionId : ''; }
  /** PCM sample rate of the current session, 0 before the first session. */
  get sampleRate() { return this.#conn ? this.#conn.sampleRate : 0; }
  /** Samples dropped because the socket could not keep up. */
  get droppedSamples() { return this.#droppedSamples; }

  /**
   * Opens the first session. Resolves when it is created; rejects with an
   * Error carrying `code` when the gateway refuses for good (unauthorized…).
   */
  async connect() {
    if (this.#state !== 'idle') throw new Error('VoiceGatewayClient: connect() may be called once');
    this.#setState('connecting');
    const conn = await this.#establish('connect');
    if (!conn) {
      if (this.#lastFatal) throw this.#lastFatal;
      const err = new Error('client closed');
      err.code = 'closed';
      throw err;
    }
    this.#adopt(conn);
  }

  /** Sends PCM16 mono audio (Int16Array at sampleRate); commits per commitEveryMs. */
  sendAudio(pcm) {
    const c = this.#conn;
    if (!c || !c.created || pcm.length === 0) return false;
    if (c.ws.bufferedAmount > MAX_BUFFERED_BYTES) {
      this.#droppedSamples += pcm.length;
      return false;
    }
    if (c.transport === 'binary') {
      c.ws.send(pcm);
    } else {
      c.send({ type: 'input_audio_buffer.append', audio: pcm16ToBase64(pcm) });
    }
    c.uncommitted += pcm.length;
    const every = this.#commitEverySamples(c);
    if (every > 0 && c.uncommitted >= every) this.commit();
    return true;
  }

  /** Commits the audio sent since the last commit (no-op when there is none). */
  commit() {
    const c = this.#conn;
    if (c && c.created) c.commit();
  }

  /** Sends any client event (session.update, response.create, …) on the current session. */
  send(event) {
    const c = this.#conn;
    if (!c || !c.created) throw new Error('VoiceGatewayClient: no open session');
    c.send(event);
  }

  /** Ends the session with 1000 and stops every timer; the client cannot be reused. */
  close() {
    this.#endWith(CloseCode.NORMAL, 'client closed');
  }

  // --- connection management -------------------------------------------

  #lastFatal = null;

  // #establish opens connections until one has a session, retrying with
  // jittered exponential backoff. It returns null when the client was
  // closed or the gateway refused for good (then it has emitted the error).
  async #establish(reason) {
    const { baseDelayMs, maxDelayMs, maxAttempts } = this.#opts.reconnect;
    let renewedToken = false;
    for (let attempt = 0; !this.#closed; attempt++) {
      if (attempt > 0) {
        if (attempt > maxAttempts) {
          this.#fatal('network', 'gave up connecting after ' + maxAttempts + ' attempts');
          return null;
        }
        const ceiling = Math.min(maxDelayMs, baseDelayMs * 2 ** (attempt - 1));
        let delayMs = ceiling / 2 + Math.random() * ceiling / 2;
        if (this.#retryAfterMs > delayMs) delayMs = this.#retryAfterMs;
        this.#retryAfterMs = 0;
        this.#emit('reconnecting', { attempt, delayMs: Math.round(delayMs), reason });
        if (!(await this.#sleep(delayMs))) return null;
      }
      const result = await this.#open();
      if (result.conn) return result.conn;
      if (this.#closed) return null;
      // A token from a function may have expired in the app's hands: one
      // more try with a fresh one.
      const renew = result.code === 'unauthorized' && (typeof this.#opts.token === 'function' || this.#opts.clientSecretUrl) && !renewedToken;
      if (renew) renewedToken = true;
      if (!renew && !RETRY_CODES.has(result.code)) {
        this.#fatal(result.code, result.message, result.closeCode);
        return null;
      }
      this.#emit('error', { code: result.code, message: result.message, fatal: false, closeCode: result.closeCode });
      reason = result.code;
    }
    return null;
  }

  #retryAfterMs = 0;

  // #open makes one connection attempt and resolves with {conn} once the
  // session is created, or with {code, message} when it fails.
  async #open() {
    let token = this.#opts.token;
    try {
      if (this.#opts.clientSecretUrl) token = await this.#mintClientSecret();
      else if (typeof token === 'function') token = await token();
    } catch (err) {
      return { code: 'unauthorized', message: 'could not get a client token: ' + (err && err.message ? err.message : err) };
    }
    if (this.#closed) return { code: 'closed', message: 'client closed' };
    const url = new URL(this.#opts.url);
    if (this.#opts.audio === 'binary') url.searchParams.set('audio', 'binary');
    if (this.#resumeHandle) url.searchParams.set('resume', this.#resumeHandle);
    const protocols = token ? [PROTOCOL_NAME, TOKEN_SUBPROTOCOL_PREFIX + token] : [];
    let ws;
    try {
      ws = new this.#opts.WebSocket(url.toString(), protocols);
    } catch (err) {
      return { code: 'invalid_url', message: String(err && err.message ? err.message : err) };
    }
    const conn = new Connection(ws, this);
    this.#connecting = conn;
    const outcome = await conn.ready;
    if (this.#connecting === conn) this.#connecting = null;
    if (outcome.ok) return { conn };
    if (!outcome.opened && this.#opts.diagnoseRefusals && this.#opts.fetch && !this.#closed) {
      return await this.#diagnose(url, token, outcome);
    }
    return { code: outcome.code || 'network', message: outcome.message || 'connection failed', closeCode: outcome.closeCode };
  }

  // #mintClientSecret asks the app's backend for a client secret, in the
  // shapes of OpenAI's POST /v1/realtime/client_secrets (and of its beta,
  // {client_secret: {value}}).
  async #mintClientSecret() {
    if (!this.#opts.fetch) throw new Error('no fetch() to reach options.clientSecretUrl');
    const resp = await this.#opts.fetch(this.#opts.clientSecretUrl, {
      method: 'POST', headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ session: { type: 'realtime' } }),
    });
    if (!resp.ok) throw new Error('the client secret endpoint answered HTTP ' + resp.status);
    const body = await resp.json();
    const value = body && (body.value || (body.client_secret && body.client_secret.value));
    if (typeof value !== 'string' || !value) throw new Error('the client secret endpoint answered no value');
    return value;
  }

  // A browser hides why a WebSocket handshake failed (it reports only
  // 1006). The gateway checks credentials and draining before it looks at
  // the upgrade, so the same request without the upgrade tells why: its
  // JSON error body, or 426 when the upgrade itself would have passed.
  async #diagnose(wsURL, token, outcome) {
    const u = new URL(wsURL);
    u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
    const headers = token ? { Authorization: 'Bearer ' + token } : {};
    try {
      const resp = await this.#opts.fetch(u.toString(), { headers, cache: 'no-store', credentials: 'omit' });
      let body = null;
      try { body = await resp.json(); } catch { /* not JSON */ }
      const err = body && body.error;
      if (err && err.code) {
        const retryAfter = Number(resp.headers.get('Retry-After'));
        if (retryAfter > 0) this.#retryAfterMs = retryAfter * 1000;
        return { code: err.code, message: err.message || '', status: resp.status, closeCode: outcome.closeCode };
      }
    } catch { /* unreachable or cross-origin without CORS: say what we know */ }
    return { code: 'network', message: 'could not open a WebSocket to ' + wsURL.host, closeCode: outcome.closeCode };
  }

  #adopt(conn) {
    if (this.#closed) { conn.close(CloseCode.NORMAL, 'client closed'); return; }
    this.#conn = conn;
    this.#moveScheduled = false;
    this.#setState('open');
    this.#emit('session', {
      sessionId: conn.sessionId, sampleRate: conn.sampleRate, audioTransport: conn.transport,
      session: conn.session, previousSessionId: null,
    });
  }

  // Called by a Connection when its socket closes after its session began.
  _connectionClosed(conn, code, reason) {
    if (this.#closed) return;
    if (conn === this.#leaving) {
      this.#leaving = null;
      this.#flushHeld();
      return;
    }
    if (conn !== this.#conn) return;
    this.#conn = null;
    if (code === CloseCode.NORMAL) {
      this.#endWith(code, reason);
      return;
    }
    if (!RECONNECT_CODES.has(code)) {
      this.#fatal(reason || 'closed', 'session closed by the server (' + code + (reason ? ' ' + reason : '') + ')', code);
      return;
    }
    this.#setState('reconnecting');
    // A move already under way becomes the next session.
    if (!this.#recovering) this.#reconnect(reason || 'closed ' + code, conn.sessionId);
  }

  async #reconnect(reason, previousSessionId) {
    this.#recovering = true;
    try {
      const conn = await this.#establishAfterFirstDelay(reason);
      if (conn) this.#adoptMoved(conn, previousSessionId, null);
    } finally {
      this.#recovering = false;
    }
  }

  // A reconnect after a drop waits one backoff step before the first attempt.
  async #establishAfterFirstDelay(reason) {
    const { baseDelayMs } = this.#opts.reconnect;
    const delayMs = baseDelayMs / 2 + Math.random() * baseDelayMs / 2;
    this.#emit('reconnecting', { attempt: 0, delayMs: Math.round(delayMs), reason });
    if (!(await this.#sleep(delayMs))) return null;
    return this.#establish(reason);
  }

  // Called by a Connection on gateway.draining.
  _draining(conn, ev) {
    if (conn !== this.#conn || this.#closed) return;
    const reconnectAfterMs = Math.max(0, Number(ev.reconnect_after_ms) || 0);
    const deadline = ev.deadline ? Date.parse(ev.deadline) : NaN;
    if (typeof ev.resume === 'string' && ev.resume) this.#resumeHandle = ev.resume;
    this.#emit('draining', { sessionId: conn.sessionId, reconnectAfterMs, deadline: ev.deadline || null, reason: ev.reason || 'drain' });
    if (this.#moveScheduled) return;
    this.#moveScheduled = true;
    this.#setState('draining');
    // Every client already gets a different hint; more jitter here keeps
    // clients that read it at the same moment apart. The move must still
    // happen before the deadline, when the server closes the session.
    let delayMs = reconnectAfterMs + Math.random() * this.#opts.drainJitterMs;
    const notAfter = Number.isFinite(deadline) ? deadline - 500 : Infinity;
    if (Date.now() + delayMs > notAfter) delayMs = Math.max(0, notAfter - Date.now());
    this.#move(conn, delayMs, Date.now());
  }

  // #move opens a new session while the old one keeps carrying audio; once
  // the new one exists audio switches to it, and the old one finishes its
  // turn (its last audio is committed and answered) before closing with
  // 1000, so nothing said is lost.
  async #move(old, delayMs, drainingAt) {
    if (!(await this.#sleep(delayMs))) return;
    if (old !== this.#conn || this.#recovering) return; // it closed meanwhile and a reconnect took over
    this.#recovering = true;
    try {
      // If the old session is closed at its deadline meanwhile, this
      // simply goes on as the reconnect.
      const conn = await this.#establish('server draining');
      if (conn) this.#adoptMoved(conn, old.sessionId, drainingAt);
    } finally {
      this.#recovering = false;
    }
  }

  #adoptMoved(conn, previousSessionId, drainingAt) {
    if (this.#closed) { conn.close(CloseCode.NORMAL, 'client closed'); return; }
    const old = this.#conn;
    this.#conn = conn;
    this.#moveScheduled = false;
    // Presented once: the new session has it (resumed, or refused and fresh).
    this.#resumeHandle = null;
    if (old && old !== conn) {
      this.#leaving = old;
      old.commit();
      this.#finishTurn(old);
    }
    this.#setState('open');
    this.#emit('session', {
      sessionId: conn.sessionId, sampleRate: conn.sampleRate, audioTransport: conn.transport,
      session: conn.session, previousSessionId,
    });
    this.#emit('moved', {
      from: previousSessionId, to: conn.sessionId, resumed: conn.resumed,
      afterDrainingMs: drainingAt === null ? null : Date.now() - drainingAt,
    });
  }

  // The old connection is closed with 1000 once it has answered every
  // commit, or after finishTurnTimeoutMs.
  #finishTurn(old) {
    const done = () => {
      this.#clearTimer(timer);
      old.onIdle = null;
      if (this.#leaving === old) this.#leaving = null;
      old.close(CloseCode.NORMAL, 'moved to another server');
      this.#flushHeld();
    };
    const timer = this.#setTimer(done, this.#opts.finishTurnTimeoutMs);
    if (old.awaiting === 0) { done(); return; }
    old.onIdle = done;
  }

  // Output audio of the current session waits while the previous session
  // still plays its last turn, so the two never interleave.
  _audio(conn, pcm) {
    if (this.#closed) return;
    const detail = { pcm, sessionId: conn.sessionId, sampleRate: conn.sampleRate };
    if (conn === this.#leaving || (conn === this.#conn && !this.#leaving)) {
      this.#emit('audio', detail);
      return;
    }
    if (conn !== this.#conn) return;
    this.#held.push(detail);
    this.#heldSamples += pcm.length;
    if (this.#heldSamples > conn.sampleRate * MAX_HELD_SAMPLES_SECONDS) this.#flushHeld();
  }

  #flushHeld() {
    const held = this.#held;
    this.#held = [];
    this.#heldSamples = 0;
    for (const detail of held) this.#emit('audio', detail);
  }

  _event(conn, ev) {
    if (this.#closed) return;
    this.#emit('server-event', { event: ev, sessionId: conn.sessionId });
    switch (ev.type) {
      case 'response.output_audio_transcript.delta':
        this.#emit('transcript', { text: ev.delta || '', final: false, responseId: ev.response_id || '', sessionId: conn.sessionId });
        break;
      case 'response.output_audio_transcript.done':
        this.#emit('transcript', { text: ev.transcript || '', final: true, responseId: ev.response_id || '', sessionId: conn.sessionId });
        break;
      case 'gateway.resumed':
        conn.resumed = { restored: Number(ev.restored) || 0, dropped: Number(ev.dropped) || 0 };
        this.#emit('resumed', { sessionId: conn.sessionId, restored: conn.resumed.restored, dropped: conn.resumed.dropped });
        break;
      case 'error': {
        const e = ev.error || {};
        this.#emit('error', { code: e.code || 'unknown', message: e.message || '', fatal: false, param: e.param || null, sessionId: conn.sessionId });
        break;
      }
    }
  }

  #commitEverySamples(c) {
    let ms = this.#opts.commitEveryMs;
    if (ms === 'auto') ms = c.serverTurnDetection ? 0 : 500;
    return ms > 0 ? Math.round(c.sampleRate * ms / 1000) : 0;
  }

  // _sessionCreated decides who ends turns on a new session: with a commit
  // interval the client does, so the server's turn detection goes off and
  // every commit asks for its response, as an OpenAI app doing
  // push-to-talk does.
  _sessionCreated(c) {
    if (this.#commitEverySamples(c) > 0 && c.serverTurnDetection) {
      c.send({ type: 'session.update', session: { audio: { input: { turn_detection: null } } } });
      c.serverTurnDetection = false;
      c.manualTurns = true;
    }
  }

  #fatal(code, message, closeCode) {
    const err = new Error(message);
    err.code = code;
    this.#lastFatal = err;
    this.#emit('error', { code, message, fatal: true, closeCode: closeCode || null });
    this.#endWith(closeCode || CloseCode.NORMAL, code);
  }

  #endWith(code, reason) {
    if (this.#closed) return;
    this.#closed = true;
    for (const t of this.#timers) { clearTimeout(t.id); t.cancel(); }
    this.#timers.clear();
    for (const c of [this.#connecting, this.#leaving, this.#conn]) if (c) c.close(CloseCode.NORMAL, reason || '');
    this.#connecting = this.#leaving = this.#conn = null;
    this.#held = [];
    this.#setState('closed');
    this.#emit('close', { code, reason: reason || '' });
  }

  // Timers are owned: close() clears every one still pending.
  #setTimer(fn, ms) {
    const t = { id: 0, cancel: () => {} };
    t.id = setTimeout(() => { this.#timers.delete(t); fn(); }, ms);
    this.#timers.add(t);
    return t;
  }

  #clearTimer(t) {
    if (!t) return;
    clearTimeout(t.id);
    this.#timers.delete(t);
  }

  // #sleep resolves true after ms, or false at once if the client closes.
  #sleep(ms) {
    if (this.#closed) return Promise.resolve(false);
    return new Promise((resolve) => {
      const t = this.#setTimer(() => resolve(!this.#closed), ms);
      t.cancel = () => resolve(false);
    });
  }

  #setState(state) {
    if (this.#state === state) return;
    this.#state = state;
    this.#emit('state', { state });
  }

  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

// Connection is one WebSocket and the session on it.
class Connection {
  constructor(ws, client) {
    this.ws = ws;
    this.client = client;
    this.sessionId = '';
    this.sampleRate = 0;
    this.transport = 'base64';
    this.session = null;
    this.serverTurnDetection = false;
    this.manualTurns = false; // turn detection turned off: each commit asks for its response
    this.created = false;
    this.opened = false;
    this.resumed = null; // {restored, dropped} once gateway.resumed came
    this.uncommitted = 0; // samples appended since the last commit
    this.awaiting = 0; // commits not yet answered with response.done or an error
    this.commits = 0;
    this.inFlight = new Set(); // event ids of unanswered commits, to match their errors
    this.onIdle = null;
    ws.binaryType = 'arraybuffer';
    this.ready = new Promise((resolve) => { this.settle = resolve; });
    ws.onopen = () => { this.opened = true; };
    ws.onmessage = (m) => this.#message(m);
    ws.onclose = (ev) => this.#closed(ev);
    ws.onerror = () => {}; // a close event with the code follows
  }

  send(event) {
    if (this.ws.readyState === 1) this.ws.send(JSON.stringify(event));
  }

  commit() {
    if (!this.created || this.uncommitted === 0) return;
    const eventId = 'vgwc_commit_' + ++this.commits;
    this.send({ type: 'input_audio_buffer.commit', event_id: eventId });
    if (this.manualTurns) this.send({ type: 'response.create', event_id: 'vgwc_response_' + this.commits });
    this.uncommitted = 0;
    this.awaiting++;
    this.inFlight.add(eventId);
  }

  close(code, reason) {
    if (!this.created) this.settle({ ok: false, opened: this.opened, code: 'closed', message: 'client closed' });
    if (this.ws.readyState === 0 || this.ws.readyState === 1) {
      try { this.ws.close(code, reason); } catch { this.ws.close(); }
    }
  }

  #message(m) {
    if (typeof m.data !== 'string') {
      if (this.created) this.client._audio(this, bytesToPcm16(m.data));
      return;
    }
    let ev;
    try { ev = JSON.parse(m.data); } catch { return; }
    if (!ev || typeof ev.type !== 'string') return;
    switch (ev.type) {
      case 'session.created': {
        const g = ev.gateway || {};
        const s = ev.session || {};
        const input = (s.audio && s.audio.input) || {};
        this.sessionId = g.session_id || s.id || '';
        this.sampleRate = g.sample_rate || (input.format && input.format.rate) || 24000;
        this.transport = g.audio_transport || 'base64';
        this.session = s;
        this.serverTurnDetection = Boolean(input.turn_detection || s.turn_detection);
        this.created = true;
        this.client._sessionCreated(this);
        this.settle({ ok: true });
        break;
      }
      case 'response.output_audio.delta':
        if (typeof ev.delta === 'string' && this.created) this.client._audio(this, base64ToPcm16(ev.delta));
        break;
      case 'input_audio_buffer.committed':
        // Commits are handled in order; this one will be answered by response.done.
        this.inFlight.delete(this.inFlight.values().next().value);
        break;
      case 'response.done':
        this.#answered();
        break;
      case 'gateway.draining':
        this.client._draining(this, ev);
        break;
      case 'error':
        // A refused commit gets no response.
        if (ev.error && this.inFlight.delete(ev.error.event_id)) this.#answered();
        break;
    }
    if (this.created) this.client._event(this, ev);
  }

  #answered() {
    if (this.awaiting > 0) this.awaiting--;
    if (this.awaiting === 0 && this.onIdle) this.onIdle();
  }

  #closed(ev) {
    if (!this.created) {
      // The reason of a close before session.created is an error code.
      this.settle({ ok: false, opened: this.opened, code: ev.reason || (this.opened ? 'closed' : 'network'), message: ev.reason ? 'refused: ' + ev.reason : 'connection closed before the session started', closeCode: ev.code });
      return;
    }
    if (this.onIdle) this.onIdle();
    this.client._connectionClosed(this, ev.code, ev.reason);
  }
}

// --- PCM helpers, exported for apps ---------------------------------------

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** Float samples in [-1, 1] to PCM16. */
export function floatToPcm16(f32) {
  const out = new Int16Array(f32.length);
  for (let i = 0; i < f32.length; i++) {
    const s = Math.max(-1, Math.min(1, f32[i]));
    out[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
  }
  return out;
}

/** PCM16 to float samples in [-1, 1). */
export function pcm16ToFloat(pcm) {
  const out = new Float32Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) out[i] = pcm[i] / 0x8000;
  return out;
}

/** Root mean square of PCM16 samples, in [0, 1]. */
export function rms(pcm) {
  if (pcm.length === 0) return 0;
  let sum = 0;
  for (let i = 0; i < pcm.length; i++) sum += pcm[i] * pcm[i];
  return Math.sqrt(sum / pcm.length) / 0x8000;
}

/** Little-endian PCM16 bytes (ArrayBuffer or view) to an Int16Array. */
export function bytesToPcm16(data) {
  const bytes = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const n = bytes.length >> 1;
  if (LITTLE_ENDIAN && bytes.byteOffset % 2 === 0) return new Int16Array(bytes.buffer, bytes.byteOffset, n);
  const out = new Int16Array(n);
  const view = new DataView(bytes.buffer, bytes.byteOffset, n * 2);
  for (let i = 0; i < n; i++) out[i] = view.getInt16(i * 2, true);
  return out;
}

/** PCM16 to base64 of its little-endian bytes (the JSON audio transport). */
export function pcm16ToBase64(pcm) {
  let bytes = new Uint8Array(pcm.buffer, pcm.byteOffset, pcm.byteLength);
  if (!LITTLE_ENDIAN) {
    bytes = new Uint8Array(pcm.length * 2);
    const view = new DataView(bytes.buffer);
    for (let i = 0; i < pcm.length; i++) view.setInt16(i * 2, pcm[i], true);
  }
  let s = '';
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/** base64 of little-endian PCM16 bytes to an Int16Array. */
export function base64ToPcm16(b64) {
  const s = atob(b64);
  const bytes = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) bytes[i] = s.charCodeAt(i);
  return bytesToPcm16(bytes.buffer);
}
