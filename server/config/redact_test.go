package config

import (
	"net/url"
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	tests := map[string]struct{ in, want string }{
		"no query":           {"wss://api.openai.com/v1/realtime", "wss://api.openai.com/v1/realtime"},
		"query values":       {"wss://h/v1/realtime?model=m&api_key=sk-secret", "wss://h/v1/realtime?api_key=REDACTED&model=REDACTED"},
		"userinfo":           {"wss://user:sk-secret@h/x", "wss://REDACTED@h/x"},
		"fragment":           {"wss://h/x#sk-secret", "wss://h/x"},
		"not a URL":          {"--listen", "--listen"},
		"unparseable URL":    {"wss://h/%zz?key=sk-secret", Redacted},
		"repeated parameter": {"ws://h/?k=sk-1&k=sk-2", "ws://h/?k=REDACTED&k=REDACTED"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := RedactURL(tc.in)
			if got != tc.want {
				t.Fatalf("RedactURL(%q) = %q, want %q", tc.in, got, tc.want)
			}
			if strings.Contains(got, "sk-") {
				t.Fatalf("a secret survived: %q", got)
			}
		})
	}
}

func TestRedactArgs(t *testing.T) {
	args := []string{"/voice-server", "--openai-url", "wss://h/x?key=sk-secret", "--openai-url=wss://u:sk-pw@h/x", "--listen=:8080"}
	got := strings.Join(RedactArgs(args), " ")
	if strings.Contains(got, "sk-") {
		t.Fatalf("a secret survived: %s", got)
	}
	if want := "/voice-server --openai-url wss://h/x?key=REDACTED --openai-url=wss://REDACTED@h/x --listen=:8080"; got != want {
		t.Fatalf("RedactArgs = %s, want %s", got, want)
	}
}

// TestLoggedConfigHoldsNoURLSecret: the settings logged at start mask the
// upstream URL's query, and a URL with credentials is refused naming the
// key file instead of being logged.
func TestLoggedConfigHoldsNoURLSecret(t *testing.T) {
	cfg, err := Load([]string{"--insecure-no-auth", "--openai-url", "wss://h/v1/realtime?api_key=sk-secret"}, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Redacted()["openai"].(map[string]any)["url"]; got != "wss://h/v1/realtime?api_key=REDACTED" {
		t.Fatalf("logged openai.url = %v", got)
	}
	// The ConfigMap the operator writes keeps the URL as it is.
	if data, err := cfg.YAML(); err != nil || !strings.Contains(string(data), "api_key=sk-secret") {
		t.Fatalf("YAML() lost the URL: %v\n%s", err, data)
	}
	_, err = Load([]string{"--insecure-no-auth", "--openai-url", "wss://me:sk-secret@h/v1/realtime"}, envOf(nil))
	if err == nil || !strings.Contains(err.Error(), "--openai-api-key-file") || strings.Contains(err.Error(), "sk-secret") {
		t.Fatalf("credentials in --openai-url: %v", err)
	}
}

// FuzzRedactURL: whatever the text, what RedactURL returns for a URL holds
// no query value, no userinfo but REDACTED and no fragment, text without a
// scheme comes back unchanged, and nothing panics.
func FuzzRedactURL(f *testing.F) {
	for _, seed := range []string{"wss://h/x?api_key=sk-1", "wss://u:p@h/x", "ws://h/?a=1&a=2#frag", "not a url", "wss://h/%zz?k=v", "://?=", "wss://[::1]:9/?k=%41"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		got := RedactURL(raw)
		if !strings.Contains(raw, "://") {
			if got != raw {
				t.Fatalf("RedactURL(%q) = %q changed text that is no URL", raw, got)
			}
			return
		}
		if got == Redacted {
			return
		}
		u, err := url.Parse(got)
		if err != nil {
			t.Fatalf("RedactURL(%q) = %q, which does not parse: %v", raw, got, err)
		}
		if u.User != nil && (u.User.Username() != Redacted || u.User.String() != Redacted) {
			t.Fatalf("RedactURL(%q) = %q keeps userinfo", raw, got)
		}
		if u.Fragment != "" {
			t.Fatalf("RedactURL(%q) = %q keeps the fragment", raw, got)
		}
		for k, vs := range u.Query() {
			for _, v := range vs {
				if v != Redacted {
					t.Fatalf("RedactURL(%q) = %q keeps %s=%q", raw, got, k, v)
				}
			}
		}
	})
}

func TestRedactIn(t *testing.T) {
	const raw = "wss://me:pw-0123@api.example/v1/realtime?api_key=sk-1%2B2&model=m"
	text := `Get "https://me:pw-0123456@api.example/v1/realtime?api_key=sk-1%2B23456&model=m": connection refused; key sk-1+23456`
	got := RedactIn(text, strings.NewReplacer("pw-0123", "pw-0123456", "sk-1%2B2", "sk-1%2B23456").Replace(raw))
	for _, secret := range []string{"pw-0123456", "sk-1%2B23456", "sk-1+23456"} {
		if strings.Contains(got, secret) {
			t.Fatalf("RedactIn kept %q: %s", secret, got)
		}
	}
	if !strings.Contains(got, "connection refused") || !strings.Contains(got, "api.example") {
		t.Fatalf("RedactIn garbled the text: %s", got)
	}
}
