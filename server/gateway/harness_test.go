package gateway

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr"
	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/fleet"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// harness is one in-process server on loopback listeners.
type harness struct {
	t        *testing.T
	srv      *Server
	cfg      config.Config
	wsURL    string
	httpURL  string
	adminURL string
	done     chan error
}

// testConfig is a valid configuration with short timings for tests.
func testConfig() config.Config {
	cfg := config.Default()
	cfg.Listen, cfg.AdminListen = "127.0.0.1:0", "127.0.0.1:1"
	cfg.InsecureNoAuth = true
	cfg.Drain.Timeout = 3 * time.Second
	cfg.Drain.PropagationDelay = 200 * time.Millisecond
	cfg.Drain.NotifyWindow = 200 * time.Millisecond
	cfg.Drain.ReconnectAfter = 100 * time.Millisecond
	cfg.Drain.ExitMargin = time.Second
	return cfg
}

func start(t *testing.T, mutate func(*config.Config), opts ...Option) *harness {
	return startWithClock(t, clock.RealClock{}, mutate, opts...)
}

// withoutFleetSecret runs a harness without --fleet-secret-dir; every other
// harness gets a fleet Secret of its own, as the operator gives every pod.
func withoutFleetSecret(c *config.Config) { c.FleetSecretDir = noFleetSecret }

const noFleetSecret = "\x00none"

func startWithClock(t *testing.T, clk clock.WithTickerAndDelayedExecution, mutate func(*config.Config), opts ...Option) *harness {
	t.Helper()
	cfg := testConfig()
	if mutate != nil {
		mutate(&cfg)
	}
	switch cfg.FleetSecretDir {
	case "":
		cfg.FleetSecretDir = writeFleetDir(t)
	case noFleetSecret:
		cfg.FleetSecretDir = ""
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test configuration invalid: %v", err)
	}
	srv, err := New(cfg, testLogger(t), clk, opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	public, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	adminLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{
		t: t, srv: srv, cfg: cfg, done: make(chan error, 1),
		wsURL:    "ws://" + public.Addr().String() + PathRealtime,
		httpURL:  "http://" + public.Addr().String(),
		adminURL: "http://" + adminLn.Addr().String(),
	}
	go func() { h.done <- srv.Serve(context.Background(), public, adminLn) }()
	t.Cleanup(func() {
		srv.ForceDrain()
		if err := h.wait(10 * time.Second); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return h
}

func testLogger(t *testing.T) logr.Logger {
	if os.Getenv("VOICEGATEWAY_TEST_LOGS") != "" {
		return testr.NewWithOptions(t, testr.Options{Verbosity: 1})
	}
	return logr.Discard()
}

// wait waits for Serve to return.
func (h *harness) wait(timeout time.Duration) error {
	select {
	case err := <-h.done:
		h.done <- err // keep it for the next caller
		return err
	case <-time.After(timeout):
		return errors.New("server did not stop")
	}
}

// waitSessions waits until the registry holds n sessions.
func (h *harness) waitSessions(n int) {
	h.t.Helper()
	testkit.Eventually(h.t, 5*time.Second, testkit.That(fmt.Sprintf("%d sessions registered", n), func() bool { return h.srv.Sessions().Len() == n }))
}

func (h *harness) dial(query string, header http.Header) *websocket.Conn {
	h.t.Helper()
	c, err := h.tryDial(query, header)
	if err != nil {
		h.t.Fatalf("dial: %v", err)
	}
	return c
}

func (h *harness) tryDial(query string, header http.Header) (*websocket.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	u := h.wsURL
	if query != "" {
		u += "?" + query
	}
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{HTTPHeader: header})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		return nil, err
	}
	c.SetReadLimit(1 << 20)
	h.t.Cleanup(func() { c.CloseNow() })
	return c, nil
}

func (h *harness) counter(name string, labels ...string) float64 {
	m := h.srv.Metrics()
	switch name {
	case "errors":
		return testutil.ToFloat64(m.Errors.WithLabelValues(labels...))
	case "closed":
		return testutil.ToFloat64(m.SessionsClosed.WithLabelValues(labels...))
	case "auth_failures":
		return testutil.ToFloat64(m.AuthFailures.WithLabelValues(labels...))
	case "frames_in":
		return testutil.ToFloat64(m.AudioFramesIn)
	}
	h.t.Fatalf("unknown counter %s", name)
	return 0
}

// getAdmin GETs an admin path with the fleet Secret's admin token.
func (h *harness) getAdmin(path string) (int, string) {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodGet, h.adminURL+path, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	if h.cfg.FleetSecretDir != "" {
		token, err := os.ReadFile(filepath.Join(h.cfg.FleetSecretDir, fleet.AdminTokenFile))
		if err != nil {
			h.t.Fatal(err)
		}
		req.Header.Set("Authorization", "Bearer "+string(token))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

// writeFleetDir writes a freshly generated fleet Secret into a directory,
// one file per key, as the kubelet mounts it.
func writeFleetDir(t *testing.T) string {
	t.Helper()
	data, err := fleet.Generate(nil, time.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, content := range data {
		if err := os.WriteFile(filepath.Join(dir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var _ = strconv.Itoa
