package openai

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/backend/backendtest"
	"github.com/voicegateway/voicegateway/server/backend/openai/openaitest"
	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/metrics"
)

// waitTimeout bounds every wait; it is only reached when a test fails.
const waitTimeout = backendtest.WaitTimeout

const testKey = "sk-test-upstream-key-0123456789"

var testEpoch = time.Date(2026, time.March, 14, 9, 26, 53, 0, time.UTC)

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
	testkit.ReplaceFile(t, keyFile, testKey+"\n")
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

func defaultInfo(binary bool) backend.Info {
	return backend.Info{SessionID: "sess_test", SampleRate: 24000, BinaryAudio: binary, MaxMessageBytes: 256 << 10, Log: logr.Discard()}
}

// open opens a session and waits for the upstream to accept it. It is
// closed at the end of the test the way a session closes it.
func (e *env) open(info backend.Info) *backendtest.Session {
	e.t.Helper()
	s, err := e.tryOpen(info)
	if err != nil {
		e.t.Fatalf("Open: %v", err)
	}
	return s
}

func (e *env) tryOpen(info backend.Info) (*backendtest.Session, error) {
	e.t.Helper()
	return backendtest.TryOpen(e.t, context.Background(), e.b, info, backendtest.NewSink())
}

// connOf is the relay behind a session, for looking at its state.
func connOf(s *backendtest.Session) *conn { return s.Conn.(*conn) }

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

// pcmOf returns n bytes of a recognisable pattern.
func pcmOf(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}
