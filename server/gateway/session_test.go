package gateway

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/protocol"
)

func TestFullTurn(t *testing.T) {
	cases := []struct {
		name  string
		query string
		// binary sends the input as binary messages.
		binary bool
	}{
		{name: "base64", query: ""},
		{name: "binary fast path", query: "audio=binary", binary: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := start(t, nil)
			c := h.dial(tc.query, nil)
			created := readUntil(t, c, "session.created")[0]
			gw := created.event["gateway"].(map[string]any)
			wantTransport := "base64"
			if tc.binary {
				wantTransport = "binary"
			}
			if gw["audio_transport"] != wantTransport || gw["session_id"] == "" {
				t.Fatalf("session.created gateway info = %v", gw)
			}
			pcm := tone(24000 * 2 / 10) // 100 ms at 24 kHz
			for off := 0; off < len(pcm); off += 960 {
				chunk := pcm[off:min(off+960, len(pcm))]
				if tc.binary {
					sendRaw(t, c, websocket.MessageBinary, chunk)
				} else {
					send(t, c, appendEvent(chunk))
				}
			}
			send(t, c, map[string]any{"type": "input_audio_buffer.commit", "event_id": "c1"})
			frames := readUntil(t, c, "response.done")
			if got := echoedAudio(t, frames); !bytes.Equal(got, pcm) {
				t.Fatalf("echo returned %d bytes, want the %d sent", len(got), len(pcm))
			}
			var types []string
			for _, f := range frames {
				if !f.binary && f.typ() != "response.output_audio.delta" {
					types = append(types, f.typ())
				}
			}
			want := []string{"input_audio_buffer.committed", "response.created", "response.output_audio.done",
				"response.output_audio_transcript.delta", "response.output_audio_transcript.done", "response.done"}
			if !equalStrings(types, want) {
				t.Fatalf("event order = %v, want %v", types, want)
			}
			if got := h.counter("frames_in"); got != 5 {
				t.Errorf("audio frames in = %v, want 5", got)
			}
			if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
				t.Fatalf("close: %v", err)
			}
			h.waitSessions(0)
			if got := h.counter("closed", "1000"); got != 1 {
				t.Errorf("sessions closed 1000 = %v, want 1", got)
			}
		})
	}
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRejectedMessagesKeepSession checks that non-fatal rejections answer
// with an error event and the session goes on working.
func TestRejectedMessagesKeepSession(t *testing.T) {
	cases := []struct {
		name    string
		typ     websocket.MessageType
		message string
		param   string
	}{
		{name: "not JSON", typ: websocket.MessageText, message: "hello"},
		{name: "no type", typ: websocket.MessageText, message: `{"event_id":"x"}`, param: "type"},
		{name: "bad base64", typ: websocket.MessageText, message: `{"type":"input_audio_buffer.append","audio":"@@@"}`, param: "audio"},
		{name: "odd binary", typ: websocket.MessageBinary, message: "abc", param: "audio"},
		{name: "unknown type for echo", typ: websocket.MessageText, message: `{"type":"conversation.item.create","event_id":"e9"}`, param: "type"},
		{name: "commit empty buffer", typ: websocket.MessageText, message: `{"type":"input_audio_buffer.commit"}`},
	}
	h := start(t, nil)
	c := h.dial("", nil)
	readUntil(t, c, "session.created")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sendRaw(t, c, tc.typ, []byte(tc.message))
			f := readUntil(t, c, "error")[0]
			body := f.event["error"].(map[string]any)
			if body["code"] != "invalid_event" || body["session_id"] == "" || body["message"] == "" {
				t.Fatalf("error event = %v", f.event)
			}
			if tc.param != "" && body["param"] != tc.param {
				t.Errorf("param = %v, want %s", body["param"], tc.param)
			}
		})
	}
	// The session still works.
	send(t, c, appendEvent(tone(960)))
	send(t, c, map[string]any{"type": "input_audio_buffer.commit"})
	if got := echoedAudio(t, readUntil(t, c, "response.done")); len(got) != 960 {
		t.Fatalf("echo after errors = %d bytes", len(got))
	}
	if h.srv.Sessions().Len() != 1 {
		t.Fatalf("session count = %d", h.srv.Sessions().Len())
	}
}

func TestOversizedMessageEndsOnlyItsSession(t *testing.T) {
	h := start(t, func(c *config.Config) { c.Sessions.MaxMessageBytes = 4096 })
	other := h.dial("", nil)
	readUntil(t, other, "session.created")
	c := h.dial("audio=binary", nil)
	readUntil(t, c, "session.created")
	sendRaw(t, c, websocket.MessageBinary, tone(4096)) // exactly the limit: fine
	sendRaw(t, c, websocket.MessageBinary, tone(4098))
	code, frames := readClose(t, c)
	if code != websocket.StatusMessageTooBig {
		t.Fatalf("close code = %v, want 1009", code)
	}
	if len(frames) == 0 || frames[len(frames)-1].errorCode() != "frame_too_large" {
		t.Fatalf("want a frame_too_large error event before the close, got %d frames", len(frames))
	}
	h.waitSessions(1)
	send(t, other, map[string]any{"type": "session.update", "session": map[string]any{"instructions": "still here"}})
	readUntil(t, other, "session.updated")
}

func TestInboundRateLimit(t *testing.T) {
	h := start(t, func(c *config.Config) {
		c.Sessions.InboundRate = 1
		c.Sessions.InboundBurst = 5
	})
	c := h.dial("audio=binary", nil)
	readUntil(t, c, "session.created")
	for i := 0; i < 20; i++ {
		if err := c.Write(context.Background(), websocket.MessageBinary, tone(64)); err != nil {
			break // the server may already have closed
		}
	}
	code, frames := readClose(t, c)
	if code != websocket.StatusPolicyViolation {
		t.Fatalf("close code = %v, want 1008", code)
	}
	var codes []string
	for _, f := range frames {
		if f.typ() == "error" {
			codes = append(codes, f.errorCode())
		}
	}
	if !equalStrings(codes, []string{"inbound_rate_exceeded", "inbound_rate_exceeded"}) {
		t.Fatalf("error codes = %v: want one warning, then the closing error", codes)
	}
	h.waitSessions(0)
}

func TestSlowConsumerIsCutOff(t *testing.T) {
	h := start(t, func(c *config.Config) {
		c.Sessions.OutboundQueue = 8
		c.Sessions.InboundRate = 1e6
		c.Sessions.InboundBurst = 1e6
		c.Sessions.WriteTimeout = time.Minute
	})
	c := h.dial("", nil)
	// Never read: every session.update makes a session.updated the client
	// will not take, until kernel buffers and then the queue are full.
	update := []byte(`{"type":"session.update","session":{"instructions":"` + string(bytes.Repeat([]byte("x"), 2000)) + `"}}`)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for h.counter("errors", "slow_consumer") == 0 {
		if err := c.Write(ctx, websocket.MessageText, update); err != nil {
			break
		}
	}
	eventually(t, 20*time.Second, "slow consumer detected", func() bool { return h.counter("errors", "slow_consumer") == 1 })
	h.waitSessions(0)
	c.CloseNow()
}

func TestBrokenConnectionReleasesSession(t *testing.T) {
	h := start(t, nil)
	c := h.dial("audio=binary", nil)
	readUntil(t, c, "session.created")
	sendRaw(t, c, websocket.MessageBinary, tone(48000)) // 1 s: a long paced response
	send(t, c, map[string]any{"type": "input_audio_buffer.commit"})
	readUntil(t, c, "response.created")
	c.CloseNow() // no close frame: the server's next read or write fails
	h.waitSessions(0)
	if got := h.counter("closed", "1006"); got != 1 {
		t.Fatalf("sessions closed abnormally = %v, want 1", got)
	}
}

func TestSessionLimit(t *testing.T) {
	h := start(t, func(c *config.Config) { c.Sessions.Limit = 2 })
	for i := 0; i < 2; i++ {
		readUntil(t, h.dial("", nil), "session.created")
	}
	c := h.dial("", nil)
	code, frames := readClose(t, c)
	if code != websocket.StatusTryAgainLater || len(frames) != 1 || frames[0].errorCode() != "session_limit" {
		t.Fatalf("third session: close %v, frames %v", code, frames)
	}
	if n := h.srv.Sessions().Len(); n != 2 {
		t.Fatalf("sessions = %d, want 2", n)
	}
}

func TestIdleAndMaxDurationUseTheClock(t *testing.T) {
	cases := []struct {
		name     string
		mutate   func(*config.Config)
		step     time.Duration
		wantCode string
	}{
		{name: "idle", mutate: func(c *config.Config) { c.Sessions.IdleTimeout = time.Minute }, step: time.Minute, wantCode: "idle_timeout"},
		{name: "max duration", mutate: func(c *config.Config) {
			c.Sessions.IdleTimeout = time.Hour
			c.Sessions.MaxDuration = 2 * time.Minute
		}, step: 2 * time.Minute, wantCode: "max_duration"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := testingclock.NewFakeClock(time.Now())
			h := startWithClock(t, clk, tc.mutate)
			if tc.wantCode == "idle_timeout" {
				// Activity half way: the timer fires once, finds the session
				// busy and re-arms; the idle timeout counts from the activity.
				c := h.dial("", nil)
				readUntil(t, c, "session.created")
				h.waitSessions(1)
				clk.Step(tc.step / 2)
				send(t, c, map[string]any{"type": "session.update", "session": map[string]any{}})
				readUntil(t, c, "session.updated")
				clk.Step(tc.step / 2)
				time.Sleep(20 * time.Millisecond)
				if h.srv.Sessions().Len() != 1 {
					t.Fatal("session closed although it was active within the idle timeout")
				}
				clk.Step(tc.step / 2)
				code, frames := readClose(t, c)
				if code != websocket.StatusPolicyViolation || frames[len(frames)-1].errorCode() != tc.wantCode {
					t.Fatalf("after re-arm: close %v, last frame %v", code, frames[len(frames)-1].event)
				}
				h.waitSessions(0)
				return
			}
			c := h.dial("", nil)
			readUntil(t, c, "session.created")
			h.waitSessions(1)
			clk.Step(tc.step - time.Second)
			time.Sleep(20 * time.Millisecond) // give a wrong early close the chance to show
			if h.srv.Sessions().Len() != 1 {
				t.Fatal("session closed before its timeout")
			}
			clk.Step(time.Second)
			code, frames := readClose(t, c)
			if code != websocket.StatusPolicyViolation || frames[len(frames)-1].errorCode() != tc.wantCode {
				t.Fatalf("close %v, last frame %v", code, frames[len(frames)-1].event)
			}
			h.waitSessions(0)
		})
	}
}

// failingBackend fails in the way its mode says.
type failingBackend struct{ mode string }

func (b failingBackend) Name() string { return "failing" }

func (b failingBackend) Open(ctx context.Context, info backend.Info, sink backend.Sink) (backend.Conn, error) {
	if b.mode == "open" {
		return nil, errors.New("upstream refused")
	}
	if err := sink.Event(&protocol.SessionEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeSessionCreated}, Session: map[string]any{}}); err != nil {
		return nil, err
	}
	return &failingConn{mode: b.mode, sink: sink}, nil
}

type failingConn struct {
	mode string
	sink backend.Sink
}

func (c *failingConn) Handle(ctx context.Context, ev *protocol.ClientEvent) *protocol.Error {
	if ev.Type != protocol.TypeInputAudioCommit {
		return nil
	}
	if c.mode == "async" {
		// As a backend's own goroutine would on an upstream failure.
		c.sink.Fail(protocol.Fatal(protocol.CodeBackendError, protocol.CloseInternalError, "upstream stalled"))
		return nil
	}
	return protocol.Fatal(protocol.CodeBackendError, protocol.CloseInternalError, "upstream failed")
}

func (c *failingConn) Close() error { return nil }

func TestBackendFailuresEndOnlyTheirSession(t *testing.T) {
	cases := []struct {
		mode     string
		trigger  bool
		wantCode string
	}{
		{mode: "open", wantCode: "backend_unavailable"},
		{mode: "handle", trigger: true, wantCode: "backend_error"},
		{mode: "async", trigger: true, wantCode: "backend_error"},
	}
	for _, tc := range cases {
		t.Run(tc.mode, func(t *testing.T) {
			h := start(t, nil, WithBackend(failingBackend{mode: tc.mode}))
			c := h.dial("", nil)
			if tc.trigger {
				readUntil(t, c, "session.created")
				send(t, c, map[string]any{"type": "input_audio_buffer.commit", "event_id": "evt-1"})
			}
			code, frames := readClose(t, c)
			if code != websocket.StatusInternalError {
				t.Fatalf("close code = %v, want 1011", code)
			}
			last := frames[len(frames)-1]
			if last.errorCode() != tc.wantCode {
				t.Fatalf("last frame = %v, want error %s", last.event, tc.wantCode)
			}
			h.waitSessions(0)
		})
	}
}

// TestNoGoroutinesOutliveTheServer runs sessions through every ending and
// checks that nothing the server started is left once Serve returns.
func TestNoGoroutinesOutliveTheServer(t *testing.T) {
	baseline := goleak.IgnoreCurrent()
	func() {
		h := start(t, func(c *config.Config) { c.Sessions.MaxMessageBytes = 2048 })
		a := h.dial("audio=binary", nil)
		readUntil(t, a, "session.created")
		sendRaw(t, a, websocket.MessageBinary, tone(4000))
		readClose(t, a)
		b := h.dial("", nil)
		readUntil(t, b, "session.created")
		b.CloseNow()
		c := h.dial("audio=binary", nil)
		readUntil(t, c, "session.created")
		sendRaw(t, c, websocket.MessageBinary, tone(2000))
		send(t, c, map[string]any{"type": "input_audio_buffer.commit"})
		h.srv.ForceDrain()
		if err := h.wait(10 * time.Second); err != nil {
			t.Fatal(err)
		}
		c.CloseNow()
		http.DefaultClient.CloseIdleConnections()
	}()
	goleak.VerifyNone(t, baseline)
}
