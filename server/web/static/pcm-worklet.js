// pcm-worklet.js — AudioWorklet processors for voicegateway-audio.js.
//
// vgw-capture: microphone (the AudioContext's rate, float) → PCM16 mono
//   chunks at the session's rate, posted to the main thread.
// vgw-playback: PCM16 chunks at the session's rate → the AudioContext's
//   rate, through a jitter buffer so that audio arriving in bursts plays
//   without gaps.
//
// Both resample linearly; capture first low-passes below the new Nyquist
// frequency, so that downsampling (48 kHz → 24 kHz) does not alias.

/* global sampleRate, registerProcessor, AudioWorkletProcessor */

// Resampler converts a continuous stream from one rate to another by
// linear interpolation, carrying its position across blocks.
class Resampler {
  constructor(from, to) {
    this.set(from, to);
  }

  set(from, to) {
    this.step = from / to;
    this.pos = 0; // position of the next output sample; -1 ≤ pos < 0 interpolates from prev
    this.prev = 0;
  }

  // process calls emit(sample) for each output sample that input yields.
  process(input, emit) {
    const n = input.length;
    if (n === 0) return;
    let t = this.pos;
    while (t <= n - 1) {
      const i = Math.floor(t);
      const frac = t - i;
      const a = i < 0 ? this.prev : input[i];
      const b = i + 1 < n ? input[i + 1] : a;
      emit(a + (b - a) * frac);
      t += this.step;
    }
    this.pos = t - n;
    this.prev = input[n - 1];
  }
}

// LowPass is a biquad low-pass (RBJ cookbook, Q = 1/√2).
class LowPass {
  constructor(cutoff, rate) {
    const w = 2 * Math.PI * Math.min(cutoff, rate * 0.49) / rate;
    const alpha = Math.sin(w) / Math.SQRT2;
    const cos = Math.cos(w);
    const a0 = 1 + alpha;
    this.b0 = (1 - cos) / 2 / a0;
    this.b1 = (1 - cos) / a0;
    this.b2 = this.b0;
    this.a1 = -2 * cos / a0;
    this.a2 = (1 - alpha) / a0;
    this.x1 = this.x2 = this.y1 = this.y2 = 0;
  }

  process(input, out) {
    for (let i = 0; i < input.length; i++) {
      const x = input[i];
      const y = this.b0 * x + this.b1 * this.x1 + this.b2 * this.x2 - this.a1 * this.y1 - this.a2 * this.y2;
      this.x2 = this.x1; this.x1 = x;
      this.y2 = this.y1; this.y1 = y;
      out[i] = y;
    }
  }
}

function toPcm16(s) {
  s = Math.max(-1, Math.min(1, s));
  return s < 0 ? s * 0x8000 : s * 0x7fff;
}

class CaptureProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.chunkMs = o.chunkMs || 20;
    this.enabled = true;
    this.configure(o.targetRate || sampleRate);
    this.port.onmessage = (e) => {
      if (e.data.targetRate) this.configure(e.data.targetRate);
      if (typeof e.data.enabled === 'boolean') this.enabled = e.data.enabled;
    };
  }

  configure(targetRate) {
    this.targetRate = targetRate;
    this.resampler = new Resampler(sampleRate, targetRate);
    this.filter = targetRate < sampleRate ? new LowPass(targetRate * 0.45, sampleRate) : null;
    this.filtered = new Float32Array(128);
    this.chunk = new Int16Array(Math.round(targetRate * this.chunkMs / 1000));
    this.filled = 0;
    this.sumSquares = 0;
  }

  process(inputs) {
    const input = inputs[0] && inputs[0][0];
    if (!input || !this.enabled) return true;
    let samples = input;
    if (this.filter) {
      if (this.filtered.length < input.length) this.filtered = new Float32Array(input.length);
      samples = this.filtered.subarray(0, input.length);
      this.filter.process(input, samples);
    }
    this.resampler.process(samples, (s) => {
      const v = toPcm16(s);
      this.chunk[this.filled++] = v;
      this.sumSquares += v * v;
      if (this.filled === this.chunk.length) {
        const level = Math.sqrt(this.sumSquares / this.filled) / 0x8000;
        const pcm = this.chunk;
        // A new chunk first: transferring detaches pcm, whose length reads 0 after.
        this.chunk = new Int16Array(pcm.length);
        this.port.postMessage({ pcm, level }, [pcm.buffer]);
        this.filled = 0;
        this.sumSquares = 0;
      }
    });
    return true;
  }
}

// The playback buffer holds at most this much audio; beyond it the oldest
// is dropped (and counted) rather than letting latency grow without bound.
const MAX_BUFFER_SECONDS = 5;

class PlaybackProcessor extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const o = (options && options.processorOptions) || {};
    this.prebuffer = Math.round(sampleRate * (o.prebufferMs || 80) / 1000);
    this.ring = new Float32Array(sampleRate * MAX_BUFFER_SECONDS);
    this.read = 0;
    this.size = 0;
    this.playing = false;
    this.underruns = 0;
    this.droppedSamples = 0;
    this.playedSamples = 0;
    this.sourceRate = 0;
    this.resampler = null;
    this.reportEvery = Math.round(sampleRate / 20); // 50 ms
    this.sinceReport = 0;
    this.levelSquares = 0;
    this.levelCount = 0;
    this.port.onmessage = (e) => {
      if (e.data.clear) { this.size = 0; this.playing = false; return; }
      if (e.data.pcm) this.push(e.data.pcm, e.data.rate);
    };
  }

  push(pcm, rate) {
    if (rate !== this.sourceRate) {
      this.sourceRate = rate;
      this.resampler = new Resampler(rate, sampleRate);
    }
    const cap = this.ring.length;
    const f = new Float32Array(pcm.length);
    for (let i = 0; i < pcm.length; i++) f[i] = pcm[i] / 0x8000;
    this.resampler.process(f, (s) => {
      if (this.size === cap) {
        this.read = (this.read + 1) % cap;
        this.size--;
        this.droppedSamples++;
      }
      this.ring[(this.read + this.size) % cap] = s;
      this.size++;
    });
  }

  process(_inputs, outputs) {
    const out = outputs[0][0];
    const cap = this.ring.length;
    if (!this.playing && this.size >= this.prebuffer) this.playing = true;
    for (let i = 0; i < out.length; i++) {
      if (this.playing && this.size > 0) {
        const s = this.ring[this.read];
        out[i] = s;
        this.read = (this.read + 1) % cap;
        this.size--;
        this.playedSamples++;
        this.levelSquares += s * s;
      } else {
        if (this.playing) {
          // Ran dry mid-stream: wait for the buffer to refill before
          // playing again, rather than stuttering sample by sample.
          this.playing = false;
          this.underruns++;
        }
        out[i] = 0;
      }
      this.levelCount++;
    }
    for (let c = 1; c < outputs[0].length; c++) outputs[0][c].set(out);
    this.sinceReport += out.length;
    if (this.sinceReport >= this.reportEvery) {
      this.port.postMessage({
        level: Math.sqrt(this.levelSquares / Math.max(1, this.levelCount)),
        bufferedMs: this.size * 1000 / sampleRate,
        underruns: this.underruns,
        droppedSamples: this.droppedSamples,
        playedSamples: this.playedSamples,
      });
      this.sinceReport = 0;
      this.levelSquares = 0;
      this.levelCount = 0;
    }
    return true;
  }
}

registerProcessor('vgw-capture', CaptureProcessor);
registerProcessor('vgw-playback', PlaybackProcessor);
