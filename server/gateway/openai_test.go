package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/server/backend/openai/openaitest"
	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/session/sessiontest"
)

const openaiTestKey = "sk-gateway-test-key-0123456789"

func openaiConfig(t *testing.T, url string) func(*config.Config) {
	keyFile := filepath.Join(t.TempDir(), "openai-key")
	if err := os.WriteFile(keyFile, []byte(openaiTestKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return func(c *config.Config) {
		c.Backend = config.BackendOpenAI
		c.OpenAI.URL, c.OpenAI.APIKeyFile = url, keyFile
		c.OpenAI.KeyPollInterval = 50 * time.Millisecond
	}
}

// TestOpenAIBackendWired: --backend openai relays sessions to the
// configured upstream, reports the backend in /status, and its key
// watcher stops with the server (the package's leak check).
func TestOpenAIBackendWired(t *testing.T) {
	up := openaitest.New(openaitest.Options{Keys: []string{openaiTestKey}})
	defer up.Close()
	h := start(t, openaiConfig(t, up.URL))
	if name := h.srv.backend.Name(); name != "openai" {
		t.Fatalf("backend %q", name)
	}
	c := h.dial("audio=binary", nil)
	created := sessiontest.ReadUntil(t, c, "session.created")
	gw, _ := created[len(created)-1].Event["gateway"].(map[string]any)
	if gw["audio_transport"] != "binary" {
		t.Errorf("session.created gateway = %v", gw)
	}
	if n := testutil.ToFloat64(h.srv.Metrics().UpstreamConnections); n != 1 {
		t.Errorf("upstream_connections = %v", n)
	}
	if err := c.Close(websocket.StatusNormalClosure, ""); err != nil {
		t.Fatal(err)
	}
	h.waitSessions(0)
	if !up.WaitIdle(5 * time.Second) {
		t.Error("the upstream connection outlived the session")
	}
}

// TestOpenAIUpstreamRefusal: a refused key ends the session with the
// backend's own code, not the generic backend_unavailable.
func TestOpenAIUpstreamRefusal(t *testing.T) {
	up := openaitest.New(openaitest.Options{Keys: []string{"sk-other"}, AuthFailure: openaitest.AuthFailureHTTP})
	defer up.Close()
	h := start(t, openaiConfig(t, up.URL))
	c := h.dial("", nil)
	code, frames := sessiontest.ReadClose(t, c)
	if code != websocket.StatusInternalError || len(frames) == 0 || frames[len(frames)-1].ErrorCode() != "upstream_unauthorized" {
		t.Fatalf("close %d after %v, want 1011 after upstream_unauthorized", code, frames)
	}
	h.waitSessions(0)
}

func TestOpenAIBackendNeedsItsKey(t *testing.T) {
	cfg := testConfig()
	openaiConfig(t, "ws://127.0.0.1:9/v1/realtime")(&cfg)
	cfg.OpenAI.APIKeyFile = filepath.Join(t.TempDir(), "missing")
	if _, err := New(cfg, testLogger(t), clock.RealClock{}); err == nil || !strings.Contains(err.Error(), "--openai-api-key-file") {
		t.Fatalf("New = %v, want an error naming --openai-api-key-file", err)
	}
}
