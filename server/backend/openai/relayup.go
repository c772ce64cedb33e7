package openai

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strconv"
	"time"

	"github.com/coder/websocket"

	"github.com/voicegateway/voicegateway/server/internal/msgbuf"
	"github.com/voicegateway/voicegateway/server/memory"
	"github.com/voicegateway/voicegateway/server/protocol"
)

// maxAppendPCM splits a large binary audio message into appends of at most
// this much PCM, keeping every upstream message small whatever
// --max-message-bytes allows the client.
const maxAppendPCM = 1 << 20

const (
	appendPrefix = `{"type":"input_audio_buffer.append","audio":"`
	appendSuffix = `"}`
)

// Handle implements backend.Conn: it queues the client event for the
// upstream, unchanged (a binary audio message becomes an append), after
// checking the fields the gateway owns. It never blocks: a full relay queue
// means the upstream has stopped taking data.
func (c *conn) Handle(_ context.Context, ev *protocol.ClientEvent) *protocol.Error {
	if c.fault.Load() != nil {
		return nil // the session is ending
	}
	if ev.Binary {
		return c.relayAudio(ev.Audio)
	}
	if ev.Type == protocol.TypeSessionUpdate {
		output, err := checkSessionUpdate(ev.Session, c.b.allowed, c.info.SampleRate)
		if err != nil {
			return err
		}
		c.setOutput(output)
	}
	buf := msgbuf.Get(len(ev.Raw))
	*buf = append(*buf, ev.Raw...)
	return c.enqueue(buf)
}

// relayAudio turns binary PCM into input_audio_buffer.append events. The
// whole message is charged to the session's account before any part of it
// is queued: a refusal drops all of it, never the rest of a message whose
// first part went up.
func (c *conn) relayAudio(pcm []byte) *protocol.Error {
	var total int64
	for rest := len(pcm); rest > 0; rest -= min(rest, maxAppendPCM) {
		total += int64(appendEventSize(min(rest, maxAppendPCM)))
	}
	if !c.info.Memory.Reserve(memory.Upstream, total) {
		return notRelayed()
	}
	for len(pcm) > 0 {
		n := min(len(pcm), maxAppendPCM)
		buf := msgbuf.Get(appendEventSize(n))
		*buf = appendAudioEvent(*buf, pcm[:n])
		total -= int64(len(*buf))
		if err := c.queueCharged(buf); err != nil {
			// The session ends (the upstream stopped taking data): what was
			// charged for the parts not queued goes back.
			c.info.Memory.Release(memory.Upstream, total)
			return err
		}
		pcm = pcm[n:]
	}
	return nil
}

// appendEventSize is the length of the append event carrying n bytes of PCM.
func appendEventSize(n int) int {
	return len(appendPrefix) + base64.StdEncoding.EncodedLen(n) + len(appendSuffix)
}

func appendAudioEvent(dst, pcm []byte) []byte {
	dst = append(dst, appendPrefix...)
	dst = base64.StdEncoding.AppendEncode(dst, pcm)
	return append(dst, appendSuffix...)
}

func notRelayed() *protocol.Error {
	return protocol.BufferFull("message not relayed: this server's memory budget is spent; retry shortly")
}

// enqueue charges a client message to the session's account and queues it
// for the upstream; with the memory budget spent the message is refused,
// and the session goes on.
func (c *conn) enqueue(buf *[]byte) *protocol.Error {
	if !c.info.Memory.Reserve(memory.Upstream, int64(len(*buf))) {
		msgbuf.Put(buf)
		return notRelayed()
	}
	return c.queueCharged(buf)
}

// queueCharged queues a message already charged to the session's account. A full
// queue means the upstream has stopped taking data, which ends the
// session; the message is given back.
func (c *conn) queueCharged(buf *[]byte) *protocol.Error {
	n := int64(len(*buf))
	if c.queueBytes.Add(n) <= c.maxQueueBytes {
		// Counted before the send, so that the writer's decrement never
		// comes first.
		c.b.metrics.UpstreamRelayQueue.Inc()
		select {
		case c.queue <- buf:
			return nil
		default:
		}
		c.b.metrics.UpstreamRelayQueue.Dec()
	}
	c.queueBytes.Add(-n)
	c.info.Memory.Release(memory.Upstream, n)
	msgbuf.Put(buf)
	return c.fail(upstreamNotTaking())
}

// dequeued counts a message out of the queue; its memory stays charged
// until it is written or dropped (release).
func (c *conn) dequeued(buf *[]byte) {
	c.queueBytes.Add(-int64(len(*buf)))
	c.b.metrics.UpstreamRelayQueue.Dec()
}

// release gives back a message the writer is done with.
func (c *conn) release(buf *[]byte) {
	c.info.Memory.Release(memory.Upstream, int64(len(*buf)))
	msgbuf.Put(buf)
}

// writeLoop sends queued client messages in order until the connection
// ends. Writes are not bounded by a context (that would cost a timer per
// message): an upstream that stops reading is found by the watchdog or by
// the full queue, and its connection is cut, which ends the write.
func (c *conn) writeLoop() {
	defer c.loops.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case buf := <-c.queue:
			c.dequeued(buf)
			err := c.up.Write(context.Background(), websocket.MessageText, *buf)
			c.release(buf)
			if err != nil {
				c.fail(upstreamLost())
				return
			}
		}
	}
}

// timerFired is the watchdog timer's callback.
func (c *conn) timerFired() {
	select {
	case c.checkDue <- struct{}{}:
	default:
	}
}

// watchLoop is the stall detector. After pingAfter of silence it pings the
// upstream (an idle upstream answers with a pong, which counts as hearing
// from it); after the stall timeout of silence it ends the session. The
// timer is re-armed for the next moment either can happen, so an idle
// session costs one timer, not a ticker.
func (c *conn) watchLoop() {
	defer c.loops.Done()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-c.checkDue:
		}
		quiet := c.b.clock.Since(time.Unix(0, c.lastHeard.Load()))
		if quiet >= c.stall {
			c.fail(upstreamSilent(c.stall))
			return
		}
		next := c.pingAfter - quiet
		if next <= 0 {
			c.ping()
			next = c.stall - quiet
		}
		// The fake clock also sends on a fired AfterFunc timer's channel
		// (of one slot) and would block its next firing on it; a real
		// AfterFunc timer has no channel.
		select {
		case <-c.timer.C():
		default:
		}
		c.timer.Reset(next)
	}
}

// ping sends one ping unless one is already waiting for its pong. The pong
// is seen by the reader (OnPongReceived), so the pinger only has to exist
// until it arrives or the connection ends.
func (c *conn) ping() {
	if !c.pinging.CompareAndSwap(false, true) {
		return
	}
	c.readers.Add(1)
	go func() {
		defer c.readers.Done()
		defer c.pinging.Store(false)
		_ = c.up.Ping(c.ctx)
	}()
}

// Output audio formats a session.update may set.
const (
	formatUnchanged = iota
	formatPCM
	formatG711
)

// setOutput records the output format a session.update sets, if any.
func (c *conn) setOutput(output int) {
	switch output {
	case formatPCM:
		c.byteAudio.Store(false)
	case formatG711:
		c.byteAudio.Store(true)
	}
}

// checkSessionUpdate refuses a session.update that would change what the
// gateway owns: the PCM rate (the binary fast path and the sample rate
// announced in session.created depend on it) and the models the operator
// allows. PCM at the gateway's rate and the G.711 formats (audio/pcmu,
// audio/pcma, which telephony apps use and which pass through byte for
// byte) are accepted; the event itself is relayed unchanged. It reports
// the output format the update sets.
func checkSessionUpdate(session json.RawMessage, allowed func(model string) bool, rate int) (int, *protocol.Error) {
	type direction struct {
		Format json.RawMessage `json:"format"`
	}
	var update struct {
		Model *string `json:"model"`
		Audio *struct {
			Input  *direction `json:"input"`
			Output *direction `json:"output"`
		} `json:"audio"`
		// Beta names, still accepted by some upstreams.
		InputAudioFormat  json.RawMessage `json:"input_audio_format"`
		OutputAudioFormat json.RawMessage `json:"output_audio_format"`
	}
	if err := json.Unmarshal(session, &update); err != nil {
		return formatUnchanged, protocol.Invalid("session", "session object has a field of the wrong type")
	}
	if update.Model != nil && !allowed(*update.Model) {
		return formatUnchanged, &protocol.Error{Code: protocol.CodeModelNotAllowed, Type: protocol.ErrorTypeInvalidRequest,
			Param: "session.model", Message: protocol.ModelNotAllowedMessage(*update.Model)}
	}
	formatMessage := "this gateway carries " + protocol.AudioFormatPCM + " at " + strconv.Itoa(rate) + " Hz, " +
		protocol.AudioFormatPCMU + " and " + protocol.AudioFormatPCMA + " only"
	output := formatUnchanged
	if update.Audio != nil {
		for i, d := range []struct {
			param string
			dir   *direction
		}{{"session.audio.input.format", update.Audio.Input}, {"session.audio.output.format", update.Audio.Output}} {
			if d.dir == nil || len(d.dir.Format) == 0 {
				continue
			}
			f := gaFormat(d.dir.Format, rate)
			if f == formatUnchanged {
				return formatUnchanged, protocol.Invalid(d.param, formatMessage)
			}
			if i == 1 {
				output = f
			}
		}
	}
	for i, d := range []struct {
		param string
		raw   json.RawMessage
	}{{"session.input_audio_format", update.InputAudioFormat}, {"session.output_audio_format", update.OutputAudioFormat}} {
		if len(d.raw) == 0 {
			continue
		}
		var f int
		switch string(d.raw) {
		case `"pcm16"`:
			f = formatPCM
		case `"g711_ulaw"`, `"g711_alaw"`:
			f = formatG711
		default:
			return formatUnchanged, protocol.Invalid(d.param, formatMessage)
		}
		if i == 1 {
			output = f
		}
	}
	return output, nil
}

// gaFormat classifies a GA audio format object: PCM at the gateway's rate
// (a missing rate means the default, 24 kHz), G.711, or neither
// (formatUnchanged).
func gaFormat(raw json.RawMessage, rate int) int {
	var f struct {
		Type string `json:"type"`
		Rate *int   `json:"rate"`
	}
	if json.Unmarshal(raw, &f) != nil {
		return formatUnchanged
	}
	switch {
	case f.Type == protocol.AudioFormatPCM && (f.Rate == nil || *f.Rate == rate):
		return formatPCM
	case f.Type == protocol.AudioFormatPCMU || f.Type == protocol.AudioFormatPCMA:
		return formatG711
	}
	return formatUnchanged
}
