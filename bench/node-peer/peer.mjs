// A bare Node.js WebSocket echo: the reference `make bench-compare` runs the
// same vgload load against, beside the voice server's echo backend. It speaks
// exactly as much of the voice server's protocol as `vgload relay` and
// `vgload idle` use with ?audio=binary, and nothing else: no auth, no
// metrics, no limits, no events beyond session.created.
//
//   node peer.mjs [--listen 127.0.0.1:0]
//
// Once listening it writes one JSON line to stderr,
// {"msg":"listening","public":"127.0.0.1:PORT"}, the line the voice server
// logs, so that the same runner (internal/childproc) starts both.
//
// Per connection: session.created at once; binary messages are a turn's
// audio; on input_audio_buffer.commit the turn is played back as 20 ms
// binary chunks paced at 20 ms. Turns play one after another to a schedule,
// as the echo backend plays them (server/backend/echo/speak.go): a turn
// starts when it is committed or when the one before it ends, whichever is
// later, and a late timer sends every chunk that is due at once. The echo's
// speaker takes the next turn as soon as it has sent the last chunk of the
// one before, so "ends" is when that last chunk is due, and vgload expects
// the next turn's first chunk then; a peer that waited 20 ms more would
// show every queued turn 20 ms late.
import { WebSocketServer } from 'ws';

const SAMPLE_RATE = 24000;
const CHUNK_MS = 20;
const CHUNK_BYTES = (SAMPLE_RATE * 2 * CHUNK_MS) / 1000; // 960

const sessionCreated = JSON.stringify({
  type: 'session.created',
  gateway: { audio_transport: 'binary', sample_rate: SAMPLE_RATE },
});

function listenAddress(argv) {
  const i = argv.indexOf('--listen');
  const addr = i >= 0 ? argv[i + 1] : '127.0.0.1:0';
  const colon = addr.lastIndexOf(':');
  return { host: addr.slice(0, colon), port: Number(addr.slice(colon + 1)) };
}

class Session {
  constructor(ws) {
    this.ws = ws;
    this.input = []; // the current turn's audio, message by message
    this.turns = []; // committed turns still playing: { audio, start, offset }
    this.lastChunkDue = 0; // when the last queued turn's last chunk is due (performance.now())
    this.timer = null;
  }

  commit() {
    const audio = Buffer.concat(this.input);
    this.input = [];
    if (audio.length === 0) return;
    const start = Math.max(performance.now(), this.lastChunkDue);
    this.lastChunkDue = start + (Math.ceil(audio.length / CHUNK_BYTES) - 1) * CHUNK_MS;
    this.turns.push({ audio, start, offset: 0 });
    if (this.timer === null) this.play();
  }

  // play sends every chunk that is due, then sleeps until the next one.
  play() {
    this.timer = null;
    const now = performance.now();
    while (this.turns.length > 0) {
      const turn = this.turns[0];
      while (turn.offset < turn.audio.length) {
        const due = turn.start + (turn.offset / CHUNK_BYTES) * CHUNK_MS;
        if (due > now) {
          this.timer = setTimeout(() => this.play(), due - now);
          return;
        }
        const end = Math.min(turn.offset + CHUNK_BYTES, turn.audio.length);
        this.ws.send(turn.audio.subarray(turn.offset, end), { binary: true });
        turn.offset = end;
      }
      this.turns.shift();
    }
  }

  close() {
    clearTimeout(this.timer);
    this.timer = null;
    this.turns = [];
    this.input = [];
  }
}

const { host, port } = listenAddress(process.argv.slice(2));
const server = new WebSocketServer({ host, port, perMessageDeflate: false });

server.on('connection', (ws) => {
  const session = new Session(ws);
  ws.on('message', (data, isBinary) => {
    if (isBinary) {
      session.input.push(data);
      return;
    }
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    if (event.type === 'input_audio_buffer.commit') session.commit();
  });
  ws.on('close', () => session.close());
  ws.on('error', () => session.close());
  ws.send(sessionCreated);
});

server.on('listening', () => {
  const { address, port: bound } = server.address();
  process.stderr.write(JSON.stringify({ msg: 'listening', public: `${address}:${bound}` }) + '\n');
});

// SIGTERM (how the harness stops a child) ends the process at once.
process.on('SIGTERM', () => process.exit(0));
