package main

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/voicegateway/voicegateway/internal/testkit"
)

// runBinary runs the built vgload and returns its exit code and output.
func runBinary(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	cmd := exec.Command(vgloadBinary.Path(t), args...)
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return 0, stdout.String(), stderr.String()
	case errors.As(err, &exit):
		return exit.ExitCode(), stdout.String(), stderr.String()
	}
	t.Fatal(err)
	return 0, "", ""
}

// TestNothingListensExitsOne: every command that talks to a gateway fails
// at once with status 1 and a message naming the address when nothing
// listens there (it used to report a run of refused dials and exit 0).
func TestNothingListensExitsOne(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs vgload")
	}
	url := "ws://" + testkit.FreeAddr(t) + "/v1/realtime"
	for name, args := range map[string][]string{
		"relay": {"relay", "--url", url, "--sessions", "2", "--ramp", "0s", "--duration", "1s"},
		"idle":  {"idle", "--url", url, "--sessions", "2", "--duration", "1s"},
		"drain": {"drain", "--url", url, "--sessions", "2", "--duration", "1s", "--server-pid", "999999"},
		"soak":  {"soak", "--url", url, "--duration", "1s"},
		"flood": {"flood", "--url", strings.Replace(url, "ws://", "http://", 1), "--api-key", "k", "--admin", testkit.FreeAddr(t)},
	} {
		t.Run(name, func(t *testing.T) {
			code, stdout, stderr := runBinary(t, args...)
			if code != 1 || !strings.Contains(stderr, "nothing answers at") || !strings.Contains(stderr, strings.TrimPrefix(url, "ws://")) {
				t.Errorf("exit %d, stderr %q, stdout %q; want 1 and a message naming the address", code, stderr, stdout)
			}
		})
	}
}

// TestRefusedSessionsExitOne: a gateway that refuses every session (a wrong
// API key) makes a failed run, not a report of nothing.
func TestRefusedSessionsExitOne(t *testing.T) {
	keys := t.TempDir() + "/keys"
	writeFile(t, keys, "a-valid-key-0123456789abcdef\n")
	srv := startServer(t, "--api-keys-file", keys)
	code, _, stderr := runBinary(t, "relay", "--url", "ws://"+srv.Public+"/v1/realtime", "--api-key", "wrong-key-0123456789abcdef",
		"--sessions", "2", "--ramp", "0s", "--duration", "1s", "--reconnect=false")
	if code != 1 || !strings.Contains(stderr, "no session opened") || !strings.Contains(stderr, "401") {
		t.Errorf("exit %d, stderr %q; want 1 and the refusals", code, stderr)
	}
}

// TestEachCommandHasItsOwnHelp: "vgload CMD -h" and "vgload help CMD" say
// what CMD does and list its flags only, and exit 0; --version prints the
// version, commit and Go version.
func TestEachCommandHasItsOwnHelp(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs vgload")
	}
	// A flag only this command has, and one of another command it must
	// not list.
	own := map[string][2]string{
		"relay":           {"-baseline-url", "-sigterm-after"},
		"idle":            {"-heap-profile", "-baseline-url"},
		"drain":           {"-sigterm-after", "-baseline-url"},
		"baseline-server": {"-listen", "-sessions"},
		"soak":            {"-gate", "-sigterm-after"},
		"flood":           {"-ips", "-sigterm-after"},
	}
	for cmd, flags := range own {
		for _, args := range [][]string{{cmd, "-h"}, {"help", cmd}} {
			code, stdout, stderr := runBinary(t, args...)
			out := stdout + stderr
			if code != 0 || !strings.Contains(out, "Usage: vgload "+cmd+" [flags]") || !strings.Contains(out, commandHelp[cmd][:20]) ||
				!strings.Contains(out, flags[0]+" ") || strings.Contains(out, flags[1]+" ") {
				t.Errorf("vgload %s: exit %d, output:\n%s\nwant its usage with %s and without %s", strings.Join(args, " "), code, out, flags[0], flags[1])
			}
		}
	}
	code, stdout, _ := runBinary(t, "--version")
	if code != 0 || !strings.HasPrefix(stdout, "vgload ") || !strings.Contains(stdout, "commit ") || !strings.Contains(stdout, "go1.") {
		t.Errorf("vgload --version: exit %d, %q", code, stdout)
	}
	if code, _, stderr := runBinary(t, "relay", "--sessions", "x"); code != 2 || !strings.Contains(stderr, "invalid value") {
		t.Errorf("a bad flag: exit %d, %q; want 2", code, stderr)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
