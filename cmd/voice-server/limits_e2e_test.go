package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/voicegateway/voicegateway/internal/testkit"
)

// TestMemoryBudgetHoldsUnderStuffing is issue 15's first point on the real
// binary: under GOMEMLIMIT=256MiB (the budget: half, 128 MiB), 150 sessions
// push binary audio as fast as the gateway takes it and never commit, each
// allowed 60 s of it (--max-buffered-audio 60s, so that the budget and not
// the per-session bound is what stops them: 150 × 2.9 MB would be 432 MB).
// The process stays alive, its peak RSS stays within GOMEMLIMIT plus a
// margin, the stuffers get buffer_full and keep their sessions, and a fresh
// honest session still gets its audio echoed byte for byte.
func TestMemoryBudgetHoldsUnderStuffing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test builds and runs the binary")
	}
	const (
		stuffers  = 150
		limit     = 256 << 20
		rssMargin = 32 << 20 // the documented margin: runtime, stacks, socket buffers
	)
	t.Setenv("GOMEMLIMIT", "256MiB")
	p := startProcess(t, "--max-buffered-audio", "60s", "--session-limit", "1000", "--inbound-rate", "1000", "--inbound-burst", "1000")
	if !strings.Contains(p.Logs(), `"from":"GOMEMLIMIT"`) {
		t.Fatalf("the server did not take GOMEMLIMIT as its limit:\n%s", p.Logs())
	}

	var peak atomic.Uint64
	stopSampling := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		for {
			if rss, err := processRSS(p.Pid()); err == nil && rss > peak.Load() {
				peak.Store(rss)
			}
			select {
			case <-stopSampling:
				return
			case <-tick.C:
			}
		}
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var refused, kept, stuffed atomic.Int64
	conns := make([]*websocket.Conn, stuffers)
	// Loud noise: the echo's turn detection keeps no silence it will not
	// commit, so a stuffer has to "speak" to be buffered.
	chunk := make([]byte, 128<<10)
	for i := range chunk {
		chunk[i] = byte(i*7 + i>>3)
	}
	for i := range stuffers {
		c, _, err := p.dial(ctx, true)
		if err != nil {
			t.Fatalf("stuffer %d: %v", i, err)
		}
		conns[i] = c
		defer c.CloseNow()
	}
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Read what the server says: session.created, then buffer_full.
			full := make(chan struct{})
			go func() {
				closed := false
				for {
					_, msg, err := c.Read(ctx)
					if err != nil {
						return
					}
					if bytes.Contains(msg, []byte(`"buffer_full"`)) && !closed {
						closed = true
						close(full)
					}
				}
			}()
			for sent := 0; sent < 60*48000; sent += len(chunk) {
				if err := c.Write(ctx, websocket.MessageBinary, chunk); err != nil {
					return
				}
				stuffed.Add(int64(len(chunk)))
				select {
				case <-full:
					refused.Add(1)
					// Keep pushing a little: refused audio is dropped.
					for range 5 {
						if c.Write(ctx, websocket.MessageBinary, chunk) != nil {
							return
						}
					}
					kept.Add(1)
					return
				default:
				}
			}
			// Everything is sent, maybe still in the sockets' buffers
			// (loopback buffers hold megabytes): the server's answer comes
			// once it has read that far.
			select {
			case <-full:
				refused.Add(1)
			case <-time.After(30 * time.Second):
			case <-ctx.Done():
			}
			kept.Add(1)
		}()
	}
	wg.Wait()
	st := p.status()
	t.Logf("%d stuffers pushed %.0f MB; %d were refused with buffer_full; %d sessions open", stuffers, float64(stuffed.Load())/1e6, refused.Load(), st.Sessions)
	if refused.Load() == 0 {
		t.Fatal("no stuffer was refused: the budget never stopped them")
	}
	if st.Sessions != stuffers {
		t.Fatalf("%d sessions open, want the %d stuffers kept (buffer_full is not fatal)", st.Sessions, stuffers)
	}

	// A fresh honest session gets its audio back byte for byte.
	c, _, err := p.dial(ctx, true)
	if err != nil {
		t.Fatalf("honest session: %v", err)
	}
	defer c.CloseNow()
	tone := make([]byte, 48000)
	for i := range tone {
		tone[i] = byte(i * 7)
	}
	if err := c.Write(ctx, websocket.MessageBinary, tone); err != nil {
		t.Fatal(err)
	}
	if err := c.Write(ctx, websocket.MessageText, []byte(`{"type":"input_audio_buffer.commit"}`)); err != nil {
		t.Fatal(err)
	}
	var echoed []byte
	for {
		typ, msg, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("honest session: %v after %d bytes of echo", err, len(echoed))
		}
		if typ == websocket.MessageBinary {
			echoed = append(echoed, msg...)
			continue
		}
		if bytes.Contains(msg, []byte(`"error"`)) {
			t.Fatalf("honest session got %s", msg)
		}
		if bytes.Contains(msg, []byte(`"response.done"`)) {
			break
		}
	}
	if !bytes.Equal(echoed, tone) {
		t.Fatalf("honest session: %d bytes echoed, not the %d sent", len(echoed), len(tone))
	}
	close(stopSampling)
	<-sampled
	code, body := p.adminGet("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics: %d", code)
	}
	t.Logf("peak RSS %.1f MiB (GOMEMLIMIT 256 MiB, budget 128 MiB); %s", float64(peak.Load())/(1<<20), metricLines(body, "voicegateway_memory_"))
	if peak.Load() > limit+rssMargin {
		t.Fatalf("peak RSS %.1f MiB, over GOMEMLIMIT + %d MiB", float64(peak.Load())/(1<<20), rssMargin>>20)
	}
	select {
	case <-p.Exited():
		t.Fatal("the server exited")
	default:
	}
}

// processRSS reads a process's resident set size from /proc.
func processRSS(pid int) (uint64, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseUint(f[1], 10, 64)
			return kb << 10, err
		}
	}
	return 0, os.ErrNotExist
}

// metricLines returns the metric lines starting with prefix, joined.
func metricLines(body []byte, prefix string) string {
	var out []string
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, prefix) {
			out = append(out, line)
		}
	}
	return strings.Join(out, "; ")
}

// TestCredentialsStayOutOfLogsAndCommandLine: an upstream URL with a key in
// its query is logged and served by /debug/pprof/cmdline with its query
// values redacted; one with credentials in its userinfo is refused at
// start, with a message that points at the key file and quotes no secret.
func TestCredentialsStayOutOfLogsAndCommandLine(t *testing.T) {
	const secret = "sk-e2e-do-not-log-0123456789"
	p := startProcess(t, "--openai-url", "wss://upstream.example/v1/realtime?api_key="+secret)
	code, body := p.adminGet("/debug/pprof/cmdline")
	if code != http.StatusOK {
		t.Fatalf("/debug/pprof/cmdline: %d %s", code, body)
	}
	if bytes.Contains(body, []byte(secret)) || !bytes.Contains(body, []byte("api_key=REDACTED")) {
		t.Fatalf("/debug/pprof/cmdline = %q", body)
	}
	var sawURL bool
	for _, line := range strings.Split(p.Logs(), "\n") {
		if strings.Contains(line, secret) {
			t.Fatalf("the secret is in the log: %s", line)
		}
		var entry map[string]any
		if json.Unmarshal([]byte(line), &entry) == nil && strings.Contains(line, "api_key=REDACTED") {
			sawURL = true
		}
	}
	if !sawURL {
		t.Fatal("the logged settings do not show the redacted upstream URL")
	}

	out, err := exec.Command(voiceServer.Path(t), "--insecure-no-auth", "--listen", testkit.FreeAddr(t), "--admin-listen", testkit.FreeAddr(t),
		"--openai-url", "wss://user:"+secret+"@upstream.example/v1/realtime").CombinedOutput()
	var exit *exec.ExitError
	if err == nil || !errors.As(err, &exit) || exit.ExitCode() != 2 {
		t.Fatalf("credentials in the URL: %v, want exit 2", err)
	}
	if bytes.Contains(out, []byte(secret)) || !bytes.Contains(out, []byte("--openai-api-key-file")) {
		t.Fatalf("refusal of credentials in the URL: %s", out)
	}
}
