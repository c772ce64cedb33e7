package config

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(c *Config)
		// wantFlags are the settings named by the problems expected, one
		// per problem; empty means the configuration is valid.
		wantFlags []string
		// wantIn are further fragments the error must contain.
		wantIn []string
	}{
		{name: "defaults with insecure auth", modify: func(c *Config) {}},
		{name: "api keys instead of insecure auth", modify: func(c *Config) {
			c.InsecureNoAuth = false
			c.APIKeysFile = "/keys"
		}},
		{name: "both listeners on ephemeral ports", modify: func(c *Config) {
			c.Listen, c.AdminListen = "127.0.0.1:0", "127.0.0.1:0"
		}},
		{name: "same port on different hosts", modify: func(c *Config) {
			c.Listen, c.AdminListen = "10.0.0.1:8080", "127.0.0.1:8080"
		}},
		{name: "openai backend", modify: func(c *Config) {
			c.Backend = BackendOpenAI
			c.OpenAI.APIKeyFile = "/openai/key"
		}},
		{name: "openai settings at their bounds", modify: func(c *Config) {
			c.OpenAI.URL = "ws://127.0.0.1:9/v1/realtime?model=x"
			c.OpenAI.Model = ""
			c.OpenAI.MaxMessageBytes = 64 << 20
		}},
		{name: "zero delays where zero means none", modify: func(c *Config) {
			c.RateLimit.SuspiciousDelay = 0
			c.Drain.PropagationDelay = 0
			c.Drain.NotifyWindow = 0
			c.Drain.ReconnectAfter = 0
		}},
		{name: "limits at their bounds", modify: func(c *Config) {
			c.ClientTokenTTL = 10 * time.Minute
			c.Sessions.MaxMessageBytes = 16 << 20
			c.Sessions.Limit = 1
			c.Sessions.SampleRate = 16000
			c.RateLimit.SuspiciousAfter, c.RateLimit.BlockAfter = 1, 2
			c.RateLimit.TrustedProxies = []string{"10.0.0.0/8", "192.168.1.1", "::1", "fd00::/8"}
		}},
		{name: "admission limits at their bounds", modify: func(c *Config) {
			c.MemoryLimit = MinMemoryLimit
			c.Sessions.MaxBufferedAudio = time.Minute
			c.Sessions.OutboundQueueBytes = 64 << 20
			c.Sessions.MaxPerToken = 1000
			c.Sessions.MaxPerAPIKey, c.Sessions.MaxPerClientIP = 0, 1
			c.Sessions.MaxHandshakes = 1
		}},
		{name: "admission limits out of range", modify: func(c *Config) {
			c.MemoryLimit = 1 << 20
			c.Sessions.MaxBufferedAudio = 61 * time.Second
			c.Sessions.OutboundQueueBytes = 1 << 10
			c.Sessions.MaxPerToken = 0
			c.Sessions.MaxPerAPIKey, c.Sessions.MaxPerClientIP = -1, -1
			c.Sessions.MaxHandshakes = 0
		}, wantFlags: []string{"outbound-queue-bytes", "max-buffered-audio", "max-sessions-per-token",
			"max-sessions-per-key", "max-sessions-per-ip", "max-handshakes", "memory-limit"}},
		{name: "credentials in the upstream URL", modify: func(c *Config) {
			c.OpenAI.URL = "wss://user:sk-secret@api.openai.com/v1/realtime"
		}, wantFlags: []string{"openai-url"}, wantIn: []string{"--openai-api-key-file"}},
		{name: "drain phases just fit", modify: func(c *Config) {
			c.Drain.Timeout, c.Drain.ExitMargin = 9*time.Second, time.Second
			c.Drain.PropagationDelay, c.Drain.NotifyWindow = 4*time.Second, 4999*time.Millisecond
		}},

		{name: "malformed listen address", modify: func(c *Config) { c.Listen = "8080" },
			wantFlags: []string{"listen"}, wantIn: []string{`"8080" is not host:port`}},
		{name: "non-numeric admin port", modify: func(c *Config) { c.AdminListen = ":admin" },
			wantFlags: []string{"admin-listen"}, wantIn: []string{"use a number from 0 to 65535"}},
		{name: "port out of range", modify: func(c *Config) { c.Listen = ":70000" },
			wantFlags: []string{"listen"}},
		{name: "listen equals admin listen", modify: func(c *Config) { c.AdminListen = ":8080" },
			wantFlags: []string{"admin-listen"}, wantIn: []string{"--listen", "its own port"}},
		{name: "admin listen on the wildcard collides with a host", modify: func(c *Config) {
			c.Listen, c.AdminListen = "127.0.0.1:9000", "0.0.0.0:9000"
		}, wantFlags: []string{"admin-listen"}},
		{name: "unknown backend", modify: func(c *Config) { c.Backend = "gemini" },
			wantFlags: []string{"backend"}, wantIn: []string{`"gemini"`, "echo, openai"}},
		{name: "no authentication chosen", modify: func(c *Config) { c.InsecureNoAuth = false },
			wantFlags: []string{"api-keys-file"}, wantIn: []string{"--insecure-no-auth"}},
		{name: "both authentication modes", modify: func(c *Config) { c.APIKeysFile = "/keys" },
			wantFlags: []string{"insecure-no-auth"}, wantIn: []string{"--api-keys-file"}},
		{name: "zero client token ttl", modify: func(c *Config) { c.ClientTokenTTL = 0 },
			wantFlags: []string{"client-token-ttl"}, wantIn: []string{"longer than 0"}},
		{name: "client token ttl over the maximum", modify: func(c *Config) { c.ClientTokenTTL = 11 * time.Minute },
			wantFlags: []string{"client-token-ttl"}, wantIn: []string{"11m", "10m"}},
		{name: "unknown log format", modify: func(c *Config) { c.LogFormat = "xml" },
			wantFlags: []string{"log-format"}, wantIn: []string{"json, console"}},
		{name: "unknown log level", modify: func(c *Config) { c.LogLevel = "verbose" },
			wantFlags: []string{"log-level"}, wantIn: []string{"debug, info, warn, error"}},

		{name: "session limit zero", modify: func(c *Config) { c.Sessions.Limit = 0 },
			wantFlags: []string{"session-limit"}, wantIn: []string{"at least 1"}},
		{name: "message limit too small", modify: func(c *Config) { c.Sessions.MaxMessageBytes = 1023 },
			wantFlags: []string{"max-message-bytes"}, wantIn: []string{"1023", "1 KiB", "16 MiB"}},
		{name: "message limit too large", modify: func(c *Config) { c.Sessions.MaxMessageBytes = 16<<20 + 1 },
			wantFlags: []string{"max-message-bytes"}},
		{name: "inbound rate zero", modify: func(c *Config) { c.Sessions.InboundRate = 0 },
			wantFlags: []string{"inbound-rate"}},
		{name: "inbound burst zero", modify: func(c *Config) { c.Sessions.InboundBurst = 0 },
			wantFlags: []string{"inbound-burst"}},
		{name: "outbound queue negative", modify: func(c *Config) { c.Sessions.OutboundQueue = -1 },
			wantFlags: []string{"outbound-queue"}},
		{name: "idle timeout zero", modify: func(c *Config) { c.Sessions.IdleTimeout = 0 },
			wantFlags: []string{"idle-timeout"}},
		{name: "max duration negative", modify: func(c *Config) { c.Sessions.MaxDuration = -time.Second },
			wantFlags: []string{"max-duration"}, wantIn: []string{"-1s"}},
		{name: "write timeout zero", modify: func(c *Config) { c.Sessions.WriteTimeout = 0 },
			wantFlags: []string{"write-timeout"}},
		{name: "unsupported sample rate", modify: func(c *Config) { c.Sessions.SampleRate = 44100 },
			wantFlags: []string{"sample-rate"}, wantIn: []string{"16000 or 24000"}},

		{name: "auth fail window zero", modify: func(c *Config) { c.RateLimit.Window = 0 },
			wantFlags: []string{"auth-fail-window"}},
		{name: "auth block duration zero", modify: func(c *Config) { c.RateLimit.BlockDuration = 0 },
			wantFlags: []string{"auth-block-duration"}},
		{name: "auth suspicious delay negative", modify: func(c *Config) { c.RateLimit.SuspiciousDelay = -time.Millisecond },
			wantFlags: []string{"auth-suspicious-delay"}, wantIn: []string{"negative"}},
		{name: "auth cleanup interval zero", modify: func(c *Config) { c.RateLimit.CleanupInterval = 0 },
			wantFlags: []string{"auth-cleanup-interval"}},
		{name: "auth suspicious after zero", modify: func(c *Config) {
			c.RateLimit.SuspiciousAfter = 0
		}, wantFlags: []string{"auth-suspicious-after"}},
		{name: "block not after suspicious", modify: func(c *Config) {
			c.RateLimit.SuspiciousAfter, c.RateLimit.BlockAfter = 5, 5
		}, wantFlags: []string{"auth-block-after"}, wantIn: []string{"--auth-suspicious-after 5"}},
		{name: "auth max tracked zero", modify: func(c *Config) { c.RateLimit.MaxTracked = 0 },
			wantFlags: []string{"auth-max-tracked"}},
		{name: "each bad trusted proxy is named", modify: func(c *Config) {
			c.RateLimit.TrustedProxies = []string{"10.0.0.0/8", "10.0.0.0/33", "proxy.local"}
		}, wantFlags: []string{"trusted-proxies", "trusted-proxies"}, wantIn: []string{`"10.0.0.0/33"`, `"proxy.local"`}},

		{name: "drain timeout zero", modify: func(c *Config) { c.Drain.Timeout = 0 },
			wantFlags: []string{"drain-timeout"}},
		{name: "propagation delay negative", modify: func(c *Config) { c.Drain.PropagationDelay = -time.Second },
			wantFlags: []string{"propagation-delay"}},
		{name: "notify window negative", modify: func(c *Config) { c.Drain.NotifyWindow = -time.Second },
			wantFlags: []string{"notify-window"}},
		{name: "reconnect after negative", modify: func(c *Config) { c.Drain.ReconnectAfter = -time.Second },
			wantFlags: []string{"reconnect-after"}},
		{name: "exit margin zero", modify: func(c *Config) { c.Drain.ExitMargin = 0 },
			wantFlags: []string{"exit-margin"}},
		{name: "exit margin too short for the stop sequence", modify: func(c *Config) { c.Drain.ExitMargin = 999 * time.Millisecond },
			wantFlags: []string{"exit-margin"}, wantIn: []string{"at least 1s"}},
		{name: "drain phases exceed the budget", modify: func(c *Config) {
			c.Drain.Timeout, c.Drain.ExitMargin = 9*time.Second, time.Second
			c.Drain.PropagationDelay, c.Drain.NotifyWindow = 4*time.Second, 5*time.Second
		}, wantFlags: []string{"notify-window"}, wantIn: []string{
			"--propagation-delay 4s + --notify-window 5s = 9s must be less than --drain-timeout 9s",
		}},

		{name: "openai backend without a key file", modify: func(c *Config) { c.Backend = BackendOpenAI },
			wantFlags: []string{"openai-api-key-file"}, wantIn: []string{"--backend openai"}},
		{name: "openai backend at 16 kHz", modify: func(c *Config) {
			c.Backend, c.OpenAI.APIKeyFile = BackendOpenAI, "/openai/key"
			c.Sessions.SampleRate = 16000
		}, wantFlags: []string{"sample-rate"}, wantIn: []string{"24000 Hz only"}},
		{name: "echo backend ignores the openai key file", modify: func(c *Config) { c.OpenAI.APIKeyFile = "" }},
		{name: "openai url with an http scheme", modify: func(c *Config) { c.OpenAI.URL = "https://api.openai.com/v1/realtime" },
			wantFlags: []string{"openai-url"}, wantIn: []string{"ws:// or wss://"}},
		{name: "openai url without a host", modify: func(c *Config) { c.OpenAI.URL = "wss:///v1/realtime" },
			wantFlags: []string{"openai-url"}},
		{name: "openai timeouts zero", modify: func(c *Config) {
			c.OpenAI.KeyPollInterval, c.OpenAI.DialTimeout, c.OpenAI.StallTimeout = 0, 0, 0
		}, wantFlags: []string{"openai-key-poll-interval", "openai-dial-timeout", "openai-stall-timeout"}},
		{name: "openai message limit too small", modify: func(c *Config) { c.OpenAI.MaxMessageBytes = 1 << 10 },
			wantFlags: []string{"openai-max-message-bytes"}, wantIn: []string{"64 KiB", "64 MiB"}},

		{name: "every problem at once", modify: func(c *Config) {
			c.Backend = ""
			c.Sessions.SampleRate = 8000
			c.Drain.Timeout = time.Minute
			c.Drain.NotifyWindow = time.Minute
		}, wantFlags: []string{"backend", "sample-rate", "notify-window"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			c.InsecureNoAuth = true
			tt.modify(&c)

			err := c.Validate()
			if len(tt.wantFlags) == 0 {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate succeeded, want an error")
			}
			var problems []error
			if joined, ok := err.(interface{ Unwrap() []error }); ok {
				problems = joined.Unwrap()
			} else {
				problems = []error{err}
			}
			if len(problems) != len(tt.wantFlags) {
				t.Fatalf("got %d problems, want %d: %v", len(problems), len(tt.wantFlags), err)
			}
			for i, flagName := range tt.wantFlags {
				if _, ok := settingByFlag[flagName]; !ok {
					t.Fatalf("test names --%s, which is not a flag", flagName)
				}
				if !strings.HasPrefix(problems[i].Error(), "--"+flagName+": ") {
					t.Errorf("problem %d = %q, want it to start with --%s", i, problems[i], flagName)
				}
			}
			for _, fragment := range tt.wantIn {
				if !strings.Contains(err.Error(), fragment) {
					t.Errorf("error %q does not contain %q", err, fragment)
				}
			}
		})
	}
}

func TestTrustedProxyPrefixes(t *testing.T) {
	r := RateLimitConfig{TrustedProxies: []string{"10.1.2.3/8", "192.168.0.7", "2001:db8::1"}}
	got, err := r.TrustedProxyPrefixes()
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("192.168.0.7/32"),
		netip.MustParsePrefix("2001:db8::1/128"),
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("TrustedProxyPrefixes() = %v, want %v", got, want)
	}

	r.TrustedProxies = append(r.TrustedProxies, "nonsense")
	if _, err := r.TrustedProxyPrefixes(); err == nil || !strings.Contains(err.Error(), `"nonsense"`) {
		t.Errorf("TrustedProxyPrefixes() error = %v, want one naming the bad entry", err)
	}
}

func TestValidateIsUsableWithoutLoad(t *testing.T) {
	// The operator validates settings before writing a ConfigMap, so
	// Validate must work on a Config built in code.
	c := Default()
	c.APIKeysFile = "/etc/keys"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	c.Drain.Timeout = 0
	if err := c.Validate(); err == nil {
		t.Fatal("Validate accepted a zero drain timeout")
	}
}
