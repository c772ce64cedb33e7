package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"go.uber.org/goleak"

	"github.com/voicegateway/voicegateway/internal/testbin"
	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/internal/voiceclient"
	"github.com/voicegateway/voicegateway/server/admin/adminapi"
	"github.com/voicegateway/voicegateway/server/fleet"
)

// voiceServer is the real binary the end-to-end tests run.
var voiceServer = testbin.New("github.com/voicegateway/voicegateway/cmd/voice-server")

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		voiceServer.Remove(code)
		demoDrain.Remove(code)
	}))
}

const testAPIKey = "vgw-e2e-test-key-0123456789abcdef"

// process is the real voice-server binary running on loopback.
type process struct {
	*testkit.Process
	t             testing.TB
	public, admin string
	// fleetDir is the fleet Secret the process reads (--fleet-secret-dir).
	fleetDir string
}

func startProcess(t testing.TB, extraArgs ...string) *process {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary")
	}
	keys := filepath.Join(t.TempDir(), "api-keys")
	if err := os.WriteFile(keys, []byte("# test key\n"+testAPIKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return startBinary(t, append([]string{"--api-keys-file", keys}, extraArgs...)...)
}

// newFleetDir writes a fleet Secret's files with the binary's own
// `fleet-secret init`, as a user bringing their own Secret would.
func newFleetDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "fleet")
	out, err := exec.Command(voiceServer.Path(t), "fleet-secret", "init", "--dir", dir).CombinedOutput()
	if err != nil {
		t.Fatalf("fleet-secret init: %v\n%s", err, out)
	}
	return dir
}

// fleetDirOf reads fleet_secret_dir from a settings file.
func fleetDirOf(t testing.TB, configFile string) string {
	t.Helper()
	data, err := os.ReadFile(configFile)
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "fleet_secret_dir: "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatalf("%s names no fleet_secret_dir", configFile)
	return ""
}

// startBinary runs the voice server on loopback ports with exactly the
// given settings besides the addresses and the log level, and, unless they
// name one, a fleet Secret of its own with the debug endpoints on (as the
// operator gives every pod its Secret).
func startBinary(t testing.TB, extraArgs ...string) *process {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary")
	}
	args := []string{"--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--log-level", logLevel()}
	fleetDir := ""
	for i, a := range extraArgs {
		switch {
		case a == "--fleet-secret-dir" && i+1 < len(extraArgs):
			fleetDir = extraArgs[i+1]
		case a == "--config" && i+1 < len(extraArgs):
			// The file says it all, as in a pod.
			args = []string{"--log-level", logLevel()}
			fleetDir = fleetDirOf(t, extraArgs[i+1])
		}
	}
	if fleetDir == "" {
		fleetDir = newFleetDir(t)
		args = append(args, "--fleet-secret-dir", fleetDir, "--debug-endpoints")
	}
	args = append(args, extraArgs...)
	tp := testkit.Start(t, voiceServer.Path(t), args...)
	return &process{Process: tp, t: t, public: tp.Public, admin: tp.Admin, fleetDir: fleetDir}
}

// adminToken is the admin token of the process's fleet Secret.
func (p *process) adminToken() string {
	p.t.Helper()
	token, err := os.ReadFile(filepath.Join(p.fleetDir, fleet.AdminTokenFile))
	if err != nil {
		p.t.Fatal(err)
	}
	return strings.TrimSpace(string(token))
}

// adminGet GETs an admin path with the admin token.
func (p *process) adminGet(path string) (int, []byte) {
	p.t.Helper()
	return p.adminDo(http.MethodGet, path, "Bearer "+p.adminToken())
}

// adminDo sends a request to the admin port with the given Authorization
// header ("" sends none).
func (p *process) adminDo(method, path, authorization string) (int, []byte) {
	p.t.Helper()
	return p.adminDoBody(method, path, authorization, "")
}

// adminDoBody is adminDo with a request body.
func (p *process) adminDoBody(method, path, authorization, reqBody string) (int, []byte) {
	p.t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	req, err := http.NewRequest(method, "http://"+p.admin+path, strings.NewReader(reqBody))
	if err != nil {
		p.t.Fatal(err)
	}
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := client.Do(req)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	client.CloseIdleConnections()
	return resp.StatusCode, body
}

// api is a client of the process's admin endpoints, with its admin token.
func (p *process) api() *adminapi.Client {
	p.t.Helper()
	c, err := adminapi.NewClient(p.admin, adminapi.ClientOptions{Token: p.adminToken()})
	if err != nil {
		p.t.Fatal(err)
	}
	return c
}

func (p *process) status() adminapi.Status {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := p.api().Status(ctx)
	if err != nil {
		p.t.Fatalf("/status: %v", err)
	}
	return st
}

func (p *process) memStats() adminapi.MemStats {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := p.api().MemStats(ctx)
	if err != nil {
		p.t.Fatalf("/debug/memstats: %v", err)
	}
	return m
}

func (p *process) dial(ctx context.Context, binary bool) (*websocket.Conn, *http.Response, error) {
	u := "ws://" + p.public + "/v1/realtime"
	if binary {
		u += "?audio=binary"
	}
	c, resp, err := websocket.Dial(ctx, u, &websocket.DialOptions{
		HTTPHeader: http.Header{"Authorization": {"Bearer " + testAPIKey}},
		HTTPClient: &http.Client{Transport: &http.Transport{DisableKeepAlives: true}},
	})
	if c != nil {
		c.SetReadLimit(1 << 20)
	}
	return c, resp, err
}

// callResult is what one client saw.
type callResult struct {
	echoOK      bool
	draining    map[string]any
	closeCode   websocket.StatusCode
	err         error
	polite      bool
	afterNotice time.Duration
}

// call runs one client: a turn of audio echoed back, then it waits for the
// drain. A polite client hangs up on gateway.draining (as a client that
// reconnects elsewhere does); the others stay until the server closes them.
func call(ctx context.Context, p *process, binary, polite bool, ready *sync.WaitGroup) (res callResult) {
	res.polite = polite
	readyDone := false
	defer func() {
		if !readyDone {
			ready.Done()
		}
	}()
	var (
		echoed   []byte         // written by the reader until response.done
		draining map[string]any // written by the reader before Draining is closed
	)
	answered := make(chan struct{}, 1)
	c, err := voiceclient.Open(ctx, voiceclient.Options{
		URL: "ws://" + p.public + "/v1/realtime", APIKey: testAPIKey, Binary: binary,
		OnAudio: func(a voiceclient.Audio) { echoed = append(echoed, a.PCM...) },
		OnEvent: func(ev voiceclient.Event) {
			switch {
			case ev.Type == "response.done":
				select {
				case answered <- struct{}{}:
				default:
				}
			case ev.Draining != nil && draining == nil:
				_ = json.Unmarshal(ev.Raw, &draining)
			}
		},
	})
	if err != nil {
		res.err = fmt.Errorf("dial: %w", err)
		return res
	}
	defer c.CloseNow()
	pcm := make([]byte, 24000*2/5) // 200 ms
	for i := range pcm {
		pcm[i] = byte(i * 7)
	}
	for off := 0; off < len(pcm); off += 960 {
		if err := c.SendAudio(ctx, pcm[off:off+960]); err != nil {
			res.err = fmt.Errorf("send audio: %w", err)
			return res
		}
	}
	if err := c.Commit(ctx); err != nil {
		res.err = err
		return res
	}
	echo, notice := (<-chan struct{})(answered), c.Draining()
	for {
		select {
		case <-echo:
			echo = nil
			res.echoOK = bytes.Equal(echoed, pcm)
			ready.Done()
			readyDone = true
		case <-notice:
			notice = nil
			res.draining = draining
			if polite {
				if err := c.Close(); err != nil {
					res.err = fmt.Errorf("client close: %w", err)
				}
				res.closeCode = websocket.StatusNormalClosure
				return res
			}
		case <-c.Done():
			end := c.End()
			res.draining, res.closeCode = draining, end.Code
			if end.Code == -1 {
				res.err = fmt.Errorf("read: %w", end.Err)
			}
			if n := c.Notice(); !n.At.IsZero() {
				res.afterNotice = time.Since(n.At)
			}
			return res
		case <-ctx.Done():
			res.err = fmt.Errorf("read: %w", ctx.Err())
			return res
		}
	}
}

// TestDrainOnSIGTERM is the rollout a user cares about: 50 live calls, a
// SIGTERM, and every call either hangs up on its own or is closed with 1012
// at the deadline — none cut abnormally — while readiness fails at once,
// new sessions are refused after the propagation delay, and the process
// exits 0 within its grace period.
func TestDrainOnSIGTERM(t *testing.T) {
	const (
		sessions         = 50
		grace            = 12 * time.Second
		exitMargin       = 2 * time.Second
		propagationDelay = 2 * time.Second
	)
	p := startProcess(t,
		"--drain-timeout", (grace - exitMargin).String(), "--exit-margin", exitMargin.String(),
		"--propagation-delay", propagationDelay.String(), "--notify-window", "1s", "--reconnect-after", "200ms")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var ready sync.WaitGroup
	results := make([]callResult, sessions)
	var calls sync.WaitGroup
	ready.Add(sessions)
	for i := 0; i < sessions; i++ {
		calls.Add(1)
		go func() {
			defer calls.Done()
			results[i] = call(ctx, p, i%2 == 0, i%4 < 2, &ready)
		}()
	}
	ready.Wait()
	if got := p.status().Sessions; got != sessions {
		t.Fatalf("/status sessions = %v, want %d", got, sessions)
	}
	if code, _ := p.adminGet("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz before drain = %d", code)
	}

	signalled := time.Now()
	p.Signal(syscall.SIGTERM)
	// Readiness fails at once, and the liveness probe stays healthy.
	for {
		code, _ := p.adminGet("/readyz")
		if code == http.StatusServiceUnavailable {
			break
		}
		if time.Since(signalled) > propagationDelay {
			t.Fatal("readiness still passing after the propagation delay")
		}
		time.Sleep(10 * time.Millisecond)
	}
	readinessFailedAfter := time.Since(signalled)
	if code, _ := p.adminGet("/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz during drain = %d, want 200", code)
	}
	// While endpoints catch up, new sessions are still served.
	late := make(chan callResult, 1)
	if st := p.status(); st.Phase == adminapi.PhaseTerminating {
		ready.Add(1)
		calls.Add(1)
		go func() {
			defer calls.Done()
			late <- call(ctx, p, true, false, &ready)
		}()
	} else {
		t.Logf("propagation delay already over when checked (phase %v); skipping the late session", p.status().Phase)
		late <- callResult{echoOK: true, closeCode: websocket.StatusServiceRestart, draining: map[string]any{}}
	}
	// After the propagation delay, new upgrades get 503 + Retry-After.
	for p.status().Phase == adminapi.PhaseTerminating {
		time.Sleep(20 * time.Millisecond)
	}
	_, resp, err := p.dial(ctx, false)
	if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("upgrade while draining: err=%v resp=%v, want 503 with Retry-After", err, resp)
	}
	var refusal struct {
		Error struct{ Code string } `json:"error"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&refusal); err != nil || refusal.Error.Code != "server_draining" {
		t.Fatalf("503 body code = %q (%v), want server_draining", refusal.Error.Code, err)
	}
	resp.Body.Close()

	exitCode := p.WaitExit(grace + 5*time.Second)
	exitedAfter := time.Since(signalled)
	calls.Wait()
	if exitCode != 0 {
		t.Fatalf("exit code %d, want 0", exitCode)
	}
	if exitedAfter > grace {
		t.Errorf("exited %v after SIGTERM, beyond the %v grace period", exitedAfter, grace)
	}

	counts := map[websocket.StatusCode]int{}
	for i, r := range append(results, <-late) {
		if r.err != nil {
			t.Errorf("session %d: %v", i, r.err)
			continue
		}
		if !r.echoOK {
			t.Errorf("session %d: echo did not match what was sent", i)
		}
		if r.draining == nil {
			t.Errorf("session %d: no gateway.draining", i)
		}
		counts[r.closeCode]++
		want := websocket.StatusServiceRestart
		if r.polite {
			want = websocket.StatusNormalClosure
		}
		if r.closeCode != want {
			t.Errorf("session %d (polite=%v): close %v, want %v", i, r.polite, r.closeCode, want)
		}
	}
	if d := results[1].draining; d != nil {
		if ms, _ := d["reconnect_after_ms"].(float64); ms < 200 {
			t.Errorf("reconnect_after_ms = %v, want ≥ 200", ms)
		}
		if _, err := time.Parse(time.RFC3339, d["deadline"].(string)); err != nil {
			t.Errorf("deadline %v: %v", d["deadline"], err)
		}
	}
	if !strings.Contains(p.Logs(), "stopped cleanly") {
		t.Error("server did not log a clean stop")
	}
	t.Logf("readiness failed %v after SIGTERM; exit %v after SIGTERM; close codes %v", readinessFailedAfter, exitedAfter, counts)
}

// TestSecondSignalForcesFastExit: a second SIGTERM closes the remaining
// sessions with 1012 at once instead of waiting for the deadline.
func TestSecondSignalForcesFastExit(t *testing.T) {
	const grace = 60 * time.Second
	p := startProcess(t, "--drain-timeout", (grace - 3*time.Second).String(), "--propagation-delay", "30s")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	const sessions = 5
	var ready, calls sync.WaitGroup
	ready.Add(sessions)
	results := make([]callResult, sessions)
	for i := 0; i < sessions; i++ {
		calls.Add(1)
		go func() {
			defer calls.Done()
			results[i] = call(ctx, p, true, false, &ready)
		}()
	}
	ready.Wait()
	p.Signal(syscall.SIGTERM)
	for p.status().Phase != adminapi.PhaseTerminating {
		time.Sleep(10 * time.Millisecond)
	}
	p.Signal(syscall.SIGTERM)
	if code := p.WaitExit(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d, want 0", code)
	}
	calls.Wait()
	for i, r := range results {
		if r.err != nil || r.closeCode != websocket.StatusServiceRestart {
			t.Errorf("session %d: close %v err %v, want 1012", i, r.closeCode, r.err)
		}
	}
}

// logLevel is debug for tests (the log is printed when one fails) and can
// be raised for benchmarks, where logging would be measured too.
func logLevel() string {
	if l := os.Getenv("VOICEGATEWAY_TEST_LOG_LEVEL"); l != "" {
		return l
	}
	return "debug"
}
