package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/internal/voiceclient"
	"github.com/voicegateway/voicegateway/server/admin/adminapi"
	"github.com/voicegateway/voicegateway/server/auth"
	"github.com/voicegateway/voicegateway/server/fleet"
)

// kubeletMount lays a Secret's files out as the kubelet does in a Secret
// volume: the data in a timestamped directory, a ..data symlink to it, and
// each file a symlink through ..data. An update writes a new directory and
// swaps ..data in one rename, so that a reader sees the old files or the
// new ones, never a mix.
type kubeletMount struct {
	t   *testing.T
	dir string
	gen int
}

func newKubeletMount(t *testing.T, data map[string][]byte) *kubeletMount {
	t.Helper()
	m := &kubeletMount{t: t, dir: filepath.Join(t.TempDir(), "fleet")}
	if err := os.Mkdir(m.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	m.update(data)
	for name := range data {
		if err := os.Symlink(filepath.Join("..data", name), filepath.Join(m.dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

func (m *kubeletMount) update(data map[string][]byte) {
	m.t.Helper()
	m.gen++
	version := fmt.Sprintf("..2026_12_07_11_00_%02d.%d", m.gen, os.Getpid())
	if err := os.Mkdir(filepath.Join(m.dir, version), 0o755); err != nil {
		m.t.Fatal(err)
	}
	for name, content := range data {
		if err := os.WriteFile(filepath.Join(m.dir, version, name), content, 0o440); err != nil {
			m.t.Fatal(err)
		}
	}
	old, _ := os.Readlink(filepath.Join(m.dir, "..data"))
	tmp := filepath.Join(m.dir, "..data_tmp")
	if err := os.Symlink(version, tmp); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.dir, "..data")); err != nil {
		m.t.Fatal(err)
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(m.dir, old)); err != nil {
			m.t.Fatal(err)
		}
	}
}

// mintToken does what an app's backend does: it exchanges its API key
// for a client token at p's mint endpoint.
func mintToken(t *testing.T, p *process, ttl time.Duration, binary bool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	token, err := voiceclient.MintToken(ctx, voiceclient.MintOptions{
		URL: "http://" + p.public + "/v1/client_tokens", APIKey: testAPIKey, TTL: ttl, Binary: binary,
	})
	if err != nil {
		t.Fatalf("minting a client token on %s: %v", p.public, err)
	}
	return token
}

// connectWithToken opens a session on p with a client token and reports
// the HTTP status of the upgrade: 101 when session.created arrived.
func connectWithToken(t *testing.T, p *process, token string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, resp, err := websocket.Dial(ctx, "ws://"+p.public+"/v1/realtime?token="+token, &websocket.DialOptions{
		HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	})
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		if resp != nil {
			return resp.StatusCode
		}
		t.Fatalf("dial %s: %v", p.public, err)
	}
	defer c.CloseNow()
	_, msg, err := c.Read(ctx)
	if err != nil || !bytes.Contains(msg, []byte(`"session.created"`)) {
		t.Fatalf("first message %q, %v; want session.created", msg, err)
	}
	_ = c.Close(websocket.StatusNormalClosure, "")
	return http.StatusSwitchingProtocols
}

// countLogs counts p's log lines holding every one of parts.
func countLogs(p *process, parts ...string) int {
	n := 0
	for _, line := range strings.Split(p.Logs(), "\n") {
		all := true
		for _, part := range parts {
			all = all && strings.Contains(line, part)
		}
		if all {
			n++
		}
	}
	return n
}

// TestFleetSecretAcrossReplicas runs two real processes on one fleet Secret
// mounted the kubelet's way: a token minted on either is accepted by the
// other; a rotation written by an atomic symlink swap reaches both without a
// restart; tokens minted before it keep working until the old key retires,
// tokens minted after the new key's sign_from carry the new key id.
func TestFleetSecretAcrossReplicas(t *testing.T) {
	data, err := fleet.Generate(nil, time.Now(), false)
	if err != nil {
		t.Fatal(err)
	}
	mount := newKubeletMount(t, data)
	args := []string{"--fleet-secret-dir", mount.dir, "--secret-poll-interval", "200ms"}
	a, b := startProcess(t, args...), startProcess(t, args...)
	pids := []int{a.Pid(), b.Pid()}
	replicas := []*process{a, b}

	counts := map[string]int{}
	crossCheck := func(phase string, wantKeyID string, rounds int) {
		t.Helper()
		for i := 0; i < rounds; i++ {
			minter, verifier := replicas[i%2], replicas[(i+1)%2]
			token := mintToken(t, minter, time.Minute, false)
			if got := auth.SigningKeyID(token); got != wantKeyID {
				t.Fatalf("%s: token signed with key %q, want %q", phase, got, wantKeyID)
			}
			if code := connectWithToken(t, verifier, token); code == http.StatusSwitchingProtocols {
				counts[phase+" accepted"]++
			} else {
				counts[phase+" refused"]++
				t.Errorf("%s: a token minted on one replica is refused by the other: HTTP %d", phase, code)
			}
		}
	}

	keys, err := fleet.ParseTokenKeys(data[fleet.TokenKeysFile])
	if err != nil {
		t.Fatal(err)
	}
	oldID := keys.Keys[0].ID
	crossCheck("before the rotation", oldID, 20)
	// Minted before the rotation, presented after it. A client token opens
	// one session per replica (--max-sessions-per-token 1), so each phase
	// below presents tokens of its own, each once to each replica: a
	// refusal is then the key's doing, never a replay's.
	mintEarly := func() []string {
		return []string{mintToken(t, a, time.Minute, false), mintToken(t, b, time.Minute, false)}
	}
	earlyAfterRotation, earlyAfterSignFrom, earlyAfterRetired := mintEarly(), mintEarly(), mintEarly()

	rotation := fleet.Rotation{Activation: 5 * time.Second, Retain: 4 * time.Second}
	rotated, err := keys.Rotate(nil, time.Now(), rotation)
	if err != nil {
		t.Fatal(err)
	}
	newID, signFrom := rotated.Keys[0].ID, *rotated.Keys[0].SignFrom
	raw, err := rotated.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	next := map[string][]byte{}
	for k, v := range data {
		next[k] = v
	}
	next[fleet.TokenKeysFile] = raw
	rotatedAt := time.Now()
	mount.update(next)
	for _, p := range replicas {
		testkit.Eventually(t, 10*time.Second, testkit.That("the rotated token-keys.json reloaded", func() bool {
			return countLogs(p, "Reloaded secret file", fleet.TokenKeysFile) >= 1
		}))
	}
	t.Logf("both replicas reloaded the rotated keys %s after the symlink swap", time.Since(rotatedAt).Round(time.Millisecond))
	if time.Until(signFrom) < 2*time.Second {
		t.Fatalf("the replicas took until %s before the new key's sign_from to reload; the phase before it cannot be tested", time.Until(signFrom))
	}
	crossCheck("after the rotation, before the new key signs", oldID, 6)
	for _, token := range earlyAfterRotation {
		for _, p := range replicas {
			if code := connectWithToken(t, p, token); code != http.StatusSwitchingProtocols {
				t.Errorf("a token minted before the rotation is refused after it: HTTP %d", code)
			}
		}
	}

	time.Sleep(time.Until(signFrom) + 100*time.Millisecond)
	crossCheck("after the new key's sign_from", newID, 20)
	for _, token := range earlyAfterSignFrom {
		if code := connectWithToken(t, b, token); code != http.StatusSwitchingProtocols {
			t.Errorf("a token of the previous key is refused before the key retires: HTTP %d", code)
		}
	}

	time.Sleep(time.Until(signFrom.Add(rotation.Retain)) + 100*time.Millisecond)
	for _, token := range earlyAfterRetired {
		for _, p := range replicas {
			if code := connectWithToken(t, p, token); code != http.StatusUnauthorized {
				t.Errorf("a token of the retired key = HTTP %d, want 401", code)
			} else {
				counts["retired key refused"]++
			}
		}
	}
	crossCheck("after the old key retired", newID, 4)

	for i, p := range replicas {
		select {
		case <-p.Exited():
			t.Fatalf("replica %d exited during the rotation", i)
		default:
		}
		if p.Pid() != pids[i] {
			t.Fatalf("replica %d restarted", i)
		}
	}
	t.Logf("connects with tokens minted on the other replica: %v", counts)
}

// TestAdminPlaneOnRealProcess sends every admin request that changes or
// reveals state to a real process without the token, with a wrong one, and
// with the right one; then runs one without any admin token.
func TestAdminPlaneOnRealProcess(t *testing.T) {
	p := startProcess(t, "--auth-block-after", "2", "--auth-suspicious-after", "1", "--auth-suspicious-delay", "0s",
		"--propagation-delay", "1s")
	token := p.adminToken()
	guarded := []struct{ method, path, body string }{
		{http.MethodPost, "/drain", ""},
		{http.MethodGet, "/debug/pprof/", ""},
		{http.MethodGet, "/debug/pprof/cmdline", ""},
		{http.MethodGet, "/debug/pprof/heap", ""},
		{http.MethodGet, "/debug/memstats", ""},
	}
	// A failed authentication from loopback, so that the limiter's state
	// is not empty and a leak of it would show.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, resp, _ := websocket.Dial(ctx, "ws://"+p.public+"/v1/realtime", &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer wrong-key-wrong-key-wrong-key"}},
	})
	if resp == nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("a wrong API key was not refused: %v", resp)
	}
	resp.Body.Close()

	for _, caller := range []struct{ name, authorization string }{
		{"no credential", ""},
		{"wrong token", "Bearer vgw_admin_" + strings.Repeat("x", 43)},
		{"API key instead", "Bearer " + testAPIKey},
		{"token in another scheme", "Basic " + token},
	} {
		for _, g := range guarded {
			code, body := p.adminDoBody(g.method, g.path, caller.authorization, g.body)
			if code != http.StatusUnauthorized {
				t.Errorf("%s: %s %s = %d %s, want 401", caller.name, g.method, g.path, code, body)
			}
			if bytes.Contains(body, []byte("127.0.0.1")) || bytes.Contains(body, []byte(token)) {
				t.Errorf("%s: %s %s refusal reveals state: %s", caller.name, g.method, g.path, body)
			}
		}
	}
	if st := p.status(); st.Phase != adminapi.PhaseServing || !st.Ready {
		t.Fatalf("after refused admin requests the server is %v, want serving", st)
	}
	if got := p.metric(`voicegateway_admin_auth_failures_total{reason="missing"}`); got != float64(2*len(guarded)) {
		t.Errorf("admin_auth_failures_total{missing} = %v, want %d", got, 2*len(guarded))
	}
	if got := p.metric(`voicegateway_admin_auth_failures_total{reason="invalid"}`); got != float64(2*len(guarded)) {
		t.Errorf("admin_auth_failures_total{invalid} = %v, want %d", got, 2*len(guarded))
	}
	if strings.Contains(p.Logs(), token) {
		t.Error("the admin token appears in the server's log")
	}

	// With the token: memory stats are readable, and the drain begins.
	if code, body := p.adminGet("/debug/memstats"); code != http.StatusOK {
		t.Fatalf("GET /debug/memstats with the token = %d %s", code, body)
	}
	if code, body := p.adminDo(http.MethodPost, "/drain", "Bearer "+token); code != http.StatusOK || !bytes.Contains(body, []byte(`"draining":true`)) {
		t.Fatalf("POST /drain with the token = %d %s", code, body)
	}
	// With no session to wait for, the drain it began ends the process.
	if code := p.WaitExit(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d after the drain", code)
	}

	t.Run("no admin token", func(t *testing.T) {
		keys := filepath.Join(t.TempDir(), "keys")
		if err := os.WriteFile(keys, []byte(testAPIKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		// A fleet Secret without admin-token: the guarded endpoints are
		// off, whatever is sent; probes, metrics and status answer.
		dir := newFleetDir(t)
		if err := os.Remove(filepath.Join(dir, fleet.AdminTokenFile)); err != nil {
			t.Fatal(err)
		}
		p := startBinary(t, "--api-keys-file", keys, "--fleet-secret-dir", dir, "--debug-endpoints")
		for _, g := range guarded {
			for _, authorization := range []string{"", "Bearer " + token} {
				if code, body := p.adminDoBody(g.method, g.path, authorization, g.body); code != http.StatusForbidden {
					t.Errorf("%s %s = %d %s, want 403", g.method, g.path, code, body)
				}
			}
		}
		for _, path := range []string{"/healthz", "/readyz", "/metrics", "/status"} {
			if code, _ := p.adminDo(http.MethodGet, path, ""); code != http.StatusOK {
				t.Errorf("GET %s = %d, want 200", path, code)
			}
		}
		// SIGTERM still drains.
		p.Signal(syscall.SIGTERM)
		if code := p.WaitExit(30 * time.Second); code != 0 {
			t.Fatalf("exit code %d", code)
		}
	})

	t.Run("debug endpoints off by default", func(t *testing.T) {
		dir := newFleetDir(t)
		p := startBinary(t, "--insecure-no-auth", "--fleet-secret-dir", dir)
		for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/memstats"} {
			if code, _ := p.adminGet(path); code != http.StatusNotFound {
				t.Errorf("GET %s with the token but without --debug-endpoints = %d, want 404", path, code)
			}
		}
	})
}

// TestDrainSubcommand is the preStop hook as the operator's pods run it:
// `voice-server drain --config FILE`, a second process in the container,
// reading the same settings file as the server. It returns once the server
// refuses new sessions; with another fleet Secret's token it fails and
// changes nothing.
func TestDrainSubcommand(t *testing.T) {
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if err := os.WriteFile(keys, []byte(testAPIKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	fleetDir := newFleetDir(t)
	configFile := filepath.Join(dir, "config.yaml")
	// The admin listener on every interface, as in a pod: the hook must
	// find it on loopback.
	_, adminPort, _ := net.SplitHostPort(testkit.FreeAddr(t))
	config := fmt.Sprintf("listen: %s\nadmin_listen: :%s\napi_keys_file: %s\nfleet_secret_dir: %s\n"+
		"drain:\n  timeout: 17s\n  propagation_delay: 1s\n  notify_window: 1s\n  exit_margin: 3s\n",
		testkit.FreeAddr(t), adminPort, keys, fleetDir)
	if err := os.WriteFile(configFile, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startBinary(t, "--config", configFile)
	// A live call keeps the drain, and the server, going after the hook.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	call, resp, err := p.dial(ctx, false)
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	if err != nil {
		t.Fatalf("opening a session: %v", err)
	}
	defer call.CloseNow()
	if _, msg, err := call.Read(ctx); err != nil || !bytes.Contains(msg, []byte("session.created")) {
		t.Fatalf("first message %q, %v", msg, err)
	}

	drain := func(configFile string) (int, string, time.Duration) {
		t.Helper()
		cmd := exec.Command(voiceServer.Path(t), "drain", "--config", configFile)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		err := cmd.Run()
		code := 0
		if err != nil {
			exitErr, ok := err.(*exec.ExitError)
			if !ok {
				t.Fatalf("running drain: %v", err)
			}
			code = exitErr.ExitCode()
		}
		return code, out.String(), time.Since(start)
	}

	// Another fleet's token: refused, the server serves on.
	other := filepath.Join(dir, "other.yaml")
	if err := os.WriteFile(other, []byte(strings.Replace(config, fleetDir, newFleetDir(t), 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, out, _ := drain(other); code == 0 || !strings.Contains(out, "401") {
		t.Fatalf("drain with another fleet's token: exit %d, %q; want a failure naming 401", code, out)
	}
	if st := p.status(); st.Phase != adminapi.PhaseServing {
		t.Fatalf("a refused drain changed the phase to %v", st.Phase)
	}

	code, out, took := drain(configFile)
	t.Logf("voice-server drain: exit %d after %s: %s", code, took.Round(time.Millisecond), strings.TrimSpace(out))
	if code != 0 || !strings.Contains(out, "drain begun: phase refusing") {
		t.Fatalf("drain: exit %d, %q; want 0 and the refusing phase", code, out)
	}
	if took < time.Second {
		t.Errorf("drain returned after %s, before the 1s propagation delay", took)
	}
	if c, resp, err := p.dial(ctx, false); err == nil {
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		c.CloseNow()
		t.Fatal("a new session was accepted after the hook returned")
	} else if resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("a new session after the hook: %v, want 503", err)
	}
	// The live call is told to move, then hangs up; the kubelet's SIGTERM
	// finds the drain under way.
	for {
		_, msg, err := call.Read(ctx)
		if err != nil {
			t.Fatalf("the live call ended before its gateway.draining: %v", err)
		}
		if bytes.Contains(msg, []byte(`"gateway.draining"`)) {
			break
		}
	}
	_ = call.Close(websocket.StatusNormalClosure, "moving")
	// With its last session gone the drain may finish, and the server exit,
	// before the signal arrives; either way it must exit cleanly.
	if err := p.Cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("signal: %v", err)
	}
	if code := p.WaitExit(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d", code)
	}
}
