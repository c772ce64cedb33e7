// Package testkit holds what the tests of every package share: waiting for
// a condition with one signature, and running a real binary of this module
// with its logs kept for a failure. Tests only; nothing in a shipped binary
// imports it.
package testkit

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/voicegateway/voicegateway/internal/childproc"
)

// Eventually calls check until it returns nil, failing t with check's last
// error after timeout. The timeout only guards against a hang; it is never
// a measure of speed. Checks start 5 ms apart and back off to 200 ms.
func Eventually(t testing.TB, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	pause := 5 * time.Millisecond
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("still not the case after %s: %v", timeout, err)
		}
		time.Sleep(pause)
		pause = min(2*pause, 200*time.Millisecond)
	}
}

// That turns a condition into a check for Eventually: nil when cond holds,
// else an error saying what was awaited.
func That(what string, cond func() bool) func() error {
	return func() error {
		if cond() {
			return nil
		}
		return errors.New("waiting for " + what)
	}
}

// Process is a real binary of this module running for a test, e.g. the
// voice server, which logs a JSON line {"msg":"listening","public":…,
// "admin":…} once its listeners are open. It is killed when the test ends
// if it is still running, and its log is printed when the test failed.
type Process struct {
	*childproc.Process
	t testing.TB

	mu    sync.Mutex
	lines []string
}

// Start runs path with args and waits up to 30 s for its "listening" log
// line on stderr.
func Start(t testing.TB, path string, args ...string) *Process {
	t.Helper()
	p := &Process{t: t}
	child, err := childproc.Start(context.Background(), exec.Command(path, args...), childproc.Options{
		OnLine: func(line string, _ map[string]any) {
			p.mu.Lock()
			p.lines = append(p.lines, line)
			p.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatalf("%s: %v\n%s", path, err, p.Logs())
	}
	p.Process = child
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			t.Logf("%s log:\n%s", path, p.Logs())
		}
	})
	return p
}

// Logs returns what the process logged so far.
func (p *Process) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// Signal sends sig to the process.
func (p *Process) Signal(sig os.Signal) {
	p.t.Helper()
	if err := p.Cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal: %v", err)
	}
}

// WaitExit waits for the process and returns its exit code.
func (p *Process) WaitExit(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.Exited():
	case <-time.After(timeout):
		p.t.Fatalf("still running after %v", timeout)
	}
	code, err := p.ExitCode()
	if err != nil {
		p.t.Fatalf("wait: %v", err)
	}
	return code
}

// String names the process in messages.
func (p *Process) String() string { return fmt.Sprintf("%s (pid %d)", p.Cmd.Path, p.Pid()) }

// FreeAddr returns a loopback host:port that nothing listens on right now,
// for a program that must be told its address before it starts.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// HTTPGet GETs url without keeping the connection, and returns the status
// and body; an error fails t (without stopping it) and returns 0.
func HTTPGet(t testing.TB, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := client.Get(url)
	if err != nil {
		t.Errorf("GET %s: %v", url, err)
		return 0, ""
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	return resp.StatusCode, string(body)
}

// ReplaceFile writes content to path through a temporary file and a
// rename, as the kubelet updates a mounted Secret, so that a process
// polling the file never reads half of it.
func ReplaceFile(t testing.TB, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
