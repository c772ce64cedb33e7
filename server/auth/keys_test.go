package auth

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/go-logr/logr/funcr"
	"k8s.io/utils/clock"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/internal/testkit"
)

func TestParseKeys(t *testing.T) {
	tests := []struct {
		name     string
		content  string
		wantKeys []string // each must match
		wantLen  int
		wantErr  string // substring; "" means success
	}{
		{
			name:     "one key",
			content:  keyAlpha + "\n",
			wantKeys: []string{keyAlpha},
			wantLen:  1,
		},
		{
			name:     "no trailing newline",
			content:  keyAlpha,
			wantKeys: []string{keyAlpha},
			wantLen:  1,
		},
		{
			name:     "comments and blank lines",
			content:  "# production keys\n\n" + keyAlpha + "\n   \n  # rotated 2025-03\n" + keyBeta + "\n",
			wantKeys: []string{keyAlpha, keyBeta},
			wantLen:  2,
		},
		{
			name:     "CRLF line endings",
			content:  "# windows\r\n" + keyAlpha + "\r\n" + keyBeta + "\r\n\r\n",
			wantKeys: []string{keyAlpha, keyBeta},
			wantLen:  2,
		},
		{
			name:     "surrounding whitespace trimmed",
			content:  "  \t" + keyAlpha + " \t\n",
			wantKeys: []string{keyAlpha},
			wantLen:  1,
		},
		{
			name:     "duplicates counted once",
			content:  keyAlpha + "\n" + keyAlpha + "\n" + keyBeta + "\n",
			wantKeys: []string{keyAlpha, keyBeta},
			wantLen:  2,
		},
		{
			name:    "empty file",
			content: "",
			wantErr: "has no keys",
		},
		{
			name:    "only comments and blanks",
			content: "# nothing yet\n\n\r\n",
			wantErr: "has no keys",
		},
		{
			name:    "key too short",
			content: keyAlpha + "\nsk-tiny\n",
			wantErr: "line 2: key shorter than 16 bytes",
		},
		{
			name:    "key too long",
			content: strings.Repeat("k", MaxKeyLen+1),
			wantErr: "line 1: key longer than",
		},
		{
			name:    "space inside key",
			content: "sk-alpha 0123456789abcdef\n",
			wantErr: "line 1: key contains a space",
		},
		{
			name:    "control character inside key",
			content: "sk-alpha\x000123456789abcdef\n",
			wantErr: "line 1: key contains a space, control",
		},
		{
			name:    "non-ASCII key",
			content: "sk-alpha-0123456789abcdé\n",
			wantErr: "line 1: key contains a space, control or non-ASCII",
		},
		{
			name:    "key shaped like a client token",
			content: TokenPrefix + "0123456789abcdef\n",
			wantErr: "client token prefix",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := parseKeys([]byte(tt.content))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseKeys error = %v, want one containing %q", err, tt.wantErr)
				}
				// Errors name lines, never their content.
				for _, line := range strings.Split(tt.content, "\n") {
					if len(line) >= 5 && !strings.HasPrefix(line, "#") && strings.Contains(err.Error(), strings.TrimSpace(line)) {
						t.Fatalf("error %q quotes the file content", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatalf("parseKeys: %v", err)
			}
			if set.Len() != tt.wantLen {
				t.Errorf("Len() = %d, want %d", set.Len(), tt.wantLen)
			}
			for _, key := range tt.wantKeys {
				if id, ok := set.Match(key); !ok || id != KeyID(key) {
					t.Errorf("Match(%q) = %q, %v; want %q, true", key, id, ok, KeyID(key))
				}
			}
		})
	}
}

func TestLoadKeyFile(t *testing.T) {
	t.Run("reads a file", func(t *testing.T) {
		set, err := LoadKeyFile(writeKeyFile(t, "# keys\r\n"+keyAlpha+"\r\n"))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := set.Match(keyAlpha); !ok {
			t.Error("key from file does not match")
		}
	})
	t.Run("empty file", func(t *testing.T) {
		path := writeKeyFile(t, "")
		_, err := LoadKeyFile(path)
		if err == nil || !strings.Contains(err.Error(), "no keys") || !strings.Contains(err.Error(), path) {
			t.Fatalf("error = %v, want one naming the file and saying it has no keys", err)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		_, err := LoadKeyFile(filepath.Join(t.TempDir(), "absent"))
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("error = %v, want ErrNotExist", err)
		}
	})
	t.Run("file too large", func(t *testing.T) {
		big := strings.Repeat(keyAlpha+"\n", maxKeyFileSize/len(keyAlpha)+1)
		_, err := LoadKeyFile(writeKeyFile(t, big))
		if err == nil || !strings.Contains(err.Error(), "larger than") {
			t.Fatalf("error = %v, want a size error", err)
		}
	})
}

func TestKeySetMatch(t *testing.T) {
	set, err := parseKeys([]byte(keyAlpha + "\n" + keyBeta + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		presented string
		wantOK    bool
	}{
		{name: "first key", presented: keyAlpha, wantOK: true},
		{name: "second key", presented: keyBeta, wantOK: true},
		{name: "unknown key", presented: keyGamma},
		{name: "prefix of a key", presented: keyAlpha[:len(keyAlpha)-1]},
		{name: "key with a suffix", presented: keyAlpha + "x"},
		{name: "empty", presented: ""},
		{name: "different case", presented: strings.ToUpper(keyAlpha)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, ok := set.Match(tt.presented)
			if ok != tt.wantOK {
				t.Fatalf("Match ok = %v, want %v", ok, tt.wantOK)
			}
			if ok && (id != KeyID(tt.presented) || !set.HasID(id)) {
				t.Fatalf("Match id = %q, want %q and known to HasID", id, KeyID(tt.presented))
			}
			if !ok && id != "" {
				t.Fatalf("Match id = %q for a failed match", id)
			}
		})
	}
	t.Run("nil set matches nothing", func(t *testing.T) {
		var nilSet *KeySet
		if _, ok := nilSet.Match(keyAlpha); ok || nilSet.HasID(KeyID(keyAlpha)) {
			t.Fatal("nil KeySet matched")
		}
	})
}

func TestKeyID(t *testing.T) {
	id := KeyID(keyAlpha)
	if !isKeyID(id) {
		t.Fatalf("KeyID = %q, want 8 lowercase hex characters", id)
	}
	if KeyID(keyBeta) == id {
		t.Fatal("different keys share a KeyID")
	}
	if strings.Contains(keyAlpha, id) {
		t.Fatal("KeyID is part of the key")
	}
}

func TestKeyStoreReload(t *testing.T) {
	path := writeKeyFile(t, keyAlpha+"\n")
	store, err := NewKeyStore(path)
	if err != nil {
		t.Fatal(err)
	}
	if store.Path() != path {
		t.Errorf("Path() = %q, want %q", store.Path(), path)
	}

	testkit.ReplaceFile(t, path, keyBeta+"\n")
	if err := store.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	assertKeys(t, store, []string{keyBeta}, []string{keyAlpha})

	testkit.ReplaceFile(t, path, "# emptied by mistake\n")
	if err := store.Reload(); err == nil || !strings.Contains(err.Error(), "no keys") {
		t.Fatalf("Reload of an empty file = %v, want a no-keys error", err)
	}
	assertKeys(t, store, []string{keyBeta}, nil)

	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := store.Reload(); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Reload of a missing file = %v, want ErrNotExist", err)
	}
	assertKeys(t, store, []string{keyBeta}, nil)

	t.Run("NewKeyStore refuses an empty file", func(t *testing.T) {
		if _, err := NewKeyStore(writeKeyFile(t, "\n")); err == nil {
			t.Fatal("NewKeyStore accepted a file without keys")
		}
	})
}

func assertKeys(t *testing.T, store *KeyStore, accepted, refused []string) {
	t.Helper()
	keys := store.Keys()
	for _, k := range accepted {
		if _, ok := keys.Match(k); !ok {
			t.Errorf("key %s refused, want accepted", KeyID(k))
		}
	}
	for _, k := range refused {
		if _, ok := keys.Match(k); ok {
			t.Errorf("key %s accepted, want refused", KeyID(k))
		}
	}
}

// logSink records log lines for assertions.
type logSink struct {
	mu    sync.Mutex
	lines []string
}

func (s *logSink) logger() logr.Logger {
	return funcr.New(func(prefix, args string) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.lines = append(s.lines, prefix+" "+args)
	}, funcr.Options{})
}

func (s *logSink) contains(substr string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range s.lines {
		if strings.Contains(l, substr) {
			return true
		}
	}
	return false
}

func (s *logSink) count(substr string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, l := range s.lines {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}

func (s *logSink) all() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.lines, "\n")
}

// timerOnlyClock hides the fake clock's NewTicker, to exercise Watch's
// fallback for clocks without one.
type timerOnlyClock struct{ clock.Clock }

func TestKeyStoreWatch(t *testing.T) {
	const interval = 10 * time.Second
	clocks := []struct {
		name string
		wrap func(*testingclock.FakeClock) clock.Clock
	}{
		{name: "ticker", wrap: func(c *testingclock.FakeClock) clock.Clock { return c }},
		{name: "timer fallback", wrap: func(c *testingclock.FakeClock) clock.Clock { return timerOnlyClock{c} }},
	}
	for _, tc := range clocks {
		t.Run(tc.name, func(t *testing.T) {
			path := writeKeyFile(t, keyAlpha+"\n")
			store, err := NewKeyStore(path)
			if err != nil {
				t.Fatal(err)
			}
			clk := newFakeClock()
			var sink logSink
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- store.Watch(ctx, interval, tc.wrap(clk), sink.logger()) }()
			defer func() {
				cancel()
				select {
				case err := <-done:
					if err != nil {
						t.Errorf("Watch returned %v, want nil", err)
					}
				case <-time.After(5 * time.Second):
					t.Fatal("Watch did not return after cancel")
				}
			}()
			testkit.Eventually(t, 5*time.Second, testkit.That("Watch to start its ticker", clk.HasWaiters))

			// Stepping inside the poll keeps the test independent of
			// whether the tick lands before or after the write.
			step := func() { clk.Step(interval) }

			testkit.ReplaceFile(t, path, "# rotated\n"+keyBeta+"\n"+keyGamma+"\n")
			testkit.Eventually(t, 5*time.Second, testkit.That("the new keys", func() bool {
				step()
				return store.Keys().Len() == 2
			}))
			assertKeys(t, store, []string{keyBeta, keyGamma}, []string{keyAlpha})
			// The keys are stored before the reload is logged: wait for both.
			testkit.Eventually(t, 5*time.Second, testkit.That("the reload to be logged", func() bool { return sink.contains("Reloaded API keys") }))

			testkit.ReplaceFile(t, path, "too-short\n")
			testkit.Eventually(t, 5*time.Second, testkit.That("the invalid file to be reported", func() bool {
				step()
				return sink.contains("API key file is invalid")
			}))
			assertKeys(t, store, []string{keyBeta, keyGamma}, nil)

			// The same invalid content is reported once, not at every poll.
			for range 5 {
				step()
			}
			if n := sink.count("API key file is invalid"); n != 1 {
				t.Errorf("invalid file reported %d times, want 1", n)
			}

			testkit.ReplaceFile(t, path, keyAlpha+"\n")
			testkit.Eventually(t, 5*time.Second, testkit.That("recovery after a valid file", func() bool {
				step()
				_, ok := store.Keys().Match(keyAlpha)
				return ok
			}))

			if err := os.Remove(path); err != nil {
				t.Fatal(err)
			}
			testkit.Eventually(t, 5*time.Second, testkit.That("the missing file to be reported", func() bool {
				step()
				return sink.contains("Cannot read API key file")
			}))
			assertKeys(t, store, []string{keyAlpha}, nil)

			for _, key := range []string{keyAlpha, keyBeta, keyGamma, "too-short"} {
				if sink.contains(key) {
					t.Fatalf("log contains a key:\n%s", sink.all())
				}
			}
		})
	}
}

func TestKeyStoreWatchRejectsBadInterval(t *testing.T) {
	store, err := NewKeyStore(writeKeyFile(t, keyAlpha))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Watch(context.Background(), 0, newFakeClock(), logr.Discard()); err == nil {
		t.Fatal("Watch accepted a zero interval")
	}
}

func TestKeyStoreWatchReturnsOnCancel(t *testing.T) {
	store, err := NewKeyStore(writeKeyFile(t, keyAlpha))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	// Also with the real clock: nothing may be left ticking (goleak checks
	// the goroutines, the interval is long enough never to fire).
	if err := store.Watch(ctx, time.Hour, nil, logr.Discard()); err != nil {
		t.Fatalf("Watch = %v, want nil", err)
	}
}
