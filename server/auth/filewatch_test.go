package auth

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/voicegateway/voicegateway/internal/testkit"
)

func TestParseBearerSecret(t *testing.T) {
	tests := []struct {
		name    string
		content string
		want    string
		wantErr string
	}{
		{name: "trailing newline trimmed", content: "sk-upstream-key\n", want: "sk-upstream-key"},
		{name: "CRLF and spaces trimmed", content: "  sk-upstream-key\r\n", want: "sk-upstream-key"},
		{name: "empty", content: "\n\n", wantErr: "empty"},
		{name: "inner space", content: "sk-up stream", wantErr: "space"},
		{name: "two lines", content: "sk-one\nsk-two\n", wantErr: "control"},
		{name: "non-ASCII", content: "sk-ключ", wantErr: "non-ASCII"},
		{name: "too long", content: strings.Repeat("k", MaxKeyLen+1), wantErr: "longer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseBearerSecret([]byte(tt.content))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseBearerSecret = %q, %v; want an error about %q", got, err, tt.wantErr)
				}
				if secret := strings.TrimSpace(tt.content); secret != "" && strings.Contains(err.Error(), secret) {
					t.Errorf("error %q repeats the secret", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ParseBearerSecret = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestNewSecretFileRefusesBadFiles(t *testing.T) {
	tests := map[string]func(t *testing.T) string{
		"missing": func(t *testing.T) string { return t.TempDir() + "/none" },
		"empty":   func(t *testing.T) string { return writeKeyFile(t, "\n") },
		"too big": func(t *testing.T) string { return writeKeyFile(t, strings.Repeat("k", maxSecretValueSize+1)) },
	}
	for name, path := range tests {
		t.Run(name, func(t *testing.T) {
			if f, err := NewSecretFile(path(t), ParseBearerSecret); err == nil {
				t.Fatalf("NewSecretFile accepted it: %q", f.Value())
			}
		})
	}
}

// TestSecretFileWatch follows a rotated secret, keeps the previous value
// through a bad or missing file, and never logs the secret.
func TestSecretFileWatch(t *testing.T) {
	const (
		interval = 10 * time.Second
		first    = "sk-first-upstream-key"
		second   = "sk-second-upstream-key"
	)
	path := writeKeyFile(t, first+"\n")
	f, err := NewSecretFile(path, ParseBearerSecret)
	if err != nil {
		t.Fatal(err)
	}
	if f.Value() != first || f.Path() != path {
		t.Fatalf("Value = %q, Path = %q", f.Value(), f.Path())
	}
	clk := newFakeClock()
	var sink logSink
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Watch(ctx, interval, clk, sink.logger()) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch = %v, want nil", err)
		}
	}()
	testkit.Eventually(t, 5*time.Second, testkit.That("Watch to start its ticker", clk.HasWaiters))
	step := func() { clk.Step(interval) }

	testkit.ReplaceFile(t, path, second+"\n")
	testkit.Eventually(t, 5*time.Second, testkit.That("the rotated secret", func() bool { step(); return f.Value() == second }))
	// The new value is stored before the reload is logged: wait for both.
	testkit.Eventually(t, 5*time.Second, testkit.That("the reload to be logged", func() bool { return sink.contains("Reloaded secret file") }))

	testkit.ReplaceFile(t, path, "two words\n")
	testkit.Eventually(t, 5*time.Second, testkit.That("the invalid file to be reported", func() bool {
		step()
		return sink.contains("Secret file is invalid")
	}))
	if f.Value() != second {
		t.Errorf("Value = %q after an invalid file, want the previous one", f.Value())
	}

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, testkit.That("the missing file to be reported", func() bool {
		step()
		return sink.contains("Cannot read secret file")
	}))
	if f.Value() != second {
		t.Errorf("Value = %q after the file went away, want the previous one", f.Value())
	}
	for _, secret := range []string{first, second, "two words"} {
		if sink.contains(secret) {
			t.Fatalf("log contains a secret:\n%s", sink.all())
		}
	}
}
