package openai

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"sync/atomic"

	"github.com/coder/websocket"

	"github.com/voicegateway/voicegateway/server/internal/msgbuf"
	"github.com/voicegateway/voicegateway/server/protocol"
)

// Audio delta types: the GA name and the beta name, which some upstreams
// still send. Both become binary audio for clients that negotiated it.
const (
	typeAudioDelta     = protocol.TypeOutputAudioDelta
	typeBetaAudioDelta = "response.audio.delta"
)

// readLoop relays upstream messages to the client until the upstream
// connection ends. Its read is not bound to a context: cancelling one would
// make the library drop the connection without a close frame, so the
// connection's end (a close by either side, or a cut) ends the loop.
func (c *conn) readLoop() {
	defer c.readers.Done()
	limit := c.b.cfg.MaxMessageBytes
	for {
		typ, r, err := c.up.Reader(context.Background())
		if err != nil {
			c.readFailed(err)
			return
		}
		buf := msgbuf.Get(0)
		_, err = msgbuf.ReadMessage(r, buf, limit, nil)
		if err != nil {
			msgbuf.Put(buf)
			if errors.Is(err, msgbuf.ErrTooLarge) {
				c.fail(upstreamTooLarge(limit))
			} else {
				c.readFailed(err)
			}
			return
		}
		c.heard()
		var f *fault
		if typ != websocket.MessageText {
			bad := upstreamMalformed("a binary message")
			f = &bad
		} else {
			f = c.relayDown(*buf)
		}
		msgbuf.Put(buf)
		if f != nil && c.fail(*f) != nil && f.broken {
			return
		}
	}
}

// readFailed classifies the end of the upstream connection. While the
// session is closing, or after a fault, it is expected.
func (c *conn) readFailed(err error) {
	var ce websocket.CloseError
	if errors.As(err, &ce) {
		c.fail(closeFault(ce))
		return
	}
	c.fail(upstreamLost())
}

// relayDown passes one upstream event to the client. It returns the fault
// the event reveals, if any. A sink that refuses (the session is ending)
// is not the upstream's fault.
func (c *conn) relayDown(data []byte) *fault {
	if err := parseEvent(data, &c.ev); err != nil {
		f := upstreamMalformed(err.Error())
		return &f
	}
	if tracked(c.ev.typ) {
		c.conv.observe(data)
	}
	if c.replayAck() {
		return nil
	}
	switch string(c.ev.typ) {
	case typeAudioDelta, typeBetaAudioDelta:
		if c.info.BinaryAudio {
			return c.relayAudioDelta()
		}
		if c.sink.Raw(data) == nil {
			c.b.metrics.AudioFramesOut.Inc()
		}
	case protocol.TypeSessionCreated:
		_ = c.sink.Raw(c.withGatewayInfo(data))
	case protocol.TypeError:
		return c.relayError(data)
	default:
		_ = c.sink.Raw(data)
	}
	return nil
}

// replayAck reports whether the event is the upstream's answer to a
// resume's replay, which the client does not need told again.
func (c *conn) replayAck() bool {
	var n *atomic.Int64
	switch string(c.ev.typ) {
	case typeSessionUpdated:
		n = &c.replayAcks.updated
	case "conversation.item.added", "conversation.item.created":
		n = &c.replayAcks.added
	case typeItemDone:
		n = &c.replayAcks.done
	default:
		return false
	}
	for {
		v := n.Load()
		if v <= 0 {
			return false
		}
		if n.CompareAndSwap(v, v-1) {
			return true
		}
	}
}

// relayAudioDelta sends a delta's audio as a binary message.
func (c *conn) relayAudioDelta() *fault {
	ev := &c.ev
	b64 := ev.delta
	if ev.deltaEscaped {
		b64 = unescapeString(quoted(b64))
	}
	buf := msgbuf.Get(base64.StdEncoding.DecodedLen(len(b64)))
	defer msgbuf.Put(buf)
	pcm := (*buf)[:base64.StdEncoding.DecodedLen(len(b64))]
	n, err := base64.StdEncoding.Decode(pcm, b64)
	switch {
	case err != nil:
		f := upstreamMalformed("audio delta is not valid base64")
		return &f
	case n%2 != 0 && !c.byteAudio.Load():
		f := upstreamMalformed("audio delta is not whole PCM16 samples")
		return &f
	case n == 0:
		return nil
	}
	// The ids repeat for every delta of a response: keep the strings
	// rather than allocate them again.
	if string(ev.responseID) != c.ref.ResponseID {
		c.ref.ResponseID = string(ev.responseID)
	}
	if string(ev.itemID) != c.ref.ItemID {
		c.ref.ItemID = string(ev.itemID)
	}
	c.ref.OutputIndex, c.ref.ContentIndex = ev.outputIndex, ev.contentIndex
	_ = c.sink.Audio(c.ref, pcm[:n])
	return nil
}

// relayError passes an upstream error event on and reports the ones that
// end the session. The exception is invalid_api_key: its message quotes
// part of the gateway's own key, which must not reach a browser, so the
// client is told upstream_unauthorized instead.
func (c *conn) relayError(data []byte) *fault {
	var ev struct {
		Error struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	_ = json.Unmarshal(data, &ev) // a malformed error body is still an error to pass on
	switch ev.Error.Code {
	case upstreamCodeInvalidAPIKey:
		f := upstreamUnauthorized()
		return &f
	case upstreamCodeSessionExpired:
		_ = c.sink.Raw(data)
		f := upstreamExpired()
		return &f
	}
	_ = c.sink.Raw(data)
	return nil
}

// withGatewayInfo adds the gateway object, which tells the client what was
// negotiated, to the upstream's session.created: everything the upstream
// sent stays as it was. An upstream that sent its own gateway member keeps
// it.
func (c *conn) withGatewayInfo(data []byte) []byte {
	if c.ev.hasGateway {
		return data
	}
	transport := protocol.AudioTransportBase64
	if c.info.BinaryAudio {
		transport = protocol.AudioTransportBinary
	}
	info, err := json.Marshal(protocol.GatewayInfo{
		SessionID: c.info.SessionID, AudioTransport: transport,
		SampleRate: c.info.SampleRate, MaxMessageSize: c.info.MaxMessageBytes,
	})
	if err != nil {
		return data
	}
	end := bytes.LastIndexByte(data, '}')
	out := make([]byte, 0, len(data)+len(info)+len(`,"gateway":`))
	out = append(out, data[:end]...)
	out = append(out, `,"gateway":`...)
	out = append(out, info...)
	return append(out, data[end:]...)
}
