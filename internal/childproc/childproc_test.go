package childproc

import (
	"context"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func sh(script string) *exec.Cmd { return exec.Command("/bin/sh", "-c", script) }

// TestStartAndStop: the listening line's addresses are read, every line
// reaches OnLine, SIGTERM ends the child and its exit code is read.
func TestStartAndStop(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	// The trap comes first: SIGTERM may follow the listening line at once.
	p, err := Start(context.Background(), sh(`trap 'exit 3' TERM
echo 'not json' >&2
echo '{"msg":"listening","public":"127.0.0.1:1","admin":"127.0.0.1:2"}' >&2
while :; do sleep 0.05; done`), Options{OnLine: func(line string, entry map[string]any) {
		mu.Lock()
		defer mu.Unlock()
		if (entry == nil) != (line == "not json") {
			t.Errorf("line %q parsed as %v", line, entry)
		}
		lines = append(lines, line)
	}})
	if err != nil {
		t.Fatal(err)
	}
	if p.Public != "127.0.0.1:1" || p.Admin != "127.0.0.1:2" {
		t.Fatalf("addresses %q %q", p.Public, p.Admin)
	}
	if !p.Stop(10 * time.Second) {
		t.Fatal("SIGTERM did not end the child")
	}
	if code, err := p.ExitCode(); code != 3 || err != nil {
		t.Fatalf("exit code %d, %v; want 3", code, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(lines) != 2 {
		t.Fatalf("lines %q", lines)
	}
}

// TestNoListeningLine: a child that exits without listening, or keeps
// silent past the start timeout, is an error and is not left running.
func TestNoListeningLine(t *testing.T) {
	if _, err := Start(context.Background(), sh(`echo '{"msg":"bad flag"}' >&2; exit 2`), Options{}); err == nil || !strings.Contains(err.Error(), "exited at start") {
		t.Fatalf("a child that exited: %v", err)
	}
	cmd := sh(`exec sleep 60`)
	if _, err := Start(context.Background(), cmd, Options{StartTimeout: 200 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "no listening line") {
		t.Fatalf("a silent child: %v", err)
	}
	if cmd.ProcessState == nil || cmd.ProcessState.Success() {
		t.Fatalf("the silent child was not killed and waited for: %v", cmd.ProcessState)
	}
}
