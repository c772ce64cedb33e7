package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/fleet"
)

func TestLocalAdminAddress(t *testing.T) {
	tests := map[string]struct{ listen, want, wantErr string }{
		"every interface":           {listen: ":9090", want: "127.0.0.1:9090"},
		"IPv4 unspecified":          {listen: "0.0.0.0:9090", want: "127.0.0.1:9090"},
		"IPv6 unspecified":          {listen: "[::]:9090", want: "127.0.0.1:9090"},
		"IPv4 loopback":             {listen: "127.0.0.1:9090", want: "127.0.0.1:9090"},
		"IPv6 loopback":             {listen: "[::1]:9090", want: "[::1]:9090"},
		"a pod address":             {listen: "10.244.0.7:9090", want: "10.244.0.7:9090"},
		"no port":                   {listen: "127.0.0.1", wantErr: "missing port"},
		"a name, kept for the dial": {listen: "localhost:9090", want: "localhost:9090"},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			got, err := localAdminAddress(tt.listen)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("localAdminAddress(%q) = %q, %v; want %q", tt.listen, got, err, tt.want)
			}
		})
	}
}

func TestDrainHookTimeout(t *testing.T) {
	cfg := config.Default()
	cfg.Drain.Timeout, cfg.Drain.ExitMargin, cfg.Drain.PropagationDelay = 60*time.Second, 5*time.Second, 5*time.Second
	if got := drainHookTimeout(cfg); got != 15*time.Second {
		t.Fatalf("hook timeout %s, want the propagation delay + 10s", got)
	}
	cfg.Drain.Timeout, cfg.Drain.PropagationDelay = 7*time.Second, 2*time.Second
	if got := drainHookTimeout(cfg); got != 7*time.Second {
		t.Fatalf("hook timeout %s, want no more than the drain timeout 7s", got)
	}
}

func TestFleetSecretSubcommand(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "fleet")
	run := func(args ...string) (int, string) {
		var out bytes.Buffer
		code := runFleetSecret(args, &out, &out)
		return code, out.String()
	}
	if code, out := run("init", "--dir", dir, "--api-key"); code != 0 {
		t.Fatalf("init: %d %s", code, out)
	}
	data := map[string][]byte{}
	for _, name := range []string{fleet.TokenKeysFile, fleet.AdminTokenFile, fleet.FleetKeyFile, fleet.APIKeysFile} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		data[name] = b
	}
	if err := fleet.Check(data, true); err != nil {
		t.Fatalf("init wrote an invalid fleet Secret: %v", err)
	}
	if code, out := run("init", "--dir", dir); code != 1 || !strings.Contains(out, "already exists") {
		t.Fatalf("a second init: %d %s; want a refusal", code, out)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, fleet.AdminTokenFile)); !bytes.Equal(b, data[fleet.AdminTokenFile]) {
		t.Fatal("a refused init changed the admin token")
	}

	for _, bad := range [][]string{
		{"rotate", "--dir", dir, "--retain", "1m"},
		{"rotate", "--dir", dir, "--activation", "-1s"},
	} {
		if code, out := run(bad...); code != 2 {
			t.Errorf("%v: exit %d %s; want 2", bad, code, out)
		}
	}
	code, out := run("rotate", "--dir", dir, "--activation", "1m")
	if code != 0 || !strings.Contains(out, "verifies until") {
		t.Fatalf("rotate: %d %s", code, out)
	}
	raw, _ := os.ReadFile(filepath.Join(dir, fleet.TokenKeysFile))
	keys, err := fleet.ParseTokenKeys(raw)
	if err != nil || len(keys.Keys) != 2 || keys.Keys[0].SignFrom == nil || keys.Keys[1].VerifyUntil == nil {
		t.Fatalf("rotated keys %v, %v; want a pending key and the old one ending", keys.Keys, err)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(dir, ".token-keys-*")); len(leftovers) != 0 {
		t.Fatalf("temporary files left: %v", leftovers)
	}
	if code, _ := run("unknown"); code != 2 {
		t.Fatalf("an unknown verb exits %d, want 2", code)
	}
}
