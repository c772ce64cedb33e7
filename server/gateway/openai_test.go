package gateway

import (
	"bytes"
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

// TestOpenAIModelAllowlist: the client's ?model= reaches the upstream when
// it is in --openai-models; one outside it gets an OpenAI-shaped error
// event and a 1008 close, and the upstream never hears of the session.
func TestOpenAIModelAllowlist(t *testing.T) {
	up := openaitest.New(openaitest.Options{Keys: []string{openaiTestKey}})
	defer up.Close()
	h := start(t, func(c *config.Config) {
		openaiConfig(t, up.URL)(c)
		c.OpenAI.Model = "gpt-realtime"
		c.OpenAI.Models = []string{"gpt-realtime", "gpt-realtime-mini"}
	})

	c := h.dial("model=gpt-realtime-mini", nil)
	sessiontest.ReadUntil(t, c, "session.created")
	conn := up.WaitConn(1, 5*time.Second)
	if conn == nil {
		t.Fatal("no upstream connection")
	}
	if got := conn.Query.Get("model"); got != "gpt-realtime-mini" {
		t.Errorf("upstream model = %q, want the client's gpt-realtime-mini", got)
	}
	c.Close(websocket.StatusNormalClosure, "")
	h.waitSessions(0)

	attempts := up.Attempts()
	c = h.dial("model=gpt-4o-realtime-preview", nil)
	code, frames := sessiontest.ReadClose(t, c)
	if code != websocket.StatusPolicyViolation || len(frames) != 1 || frames[0].ErrorCode() != "model_not_allowed" {
		t.Fatalf("close %d after %v, want 1008 after one model_not_allowed error", code, frames)
	}
	body, _ := frames[0].Event["error"].(map[string]any)
	if body["type"] != "invalid_request_error" || !strings.Contains(body["message"].(string), "gpt-4o-realtime-preview") {
		t.Errorf("error = %v, want an invalid_request_error naming the model", body)
	}
	if n := up.Attempts(); n != attempts {
		t.Errorf("the upstream saw %d handshakes for a refused model", n-attempts)
	}
	h.waitSessions(0)

	// session.update: an allowed model passes, another is refused and
	// never reaches the upstream.
	c = h.dial("", nil)
	sessiontest.ReadUntil(t, c, "session.created")
	conn = up.WaitConn(2, 5*time.Second)
	if got := conn.Query.Get("model"); got != "gpt-realtime" {
		t.Errorf("upstream model = %q, want the configured gpt-realtime", got)
	}
	sessiontest.Send(t, c, map[string]any{"type": "session.update", "session": map[string]any{"model": "gpt-realtime-large"}})
	if f := sessiontest.ReadUntil(t, c, "error"); f[len(f)-1].ErrorCode() != "model_not_allowed" {
		t.Errorf("session.update to another model: %v", f)
	}
	sessiontest.Send(t, c, map[string]any{"type": "session.update", "session": map[string]any{"model": "gpt-realtime-mini"}})
	sessiontest.ReadUntil(t, c, "session.updated")
	for _, r := range conn.Received() {
		if strings.Contains(string(r.Raw), "gpt-realtime-large") {
			t.Error("a refused session.update reached the upstream")
		}
	}
}

// TestOpenAIG711PassesThrough: audio/pcmu is accepted and its bytes go up
// and come back exactly as sent, an odd number of them included.
func TestOpenAIG711PassesThrough(t *testing.T) {
	up := openaitest.New(openaitest.Options{Keys: []string{openaiTestKey}, ChunkBytes: 160})
	defer up.Close()
	h := start(t, openaiConfig(t, up.URL))
	c := h.dial("", nil)
	sessiontest.ReadUntil(t, c, "session.created")
	conn := up.WaitConn(1, 5*time.Second)
	sessiontest.Send(t, c, map[string]any{"type": "session.update", "session": map[string]any{"audio": map[string]any{
		"input":  map[string]any{"format": map[string]any{"type": "audio/pcmu"}},
		"output": map[string]any{"format": map[string]any{"type": "audio/pcmu"}},
	}}})
	sessiontest.ReadUntil(t, c, "session.updated")
	ulaw := make([]byte, 801) // 100 ms of 8 kHz µ-law and one byte
	for i := range ulaw {
		ulaw[i] = byte(i * 7)
	}
	sessiontest.Send(t, c, sessiontest.AppendEvent(ulaw))
	sessiontest.Send(t, c, map[string]any{"type": "input_audio_buffer.commit"})
	sessiontest.Send(t, c, map[string]any{"type": "response.create"})
	frames := sessiontest.ReadUntil(t, c, "response.done")
	if got := conn.Appended(); !bytes.Equal(got, ulaw) {
		t.Errorf("the upstream got %d bytes, want the client's %d exactly", len(got), len(ulaw))
	}
	if got := sessiontest.EchoedAudio(t, frames); !bytes.Equal(got, ulaw) {
		t.Errorf("the client got %d bytes back, want the upstream's %d exactly", len(got), len(ulaw))
	}
}
