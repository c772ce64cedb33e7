package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"time"
)

// The honest callers of an abuse row run in a process of their own
// (vgload abuse-honest), not among the attackers' goroutines: on a 2-core
// machine a Go scheduler running thousands of attacking goroutines served
// the honest readers late enough (p99 over a second in the all-together
// row) that the server rightly cut one as a slow consumer. What the suite
// measures is what the server does for honest callers under attack, not
// how the load generator shares its own scheduler; as separate processes
// the kernel shares the cores between the honest side, the attackers and
// the server.

// honestKeyEnv carries the honest API key to the child: never on its
// command line, which /proc shows to anyone on the machine.
const honestKeyEnv = "VGLOAD_HONEST_KEY"

// honestReady is the line the child prints once every caller talks.
const honestReady = "ready"

// cmdAbuseHonest is the child: it starts the callers, says honestReady,
// talks until its stdin closes, then prints what the callers saw (Honest,
// as JSON) and exits.
func cmdAbuseHonest(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := newFlagSet("abuse-honest", stderr)
	env := &abuseEnv{keys: map[string]string{"honest": os.Getenv(honestKeyEnv)}}
	fs.StringVar(&env.public, "public", "", "the voice server's public host:port")
	fs.IntVar(&env.cfg.honest, "callers", 20, "honest callers")
	fs.DurationVar(&env.cfg.settle, "settle", 5*time.Second, "how long callers wait for their last echoes")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if env.public == "" || env.keys["honest"] == "" {
		return fmt.Errorf("abuse-honest needs --public and %s", honestKeyEnv)
	}
	env.wsURL = "ws://" + env.public + "/v1/realtime"
	env.http = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DialContext: guardedDialer(false).DialContext, DisableKeepAlives: true, Proxy: nil}}
	defer env.http.CloseIdleConnections()

	h := startHonest(ctx, env)
	fmt.Fprintln(stdout, honestReady)
	// Talk until the parent closes stdin (or dies: its end of the pipe
	// closes with it).
	_, _ = io.Copy(io.Discard, stdin)
	return json.NewEncoder(stdout).Encode(h.finish())
}

// honestProcess is the parent's handle on a running abuse-honest child.
type honestProcess struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // the child's stdout, line by line; closed at EOF
	stderr *cappedBuffer
	waited chan struct{}
	err    error // of cmd.Wait, once waited is closed
}

// startHonestProcess starts the honest callers and returns once every one
// of them talks (or failed to).
func startHonestProcess(ctx context.Context, env *abuseEnv) (*honestProcess, error) {
	cmd := exec.Command(env.cfg.vgloadBin, "abuse-honest",
		"--public", env.public, "--callers", strconv.Itoa(env.cfg.honest), "--settle", env.cfg.settle.String())
	cmd.Env = append(os.Environ(), honestKeyEnv+"="+env.keys["honest"])
	dieWithParent(cmd)
	p := &honestProcess{cmd: cmd, lines: make(chan string, 4), stderr: &cappedBuffer{max: 64 << 10}, waited: make(chan struct{})}
	cmd.Stderr = p.stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if p.stdin, err = cmd.StdinPipe(); err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		defer close(p.lines)
		sc := bufio.NewScanner(stdout)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			p.lines <- sc.Text()
		}
		// Whatever is left unread is the child's problem; wait only once
		// stdout is read to its end (exec.Cmd's rule for pipes).
		_, _ = io.Copy(io.Discard, stdout)
		p.err = cmd.Wait()
		close(p.waited)
	}()
	select {
	case line, ok := <-p.lines:
		if ok && line == honestReady {
			return p, nil
		}
		p.kill()
		return nil, fmt.Errorf("abuse-honest said %q, not %q; stderr: %s", line, honestReady, p.stderr.String())
	case <-time.After(2 * time.Minute):
		p.kill()
		return nil, errors.New("abuse-honest not ready after 2 minutes")
	case <-ctx.Done():
		p.kill()
		return nil, ctx.Err()
	}
}

// finish hangs the callers up (each waits for its last echoes) and reads
// what they saw; past timeout the child is killed.
func (p *honestProcess) finish(timeout time.Duration) (Honest, error) {
	var h Honest
	_ = p.stdin.Close()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var report []byte
	for {
		select {
		case line, ok := <-p.lines:
			if ok {
				report = append(report, line...)
				continue
			}
			<-p.waited
			if p.err != nil {
				return h, fmt.Errorf("abuse-honest: %v; stderr: %s", p.err, p.stderr.String())
			}
			if err := json.Unmarshal(bytes.TrimSpace(report), &h); err != nil {
				return h, fmt.Errorf("abuse-honest's report: %v", err)
			}
			return h, nil
		case <-deadline.C:
			p.kill()
			return h, fmt.Errorf("abuse-honest did not finish in %s", timeout)
		}
	}
}

// kill ends the child and waits for it: nothing outlives a row.
func (p *honestProcess) kill() {
	_ = p.stdin.Close()
	_ = p.cmd.Process.Kill()
	for range p.lines {
	}
	<-p.waited
}

// cappedBuffer keeps the first max bytes written to it.
type cappedBuffer struct {
	mu  sync.Mutex
	max int
	buf bytes.Buffer
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *cappedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
