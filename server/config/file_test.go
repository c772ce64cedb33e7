package config

import (
	"encoding/json"
	"os"
	"reflect"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

const examplePath = "testdata/example.yaml"

func TestExampleFile(t *testing.T) {
	got, err := Load([]string{"--config", examplePath}, envOf(nil))
	if err != nil {
		t.Fatalf("Load(%s): %v", examplePath, err)
	}
	want := Config{
		ConfigFile:         examplePath,
		Listen:             ":8080",
		AdminListen:        ":9090",
		Backend:            BackendEcho,
		APIKeysFile:        "/etc/voicegateway/api-keys/keys",
		FleetSecretDir:     "/etc/voicegateway/fleet",
		ClientTokenTTL:     2 * time.Minute,
		SecretPollInterval: 10 * time.Second,
		LogFormat:          "json",
		LogLevel:           "info",
		MemoryLimit:        512 << 20,
		Sessions: SessionsConfig{
			Limit:           500,
			MaxMessageBytes: 512 << 10,
			InboundRate:     100,
			InboundBurst:    200,
			OutboundQueue:   256,
			IdleTimeout:     90 * time.Second,
			MaxDuration:     30 * time.Minute,
			ResumeNotice:    time.Minute,
			WriteTimeout:    5 * time.Second,
			SampleRate:      24000,

			OutboundQueueBytes: 2 << 20,
			MaxBufferedAudio:   15 * time.Second,
			MaxPerToken:        1,
			MaxPerAPIKey:       200,
			MaxPerClientIP:     20,
			MaxHandshakes:      128,
		},
		RateLimit: RateLimitConfig{
			Window:          time.Minute,
			BlockDuration:   15 * time.Minute,
			SuspiciousDelay: time.Second,
			CleanupInterval: time.Minute,
			SuspiciousAfter: 5,
			BlockAfter:      10,
			MaxTracked:      50000,
			TrustedProxies:  []string{"10.0.0.0/8", "192.168.1.10"},
			StateFile:       "/var/lib/voicegateway/ratelimit.json",
		},
		Cluster: ClusterConfig{
			Listen:        ":7946",
			Peers:         []string{"demo-peers.default.svc:7946"},
			PeersFile:     "/etc/voicegateway/peers/peers",
			SettleTimeout: 15 * time.Second,
		},
		Drain: DrainConfig{
			Timeout:          55 * time.Second,
			PropagationDelay: 5 * time.Second,
			NotifyWindow:     10 * time.Second,
			ReconnectAfter:   2 * time.Second,
			ExitMargin:       5 * time.Second,
		},
		OpenAI: OpenAIConfig{
			URL:             "wss://api.openai.com/v1/realtime",
			Model:           "gpt-realtime",
			Models:          []string{"gpt-realtime", "gpt-realtime-mini"},
			APIKeyFile:      "/etc/voicegateway/openai/api-key",
			KeyPollInterval: 10 * time.Second,
			DialTimeout:     5 * time.Second,
			StallTimeout:    20 * time.Second,
			MaxMessageBytes: 4 << 20,
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Load(%s):\n got %+v\nwant %+v", examplePath, got, want)
	}
}

// TestExampleFileDocumentsEverySetting keeps the example complete, since it
// is the reference for people writing the file by hand.
func TestExampleFileDocumentsEverySetting(t *testing.T) {
	data, err := os.ReadFile(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		mapping := doc
		if group := s.group(); group != "" {
			mapping, _ = doc[group].(map[string]any)
		}
		name := s.key[len(s.group()):]
		if s.group() != "" {
			name = name[1:]
		}
		if _, ok := mapping[name]; !ok {
			t.Errorf("%s does not show %s (--%s)", examplePath, s.key, s.flag)
		}
	}
}

// TestYAMLRoundTrip checks that what YAML renders, Load reads back to the
// same Config: the operator relies on it to write the ConfigMap.
func TestYAMLRoundTrip(t *testing.T) {
	configs := map[string]Config{
		"defaults": func() Config {
			c := Default()
			c.InsecureNoAuth = true
			return c
		}(),
		"example": func() Config {
			c, err := Load([]string{"--config", examplePath}, envOf(nil))
			if err != nil {
				t.Fatal(err)
			}
			return c
		}(),
		"odd values": func() Config {
			c := Default()
			c.APIKeysFile = "/keys: with a colon"
			c.Sessions.InboundRate = 0.1
			c.Sessions.MaxMessageBytes = 16 << 20
			c.Drain.Timeout = 90*time.Minute + 1500*time.Millisecond
			c.Drain.ReconnectAfter = 750 * time.Microsecond
			c.Backend = "yes" // YAML 1.1 would read this as a boolean unless quoted
			return c
		}(),
	}
	for name, c := range configs {
		t.Run(name, func(t *testing.T) {
			data, err := c.YAML()
			if err != nil {
				t.Fatal(err)
			}
			var got Config
			got = Default()
			if err := applyFile(&got, data); err != nil {
				t.Fatalf("applyFile(YAML()): %v\n%s", err, data)
			}
			got.ConfigFile = c.ConfigFile
			if !reflect.DeepEqual(got, c) {
				t.Errorf("round trip through\n%s\n got %+v\nwant %+v", data, got, c)
			}
		})
	}
}

func TestRedactedIsJSON(t *testing.T) {
	// The startup log encodes Redacted as JSON; it must stay plain data.
	data, err := json.Marshal(Default().Redacted())
	if err != nil {
		t.Fatal(err)
	}
	var back map[string]any
	if err := json.Unmarshal(data, &back); err != nil {
		t.Fatal(err)
	}
	drain, _ := back["drain"].(map[string]any)
	if drain["timeout"] != "27s" {
		t.Errorf("drain.timeout = %v, want \"27s\"", drain["timeout"])
	}
	if _, ok := back["config_file"]; ok {
		t.Error("Redacted includes config_file, which the file cannot set")
	}
}

// FuzzApplyFile feeds arbitrary documents to the file reader: it must never
// panic, and whatever it accepts must survive a round trip through YAML.
func FuzzApplyFile(f *testing.F) {
	example, err := os.ReadFile(examplePath)
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		string(example),
		"",
		"null",
		"- a",
		"sessions: {limit: 1e3}",
		"sessions:\n  inbound_rate: .inf\n",
		"drain: {timeout: 1h2m3.5s}",
		"rate_limit: {trusted_proxies: [a, 1, null]}",
		"listen: yes\ndev: on\n",
		"sessions: {max_message_bytes: 99999999999999999999}",
		"&a {b: *a}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c := Default()
		if err := applyFile(&c, data); err != nil {
			return
		}
		rendered, err := c.YAML()
		if err != nil {
			t.Fatalf("YAML() of an accepted file: %v", err)
		}
		again := Default()
		if err := applyFile(&again, rendered); err != nil {
			t.Fatalf("re-reading\n%s\nfailed: %v", rendered, err)
		}
		if !reflect.DeepEqual(again, c) {
			t.Fatalf("round trip changed the config:\n got %+v\nwant %+v", again, c)
		}
	})
}
