package session_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/backend/echo"
	"github.com/voicegateway/voicegateway/server/metrics"
	"github.com/voicegateway/voicegateway/server/protocol"
	"github.com/voicegateway/voicegateway/server/session"
	"github.com/voicegateway/voicegateway/server/session/sessiontest"
)

// These tests open their sessions through session.Acceptor, the admission
// path the gateway serves, with the echo backend (or a failing one) and the
// per-session limits of each case.

// harness is an Acceptor served on loopback.
type harness struct {
	t        *testing.T
	url      string
	registry *session.Registry
	metrics  *metrics.Server
}

// testParkAfter is the quiet after which the tests' session readers park.
const testParkAfter = 20 * time.Millisecond

// defaultConfig is config.Default's per-session limits.
func defaultConfig() session.Config {
	return session.Config{
		MaxMessageBytes: 256 << 10, InboundRate: 200, InboundBurst: 400, OutboundQueue: 256,
		IdleTimeout: 2 * time.Minute, MaxDuration: time.Hour, WriteTimeout: 10 * time.Second, SampleRate: 24000,
	}
}

type option func(*session.Acceptor)

func withBackend(b backend.Backend) option {
	return func(a *session.Acceptor) { a.Options.Backend = b }
}

// withoutParker keeps a reader goroutine per session.
func withoutParker() option {
	return func(a *session.Acceptor) { a.Options.Parker = nil }
}

func withLimit(n int) option {
	return func(a *session.Acceptor) { a.Registry = session.NewRegistry(n) }
}

func withClock(clk clock.WithTickerAndDelayedExecution) option {
	return func(a *session.Acceptor) {
		a.Options.Clock = clk
		a.Options.Backend = echo.New(clk)
	}
}

func serve(t *testing.T, mutate func(*session.Config), opts ...option) *harness {
	t.Helper()
	cfg := defaultConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	m := metrics.New()
	a := &session.Acceptor{
		Registry: session.NewRegistry(100),
		Options: session.Options{
			Config: cfg, Clock: clock.RealClock{}, Backend: echo.New(clock.RealClock{}), Metrics: m, Log: logr.Discard(),
		},
	}
	// Readers park after a short quiet, so that every test also runs its
	// sessions through parking and waking.
	a.Options.Parker = &session.Parker{After: testParkAfter}
	for _, o := range opts {
		o(a)
	}
	if a.Options.Parker != nil {
		a.Options.Parker.Registry = a.Registry
	}
	return &harness{t: t, url: sessiontest.Serve(t, a), registry: a.Registry, metrics: m}
}

func (h *harness) dial(query string, header http.Header) *websocket.Conn {
	h.t.Helper()
	return sessiontest.Dial(h.t, h.url, query, header)
}

func (h *harness) waitSessions(n int) {
	h.t.Helper()
	testkit.Eventually(h.t, 5*time.Second, func() error {
		if got := h.registry.Len(); got != n {
			return fmt.Errorf("%d sessions registered, want %d", got, n)
		}
		return nil
	})
}

func (h *harness) counter(name string, labels ...string) float64 {
	switch name {
	case "errors":
		return testutil.ToFloat64(h.metrics.Errors.WithLabelValues(labels...))
	case "closed":
		return testutil.ToFloat64(h.metrics.SessionsClosed.WithLabelValues(labels...))
	case "frames_in":
		return testutil.ToFloat64(h.metrics.AudioFramesIn)
	}
	h.t.Fatalf("unknown counter %s", name)
	return 0
}

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
			h := serve(t, nil)
			c := h.dial(tc.query, nil)
			created := sessiontest.ReadUntil(t, c, "session.created")[0]
			gw := created.Event["gateway"].(map[string]any)
			wantTransport := "base64"
			if tc.binary {
				wantTransport = "binary"
			}
			if gw["audio_transport"] != wantTransport || gw["session_id"] == "" {
				t.Fatalf("session.created gateway info = %v", gw)
			}
			pcm := sessiontest.Tone(24000 * 2 / 10) // 100 ms at 24 kHz
			for off := 0; off < len(pcm); off += 960 {
				chunk := pcm[off:min(off+960, len(pcm))]
				if tc.binary {
					sessiontest.SendRaw(t, c, websocket.MessageBinary, chunk)
				} else {
					sessiontest.Send(t, c, sessiontest.AppendEvent(chunk))
				}
			}
			sessiontest.Send(t, c, map[string]any{"type": "input_audio_buffer.commit", "event_id": "c1"})
			frames := sessiontest.ReadUntil(t, c, "response.done")
			if got := sessiontest.EchoedAudio(t, frames); !bytes.Equal(got, pcm) {
				t.Fatalf("echo returned %d bytes, want the %d sent", len(got), len(pcm))
			}
			var types []string
			for _, f := range frames {
				if !f.Binary && f.Type() != "response.output_audio.delta" {
					types = append(types, f.Type())
				}
			}
			// The echo's default turn detection hears the tone as speech;
			// the commit ends the turn and a response with the GA API's
			// full event set answers it.
			want := []string{"input_audio_buffer.speech_started", "input_audio_buffer.committed", "conversation.item.added", "conversation.item.done",
				"response.created", "response.output_item.added", "conversation.item.added", "response.content_part.added",
				"response.output_audio.done", "response.output_audio_transcript.delta", "response.output_audio_transcript.done",
				"response.content_part.done", "response.output_item.done", "conversation.item.done", "response.done"}
			if !equalStrings(types, want) {
				t.Fatalf("event order = %v, want %v", types, want)
			}
			if got := h.counter("frames_in"); got != 5 {
				t.Errorf("audio frames in = %v, want 5", got)
			}
			// One commit, one answer: one commit-to-audio latency.
			var latency dto.Metric
			if err := h.metrics.ResponseLatency.Write(&latency); err != nil {
				t.Fatal(err)
			}
			if n := latency.GetHistogram().GetSampleCount(); n != 1 {
				t.Errorf("response latencies observed = %d, want 1 for one commit", n)
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
		{name: "unknown type for echo", typ: websocket.MessageText, message: `{"type":"conversation.no_such_event","event_id":"e9"}`, param: "type"},
		{name: "commit empty buffer", typ: websocket.MessageText, message: `{"type":"input_audio_buffer.commit"}`},
	}
	h := serve(t, nil)
	c := h.dial("", nil)
	sessiontest.ReadUntil(t, c, "session.created")
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sessiontest.SendRaw(t, c, tc.typ, []byte(tc.message))
			f := sessiontest.ReadUntil(t, c, "error")[0]
			body := f.Event["error"].(map[string]any)
			if body["code"] != "invalid_event" || body["session_id"] == "" || body["message"] == "" {
				t.Fatalf("error event = %v", f.Event)
			}
			if tc.param != "" && body["param"] != tc.param {
				t.Errorf("param = %v, want %s", body["param"], tc.param)
			}
		})
	}
	// The session still works.
	sessiontest.Send(t, c, sessiontest.AppendEvent(sessiontest.Tone(960)))
	sessiontest.Send(t, c, map[string]any{"type": "input_audio_buffer.commit"})
	if got := sessiontest.EchoedAudio(t, sessiontest.ReadUntil(t, c, "response.done")); len(got) != 960 {
		t.Fatalf("echo after errors = %d bytes", len(got))
	}
	if h.registry.Len() != 1 {
		t.Fatalf("session count = %d", h.registry.Len())
	}
}

func TestOversizedMessageEndsOnlyItsSession(t *testing.T) {
	h := serve(t, func(c *session.Config) { c.MaxMessageBytes = 4096 })
	other := h.dial("", nil)
	sessiontest.ReadUntil(t, other, "session.created")
	c := h.dial("audio=binary", nil)
	sessiontest.ReadUntil(t, c, "session.created")
	sessiontest.SendRaw(t, c, websocket.MessageBinary, sessiontest.Tone(4096)) // exactly the limit: fine
	sessiontest.SendRaw(t, c, websocket.MessageBinary, sessiontest.Tone(4098))
	code, frames := sessiontest.ReadClose(t, c)
	if code != websocket.StatusMessageTooBig {
		t.Fatalf("close code = %v, want 1009", code)
	}
	if len(frames) == 0 || frames[len(frames)-1].ErrorCode() != "frame_too_large" {
		t.Fatalf("want a frame_too_large error event before the close, got %d frames", len(frames))
	}
	h.waitSessions(1)
	sessiontest.Send(t, other, map[string]any{"type": "session.update", "session": map[string]any{"instructions": "still here"}})
	sessiontest.ReadUntil(t, other, "session.updated")
}

// TestOversizedMessageRestIsNotRead: once a message passes the size limit
// the server stops reading the connection. The close handshake used to
// read the rest of the message byte by byte, as long as the client kept
// sending (up to five seconds each): a few clients sending huge messages
// again and again kept the server's cores busy. Here one 64 MiB message in
// a single frame: the server reads none of it past the limit (and the
// sockets' buffers), so the client's write cannot complete.
func TestOversizedMessageRestIsNotRead(t *testing.T) {
	h := serve(t, func(c *session.Config) { c.MaxMessageBytes = 4096 })
	c := h.dial("audio=binary", nil)
	sessiontest.ReadUntil(t, c, "session.created")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.Write(ctx, websocket.MessageBinary, make([]byte, 64<<20)); err == nil || ctx.Err() != nil {
		t.Fatalf("a 64 MiB message over a 4 KiB limit was read to its end (write error %v, context %v)", err, ctx.Err())
	}
	h.waitSessions(0)
}

func TestInboundRateLimit(t *testing.T) {
	h := serve(t, func(c *session.Config) {
		c.InboundRate = 1
		c.InboundBurst = 5
	})
	c := h.dial("audio=binary", nil)
	sessiontest.ReadUntil(t, c, "session.created")
	for i := 0; i < 20; i++ {
		if err := c.Write(context.Background(), websocket.MessageBinary, sessiontest.Tone(64)); err != nil {
			break // the server may already have closed
		}
	}
	code, frames := sessiontest.ReadClose(t, c)
	if code != websocket.StatusPolicyViolation {
		t.Fatalf("close code = %v, want 1008", code)
	}
	var codes []string
	for _, f := range frames {
		if f.Type() == "error" {
			codes = append(codes, f.ErrorCode())
		}
	}
	if !equalStrings(codes, []string{"inbound_rate_exceeded", "inbound_rate_exceeded"}) {
		t.Fatalf("error codes = %v: want one warning, then the closing error", codes)
	}
	h.waitSessions(0)
}

// TestSlowConsumerIsCutOff: output that comes faster than the client
// takes it (a backend that talks while the client reads nothing) fills the
// outbound queue, by its messages or by its bytes, and the session ends
// with slow_consumer; the queue never holds more than its bounds.
func TestSlowConsumerIsCutOff(t *testing.T) {
	cases := map[string]struct {
		queue      int
		queueBytes int64
		message    int
	}{
		"by messages": {queue: 8, message: 2000},
		"by bytes":    {queue: 1000, queueBytes: 64 << 10, message: 16 << 10},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			b := &chattyBackend{message: tc.message}
			h := serve(t, func(c *session.Config) {
				c.OutboundQueue = tc.queue
				c.OutboundQueueBytes = tc.queueBytes
				c.WriteTimeout = time.Minute
			}, withBackend(b))
			c := h.dial("", nil)
			testkit.Eventually(t, 20*time.Second, testkit.That("slow consumer detected", func() bool { return h.counter("errors", "slow_consumer") == 1 }))
			h.waitSessions(0)
			c.CloseNow()
		})
	}
}

func TestBrokenConnectionReleasesSession(t *testing.T) {
	h := serve(t, nil)
	c := h.dial("audio=binary", nil)
	sessiontest.ReadUntil(t, c, "session.created")
	sessiontest.SendRaw(t, c, websocket.MessageBinary, sessiontest.Tone(48000)) // 1 s: a long paced response
	sessiontest.Send(t, c, map[string]any{"type": "input_audio_buffer.commit"})
	sessiontest.ReadUntil(t, c, "response.created")
	c.CloseNow() // no close frame: the server's next read or write fails
	h.waitSessions(0)
	if got := h.counter("closed", "1006"); got != 1 {
		t.Fatalf("sessions closed abnormally = %v, want 1", got)
	}
}

func TestSessionLimit(t *testing.T) {
	h := serve(t, nil, withLimit(2))
	for i := 0; i < 2; i++ {
		sessiontest.ReadUntil(t, h.dial("", nil), "session.created")
	}
	c := h.dial("", nil)
	code, frames := sessiontest.ReadClose(t, c)
	if code != websocket.StatusTryAgainLater || len(frames) != 1 || frames[0].ErrorCode() != "session_limit" {
		t.Fatalf("third session: close %v, frames %v", code, frames)
	}
	if n := h.registry.Len(); n != 2 {
		t.Fatalf("sessions = %d, want 2", n)
	}
}

func TestIdleAndMaxDurationUseTheClock(t *testing.T) {
	cases := []struct {
		name     string
		mutate   func(*session.Config)
		step     time.Duration
		wantCode string
	}{
		{name: "idle", mutate: func(c *session.Config) { c.IdleTimeout = time.Minute }, step: time.Minute, wantCode: "idle_timeout"},
		{name: "max duration", mutate: func(c *session.Config) {
			c.IdleTimeout = time.Hour
			c.MaxDuration = 2 * time.Minute
		}, step: 2 * time.Minute, wantCode: "max_duration"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clk := testingclock.NewFakeClock(time.Now())
			h := serve(t, tc.mutate, withClock(clk))
			if tc.wantCode == "idle_timeout" {
				// Activity half way: the timer fires once, finds the session
				// busy and re-arms; the idle timeout counts from the activity.
				c := h.dial("", nil)
				sessiontest.ReadUntil(t, c, "session.created")
				h.waitSessions(1)
				clk.Step(tc.step / 2)
				sessiontest.Send(t, c, map[string]any{"type": "session.update", "session": map[string]any{}})
				sessiontest.ReadUntil(t, c, "session.updated")
				clk.Step(tc.step / 2)
				time.Sleep(20 * time.Millisecond)
				if h.registry.Len() != 1 {
					t.Fatal("session closed although it was active within the idle timeout")
				}
				// A whole step, not half: the server counts its own write of
				// session.updated as activity once the write returns, which
				// may come after the client read it and the clock moved on.
				clk.Step(tc.step)
				code, frames := sessiontest.ReadClose(t, c)
				if code != websocket.StatusPolicyViolation || frames[len(frames)-1].ErrorCode() != tc.wantCode {
					t.Fatalf("after re-arm: close %v, last frame %v", code, frames[len(frames)-1].Event)
				}
				h.waitSessions(0)
				return
			}
			c := h.dial("", nil)
			sessiontest.ReadUntil(t, c, "session.created")
			h.waitSessions(1)
			clk.Step(tc.step - time.Second)
			time.Sleep(20 * time.Millisecond) // give a wrong early close the chance to show
			if h.registry.Len() != 1 {
				t.Fatal("session closed before its timeout")
			}
			clk.Step(time.Second)
			code, frames := sessiontest.ReadClose(t, c)
			if code != websocket.StatusPolicyViolation || frames[len(frames)-1].ErrorCode() != tc.wantCode {
				t.Fatalf("close %v, last frame %v", code, frames[len(frames)-1].Event)
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
			h := serve(t, nil, withBackend(failingBackend{mode: tc.mode}))
			c := h.dial("", nil)
			if tc.trigger {
				sessiontest.ReadUntil(t, c, "session.created")
				sessiontest.Send(t, c, map[string]any{"type": "input_audio_buffer.commit", "event_id": "evt-1"})
			}
			code, frames := sessiontest.ReadClose(t, c)
			if code != websocket.StatusInternalError {
				t.Fatalf("close code = %v, want 1011", code)
			}
			last := frames[len(frames)-1]
			if last.ErrorCode() != tc.wantCode {
				t.Fatalf("last frame = %v, want error %s", last.Event, tc.wantCode)
			}
			h.waitSessions(0)
		})
	}
}

// TestRevokedWhileAdmittedIsRefused: a credential revoked while its
// session was being admitted — after Admit looked at it, before the
// session was in the registry where revocation looks — is caught by the
// acceptor's last look (Revoked) once the session is registered: the
// client is told credential_revoked (1008) and nothing of it is left.
func TestRevokedWhileAdmittedIsRefused(t *testing.T) {
	revoked := map[string]bool{"key-gone": true}
	h := serve(t, nil, func(a *session.Acceptor) {
		a.Admit = func(w http.ResponseWriter, r *http.Request) (session.Grant, bool) {
			return session.Grant{Identity: session.Identity{APIKeyID: r.URL.Query().Get("key")}}, true
		}
		a.Revoked = func(id session.Identity) bool { return revoked[id.APIKeyID] }
	})
	c := h.dial("key=key-gone", nil)
	code, frames := sessiontest.ReadClose(t, c)
	if code != websocket.StatusPolicyViolation || len(frames) == 0 || frames[len(frames)-1].ErrorCode() != "credential_revoked" {
		t.Fatalf("a revoked credential's session: close %v, frames %v; want 1008 credential_revoked", code, frames)
	}
	h.waitSessions(0)
	// A credential still held is admitted as before.
	ok := h.dial("key=key-kept", nil)
	sessiontest.ReadUntil(t, ok, "session.created")
	h.waitSessions(1)
	_ = ok.Close(websocket.StatusNormalClosure, "")
	h.waitSessions(0)
}
