package logging

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zapcore"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// buffer is a WriteSyncer that records writes and counts syncs.
type buffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	syncs int
}

func (b *buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *buffer) Sync() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.syncs++
	return nil
}

func (b *buffer) lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var lines []map[string]any
	scanner := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	for scanner.Scan() {
		var line map[string]any
		if err := json.Unmarshal(scanner.Bytes(), &line); err != nil {
			t.Fatalf("line %q is not JSON: %v", scanner.Text(), err)
		}
		lines = append(lines, line)
	}
	return lines
}

var _ zapcore.WriteSyncer = (*buffer)(nil)

func TestJSONOutput(t *testing.T) {
	out := &buffer{}
	log, flush, err := newLogger(false, "info", out)
	if err != nil {
		t.Fatal(err)
	}
	log.WithName("session").Info("session opened", "session_id", "s-1", "sessions", 3, "idle_timeout", 2*time.Minute)
	log.Error(errors.New("upstream refused"), "backend failed", "backend", "openai")
	flush()

	lines := out.lines(t)
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2: %v", len(lines), lines)
	}
	info, failure := lines[0], lines[1]
	for key, want := range map[string]any{
		"level":        "info",
		"msg":          "session opened",
		"logger":       "session",
		"session_id":   "s-1",
		"sessions":     float64(3),
		"idle_timeout": "2m0s",
	} {
		if info[key] != want {
			t.Errorf("info line %s = %#v, want %#v", key, info[key], want)
		}
	}
	if ts, _ := info["ts"].(string); !isISO8601(ts) {
		t.Errorf("ts = %#v, want an ISO 8601 time", info["ts"])
	}
	// The caller must be the line that logged, not zapr or logr.
	if caller, _ := info["caller"].(string); !strings.HasPrefix(caller, "logging/logging_test.go:") {
		t.Errorf("caller = %#v, want this test file", info["caller"])
	}

	for key, want := range map[string]any{
		"level":   "error",
		"msg":     "backend failed",
		"error":   "upstream refused",
		"backend": "openai",
	} {
		if failure[key] != want {
			t.Errorf("error line %s = %#v, want %#v", key, failure[key], want)
		}
	}
	if _, ok := failure["stacktrace"]; ok {
		t.Error("error line carries a stack trace")
	}
	if out.syncs == 0 {
		t.Error("flush did not sync the output")
	}
}

func isISO8601(ts string) bool {
	_, err := time.Parse("2006-01-02T15:04:05.000Z0700", ts)
	return err == nil
}

func TestLevels(t *testing.T) {
	tests := []struct {
		level string
		// want are the messages that get through, of V(1), V(2), Info and
		// Error; logr has no warn, so warn lets only errors through.
		want []string
	}{
		{level: "debug", want: []string{"v1", "info", "error"}},
		{level: "", want: []string{"info", "error"}},
		{level: "info", want: []string{"info", "error"}},
		{level: "warn", want: []string{"error"}},
		{level: "error", want: []string{"error"}},
	}
	for _, tt := range tests {
		t.Run("level "+tt.level, func(t *testing.T) {
			out := &buffer{}
			log, flush, err := newLogger(false, tt.level, out)
			if err != nil {
				t.Fatal(err)
			}
			log.V(1).Info("v1")
			log.V(2).Info("v2")
			log.Info("info")
			log.Error(nil, "error")
			flush()

			var got []string
			for _, line := range out.lines(t) {
				got = append(got, line["msg"].(string))
			}
			if strings.Join(got, ",") != strings.Join(tt.want, ",") {
				t.Errorf("messages %v, want %v", got, tt.want)
			}
		})
	}
}

func TestBadLevel(t *testing.T) {
	for _, level := range []string{"verbose", "fatal", "panic", "dpanic", "INFO "} {
		_, flush, err := newLogger(false, level, &buffer{})
		if err == nil || !strings.Contains(err.Error(), `"`+level+`"`) {
			t.Errorf("level %q: error %v, want one naming the level", level, err)
		}
		flush() // safe to call even on failure
	}
	if _, _, err := New(FormatJSON, "loud"); err == nil {
		t.Error("New accepted level \"loud\"")
	}
	if _, _, err := New("xml", "info"); err == nil || !strings.Contains(err.Error(), "json, console") {
		t.Errorf("New with format xml: %v, want an error naming the formats", err)
	}
}

// TestFormats: NewTo writes JSON lines or console lines as asked, the
// same for the voice server and the operator.
func TestFormats(t *testing.T) {
	for format, isJSON := range map[string]bool{FormatJSON: true, "": true, FormatConsole: false} {
		var out bytes.Buffer
		log, flush, err := NewTo(format, "info", &out)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("hello", "n", 1)
		flush()
		if got := strings.HasPrefix(out.String(), "{"); got != isJSON {
			t.Errorf("format %q wrote %q", format, out.String())
		}
	}
}

func TestDevConsole(t *testing.T) {
	out := &buffer{}
	log, flush, err := newLogger(true, "debug", out)
	if err != nil {
		t.Fatal(err)
	}
	log.V(1).Info("drain started", "sessions", 4)
	flush()

	line := out.buf.String()
	for _, want := range []string{"DEBUG", "drain started", `"sessions": 4`, "logging_test.go:"} {
		if !strings.Contains(line, want) {
			t.Errorf("console line %q lacks %q", line, want)
		}
	}
	if strings.HasPrefix(line, "{") {
		t.Errorf("console line %q is JSON", line)
	}
}

func TestFloodIsSampled(t *testing.T) {
	out := &buffer{}
	log, flush, err := newLogger(false, "info", out)
	if err != nil {
		t.Fatal(err)
	}
	const logged = 1000
	for range logged {
		log.Info("authentication failed", "client_ip", "192.0.2.1")
	}
	log.Info("different message")
	flush()

	lines := out.lines(t)
	// Within one second: the first 100, then one in 100. A tick of the
	// sampler's one-second window mid-loop lets another 100 through.
	if len(lines) < 100 || len(lines) > 300 {
		t.Errorf("%d identical lines produced %d, want them thinned to about 110", logged, len(lines))
	}
	if last := lines[len(lines)-1]["msg"]; last != "different message" {
		t.Errorf("last line %q: a flood of one message held back another", last)
	}
}

func TestNew(t *testing.T) {
	log, flush, err := New(FormatJSON, "error")
	if err != nil {
		t.Fatal(err)
	}
	defer flush()
	if log.Enabled() {
		t.Error("info is enabled at level error")
	}
}
