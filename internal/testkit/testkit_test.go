package testkit

import (
	"errors"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestEventually(t *testing.T) {
	calls := 0
	Eventually(t, time.Second, func() error {
		calls++
		if calls < 3 {
			return errors.New("not yet")
		}
		return nil
	})
	if calls != 3 {
		t.Fatalf("check called %d times, want 3", calls)
	}
	if err := That("x", func() bool { return false })(); err == nil || err.Error() != "waiting for x" {
		t.Fatalf("That = %v", err)
	}
}

// TestStart runs a shell that logs the listening line and exits 3.
func TestStart(t *testing.T) {
	if _, err := os.Stat("/bin/sh"); err != nil {
		t.Skip("no /bin/sh")
	}
	p := Start(t, "/bin/sh", "-c", `echo '{"msg":"listening","public":"127.0.0.1:1","admin":"127.0.0.1:2"}' >&2; exec sleep 5`)
	if p.Public != "127.0.0.1:1" || p.Admin != "127.0.0.1:2" {
		t.Fatalf("addresses %q %q", p.Public, p.Admin)
	}
	if err := p.Cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.Exited()
	if p.Logs() == "" {
		t.Fatal("no logs kept")
	}
}
