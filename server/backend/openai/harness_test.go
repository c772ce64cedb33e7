package openai

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/backend/openai/openaitest"
	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/metrics"
	"github.com/voicegateway/voicegateway/server/protocol"
)

// waitTimeout bounds every wait; it is only reached when a test fails.
const waitTimeout = 10 * time.Second

const testKey = "sk-test-upstream-key-0123456789"

var testEpoch = time.Date(2026, time.March, 14, 9, 26, 53, 0, time.UTC)

// recorded is one thing the backend sent the client.
type recorded struct {
	kind string // "raw", "event", "audio"
	typ  string
	raw  []byte // the JSON as the client reads it (raw and event)
	obj  map[string]any
	ref  protocol.ContentRef
	pcm  []byte
}

// recordingSink is a backend.Sink that records what the backend sends.
type recordingSink struct {
	mu      sync.Mutex
	changed chan struct{}
	out     []recorded
	fails   []*protocol.Error
	failAt  time.Time
}

var _ backend.Sink = (*recordingSink)(nil)

func newSink() *recordingSink { return &recordingSink{changed: make(chan struct{})} }

func (s *recordingSink) add(r recorded) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.fails) > 0 {
		return backend.ErrSessionClosed
	}
	s.out = append(s.out, r)
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

func decoded(kind string, data []byte) recorded {
	r := recorded{kind: kind, raw: append([]byte(nil), data...)}
	_ = json.Unmarshal(data, &r.obj)
	r.typ, _ = r.obj["type"].(string)
	return r
}

func (s *recordingSink) Event(ev protocol.Event) error {
	data, err := protocol.Marshal(ev, "event_gw")
	if err != nil {
		return err
	}
	return s.add(decoded("event", data))
}

func (s *recordingSink) Raw(data []byte) error { return s.add(decoded("raw", data)) }

func (s *recordingSink) Audio(ref protocol.ContentRef, pcm []byte) error {
	return s.add(recorded{kind: "audio", ref: ref, pcm: append([]byte(nil), pcm...)})
}

func (s *recordingSink) Fail(err *protocol.Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fails = append(s.fails, err)
	if len(s.fails) == 1 {
		s.failAt = time.Now()
	}
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *recordingSink) wait(t testing.TB, what string, cond func() bool) {
	t.Helper()
	timeout := time.NewTimer(waitTimeout)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		ok := cond()
		changed := s.changed
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("timed out waiting for %s; sent so far: %v; fails: %v", what, s.types(), s.failures())
		}
	}
}

// waitType waits for the n-th (1-based) relayed event of type typ.
func (s *recordingSink) waitType(t testing.TB, typ string, n int) recorded {
	t.Helper()
	var found recorded
	s.wait(t, typ, func() bool {
		seen := 0
		for _, r := range s.out {
			if r.typ == typ {
				if seen++; seen == n {
					found = r
					return true
				}
			}
		}
		return false
	})
	return found
}

// waitFail waits for the session to be failed and returns the error.
func (s *recordingSink) waitFail(t testing.TB) *protocol.Error {
	t.Helper()
	s.wait(t, "the session to fail", func() bool { return len(s.fails) > 0 })
	return s.failures()[0]
}

func (s *recordingSink) failures() []*protocol.Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*protocol.Error(nil), s.fails...)
}

func (s *recordingSink) all() []recorded {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]recorded(nil), s.out...)
}

func (s *recordingSink) types() []string {
	var out []string
	for _, r := range s.all() {
		if r.kind == "audio" {
			out = append(out, "audio")
		} else {
			out = append(out, r.typ)
		}
	}
	return out
}

func (s *recordingSink) audio() []byte {
	var pcm []byte
	for _, r := range s.all() {
		if r.kind == "audio" {
			pcm = append(pcm, r.pcm...)
		}
	}
	return pcm
}

// env is a backend wired to a local upstream and a fake clock.
type env struct {
	t       *testing.T
	up      *openaitest.Server
	cfg     config.OpenAIConfig
	b       *Backend
	clk     *testingclock.FakeClock
	metrics *metrics.Server
	keyFile string
}

func testLogger(t *testing.T) logr.Logger {
	if os.Getenv("VOICEGATEWAY_TEST_LOGS") != "" {
		return testr.NewWithOptions(t, testr.Options{Verbosity: 1})
	}
	return logr.Discard()
}

// newEnv starts an upstream and a backend for it. The upstream is closed
// when the test ends, after every session the test opened.
func newEnv(t *testing.T, opts openaitest.Options, mutate func(*config.OpenAIConfig)) *env {
	t.Helper()
	if opts.Keys == nil {
		opts.Keys = []string{testKey}
	}
	up := openaitest.New(opts)
	t.Cleanup(up.Close)
	keyFile := filepath.Join(t.TempDir(), "openai-key")
	writeFile(t, keyFile, testKey+"\n")
	cfg := config.Default().OpenAI
	cfg.URL, cfg.APIKeyFile = up.URL, keyFile
	cfg.DialTimeout = 5 * time.Second
	if mutate != nil {
		mutate(&cfg)
	}
	e := &env{t: t, up: up, cfg: cfg, clk: testingclock.NewFakeClock(testEpoch), metrics: metrics.New(), keyFile: keyFile}
	b, err := New(cfg, Options{Clock: e.clk, Metrics: e.metrics, Log: testLogger(t)})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	e.b = b
	return e
}

func writeFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func defaultInfo(binary bool) backend.Info {
	return backend.Info{SessionID: "sess_test", SampleRate: 24000, BinaryAudio: binary, MaxMessageBytes: 256 << 10, Log: logr.Discard()}
}

// session is one open backend connection, as a session drives it.
type session struct {
	t      *testing.T
	e      *env
	sink   *recordingSink
	conn   *conn
	cancel context.CancelFunc
	dec    protocol.Decoder
	closed bool
}

// open opens a session and waits for the upstream to accept it. It is
// closed at the end of the test the way a session closes it.
func (e *env) open(info backend.Info) *session {
	e.t.Helper()
	s, err := e.tryOpen(info)
	if err != nil {
		e.t.Fatalf("Open: %v", err)
	}
	return s
}

func (e *env) tryOpen(info backend.Info) (*session, error) {
	ctx, cancel := context.WithCancel(context.Background())
	sink := newSink()
	bc, err := e.b.Open(ctx, info, sink)
	if err != nil {
		cancel()
		return nil, err
	}
	s := &session{t: e.t, e: e, sink: sink, conn: bc.(*conn), cancel: cancel}
	e.t.Cleanup(s.close)
	return s, nil
}

// close ends the session as a session does: cancel its context, then
// Close once.
func (s *session) close() {
	if s.closed {
		return
	}
	s.closed = true
	s.cancel()
	if err := s.conn.Close(); err != nil {
		s.t.Errorf("Close: %v", err)
	}
}

// send decodes a client text message as a session does and hands it over.
func (s *session) send(msg string) *protocol.Error {
	s.t.Helper()
	ev, err := s.dec.DecodeText([]byte(msg))
	if err != nil {
		s.t.Fatalf("test message does not decode: %v: %s", err, msg)
	}
	return s.conn.Handle(context.Background(), &ev)
}

func (s *session) mustSend(msg string) {
	s.t.Helper()
	if err := s.send(msg); err != nil {
		s.t.Fatalf("%.80s rejected: %v", msg, err)
	}
}

func (s *session) sendBinary(pcm []byte) *protocol.Error {
	s.t.Helper()
	ev, err := s.dec.DecodeBinary(pcm)
	if err != nil {
		s.t.Fatalf("test audio does not decode: %v", err)
	}
	return s.conn.Handle(context.Background(), &ev)
}

// upstreamConn waits for the n-th upstream connection.
func (e *env) upstreamConn(n int) *openaitest.Conn {
	e.t.Helper()
	c := e.up.WaitConn(n, waitTimeout)
	if c == nil {
		e.t.Fatalf("upstream connection %d never arrived", n)
	}
	return c
}

func (e *env) upstreamErrors(kind string) float64 {
	return testutil.ToFloat64(e.metrics.UpstreamErrors.WithLabelValues(kind))
}

func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// pcmOf returns n bytes of a recognisable pattern.
func pcmOf(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}
