package main

import (
	"context"
	"io"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/voicegateway/voicegateway/internal/testbin"
	"github.com/voicegateway/voicegateway/internal/testkit"
)

var voiceServer = testbin.New("github.com/voicegateway/voicegateway/cmd/voice-server")

func TestMain(m *testing.M) {
	code := m.Run()
	voiceServer.Remove(code)
	os.Exit(code)
}

// syncBuffer is the demo's stderr, read while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestServersLogJSONWhateverTheEnvironment: the demo reads its servers' JSON
// log lines (the listening line, the drain's steps); VOICEGATEWAY_LOG_FORMAT
// or VOICEGATEWAY_DEV in the caller's environment, which the servers
// inherit, must not turn them into console lines: its flags win.
func TestServersLogJSONWhateverTheEnvironment(t *testing.T) {
	bin := voiceServer.Path(t)
	t.Setenv("VOICEGATEWAY_LOG_FORMAT", "console")
	t.Setenv("VOICEGATEWAY_DEV", "true")
	ctx, cancel := context.WithCancel(context.Background())
	stderr := &syncBuffer{}
	stdin, stdinW := io.Pipe()
	defer stdinW.Close()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--voice-server", bin, "--listen", "127.0.0.1:0", "--drain-timeout", "10s"}, stdin, io.Discard, stderr)
	}()
	defer func() {
		if t.Failed() {
			t.Logf("demo-drain said:\n%s", stderr.String())
		}
	}()
	testkit.Eventually(t, 20*time.Second, testkit.That("both servers up and the proxy listening", func() bool {
		out := stderr.String()
		return strings.Contains(out, "server A: sessions on") && strings.Contains(out, "server B: sessions on") &&
			strings.Contains(out, `{"msg":"listening","public":`)
	}))
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("demo-drain: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("demo-drain did not stop")
	}
	if out := stderr.String(); strings.Contains(out, "[server A]") && strings.Contains(out, "INFO") {
		t.Errorf("console log lines reached the demo:\n%s", out)
	}
}
