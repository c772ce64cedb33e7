package session_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/backend/echo"
	"github.com/voicegateway/voicegateway/server/memory"
	"github.com/voicegateway/voicegateway/server/metrics"
	"github.com/voicegateway/voicegateway/server/protocol"
	"github.com/voicegateway/voicegateway/server/session"
	"github.com/voicegateway/voicegateway/server/session/sessiontest"
)

// chattyBackend sends a message of message bytes every millisecond from a
// goroutine of its own, as a relay whose upstream talks a lot does, until
// the session ends.
type chattyBackend struct{ message int }

func (b *chattyBackend) Name() string { return "chatty" }

func (b *chattyBackend) Open(ctx context.Context, info backend.Info, sink backend.Sink) (backend.Conn, error) {
	if err := sink.Event(&protocol.SessionEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeSessionCreated}, Session: map[string]any{}}); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	c := &chattyConn{cancel: cancel}
	msg := []byte(`{"type":"chatter","text":"` + strings.Repeat("x", max(b.message-30, 0)) + `"}`)
	c.done.Add(1)
	go func() {
		defer c.done.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			if sink.Raw(msg) != nil {
				return
			}
		}
	}()
	return c, nil
}

type chattyConn struct {
	cancel context.CancelFunc
	done   sync.WaitGroup
}

func (c *chattyConn) Handle(context.Context, *protocol.ClientEvent) *protocol.Error { return nil }

func (c *chattyConn) Close() error {
	c.cancel()
	c.done.Wait()
	return nil
}

// readAll reads from c on a goroutine of its own, pausing delay after each
// message, until the connection ends; it returns the error codes seen and
// the close status, and counts the errors in errorsRead as it goes.
func readAll(c *websocket.Conn, delay time.Duration, errorsRead *atomic.Int64) <-chan readResult {
	out := make(chan readResult, 1)
	go func() {
		var r readResult
		for {
			_, data, err := c.Read(context.Background())
			if err != nil {
				r.close = websocket.CloseStatus(err)
				out <- r
				return
			}
			var ev struct {
				Type  string `json:"type"`
				Error struct {
					Code string `json:"code"`
				} `json:"error"`
			}
			_ = json.Unmarshal(data, &ev)
			if ev.Type == "error" {
				r.codes = append(r.codes, ev.Error.Code)
				errorsRead.Add(1)
			}
			time.Sleep(delay)
		}
	}()
	return out
}

// smallSendBuffers gives each accepted connection the smallest send buffer.
type smallSendBuffers struct{ net.Listener }

func (l smallSendBuffers) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(1024)
	}
	return c, err
}

// dialSmallReceiveBuffer opens a session whose socket has the smallest receive
// buffer, so that the server's writes back up as soon as the client reads
// slower than the server answers.
func dialSmallReceiveBuffer(t *testing.T, url string) *websocket.Conn {
	t.Helper()
	dialer := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 1024)
		}); err != nil {
			return err
		}
		return serr
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPClient: &http.Client{
		Transport: &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: true},
	}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.CloseNow() })
	return c
}

type readResult struct {
	codes []string
	close websocket.StatusCode
}

// TestInboundBurstDoesNotOverflowAReadingClient: a client sends a burst
// of 400 invalid events (the default inbound burst) against the default
// outbound queue of 256 messages, and reads the answers a moment later
// (its thread was busy for 300 ms), over a link whose buffers hold little
// (the smallest socket buffers on both ends: a phone on a poor network). Each event is
// answered with an error; the server reads the next one only when the
// queue has room (backpressure), so the client gets all 400 answers and
// keeps its session: only a client that does not read at all is a slow
// consumer.
func TestInboundBurstDoesNotOverflowAReadingClient(t *testing.T) {
	// The default burst, and a larger one allowed by --inbound-burst: the
	// server reads no faster than the client takes the answers, whatever
	// the burst.
	for _, burst := range []int{400, 1000} {
		t.Run(fmt.Sprint(burst), func(t *testing.T) {
			cfg := defaultConfig()
			cfg.InboundBurst = max(cfg.InboundBurst, burst)
			a := &session.Acceptor{
				Registry: session.NewRegistry(10),
				Options:  session.Options{Config: cfg, Clock: clock.RealClock{}, Backend: echo.New(clock.RealClock{}), Metrics: metrics.New(), Log: logr.Discard()},
			}
			url := sessiontest.ServeWith(t, a, func(srv *httptest.Server) {
				srv.Listener = smallSendBuffers{srv.Listener}
			})
			h := &harness{t: t, url: url, registry: a.Registry, metrics: a.Options.Metrics}
			c := dialSmallReceiveBuffer(t, h.url)
			sessiontest.ReadUntil(t, c, "session.created")
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			for i := range burst {
				event := fmt.Sprintf(`{"type":"no.such.event.%s","event_id":"e%04d%s"}`, strings.Repeat("x", 110), i, strings.Repeat("y", 120))
				if err := c.Write(ctx, websocket.MessageText, []byte(event)); err != nil {
					t.Fatalf("write %d: %v", i, err)
				}
			}
			time.Sleep(300 * time.Millisecond)
			var errorsRead atomic.Int64
			results := readAll(c, 0, &errorsRead)
			deadline := time.After(30 * time.Second)
			for errorsRead.Load() < int64(burst) {
				select {
				case r := <-results:
					t.Fatalf("the session ended with %v after %d answers (errors %v); want all %d answers and the session kept",
						r.close, len(r.codes), r.codes[max(len(r.codes)-1, 0):], burst)
				case <-deadline:
					t.Fatalf("%d of %d answers read after 30 s", errorsRead.Load(), burst)
				case <-time.After(10 * time.Millisecond):
				}
			}
			if got := h.counter("errors", "slow_consumer"); got != 0 {
				t.Fatalf("a reading client was cut off as a slow consumer (%v)", got)
			}
			if n := h.registry.Len(); n != 1 {
				t.Fatalf("%d sessions, want the client's still open", n)
			}
			if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
				t.Fatal(err)
			}
			r := <-results
			if len(r.codes) != burst {
				t.Fatalf("the client read %d error events, want %d", len(r.codes), burst)
			}
			for _, code := range r.codes {
				if code != "invalid_event" {
					t.Fatalf("error %s among the answers", code)
				}
			}
			h.waitSessions(0)
		})
	}
}

// TestClientThatDoesNotReadIsCutOff: a client that sends on and reads
// nothing, each message answered with 2 KB, is cut off within about
// --write-timeout of its output backing up, as a slow consumer or a failed
// write, and frees its place.
func TestClientThatDoesNotReadIsCutOff(t *testing.T) {
	h := serve(t, func(c *session.Config) {
		c.WriteTimeout = 300 * time.Millisecond
		c.InboundRate, c.InboundBurst = 1e6, 1e6
	})
	c := h.dial("", nil)
	// The upgrade's answer can reach the client before the session is
	// registered.
	h.waitSessions(1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	update := []byte(`{"type":"session.update","session":{"instructions":"` + strings.Repeat("x", 2000) + `"}}`)
	start := time.Now()
	for h.registry.Len() == 1 && ctx.Err() == nil {
		wctx, cancelWrite := context.WithTimeout(ctx, time.Second)
		err := c.Write(wctx, websocket.MessageText, update)
		cancelWrite()
		if err != nil {
			break
		}
	}
	h.waitSessions(0)
	if h.counter("errors", "slow_consumer")+h.counter("errors", "write_failed") != 1 {
		t.Fatalf("a client that reads nothing ended without slow_consumer or write_failed")
	}
	t.Logf("cut off %s after it began sending", time.Since(start).Round(time.Millisecond))
	c.CloseNow()
}

// identityHeaders is an Admit for tests: the session's identity comes from
// request headers, and each admission is recorded with its release.
type identityHeaders struct {
	admitted, released atomic.Int64
}

func (a *identityHeaders) admit(_ http.ResponseWriter, r *http.Request) (session.Grant, bool) {
	a.admitted.Add(1)
	g := session.Grant{
		Identity: session.Identity{APIKeyID: r.Header.Get("X-Key-ID")},
		Claims:   protocol.SessionClaims{Model: r.Header.Get("X-Model"), Voice: r.Header.Get("X-Voice")},
		Release:  func() { a.released.Add(1) },
	}
	if net := r.Header.Get("X-Net"); net != "" {
		g.Identity.ClientNet = netip.MustParsePrefix(net)
	}
	return g, true
}

func withAdmit(f func(http.ResponseWriter, *http.Request) (session.Grant, bool)) option {
	return func(a *session.Acceptor) { a.Admit = f }
}

func withCredentialLimits(perKey, perNet int) option {
	return func(a *session.Acceptor) {
		a.Registry = session.NewRegistry(100).WithCredentialLimits(perKey, perNet)
	}
}

// TestCredentialLimits: the sessions of one API key and of one client
// network are capped apart; a refusal is a close with its documented code
// after the upgrade, gives back what admission took (Release), and a place
// that frees up can be taken again.
func TestCredentialLimits(t *testing.T) {
	ids := &identityHeaders{}
	h := serve(t, nil, withAdmit(ids.admit), withCredentialLimits(2, 3))
	open := func(key, net string) (*websocket.Conn, websocket.StatusCode, string) {
		t.Helper()
		c := h.dial("", headers("X-Key-ID", key, "X-Net", net))
		f, err := sessiontest.Read(t, c)
		if err != nil {
			t.Fatal(err)
		}
		if f.Type() == "session.created" {
			return c, 0, ""
		}
		code, _ := sessiontest.ReadClose(t, c)
		return c, code, f.ErrorCode()
	}
	k1a, _, _ := open("key1", "203.0.113.1/32")
	open("key1", "203.0.113.2/32")
	if _, code, reason := open("key1", "203.0.113.3/32"); code != websocket.StatusPolicyViolation || reason != "api_key_session_limit" {
		t.Fatalf("third session of one key: close %v %s, want 1008 api_key_session_limit", code, reason)
	}
	open("key2", "2001:db8:1:2::/64")
	open("key3", "2001:db8:1:2::/64")
	open("key4", "2001:db8:1:2::/64")
	if _, code, reason := open("key5", "2001:db8:1:2::/64"); code != websocket.StatusPolicyViolation || reason != "client_ip_session_limit" {
		t.Fatalf("fourth session of one /64: close %v %s, want 1008 client_ip_session_limit", code, reason)
	}
	testkit.Eventually(t, 5*time.Second, testkit.That("the 2 refused admissions given back", func() bool { return ids.released.Load() == 2 }))
	if got := h.counter("errors", "api_key_session_limit") + h.counter("errors", "client_ip_session_limit"); got != 2 {
		t.Fatalf("%v refusals counted", got)
	}
	// One of key1's sessions ends: key1 may open another.
	k1a.Close(websocket.StatusNormalClosure, "")
	h.waitSessions(4)
	if _, code, _ := open("key1", "203.0.113.4/32"); code != 0 {
		t.Fatalf("a freed place refused with %v", code)
	}
}

func headers(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		if kv[i+1] != "" {
			h.Set(kv[i], kv[i+1])
		}
	}
	return h
}

// TestMemoryBudgetAdmission: a session is admitted only with its memory
// promise; without it the client gets 1013 memory_limit at once, and the
// promise of a session that ended goes to the next one. Whatever sessions
// held is given back when they end.
func TestMemoryBudgetAdmission(t *testing.T) {
	m := metrics.New()
	budget := memory.NewBudget(3*memory.Promised, m) // admits two
	h := serve(t, nil, func(a *session.Acceptor) {
		a.Memory = budget
		a.Options.Metrics = m
	})
	first := h.dial("audio=binary", nil)
	sessiontest.ReadUntil(t, first, "session.created")
	second := h.dial("", nil)
	sessiontest.ReadUntil(t, second, "session.created")
	third := h.dial("", nil)
	code, frames := sessiontest.ReadClose(t, third)
	if code != websocket.StatusTryAgainLater || len(frames) != 1 || frames[0].ErrorCode() != "memory_limit" {
		t.Fatalf("third session: close %v, frames %v; want 1013 memory_limit", code, frames)
	}
	// A turn is charged while it is held, and echoed byte for byte.
	tone := sessiontest.Tone(48000)
	sessiontest.SendRaw(t, first, websocket.MessageBinary, tone)
	testkit.Eventually(t, 5*time.Second, testkit.That("a second of audio accounted", func() bool {
		return testutil.ToFloat64(m.Admission.MemoryAccounted.WithLabelValues("audio")) >= 48000
	}))
	sessiontest.Send(t, first, map[string]any{"type": "input_audio_buffer.commit"})
	if got := sessiontest.EchoedAudio(t, sessiontest.ReadUntil(t, first, "response.done")); string(got) != string(tone) {
		t.Fatalf("echo differs from what was sent (%d bytes)", len(got))
	}
	second.Close(websocket.StatusNormalClosure, "")
	h.waitSessions(1)
	sessiontest.ReadUntil(t, h.dial("", nil), "session.created")
	first.Close(websocket.StatusNormalClosure, "")
	h.waitSessions(1)
	for _, s := range h.registry.Snapshot() {
		s.Abort()
	}
	h.waitSessions(0)
	testkit.Eventually(t, 5*time.Second, testkit.That("everything given back", func() bool { return budget.Reserved() == 0 }))
	for _, kind := range metrics.MemoryKinds {
		if got := testutil.ToFloat64(m.Admission.MemoryAccounted.WithLabelValues(kind)); got != 0 {
			t.Errorf("%s accounted = %v with no session left", kind, got)
		}
	}
}

// TestHandshakeCap: requests that are not a session yet are capped; one
// more is refused with 503 server_busy and Retry-After before admission
// runs, and a slot frees up when a handshake ends.
func TestHandshakeCap(t *testing.T) {
	hold := make(chan struct{})
	var waiting atomic.Int64
	admit := func(w http.ResponseWriter, r *http.Request) (session.Grant, bool) {
		if r.Header.Get("X-Hold") != "" {
			waiting.Add(1)
			<-hold
		}
		return session.Grant{}, true
	}
	h := serve(t, nil, withAdmit(admit), func(a *session.Acceptor) { a.MaxHandshakes = 2 })
	held := make(chan error, 2)
	for range 2 {
		go func() {
			c, err := sessiontest.TryDial(t, h.url, "", headers("X-Hold", "1"))
			if err == nil {
				c.CloseNow()
			}
			held <- err
		}()
	}
	testkit.Eventually(t, 5*time.Second, testkit.That("two handshakes held", func() bool { return waiting.Load() == 2 }))
	resp, err := http.Get(strings.Replace(h.url, "ws://", "http://", 1))
	if err != nil {
		t.Fatal(err)
	}
	var body struct {
		Error protocol.ErrorBody `json:"error"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || body.Error.Code != protocol.CodeServerBusy || resp.Header.Get("Retry-After") != "1" {
		t.Fatalf("third handshake: %d %+v Retry-After %q; want 503 server_busy, Retry-After 1", resp.StatusCode, body.Error, resp.Header.Get("Retry-After"))
	}
	close(hold)
	for range 2 {
		if err := <-held; err != nil {
			t.Fatalf("a held handshake failed: %v", err)
		}
	}
	sessiontest.ReadUntil(t, h.dial("", nil), "session.created")
}

// TestSessionOutlivesTheServersTimeouts: net/http's read and write
// timeouts bound ordinary requests; a session, whose connection was taken
// over from net/http, lives and echoes past them.
func TestSessionOutlivesTheServersTimeouts(t *testing.T) {
	a := &session.Acceptor{
		Registry: session.NewRegistry(10),
		Options:  session.Options{Config: defaultConfig(), Clock: clock.RealClock{}, Backend: echo.New(clock.RealClock{}), Metrics: metrics.New(), Log: logr.Discard()},
	}
	url := sessiontest.ServeWith(t, a, func(srv *httptest.Server) {
		s := srv.Config
		s.ReadTimeout, s.WriteTimeout, s.ReadHeaderTimeout = 300*time.Millisecond, 300*time.Millisecond, 300*time.Millisecond
	})
	c := sessiontest.Dial(t, url, "audio=binary", nil)
	sessiontest.ReadUntil(t, c, "session.created")
	time.Sleep(time.Second)
	tone := sessiontest.Tone(4800)
	sessiontest.SendRaw(t, c, websocket.MessageBinary, tone)
	sessiontest.Send(t, c, map[string]any{"type": "input_audio_buffer.commit"})
	if got := sessiontest.EchoedAudio(t, sessiontest.ReadUntil(t, c, "response.done")); string(got) != string(tone) {
		t.Fatalf("echo after the server's timeouts: %d bytes", len(got))
	}
}

// TestTokenClaimsHoldOnSessionUpdate: a session opened with claims (a
// client token's model and voice) refuses a session.update that names
// others with a non-fatal invalid_event, and goes on.
func TestTokenClaimsHoldOnSessionUpdate(t *testing.T) {
	ids := &identityHeaders{}
	h := serve(t, nil, withAdmit(ids.admit))
	c := h.dial("", headers("X-Model", "gpt-realtime-mini", "X-Voice", "alloy"))
	sessiontest.ReadUntil(t, c, "session.created")
	for _, update := range []map[string]any{
		{"model": "gpt-realtime"},
		{"voice": "verse"},
		{"audio": map[string]any{"output": map[string]any{"voice": "verse"}}},
	} {
		sessiontest.Send(t, c, map[string]any{"type": "session.update", "session": update})
		f := sessiontest.ReadUntil(t, c, "error")
		if got := f[len(f)-1].ErrorCode(); got != "invalid_event" {
			t.Fatalf("session.update %v answered with %s, want invalid_event", update, got)
		}
	}
	sessiontest.Send(t, c, map[string]any{"type": "session.update", "session": map[string]any{"voice": "alloy", "instructions": "hi"}})
	sessiontest.ReadUntil(t, c, "session.updated")
}
