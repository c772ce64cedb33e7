// Package testkit holds what the tests of every package share: waiting for
// a condition with one signature, and running a real binary of this module
// with its logs kept for a failure. Tests only; nothing in a shipped binary
// imports it.
package testkit

import (
	"bufio"
	"encoding/json"
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
	t   testing.TB
	Cmd *exec.Cmd
	// Public and Admin are the addresses of the "listening" log line.
	Public, Admin string

	exited  chan struct{}
	exitErr error

	mu    sync.Mutex
	lines []string
}

// Start runs path with args and waits up to 30 s for its "listening" log
// line on stderr.
func Start(t testing.TB, path string, args ...string) *Process {
	t.Helper()
	cmd := exec.Command(path, args...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &Process{t: t, Cmd: cmd, exited: make(chan struct{})}
	listening := make(chan map[string]any, 1)
	logsDone := make(chan struct{})
	go func() {
		defer close(logsDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			p.mu.Lock()
			p.lines = append(p.lines, line)
			p.mu.Unlock()
			var entry map[string]any
			if json.Unmarshal([]byte(line), &entry) == nil && entry["msg"] == "listening" {
				select {
				case listening <- entry:
				default:
				}
			}
		}
	}()
	go func() {
		<-logsDone // Wait must follow the last read from the pipe
		p.exitErr = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("%s log:\n%s", path, p.Logs())
		}
	})
	var entry map[string]any
	select {
	case entry = <-listening:
	case <-p.exited:
		// It may have logged the line and exited at once.
		select {
		case entry = <-listening:
		default:
			t.Fatalf("%s exited at start: %v\n%s", path, p.exitErr, p.Logs())
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("%s did not start\n%s", path, p.Logs())
	}
	p.Public, _ = entry["public"].(string)
	p.Admin, _ = entry["admin"].(string)
	return p
}

// Logs returns what the process logged so far.
func (p *Process) Logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// Pid is the process id.
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Exited is closed once the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

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
	case <-p.exited:
	case <-time.After(timeout):
		p.t.Fatalf("still running after %v", timeout)
	}
	var exitErr *exec.ExitError
	if errors.As(p.exitErr, &exitErr) {
		return exitErr.ExitCode()
	}
	if p.exitErr != nil {
		p.t.Fatalf("wait: %v", p.exitErr)
	}
	return 0
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
