// voicegateway-audio.js — microphone capture and gapless playback for
// voicegateway-client.js, dependency-free. The microphone is read through
// an AudioWorklet (pcm-worklet.js, next to this file) that converts it to
// PCM16 mono at the session's sample rate; playback goes through a jitter
// buffer in the same worklet file. Both resample from and to whatever rate
// the audio device runs at.

const WORKLET_URL = new URL('./pcm-worklet.js', import.meta.url);

/**
 * Microphone in, speaker out. Events (CustomEvent, data in `detail`):
 * - 'audio' {pcm: Int16Array, level}: a chunk of microphone audio at sampleRate;
 * - 'output' {level, bufferedMs, underruns, droppedSamples, playedSamples}: playback, every ~50 ms.
 */
export class AudioIO extends EventTarget {
  #context;
  #stream;
  #source;
  #capture;
  #playback;
  #sampleRate;
  #stopped = false;

  constructor(context, stream, source, capture, playback, sampleRate) {
    super();
    this.#context = context;
    this.#stream = stream;
    this.#source = source;
    this.#capture = capture;
    this.#playback = playback;
    this.#sampleRate = sampleRate;
    capture.port.onmessage = (e) => {
      this.dispatchEvent(new CustomEvent('audio', { detail: { pcm: e.data.pcm, level: e.data.level } }));
    };
    playback.port.onmessage = (e) => {
      this.dispatchEvent(new CustomEvent('output', { detail: e.data }));
    };
  }

  /**
   * Asks for the microphone and starts capture and playback. Call it from a
   * user gesture (a click), or the browser keeps the audio suspended.
   * @param {object} [options]
   * @param {number} [options.sampleRate] PCM rate of the session (default 24000; change it later with the setter).
   * @param {boolean} [options.voiceProcessing] echo cancellation, noise suppression and gain control (default true).
   * @param {string|MediaTrackConstraints} [options.deviceId] a microphone to use.
   * @param {number} [options.chunkMs] size of the chunks the 'audio' event carries (default 20).
   * @param {number} [options.prebufferMs] playback buffer before audio starts or after it ran dry (default 80).
   */
  static async start(options = {}) {
    const sampleRate = options.sampleRate || 24000;
    const processing = options.voiceProcessing !== false;
    const audio = {
      channelCount: 1,
      echoCancellation: processing,
      noiseSuppression: processing,
      autoGainControl: processing,
    };
    if (options.deviceId) audio.deviceId = options.deviceId;
    const stream = await navigator.mediaDevices.getUserMedia({ audio, video: false });
    let context;
    try {
      context = new AudioContext({ latencyHint: 'interactive' });
      await context.audioWorklet.addModule(options.workletUrl || WORKLET_URL);
      const source = context.createMediaStreamSource(stream);
      const capture = new AudioWorkletNode(context, 'vgw-capture', {
        numberOfInputs: 1, numberOfOutputs: 1, outputChannelCount: [1],
        processorOptions: { targetRate: sampleRate, chunkMs: options.chunkMs || 20 },
      });
      const playback = new AudioWorkletNode(context, 'vgw-playback', {
        numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1],
        processorOptions: { prebufferMs: options.prebufferMs || 80 },
      });
      source.connect(capture);
      // The capture node's output is silence; connecting it keeps the node
      // pulled by the graph in every browser.
      capture.connect(context.destination);
      playback.connect(context.destination);
      if (context.state !== 'running') await context.resume();
      return new AudioIO(context, stream, source, capture, playback, sampleRate);
    } catch (err) {
      for (const track of stream.getTracks()) track.stop();
      if (context) await context.close();
      throw err;
    }
  }

  /** The rate of PCM in and out (the session's). */
  get sampleRate() { return this.#sampleRate; }
  set sampleRate(rate) {
    if (rate === this.#sampleRate) return;
    this.#sampleRate = rate;
    this.#capture.port.postMessage({ targetRate: rate });
  }

  /** The AudioContext's state: running, suspended or closed. */
  get state() { return this.#context.state; }

  /** The audio device's rate. */
  get deviceRate() { return this.#context.sampleRate; }

  /** Mutes (false) or unmutes (true) the microphone. */
  set capturing(on) { this.#capture.port.postMessage({ enabled: Boolean(on) }); }

  /** Queues PCM16 output audio for playback; rate defaults to sampleRate. */
  play(pcm, rate = this.#sampleRate) {
    if (this.#stopped) return;
    // Copied: the caller may still use its array, and transferring would detach it.
    const copy = new Int16Array(pcm);
    this.#playback.port.postMessage({ pcm: copy, rate }, [copy.buffer]);
  }

  /** Drops audio queued for playback (on barge-in, say). */
  clearPlayback() { this.#playback.port.postMessage({ clear: true }); }

  /** Releases the microphone and the audio device. */
  async stop() {
    if (this.#stopped) return;
    this.#stopped = true;
    this.#capture.port.onmessage = null;
    this.#playback.port.onmessage = null;
    this.#source.disconnect();
    this.#capture.disconnect();
    this.#playback.disconnect();
    for (const track of this.#stream.getTracks()) track.stop();
    await this.#context.close();
  }
}
