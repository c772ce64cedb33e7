package voiceclient

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr"
	"go.uber.org/goleak"
	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/gateway"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testAPIKey = "voiceclient-test-key-0123456789abcdef"

// voiceServer is a real voice server (the echo backend) running in this
// process on loopback listeners until the test ends.
type voiceServer struct {
	srv       *gateway.Server
	url, http string
	done      chan error
}

// startVoiceServer runs a voice server with quick drain timings, without
// authentication unless mutate sets an API key file.
func startVoiceServer(t *testing.T, mutate func(*config.Config)) *voiceServer {
	t.Helper()
	cfg := config.Default()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
	cfg.InsecureNoAuth = true
	cfg.Drain = config.DrainConfig{Timeout: 3 * time.Second, PropagationDelay: 50 * time.Millisecond,
		NotifyWindow: 50 * time.Millisecond, ReconnectAfter: 100 * time.Millisecond, ExitMargin: time.Second}
	if mutate != nil {
		mutate(&cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test configuration: %v", err)
	}
	srv, err := gateway.New(cfg, logr.Discard(), clock.RealClock{})
	if err != nil {
		t.Fatal(err)
	}
	public, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	admin, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &voiceServer{srv: srv, done: make(chan error, 1),
		url: "ws://" + public.Addr().String() + gateway.PathRealtime, http: "http://" + public.Addr().String()}
	go func() { s.done <- srv.Serve(context.Background(), public, admin) }()
	t.Cleanup(func() {
		srv.ForceDrain()
		if err := s.wait(10 * time.Second); err != nil {
			t.Errorf("voice server: %v", err)
		}
	})
	return s
}

// wait waits for Serve to return, keeping its result for the next caller.
func (s *voiceServer) wait(timeout time.Duration) error {
	select {
	case err := <-s.done:
		s.done <- err
		return err
	case <-time.After(timeout):
		return errors.New("the voice server did not stop")
	}
}

// withAPIKey turns authentication on with testAPIKey.
func withAPIKey(t *testing.T) func(*config.Config) {
	file := filepath.Join(t.TempDir(), "api-keys")
	if err := os.WriteFile(file, []byte(testAPIKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *config.Config) { c.InsecureNoAuth, c.APIKeysFile = false, file }
}

// mintToken gets a client token with the API key; binary fixes the
// session's audio transport in its claims.
func (s *voiceServer) mintToken(t *testing.T, binary bool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	token, err := MintToken(ctx, MintOptions{URL: s.http + gateway.PathClientTokens, APIKey: testAPIKey, TTL: time.Minute, Binary: binary})
	if err != nil {
		t.Fatal(err)
	}
	return token
}

// startPlainEcho runs a plain WebSocket echo (what vgload measures its
// baseline with) until the test ends.
func startPlainEcho(t *testing.T) string {
	t.Helper()
	var handlers sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers.Add(1)
		defer handlers.Done()
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		ctx := r.Context()
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil || c.Write(ctx, typ, msg) != nil {
				return
			}
		}
	}))
	t.Cleanup(func() {
		srv.Close()
		handlers.Wait() // hijacked connections outlive Close
	})
	return "ws://" + srv.Listener.Addr().String() + "/"
}
