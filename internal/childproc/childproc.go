// Package childproc runs a voice server — or any program that logs the
// same JSON line {"msg":"listening","public":…,"admin":…} once its
// listeners are open — as a child process: it reads the child's stderr to
// its end, hands every line to the caller, waits (bounded) for the
// listening line, and stops the child with SIGTERM, then SIGKILL. The
// tests' runner (internal/testkit), vgload's abuse suite, make compat and
// make demo-drain start their servers through it.
package childproc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// DefaultStartTimeout bounds the wait for the listening line.
const DefaultStartTimeout = 30 * time.Second

// maxLine is the longest stderr line read whole; a longer one ends the
// reading (the child's log lines are far shorter).
const maxLine = 1 << 20

// Options are a start's choices; the zero value is fine.
type Options struct {
	// OnLine is given every line the child writes to stderr, with its
	// fields when the line is a JSON object (nil otherwise), from one
	// goroutine, until the child's stderr closes.
	OnLine func(line string, entry map[string]any)
	// StartTimeout bounds the wait for the listening line
	// (DefaultStartTimeout when 0).
	StartTimeout time.Duration
}

// Process is a running child.
type Process struct {
	Cmd *exec.Cmd
	// Public and Admin are the addresses of the listening line.
	Public, Admin string

	exited  chan struct{}
	exitErr error
}

// Start starts cmd (its Stderr must be unset) and waits until it logs its
// listening line, it exits, StartTimeout passes or ctx ends. Only a
// listening child is returned; one that did not start is killed and
// waited for, and the error says why.
func Start(ctx context.Context, cmd *exec.Cmd, opts Options) (*Process, error) {
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &Process{Cmd: cmd, exited: make(chan struct{})}
	listening := make(chan map[string]any, 1)
	logsDone := make(chan struct{})
	go func() {
		defer close(logsDone)
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), maxLine)
		for sc.Scan() {
			var entry map[string]any
			if json.Unmarshal(sc.Bytes(), &entry) != nil {
				entry = nil
			}
			if opts.OnLine != nil {
				opts.OnLine(sc.Text(), entry)
			}
			if entry["msg"] == "listening" {
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
	timeout := opts.StartTimeout
	if timeout <= 0 {
		timeout = DefaultStartTimeout
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	var entry map[string]any
	select {
	case entry = <-listening:
	case <-p.exited:
		// It may have logged the line and exited at once.
		select {
		case entry = <-listening:
		default:
			return nil, fmt.Errorf("exited at start: %v", p.exitErr)
		}
	case <-timer.C:
		p.Kill()
		return nil, fmt.Errorf("no listening line within %v", timeout)
	case <-ctx.Done():
		p.Kill()
		return nil, ctx.Err()
	}
	p.Public, _ = entry["public"].(string)
	p.Admin, _ = entry["admin"].(string)
	return p, nil
}

// Pid is the child's process id.
func (p *Process) Pid() int { return p.Cmd.Process.Pid }

// Exited is closed once the child has exited and its stderr is read.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// ExitErr is what waiting for the child returned; read it after Exited.
func (p *Process) ExitErr() error { return p.exitErr }

// ExitCode is the child's exit code once it has exited: -1 for a child
// ended by a signal; an error only when waiting for it failed otherwise.
func (p *Process) ExitCode() (int, error) {
	var exit *exec.ExitError
	if errors.As(p.exitErr, &exit) {
		return exit.ExitCode(), nil
	}
	if p.exitErr != nil {
		return -1, p.exitErr
	}
	return 0, nil
}

// Kill ends the child if it still runs, and waits for it.
func (p *Process) Kill() {
	select {
	case <-p.exited:
	default:
		_ = p.Cmd.Process.Kill()
		<-p.exited
	}
}

// Stop sends SIGTERM and waits up to timeout for the child to exit (a
// drain takes its time), then kills it; it reports whether the child
// exited by itself.
func (p *Process) Stop(timeout time.Duration) bool {
	_ = p.Cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.exited:
		return true
	case <-t.C:
		p.Kill()
		return false
	}
}
