package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/backend/openai/openaitest"
	"github.com/voicegateway/voicegateway/server/fleet"
)

// These tests drive vgload, in process, against the real voice-server
// binary on loopback: a few sessions for a few seconds, so that `make test`
// proves the load client, its measurements and its drain handling work.

// serverProcess is the real voice server with a fleet Secret of its own,
// whose admin token its /debug endpoints ask for.
type serverProcess struct {
	*testkit.Process
	adminTokenFile string
}

func startServer(t *testing.T, args ...string) *serverProcess {
	t.Helper()
	return startServerIn(t, newFleetDir(t), args...)
}

// newFleetDir writes a fresh fleet Secret.
func newFleetDir(t *testing.T) string {
	t.Helper()
	fleetDir := t.TempDir()
	data, err := fleet.Generate(nil, time.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range data {
		if err := os.WriteFile(filepath.Join(fleetDir, name), content, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return fleetDir
}

// startServerIn runs the voice server with the fleet Secret in fleetDir:
// servers that share one open each other's resume handles.
func startServerIn(t *testing.T, fleetDir string, args ...string) *serverProcess {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the voice server")
	}
	args = append([]string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-level", "info",
		"--fleet-secret-dir", fleetDir, "--debug-endpoints"}, args...)
	return &serverProcess{
		Process:        testkit.Start(t, voiceServer.Path(t), args...),
		adminTokenFile: filepath.Join(fleetDir, fleet.AdminTokenFile),
	}
}

// startBaseline runs the plain echo in process until the test ends.
func startBaseline(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serveBaseline(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("baseline server: %v", err)
		}
	})
	return "ws://" + ln.Addr().String() + "/"
}

// vgload runs a command line in process and returns its output.
func vgload(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	if err := run(ctx, args, &stdout, &stderr); err != nil {
		t.Fatalf("vgload %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	t.Logf("vgload %s\n%s", args[0], stdout.String())
	return stdout.String()
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		t.Fatal(err)
	}
}

func TestRelayEndToEnd(t *testing.T) {
	tests := map[string]struct {
		audio       string
		sampleRate  int
		commitEvery int
	}{
		"binary at 24 kHz, a turn per frame": {audio: "binary", sampleRate: 24000, commitEvery: 1},
		"base64 at 16 kHz, 1 s turns":        {audio: "base64", sampleRate: 16000, commitEvery: 50},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			const sessions = 4
			srv := startServer(t, "--insecure-no-auth", "--sample-rate", strconv.Itoa(tc.sampleRate))
			base := startBaseline(t)
			dir := t.TempDir()
			vgload(t, "relay", "--url", "ws://"+srv.Public+"/v1/realtime", "--baseline-url", base,
				"--sessions", strconv.Itoa(sessions), "--ramp", "200ms", "--duration", "2s",
				"--audio", tc.audio, "--sample-rate", strconv.Itoa(tc.sampleRate), "--commit-every", strconv.Itoa(tc.commitEvery),
				"--admin", srv.Admin, "--admin-token-file", srv.adminTokenFile, "--server-pid", strconv.Itoa(srv.Pid()),
				// A generous settle: the last turn's echo may queue behind the one before.
				"--settle", "5s", "--json", filepath.Join(dir, "report.json"), "--markdown", filepath.Join(dir, "row.md"), "--fail-on-loss")
			var r Report
			readJSON(t, filepath.Join(dir, "report.json"), &r)
			for _, p := range everyFrameEchoed(t, r, sessions) {
				if p.RTT.Count == 0 || p.RTT.P50 <= 0 || p.Connect.Count != sessions {
					t.Errorf("%s: rtt %+v, connect %+v", p.Name, p.RTT, p.Connect)
				}
				if p.Closes["client 1000"] != sessions || len(p.Closes) != 1 {
					t.Errorf("%s closes %v, want %d × client 1000", p.Name, p.Closes, sessions)
				}
			}
			if r.Gateway.ServerDropped != 0 || r.Gateway.ServerCPU < 0 || r.Added == nil {
				t.Errorf("server dropped %v, cpu %v, added %+v", r.Gateway.ServerDropped, r.Gateway.ServerCPU, r.Added)
			}
			// The kernel's part of each process's CPU is known and no more than its total.
			if g := r.Gateway; g.ServerCPUSystem < 0 || g.ServerCPUSystem > g.ServerCPU || g.ClientCPUSystem < 0 || g.ClientCPUSystem > g.ClientCPU {
				t.Errorf("server cpu %v of which kernel %v, vgload cpu %v of which kernel %v", g.ServerCPU, g.ServerCPUSystem, g.ClientCPU, g.ClientCPUSystem)
			}
			row, _ := os.ReadFile(filepath.Join(dir, "row.md"))
			if !strings.HasPrefix(string(row), "| 4 | "+tc.audio+" |") {
				t.Errorf("markdown row %q", row)
			}
		})
	}
}

// everyFrameEchoed checks that a relay report has both phases and that in
// each every session sent two seconds of frames (50 a second, give or take
// the ramp), every one echoed once; it returns the phases.
func everyFrameEchoed(t *testing.T, r Report, sessions int) []*PhaseResult {
	t.Helper()
	phases := []*PhaseResult{r.Baseline, r.Gateway}
	for _, p := range phases {
		if p == nil {
			t.Fatal("a phase is missing from the report")
		}
		f := p.Frames
		if f.Sent < int64(sessions)*80 || f.Received != f.Sent || f.Lost != 0 || f.Duplicate != 0 || f.Unframed != 0 {
			t.Errorf("%s frames %+v, want ≥ %d sent, all echoed once", p.Name, f, sessions*80)
		}
	}
	return phases
}

// TestRelayThroughOpenAIEndToEnd: hack/relay-overhead.sh's measurement,
// small: the same load once directly to an OpenAI-protocol upstream that
// echoes every append as a delta, and once through the voice server's
// openai backend to it; every frame comes back once both ways.
func TestRelayThroughOpenAIEndToEnd(t *testing.T) {
	for _, audio := range []string{"binary", "base64"} {
		t.Run(audio, func(t *testing.T) {
			const sessions = 3
			up := openaitest.New(openaitest.Options{StreamEcho: true, NoRecord: true})
			t.Cleanup(up.Close)
			keyFile := filepath.Join(t.TempDir(), "openai-key")
			writeFile(t, keyFile, "sk-upstream-key\n")
			srv := startServer(t, "--insecure-no-auth", "--backend", "openai", "--openai-url", up.URL, "--openai-api-key-file", keyFile)
			dir := t.TempDir()
			vgload(t, "relay", "--url", "ws://"+srv.Public+"/v1/realtime", "--baseline-url", up.URL, "--baseline-protocol", "realtime",
				"--sessions", strconv.Itoa(sessions), "--ramp", "200ms", "--duration", "2s", "--audio", audio, "--commit-every", "0",
				"--admin", srv.Admin, "--admin-token-file", srv.adminTokenFile, "--server-pid", strconv.Itoa(srv.Pid()),
				"--json", filepath.Join(dir, "report.json"), "--fail-on-loss")
			var r Report
			readJSON(t, filepath.Join(dir, "report.json"), &r)
			for _, p := range everyFrameEchoed(t, r, sessions) {
				if p.RTT.Count == 0 || p.Closes["client 1000"] != sessions || len(p.Errors) != 0 {
					t.Errorf("%s: rtt %+v, closes %v, errors %v", p.Name, p.RTT, p.Closes, p.Errors)
				}
			}
			if r.Added == nil {
				t.Error("no added latency in the report")
			}
		})
	}
}

func TestIdleEndToEnd(t *testing.T) {
	const sessions = 20
	srv := startServer(t, "--insecure-no-auth")
	path := filepath.Join(t.TempDir(), "idle.json")
	vgload(t, "idle", "--url", "ws://"+srv.Public+"/v1/realtime", "--sessions", strconv.Itoa(sessions),
		"--ramp", "200ms", "--duration", "2500ms", "--admin", srv.Admin, "--admin-token-file", srv.adminTokenFile, "--server-pid", strconv.Itoa(srv.Pid()), "--json", path)
	var r Report
	readJSON(t, path, &r)
	m := r.Gateway.Memory
	if m == nil || m.Sessions != sessions || m.After.Sessions != sessions || m.HeapStackPerSession <= 0 || m.RSSAfter == 0 {
		t.Fatalf("idle memory %+v", m)
	}
	if r.Gateway.Frames.Sent != 0 {
		t.Fatalf("idle sessions sent %d frames", r.Gateway.Frames.Sent)
	}
}

// A SIGTERM during load: every session is told, hangs up after its turn and
// carries on at the second server; none is cut.
func TestDrainEndToEnd(t *testing.T) {
	const sessions = 6
	fleetDir := newFleetDir(t)
	a := startServerIn(t, fleetDir, "--insecure-no-auth", "--drain-timeout", "5s", "--propagation-delay", "500ms",
		"--notify-window", "1s", "--exit-margin", "2s", "--reconnect-after", "200ms")
	b := startServerIn(t, fleetDir, "--insecure-no-auth")
	path := filepath.Join(t.TempDir(), "drain.json")
	vgload(t, "drain", "--url", "ws://"+a.Public+"/v1/realtime", "--url", "ws://"+b.Public+"/v1/realtime",
		"--sessions", strconv.Itoa(sessions), "--ramp", "200ms", "--duration", "1s", "--commit-every", "2", "--settle", "5s",
		"--admin", a.Admin, "--admin-token-file", a.adminTokenFile, "--server-pid", strconv.Itoa(a.Pid()), "--sigterm-after", "500ms", "--drain-wait", "20s",
		"--json", path)
	var r Report
	readJSON(t, path, &r)
	g, d := r.Gateway, r.Gateway.Drain
	if d == nil || !d.Exited || d.ReadinessFailedMS < 0 || d.Notified != sessions || d.Abnormal != 0 ||
		d.ClosesOnDrained["client 1000"] != sessions {
		t.Fatalf("drain %+v", d)
	}
	if g.Reconnects < sessions || g.ReconnectGap.Count < sessions || g.Frames.Lost != 0 {
		t.Fatalf("reconnects %d, gaps %+v, frames %+v", g.Reconnects, g.ReconnectGap, g.Frames)
	}
	// The two servers share a fleet key: every move carries its session.
	if g.Resumed != sessions || g.ResumeRefused != 0 {
		t.Fatalf("resumed %d of %d moves, %d refused", g.Resumed, sessions, g.ResumeRefused)
	}
	t.Logf("resumed %d of %d moves", g.Resumed, g.Reconnects)
	if code := a.WaitExit(5 * time.Second); code != 0 {
		t.Fatalf("drained server exited %d", code)
	}
}

func TestSoakEndToEnd(t *testing.T) {
	const key = "vgload-e2e-soak-key-0123456789"
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, "--api-keys-file", keys, "--trusted-proxies", "127.0.0.1")
	path := filepath.Join(t.TempDir(), "soak.json")
	vgload(t, "soak", "--url", "ws://"+srv.Public+"/v1/realtime", "--admin", srv.Admin, "--admin-token-file", srv.adminTokenFile, "--api-key", key,
		"--sessions", "6", "--duration", "6s", "--sample-every", "2s", "--warmup", "1s", "--gate", "--json", path)
	var r SoakReport
	readJSON(t, path, &r)
	if !r.Passed || r.FramesSent == 0 || len(r.Samples) < 2 || r.Closes["client 1000"] == 0 {
		t.Fatalf("soak %+v", r)
	}
}

func TestFloodEndToEnd(t *testing.T) {
	const key = "vgload-e2e-flood-key-0123456789"
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, "--api-keys-file", keys, "--trusted-proxies", "127.0.0.1")
	path := filepath.Join(t.TempDir(), "flood.json")
	vgload(t, "flood", "--url", "http://"+srv.Public, "--admin", srv.Admin, "--admin-token-file", srv.adminTokenFile, "--api-key", key,
		"--ips", "3000", "--concurrency", "4", "--server-pid", strconv.Itoa(srv.Pid()), "--json", path)
	var r FloodReport
	readJSON(t, path, &r)
	if r.Statuses["401"] != 3000 || r.TrackedIPs != 3000 || r.LegitStatuses["200"] == 0 || len(r.LegitStatuses) != 1 {
		t.Fatalf("flood %+v", r)
	}
}

// vgload refuses a target off this machine before sending anything.
func TestRunRefusesRemoteTarget(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), []string{"relay", "--url", "ws://192.0.2.1:8080/v1/realtime", "--duration", "1s"}, &out, &out)
	if err == nil || !strings.Contains(err.Error(), "not a loopback address") {
		t.Fatalf("run against 192.0.2.1: %v", err)
	}
}
