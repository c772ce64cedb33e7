package openai

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-logr/logr/funcr"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/backend/backendtest"
	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/metrics"
)

// TestDialFailureLogsNoURLSecret: an upstream URL with a key in its query
// (an unreachable one here) is logged, with the dial's error, with the
// query's values redacted.
func TestDialFailureLogsNoURLSecret(t *testing.T) {
	const secret = "sk-query-secret-0123456789"
	var mu sync.Mutex
	var logged strings.Builder
	log := funcr.New(func(prefix, args string) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintln(&logged, prefix, args)
	}, funcr.Options{})
	keyFile := filepath.Join(t.TempDir(), "key")
	testkit.ReplaceFile(t, keyFile, testKey+"\n")
	cfg := config.Default().OpenAI
	cfg.URL, cfg.APIKeyFile, cfg.Model = "ws://127.0.0.1:1/v1/realtime?api_key="+secret, keyFile, ""
	b, err := New(cfg, Options{Metrics: metrics.New(), Log: log})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Open(context.Background(), defaultInfo(false), backendtest.NewSink()); err == nil {
		t.Fatal("a dial to a closed port succeeded")
	}
	mu.Lock()
	defer mu.Unlock()
	if out := logged.String(); strings.Contains(out, secret) || !strings.Contains(out, "api_key=REDACTED") {
		t.Fatalf("the log of a failed dial:\n%s", out)
	}
}
