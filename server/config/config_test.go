package config

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// envOf turns a map into a getenv function.
func envOf(vars map[string]string) func(string) string {
	return func(name string) string { return vars[name] }
}

// writeFile writes a YAML document into the test's temporary directory.
func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestLoadPrecedence(t *testing.T) {
	tests := []struct {
		name string
		// file is a YAML document passed with --config; empty means no file.
		file string
		// env holds variables on top of VOICEGATEWAY_INSECURE_NO_AUTH=true,
		// which every row needs to validate.
		env map[string]string
		// args are the command-line arguments after --config.
		args []string
		// want changes Default() into the expected result.
		want func(c *Config)
	}{
		{
			name: "defaults when nothing is set",
			want: func(c *Config) {},
		},
		{
			name: "file overrides default",
			file: "sessions:\n  limit: 7\ndrain:\n  timeout: 45s\n",
			want: func(c *Config) {
				c.Sessions.Limit = 7
				c.Drain.Timeout = 45 * time.Second
			},
		},
		{
			name: "environment overrides file",
			file: "sessions:\n  limit: 7\n  idle_timeout: 1m\n",
			env:  map[string]string{"VOICEGATEWAY_SESSION_LIMIT": "8"},
			want: func(c *Config) {
				c.Sessions.Limit = 8
				c.Sessions.IdleTimeout = time.Minute
			},
		},
		{
			name: "flag overrides environment and file",
			file: "sessions:\n  limit: 7\n",
			env:  map[string]string{"VOICEGATEWAY_SESSION_LIMIT": "8"},
			args: []string{"--session-limit", "9"},
			want: func(c *Config) { c.Sessions.Limit = 9 },
		},
		{
			name: "flag absent from the command line keeps environment and file",
			file: "log_level: warn\n",
			env:  map[string]string{"VOICEGATEWAY_IDLE_TIMEOUT": "3m"},
			args: []string{"--session-limit=9"},
			want: func(c *Config) {
				c.LogLevel = "warn"
				c.Sessions.IdleTimeout = 3 * time.Minute
				c.Sessions.Limit = 9
			},
		},
		{
			name: "flag set to the default still overrides the file",
			file: "sessions:\n  limit: 7\n",
			args: []string{"-session-limit=1000"},
			want: func(c *Config) {},
		},
		{
			name: "empty environment variable counts as unset",
			file: "backend: openai\nopenai:\n  api_key_file: /openai/key\n",
			env:  map[string]string{"VOICEGATEWAY_BACKEND": "", "VOICEGATEWAY_OPENAI_API_KEY_FILE": ""},
			want: func(c *Config) { c.Backend, c.OpenAI.APIKeyFile = BackendOpenAI, "/openai/key" },
		},
		{
			name: "environment variable named after the flag with underscores",
			env: map[string]string{
				"VOICEGATEWAY_INSECURE_NO_AUTH":       "",
				"VOICEGATEWAY_API_KEYS_FILE":          "/keys",
				"VOICEGATEWAY_AUTH_SUSPICIOUS_DELAY":  "250ms",
				"VOICEGATEWAY_INBOUND_RATE":           "12.5",
				"VOICEGATEWAY_MAX_MESSAGE_BYTES":      "2048",
				"VOICEGATEWAY_DEV":                    "true",
				"VOICEGATEWAY_RATELIMIT_STATE_FILE":   "/state",
				"VOICEGATEWAY_TRUSTED_PROXIES":        "10.0.0.0/8, ::1",
				"VOICEGATEWAY_CLIENT_TOKEN_TTL":       "10m",
				"VOICEGATEWAY_ADMIN_LISTEN":           "127.0.0.1:9999",
				"VOICEGATEWAY_AUTH_CLEANUP_INTERVAL":  "30s",
				"VOICEGATEWAY_NOTIFY_WINDOW":          "0s",
				"VOICEGATEWAY_UNRELATED_SETTING_NAME": "ignored",
			},
			want: func(c *Config) {
				c.InsecureNoAuth = false
				c.APIKeysFile = "/keys"
				c.RateLimit.SuspiciousDelay = 250 * time.Millisecond
				c.Sessions.InboundRate = 12.5
				c.Sessions.MaxMessageBytes = 2048
				c.Dev = true
				c.RateLimit.StateFile = "/state"
				c.RateLimit.TrustedProxies = []string{"10.0.0.0/8", "::1"}
				c.ClientTokenTTL = 10 * time.Minute
				c.AdminListen = "127.0.0.1:9999"
				c.RateLimit.CleanupInterval = 30 * time.Second
				c.Drain.NotifyWindow = 0
			},
		},
		{
			name: "boolean flag stands alone",
			env:  map[string]string{"VOICEGATEWAY_INSECURE_NO_AUTH": ""},
			args: []string{"--insecure-no-auth", "--dev"},
			want: func(c *Config) { c.Dev = true },
		},
		{
			name: "--log-format on the command line wins over VOICEGATEWAY_DEV",
			env:  map[string]string{"VOICEGATEWAY_DEV": "true"},
			args: []string{"--log-format", "json"},
			want: func(c *Config) {},
		},
		{
			name: "--dev on the command line wins over VOICEGATEWAY_LOG_FORMAT",
			env:  map[string]string{"VOICEGATEWAY_LOG_FORMAT": "json"},
			args: []string{"--dev"},
			want: func(c *Config) { c.Dev = true },
		},
		{
			name: "boolean flag turns off what the environment turned on",
			env:  map[string]string{"VOICEGATEWAY_DEV": "true"},
			args: []string{"--dev=false"},
			want: func(c *Config) {},
		},
		{
			name: "list from the environment replaces the file's list",
			file: "rate_limit:\n  trusted_proxies: [10.0.0.0/8, 172.16.0.0/12]\n",
			env:  map[string]string{"VOICEGATEWAY_TRUSTED_PROXIES": "192.168.0.1"},
			want: func(c *Config) { c.RateLimit.TrustedProxies = []string{"192.168.0.1"} },
		},
		{
			name: "repeated list flag appends after replacing",
			file: "rate_limit:\n  trusted_proxies: [10.0.0.0/8]\n",
			args: []string{"--trusted-proxies", "1.2.3.4,5.6.7.8", "--trusted-proxies", "fd00::/8"},
			want: func(c *Config) {
				c.RateLimit.TrustedProxies = []string{"1.2.3.4", "5.6.7.8", "fd00::/8"}
			},
		},
		{
			name: "list in the file as one comma-separated string",
			file: "rate_limit:\n  trusted_proxies: 10.0.0.0/8,10.1.0.1\n",
			want: func(c *Config) { c.RateLimit.TrustedProxies = []string{"10.0.0.0/8", "10.1.0.1"} },
		},
		{
			name: "null values and empty groups in the file are ignored",
			file: "log_level:\nsessions:\ndrain: {}\n",
			want: func(c *Config) {},
		},
		{
			name: "empty file",
			file: "# nothing here\n",
			want: func(c *Config) {},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"VOICEGATEWAY_INSECURE_NO_AUTH": "true"}
			for k, v := range tt.env {
				env[k] = v
			}
			var args []string
			want := Default()
			want.InsecureNoAuth = true
			if tt.file != "" {
				path := writeFile(t, tt.file)
				args = append(args, "--config", path)
				want.ConfigFile = path
			}
			args = append(args, tt.args...)
			tt.want(&want)

			got, err := Load(args, envOf(env))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("Load:\n got %+v\nwant %+v", got, want)
			}
		})
	}
}

func TestLoadConfigFileFromEnvironment(t *testing.T) {
	path := writeFile(t, "sessions:\n  limit: 3\n")
	other := writeFile(t, "sessions:\n  limit: 4\n")
	env := map[string]string{"VOICEGATEWAY_CONFIG": path, "VOICEGATEWAY_INSECURE_NO_AUTH": "1"}

	got, err := Load(nil, envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	if got.ConfigFile != path || got.Sessions.Limit != 3 {
		t.Errorf("from VOICEGATEWAY_CONFIG: file %q limit %d, want %q and 3", got.ConfigFile, got.Sessions.Limit, path)
	}

	got, err = Load([]string{"--config=" + other}, envOf(env))
	if err != nil {
		t.Fatal(err)
	}
	if got.ConfigFile != other || got.Sessions.Limit != 4 {
		t.Errorf("--config over VOICEGATEWAY_CONFIG: file %q limit %d, want %q and 4", got.ConfigFile, got.Sessions.Limit, other)
	}
}

func TestLoadErrors(t *testing.T) {
	tests := []struct {
		name string
		file string            // YAML passed with --config, if any
		env  map[string]string // added to VOICEGATEWAY_INSECURE_NO_AUTH=true
		args []string
		// wantIn are fragments the error message must contain.
		wantIn []string
	}{
		{
			name:   "unknown key in the file",
			file:   "sessions:\n  limt: 5\n",
			wantIn: []string{`unknown key "sessions.limt"`, "known keys under sessions: limit, max_message_bytes"},
		},
		{
			name:   "unknown top-level key in the file",
			file:   "listen: \":8080\"\nbackends: echo\n",
			wantIn: []string{`unknown key "backends"`, "at the top level", "rate_limit"},
		},
		{
			name:   "flag name used as a file key",
			file:   "session_limit: 5\n",
			wantIn: []string{`unknown key "session_limit"`, `--session-limit is written "sessions.limit"`},
		},
		{
			name:   "every unknown key is reported",
			file:   "drain:\n  grace: 1s\n  margin: 2s\n",
			wantIn: []string{`"drain.grace"`, `"drain.margin"`},
		},
		{
			name:   "duplicate key in the file",
			file:   "listen: \":1\"\nlisten: \":2\"\n",
			wantIn: []string{"listen", "already set"},
		},
		{
			name:   "number where a duration belongs",
			file:   "sessions:\n  idle_timeout: 30\n",
			wantIn: []string{"sessions.idle_timeout", `want a duration with a unit such as "30s"`},
		},
		{
			name:   "malformed duration in the file",
			file:   "drain:\n  timeout: soon\n",
			wantIn: []string{"drain.timeout", `"soon" is not a duration`},
		},
		{
			name:   "string where a number belongs",
			file:   "sessions:\n  limit: many\n",
			wantIn: []string{"sessions.limit", `want a int, got the string "many"`},
		},
		{
			name:   "list of non-strings",
			file:   "rate_limit:\n  trusted_proxies: [[1]]\n",
			wantIn: []string{"rate_limit.trusted_proxies", "want a list"},
		},
		{
			name:   "group that is not a mapping",
			file:   "drain: 5s\n",
			wantIn: []string{"drain: want a mapping", `the string "5s"`},
		},
		{
			name:   "document that is not a mapping",
			file:   "- listen\n",
			wantIn: []string{"want a mapping of settings at the top level, got a list"},
		},
		{
			name:   "malformed YAML",
			file:   "listen: [\n",
			wantIn: []string{"config file", "yaml"},
		},
		{
			name:   "missing config file",
			args:   []string{"--config", "/nonexistent/voicegateway.yaml"},
			wantIn: []string{"--config", "/nonexistent/voicegateway.yaml"},
		},
		{
			name:   "bad duration in the environment names the variable",
			env:    map[string]string{"VOICEGATEWAY_IDLE_TIMEOUT": "forever"},
			wantIn: []string{`VOICEGATEWAY_IDLE_TIMEOUT="forever"`, "not a duration"},
		},
		{
			name: "every malformed variable is reported",
			env: map[string]string{
				"VOICEGATEWAY_SESSION_LIMIT": "lots",
				"VOICEGATEWAY_DEV":           "maybe",
				"VOICEGATEWAY_INBOUND_RATE":  "NaN",
			},
			wantIn: []string{"VOICEGATEWAY_SESSION_LIMIT", "VOICEGATEWAY_DEV", "VOICEGATEWAY_INBOUND_RATE", "not a finite number"},
		},
		{
			name:   "bad flag value",
			args:   []string{"--write-timeout", "10"},
			wantIn: []string{"write-timeout", `"10" is not a duration`},
		},
		{
			name:   "unknown flag",
			args:   []string{"--listen-address", ":1"},
			wantIn: []string{"listen-address"},
		},
		{
			name:   "stray argument",
			args:   []string{"serve"},
			wantIn: []string{`unexpected argument "serve"`},
		},
		{
			name:   "validation runs after loading",
			args:   []string{"--sample-rate", "44100"},
			wantIn: []string{"--sample-rate", "44100"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			env := map[string]string{"VOICEGATEWAY_INSECURE_NO_AUTH": "true"}
			for k, v := range tt.env {
				env[k] = v
			}
			var args []string
			if tt.file != "" {
				args = append(args, "--config", writeFile(t, tt.file))
			}
			args = append(args, tt.args...)

			_, err := Load(args, envOf(env))
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			for _, fragment := range tt.wantIn {
				if !strings.Contains(err.Error(), fragment) {
					t.Errorf("error %q does not contain %q", err, fragment)
				}
			}
		})
	}
}

func TestLoadHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help"} {
		_, err := Load([]string{arg}, envOf(nil))
		if !errors.Is(err, flag.ErrHelp) {
			t.Errorf("Load(%s) = %v, want flag.ErrHelp", arg, err)
		}
	}
}

func TestDrainTimeout(t *testing.T) {
	c := Default()
	if got, want := c.GracePeriod(), 30*time.Second; got != want {
		t.Errorf("GracePeriod() = %s, want %s", got, want)
	}
}

// TestSettingsCoverConfig keeps the settings table and the struct in step:
// every field has exactly one setting, its key matches the json tags, and
// its flag writes that field and no other.
func TestSettingsCoverConfig(t *testing.T) {
	fields := map[string]bool{}
	var collect func(typ reflect.Type, prefix string)
	collect = func(typ reflect.Type, prefix string) {
		for field := range typ.Fields() {
			tag, _, _ := strings.Cut(field.Tag.Get("json"), ",")
			if tag == "-" {
				continue
			}
			if field.Type.Kind() == reflect.Struct && field.Type != reflect.TypeFor[time.Duration]() {
				collect(field.Type, prefix+tag+".")
				continue
			}
			fields[prefix+tag] = true
		}
	}
	collect(reflect.TypeFor[Config](), "")

	if len(settings) != len(fields) {
		t.Errorf("%d settings for %d fields", len(settings), len(fields))
	}
	flags := map[string]bool{}
	for _, s := range settings {
		if !fields[s.key] {
			t.Errorf("setting --%s has key %q, which matches no json tag", s.flag, s.key)
		}
		if flags[s.flag] {
			t.Errorf("flag --%s is defined twice", s.flag)
		}
		flags[s.flag] = true

		var c Config
		sample := map[kind]string{
			kindString: "x", kindBool: "true", kindInt: "7",
			kindFloat: "1.5", kindDuration: "3s", kindList: "a", kindBytes: "7Ki",
		}[s.bind(&c).kind()]
		if err := s.bind(&c).Set(sample); err != nil {
			t.Fatalf("--%s: Set(%q): %v", s.flag, sample, err)
		}
		changed := nonZeroKeys(c.Redacted(), "")
		if len(changed) != 1 || changed[0] != s.key {
			t.Errorf("--%s changed %v, want only %s", s.flag, changed, s.key)
		}
	}
}

// nonZeroKeys lists the keys of a Redacted map whose values are not zero.
func nonZeroKeys(m map[string]any, prefix string) []string {
	var keys []string
	for k, v := range m {
		switch v := v.(type) {
		case map[string]any:
			keys = append(keys, nonZeroKeys(v, prefix+k+".")...)
		case []string:
			if len(v) > 0 {
				keys = append(keys, prefix+k)
			}
		default:
			if v != reflect.Zero(reflect.TypeOf(v)).Interface() && v != "0s" && v != "0" {
				keys = append(keys, prefix+k)
			}
		}
	}
	return keys
}

func TestUsage(t *testing.T) {
	var b strings.Builder
	Usage(&b)
	usage := b.String()
	for _, s := range settings {
		if !strings.Contains(usage, "--"+s.flag+" ") && !strings.Contains(usage, "--"+s.flag+"\n") {
			t.Errorf("usage lacks --%s", s.flag)
		}
		for _, want := range []string{s.envName(), "yaml " + s.key} {
			if !strings.Contains(usage, want) {
				t.Errorf("usage lacks %q", want)
			}
		}
	}
	for _, want := range []string{
		"--config path", "VOICEGATEWAY_CONFIG",
		`--listen host:port (default ":8080")`,
		"--drain-timeout duration (default 27s)",
		"--idle-timeout duration (default 2m)",
		"--max-message-bytes bytes (default 262144)",
		"--insecure-no-auth\n",
		"--api-keys-file path\n",
	} {
		if !strings.Contains(usage, want) {
			t.Errorf("usage lacks %q:\n%s", want, usage)
		}
	}
}

// TestConfigFileIsReadBounded: --config naming an endless device, a named
// pipe or a file over MaxConfigFileBytes fails at once with the flag named,
// instead of hanging the start or filling the memory.
func TestConfigFileIsReadBounded(t *testing.T) {
	dir := t.TempDir()
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, append([]byte("listen: \":8080\"\n#"), bytes.Repeat([]byte("x"), MaxConfigFileBytes)...), 0o600); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/dev/zero", fifo, big} {
		done := make(chan error, 1)
		go func() {
			_, err := Load([]string{"--config", path, "--insecure-no-auth"}, envOf(nil))
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.HasPrefix(err.Error(), "--config: ") {
				t.Errorf("--config %s: %v, want a refusal naming --config", path, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("--config %s: Load still running after 10 s", path)
		}
	}
}
