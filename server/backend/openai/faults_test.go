package openai

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/backend/backendtest"
	"github.com/voicegateway/voicegateway/server/backend/openai/openaitest"
	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/protocol"
)

// TestUpstreamFaults: each fault of an open upstream ends the session with
// its documented code and close code, frees the upstream connection without
// waiting for Close, and is counted under its kind.
func TestUpstreamFaults(t *testing.T) {
	tests := []struct {
		name      string
		opts      openaitest.Options
		mutate    func(*config.OpenAIConfig)
		fault     openaitest.Fault // injected after session.created; 0: none
		wantCode  protocol.Code
		wantClose websocket.StatusCode
		wantKind  string
		// wantRelayed is the upstream error code the client also gets
		// before the gateway's own error, if any.
		wantRelayed string
	}{
		{name: "closed mid-stream", fault: openaitest.FaultClose,
			wantCode: protocol.CodeUpstreamClosed, wantClose: 1011, wantKind: "closed"},
		{name: "dropped mid-stream", fault: openaitest.FaultDrop,
			wantCode: protocol.CodeUpstreamClosed, wantClose: 1011, wantKind: "closed"},
		{name: "malformed message", fault: openaitest.FaultMalformed,
			wantCode: protocol.CodeUpstreamProtocolError, wantClose: 1011, wantKind: "malformed"},
		{name: "binary message", fault: openaitest.FaultBinary,
			wantCode: protocol.CodeUpstreamProtocolError, wantClose: 1011, wantKind: "malformed"},
		{name: "oversized message", fault: openaitest.FaultOversized,
			opts:     openaitest.Options{OversizedBytes: 100 << 10},
			mutate:   func(c *config.OpenAIConfig) { c.MaxMessageBytes = 64 << 10 },
			wantCode: protocol.CodeUpstreamProtocolError, wantClose: 1011, wantKind: "too_large"},
		{name: "session expired", fault: openaitest.FaultSessionExpired,
			wantCode: protocol.CodeSessionExpired, wantClose: 1008, wantKind: "session_expired", wantRelayed: "session_expired"},
		{name: "key refused after the upgrade", opts: openaitest.Options{Keys: []string{"sk-another-key"}},
			wantCode: protocol.CodeUpstreamUnauthorized, wantClose: 1011, wantKind: "unauthorized"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.opts, tt.mutate)
			baseline := goleak.IgnoreCurrent()
			s := e.open(defaultInfo(false))
			up := e.upstreamConn(1)
			if tt.fault != 0 {
				s.Sink.WaitType(t, protocol.TypeSessionCreated, 1)
				up.Inject(tt.fault)
			}
			err := s.Sink.WaitFail(t)
			if err.Code != tt.wantCode || err.CloseCode != tt.wantClose || !err.Fatal || err.Message == "" {
				t.Fatalf("session failed with %+v, want %s and %d", err, tt.wantCode, tt.wantClose)
			}
			var relayed []string
			for _, r := range s.Sink.Records() {
				if r.Type == protocol.TypeError {
					body, _ := r.Object["error"].(map[string]any)
					code, _ := body["code"].(string)
					relayed = append(relayed, code)
				}
			}
			if want := strings.Fields(tt.wantRelayed); strings.Join(relayed, " ") != strings.Join(want, " ") {
				t.Errorf("upstream errors relayed: %v, want %v", relayed, want)
			}
			if n := e.upstreamErrors(tt.wantKind); n != 1 {
				t.Errorf("upstream_errors_total{kind=%q} = %v, want 1", tt.wantKind, n)
			}
			if err.CloseCode == 1011 {
				// A broken upstream is cut at once, before the session
				// gets round to Close.
				if !e.up.WaitIdle(waitTimeout) {
					t.Error("the upstream connection outlived the fault")
				}
			}
			s.Close()
			if !e.up.WaitIdle(waitTimeout) {
				t.Error("the upstream connection outlived Close")
			}
			if got := up.CloseStatus(); tt.wantCode == protocol.CodeSessionExpired && got != websocket.StatusNormalClosure {
				t.Errorf("an expired upstream was closed with %d, want a normal close", got)
			}
			if n := testutil.ToFloat64(e.metrics.UpstreamConnections); n != 0 {
				t.Errorf("upstream_connections = %v after Close", n)
			}
			if err := goleak.Find(baseline); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestInvalidKeyMessageNotRelayed: the upstream's invalid_api_key error
// quotes part of the gateway's key; the client gets the gateway's code,
// never that message.
func TestInvalidKeyMessageNotRelayed(t *testing.T) {
	e := newEnv(t, openaitest.Options{Keys: []string{"sk-another-key"}}, nil)
	s := e.open(defaultInfo(false))
	s.Sink.WaitFail(t)
	for _, r := range s.Sink.Records() {
		if strings.Contains(string(r.JSON), "API key") || strings.Contains(string(r.JSON), "sk-") {
			t.Errorf("the client was sent %s", r.JSON)
		}
	}
}

// TestDialFailures: Open reports why the upstream could not be opened, as
// the *protocol.Error the client is told, and counts it.
func TestDialFailures(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(e *env)
		wantCode protocol.Code
		wantKind string
	}{
		{name: "key refused at the handshake", setup: func(e *env) {}, wantCode: protocol.CodeUpstreamUnauthorized, wantKind: "unauthorized"},
		{name: "unreachable", setup: func(e *env) { e.up.Close() }, wantCode: protocol.CodeBackendUnavailable, wantKind: "unreachable"},
		{name: "handshake hangs", setup: func(e *env) { e.up.SetHangHandshake(true) }, wantCode: protocol.CodeBackendUnavailable, wantKind: "dial_timeout"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, openaitest.Options{Keys: []string{"sk-another-key"}, AuthFailure: openaitest.AuthFailureHTTP},
				func(c *config.OpenAIConfig) { c.DialTimeout = 200 * time.Millisecond })
			tt.setup(e)
			baseline := goleak.IgnoreCurrent()
			started := time.Now()
			_, err := e.tryOpen(defaultInfo(false))
			var perr *protocol.Error
			if !errors.As(err, &perr) || perr.Code != tt.wantCode || perr.CloseCode != 1011 || !perr.Fatal {
				t.Fatalf("Open = %v, want a fatal %s with 1011", err, tt.wantCode)
			}
			if elapsed := time.Since(started); elapsed > 5*time.Second {
				t.Errorf("Open took %v", elapsed)
			}
			if n := e.upstreamErrors(tt.wantKind); n != 1 {
				t.Errorf("upstream_errors_total{kind=%q} = %v, want 1", tt.wantKind, n)
			}
			if n := testutil.ToFloat64(e.metrics.UpstreamConnections); n != 0 {
				t.Errorf("upstream_connections = %v", n)
			}
			e.up.SetHangHandshake(false)
			if err := goleak.Find(baseline); err != nil {
				t.Error(err)
			}
		})
	}
}

// TestDialEndsWithTheSession: a session that ends while its upstream
// handshake hangs stops dialling at once, and nobody is blamed.
func TestDialEndsWithTheSession(t *testing.T) {
	e := newEnv(t, openaitest.Options{}, func(c *config.OpenAIConfig) { c.DialTimeout = time.Minute })
	e.up.SetHangHandshake(true)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.b.Open(ctx, defaultInfo(false), backendtest.NewSink())
		done <- err
	}()
	testkit.Eventually(t, waitTimeout, testkit.That("the handshake to start", func() bool { return e.up.Attempts() == 1 }))
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Open = %v, want the context's error", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Open did not return when its session ended")
	}
	for _, kind := range []string{"dial_timeout", "unreachable", "refused"} {
		if n := e.upstreamErrors(kind); n != 0 {
			t.Errorf("upstream_errors_total{kind=%q} = %v, want 0", kind, n)
		}
	}
	e.up.SetHangHandshake(false)
}

// TestStallDetection drives the watchdog with the fake clock: an idle
// upstream that answers pings is never stalled, however long it idles; one
// that goes silent ends the session after the stall timeout, not before.
func TestStallDetection(t *testing.T) {
	const stall = 10 * time.Second
	e := newEnv(t, openaitest.Options{}, func(c *config.OpenAIConfig) { c.StallTimeout = stall })
	s := e.open(defaultInfo(false))
	s.Sink.WaitType(t, protocol.TypeSessionCreated, 1)
	up := e.upstreamConn(1)
	c := connOf(s)

	// step moves the clock once the watchdog has re-armed its timer, and
	// waits for a ping's pong when the step reaches pingAfter.
	heardAt := func() time.Time { return time.Unix(0, c.lastHeard.Load()) }
	for range 10 {
		testkit.Eventually(t, waitTimeout, testkit.That("the watchdog timer", e.clk.HasWaiters))
		last := heardAt()
		e.clk.Step(stall / 2)
		testkit.Eventually(t, waitTimeout, testkit.That("a pong", func() bool { return heardAt().After(last) }))
	}
	if fails := s.Sink.Failures(); len(fails) > 0 {
		t.Fatalf("an idle upstream answering pings failed the session: %v", fails)
	}

	up.Inject(openaitest.FaultStall)
	testkit.Eventually(t, waitTimeout, testkit.That("the watchdog timer", e.clk.HasWaiters))
	silentFrom := heardAt()
	e.clk.Step(stall / 2) // a ping goes out and is not answered
	testkit.Eventually(t, waitTimeout, testkit.That("the ping", func() bool { return c.pinging.Load() }))
	testkit.Eventually(t, waitTimeout, testkit.That("the watchdog timer", e.clk.HasWaiters))
	e.clk.Step(stall/2 - time.Millisecond)
	testkit.Eventually(t, waitTimeout, testkit.That("the watchdog timer", e.clk.HasWaiters))
	if fails := s.Sink.Failures(); len(fails) > 0 {
		t.Fatalf("stalled after %v, before the %v timeout: %v", e.clk.Since(silentFrom), stall, fails)
	}
	e.clk.Step(time.Millisecond)
	err := s.Sink.WaitFail(t)
	if err.Code != protocol.CodeUpstreamStalled || err.CloseCode != 1011 {
		t.Fatalf("session failed with %+v, want upstream_stalled", err)
	}
	if n := e.upstreamErrors("stalled"); n != 1 {
		t.Errorf("upstream_errors_total{kind=stalled} = %v", n)
	}
	if !e.up.WaitIdle(waitTimeout) {
		t.Error("the stalled upstream was not cut")
	}
}

// blockingUpstream takes no data: every Write blocks until the connection
// is cut, as on an upstream whose TCP window is closed.
type blockingUpstream struct {
	closed    chan struct{}
	closeOnce sync.Once
}

func newBlockingUpstream() *blockingUpstream { return &blockingUpstream{closed: make(chan struct{})} }

func (u *blockingUpstream) Reader(context.Context) (websocket.MessageType, io.Reader, error) {
	<-u.closed
	return 0, nil, errors.New("closed")
}

func (u *blockingUpstream) Write(context.Context, websocket.MessageType, []byte) error {
	<-u.closed
	return errors.New("closed")
}

func (u *blockingUpstream) Ping(ctx context.Context) error {
	select {
	case <-u.closed:
	case <-ctx.Done():
	}
	return errors.New("closed")
}

func (u *blockingUpstream) Close(websocket.StatusCode, string) error { return u.CloseNow() }

func (u *blockingUpstream) CloseNow() error {
	u.closeOnce.Do(func() { close(u.closed) })
	return nil
}

// TestRelayQueueFull: a client that keeps sending to an upstream that takes
// nothing ends its session as stalled once the relay queue is full, and
// the queue's memory is released.
func TestRelayQueueFull(t *testing.T) {
	e := newEnv(t, openaitest.Options{}, nil)
	sink := backendtest.NewSink()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newConn(ctx, e.b, defaultInfo(true), sink)
	up := newBlockingUpstream()
	c.start(up)
	frame := pcmOf(960, 1)
	var dec = new(protocol.ClientEvent)
	*dec = protocol.ClientEvent{Type: protocol.TypeInputAudioAppend, Binary: true, Audio: frame}
	var failed *protocol.Error
	for i := 0; i < relayQueueMessages+2; i++ {
		if failed = c.Handle(ctx, dec); failed != nil {
			break
		}
	}
	if failed == nil || failed.Code != protocol.CodeUpstreamStalled {
		t.Fatalf("Handle = %+v, want upstream_stalled once the queue is full", failed)
	}
	if got := sink.WaitFail(t); got.Code != protocol.CodeUpstreamStalled {
		t.Errorf("sink.Fail = %+v", got)
	}
	cancel()
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(e.metrics.UpstreamRelayQueue); n != 0 {
		t.Errorf("upstream_relay_queue_messages = %v after Close", n)
	}
	if n := c.queueBytes.Load(); n != 0 {
		t.Errorf("%d queued bytes after Close", n)
	}
}

// TestCloseIsNormal: at the end of a session the upstream gets a normal
// close, and nothing the connection started is left.
func TestCloseIsNormal(t *testing.T) {
	e := newEnv(t, openaitest.Options{}, nil)
	baseline := goleak.IgnoreCurrent()
	s := e.open(defaultInfo(true))
	s.Sink.WaitType(t, protocol.TypeSessionCreated, 1)
	up := e.upstreamConn(1)
	if err := s.SendBinary(pcmOf(9600, 2)); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(e.metrics.UpstreamConnections); n != 1 {
		t.Errorf("upstream_connections = %v with one session", n)
	}
	s.Close()
	if !e.up.WaitIdle(waitTimeout) {
		t.Fatal("the upstream connection is still open")
	}
	if got := up.CloseStatus(); got != websocket.StatusNormalClosure {
		t.Errorf("upstream closed with %d, want 1000", got)
	}
	if fails := s.Sink.Failures(); len(fails) > 0 {
		t.Errorf("a normal close failed the session: %v", fails)
	}
	if n := testutil.ToFloat64(e.metrics.UpstreamConnections); n != 0 {
		t.Errorf("upstream_connections = %v after Close", n)
	}
	if err := goleak.Find(baseline); err != nil {
		t.Error(err)
	}
}

// hungUpstream completes WebSocket upgrades and then reads nothing: it
// answers neither data, pings nor a close frame, like a frozen process.
func hungUpstream(t *testing.T) (wsURL string, accepted func() int) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			req, err := http.ReadRequest(bufio.NewReader(conn))
			if err != nil {
				conn.Close()
				continue
			}
			sum := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
			_, _ = io.WriteString(conn, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
				"Sec-WebSocket-Accept: "+base64.StdEncoding.EncodeToString(sum[:])+"\r\n\r\n")
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return "ws://" + ln.Addr().String() + "/v1/realtime", func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(conns)
	}
}

// TestCloseCutsAHungUpstream: Close returns within its bound even when the
// upstream answers neither data nor the close frame, and leaves nothing
// running.
func TestCloseCutsAHungUpstream(t *testing.T) {
	hungURL, accepted := hungUpstream(t)
	e := newEnv(t, openaitest.Options{}, func(c *config.OpenAIConfig) { c.URL = hungURL })
	baseline := goleak.IgnoreCurrent()
	s := e.open(defaultInfo(false))
	testkit.Eventually(t, waitTimeout, testkit.That("the upgrade", func() bool { return accepted() == 1 }))
	// Fill the relay with more than a socket buffer holds, so that the
	// writer is stuck in a write when the session ends.
	for range 64 {
		if err := s.SendBinary(pcmOf(64<<10, 5)); err != nil {
			break
		}
	}
	started := time.Now()
	s.Close()
	elapsed := time.Since(started)
	if elapsed > upstreamCloseTimeout+2*time.Second {
		t.Errorf("Close took %v", elapsed)
	}
	t.Logf("Close of a hung upstream took %v (bound %v)", elapsed, upstreamCloseTimeout)
	if n := testutil.ToFloat64(e.metrics.UpstreamConnections); n != 0 {
		t.Errorf("upstream_connections = %v after Close", n)
	}
	if err := goleak.Find(baseline); err != nil {
		t.Error(err)
	}
}

// TestKeyRotation: a new key in the key file is used from the next session
// on, without a restart; the session already open keeps its upstream.
func TestKeyRotation(t *testing.T) {
	e := newEnv(t, openaitest.Options{}, func(c *config.OpenAIConfig) { c.KeyPollInterval = time.Second })
	ctx, cancel := context.WithCancel(context.Background())
	watchDone := make(chan error, 1)
	go func() { watchDone <- e.b.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-watchDone; err != nil {
			t.Errorf("Run = %v", err)
		}
	}()

	first := e.open(defaultInfo(false))
	first.Sink.WaitType(t, protocol.TypeSessionCreated, 1)

	const rotated = "sk-rotated-upstream-key-987654"
	e.up.SetKeys(rotated)
	testkit.ReplaceFile(t, e.keyFile, rotated+"\n")
	testkit.Eventually(t, waitTimeout, testkit.That("the rotated key", func() bool {
		if e.clk.HasWaiters() {
			e.clk.Step(time.Second)
		}
		return e.b.key.Value() == rotated
	}))
	second := e.open(defaultInfo(false))
	second.Sink.WaitType(t, protocol.TypeSessionCreated, 1)
	if got := e.upstreamConn(2).Header.Get("Authorization"); got != "Bearer "+rotated {
		t.Errorf("second session sent %q", got)
	}
	// The first session's upstream is unaffected.
	first.MustSend(`{"type":"input_audio_buffer.clear"}`)
	first.Sink.WaitType(t, protocol.TypeInputAudioCleared, 1)
	if fails := append(first.Sink.Failures(), second.Sink.Failures()...); len(fails) > 0 {
		t.Errorf("sessions failed: %v", fails)
	}
}

func TestNewRefusesBadSettings(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(c *config.OpenAIConfig, dir string)
		want   string
	}{
		{name: "missing key file", mutate: func(c *config.OpenAIConfig, dir string) { c.APIKeyFile = dir + "/none" }, want: "--openai-api-key-file"},
		{name: "empty key file", mutate: func(c *config.OpenAIConfig, dir string) {
			c.APIKeyFile = dir + "/empty"
			testkit.ReplaceFile(t, c.APIKeyFile, "\n")
		}, want: "empty"},
		{name: "http url", mutate: func(c *config.OpenAIConfig, dir string) { c.URL = "https://api.openai.com/v1/realtime" }, want: "--openai-url"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg := config.Default().OpenAI
			cfg.APIKeyFile = dir + "/key"
			testkit.ReplaceFile(t, cfg.APIKeyFile, testKey)
			tt.mutate(&cfg, dir)
			if _, err := New(cfg, Options{}); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New = %v, want an error about %s", err, tt.want)
			}
		})
	}
}

func TestUpstreamURL(t *testing.T) {
	tests := []struct{ name, url, model, want string }{
		{name: "model added", url: "wss://api.openai.com/v1/realtime", model: "gpt-realtime", want: "wss://api.openai.com/v1/realtime?model=gpt-realtime"},
		{name: "model replaced, other parameters kept", url: "wss://proxy.example/v1/realtime?model=old&region=eu", model: "gpt-realtime",
			want: "wss://proxy.example/v1/realtime?model=gpt-realtime&region=eu"},
		{name: "empty model leaves the url", url: "ws://127.0.0.1:9/rt?model=x", want: "ws://127.0.0.1:9/rt?model=x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := upstreamURL(tt.url, tt.model)
			if err != nil || got != tt.want {
				t.Fatalf("upstreamURL = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// TestUpstreamURLErrorsKeepSecrets: a URL refused by the backend is named
// in the error redacted, as everywhere else a URL is logged.
func TestUpstreamURLErrorsKeepSecrets(t *testing.T) {
	for _, raw := range []string{
		"https://proxy.example/v1/realtime?api_key=sk-secret-in-query",
		"wss://proxy.example/%zz?api_key=sk-secret-in-query",
	} {
		_, err := upstreamURL(raw, "gpt-realtime")
		if err == nil || strings.Contains(err.Error(), "sk-secret") {
			t.Fatalf("upstreamURL(%q) = %v, want an error without the secret", raw, err)
		}
	}
}

// gatedUpstream takes data only once its gate opens.
type gatedUpstream struct {
	*blockingUpstream
	gate    chan struct{}
	written atomic.Int64
}

func (u *gatedUpstream) Write(ctx context.Context, typ websocket.MessageType, p []byte) error {
	select {
	case <-u.gate:
	case <-u.closed:
		return errors.New("closed")
	}
	u.written.Add(int64(len(p)))
	return nil
}

// TestRelayQueueHoldsTheLargestMessage: one client message of the largest
// size allowed, base64-encoded on the way, fits the relay queue while the
// upstream is briefly not taking data; it is not a stall.
func TestRelayQueueHoldsTheLargestMessage(t *testing.T) {
	e := newEnv(t, openaitest.Options{}, nil)
	sink := backendtest.NewSink()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	info := defaultInfo(true)
	info.MaxMessageBytes = 16 << 20
	c := newConn(ctx, e.b, info, sink)
	up := &gatedUpstream{blockingUpstream: newBlockingUpstream(), gate: make(chan struct{})}
	c.start(up)
	ev := protocol.ClientEvent{Type: protocol.TypeInputAudioAppend, Binary: true, Audio: pcmOf(int(info.MaxMessageBytes), 3)}
	if err := c.Handle(ctx, &ev); err != nil {
		t.Fatalf("Handle of the largest message = %v", err)
	}
	close(up.gate)
	want := int64(base64.StdEncoding.EncodedLen(int(info.MaxMessageBytes))) // plus the event wrappers
	testkit.Eventually(t, waitTimeout, testkit.That("the audio to reach the upstream", func() bool { return up.written.Load() > want }))
	if fails := sink.Failures(); len(fails) > 0 {
		t.Errorf("session failed: %v", fails)
	}
	cancel()
	_ = c.Close()
}
