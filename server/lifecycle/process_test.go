package lifecycle_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/server/lifecycle"
	"github.com/voicegateway/voicegateway/server/metrics"
	"github.com/voicegateway/voicegateway/server/session"
)

// TestStopBudgetFitsTheExitMargin: whatever the margin, the steps after the
// drain deadline add up to it, each with a share of its own.
func TestStopBudgetFitsTheExitMargin(t *testing.T) {
	for _, margin := range []time.Duration{time.Second, 3 * time.Second, 5 * time.Second, 5999 * time.Millisecond, time.Hour} {
		b := lifecycle.NewStopBudget(margin)
		if b.Total() != margin {
			t.Errorf("margin %s: budget adds up to %s", margin, b.Total())
		}
		for name, part := range map[string]time.Duration{"close": b.CloseHandshakes, "cut": b.CutPeers, "listeners": b.Listeners, "exit": b.Exit} {
			if part <= 0 {
				t.Errorf("margin %s: %s gets %s", margin, name, part)
			}
		}
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

// TestProcessStopsInOrder runs a process with two real listeners and a
// loop, begins the drain, and checks the order: the public listener closes
// and the loops stop before the hand-off, and the admin listener still
// answers during the hand-off.
func TestProcessStopsInOrder(t *testing.T) {
	sessions := session.NewRegistry(10)
	drainer := lifecycle.NewDrainer(lifecycle.Config{DrainTimeout: time.Second, CloseTimeout: 100 * time.Millisecond},
		clock.RealClock{}, sessions, metrics.New(), logr.Discard())
	publicLn, adminLn := listen(t), listen(t)
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	var loopStopped atomic.Bool
	var order []string
	var mu sync.Mutex
	record := func(step string) {
		mu.Lock()
		order = append(order, step)
		mu.Unlock()
	}
	p := &lifecycle.Process{
		Drainer: drainer,
		Budget:  lifecycle.NewStopBudget(time.Second),
		Public:  lifecycle.Listener{Server: &http.Server{Handler: ok}, Listener: publicLn},
		Admin:   lifecycle.Listener{Server: &http.Server{Handler: ok}, Listener: adminLn},
		Loops: []func(context.Context) error{func(ctx context.Context) error {
			<-ctx.Done()
			loopStopped.Store(true)
			record("loop stopped")
			return nil
		}},
		Handlers: &sync.WaitGroup{},
		AfterDrain: func() error {
			if !loopStopped.Load() {
				t.Error("the hand-off ran before the loops stopped")
			}
			if _, err := http.Get("http://" + publicLn.Addr().String()); err == nil {
				t.Error("the public listener still answers during the hand-off")
			}
			resp, err := http.Get("http://" + adminLn.Addr().String())
			if err != nil {
				t.Errorf("the admin listener does not answer during the hand-off: %v", err)
			} else {
				resp.Body.Close()
			}
			record("hand-off")
			return nil
		},
		Log: logr.Discard(),
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	drainer.Begin()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return")
	}
	http.DefaultClient.CloseIdleConnections()
	if strings.Join(order, ", ") != "loop stopped, hand-off" {
		t.Fatalf("order %v", order)
	}
	if _, err := http.Get("http://" + adminLn.Addr().String()); err == nil {
		t.Error("the admin listener answers after Run returned")
	}
}

// TestProcessBoundsHandlers: a public handler that never ends (an upgrade
// stuck after its hijack) cannot hold the exit past the listener budget.
func TestProcessBoundsHandlers(t *testing.T) {
	sessions := session.NewRegistry(10)
	drainer := lifecycle.NewDrainer(lifecycle.Config{DrainTimeout: time.Second, CloseTimeout: 100 * time.Millisecond},
		clock.RealClock{}, sessions, metrics.New(), logr.Discard())
	stuck := &sync.WaitGroup{}
	stuck.Add(1)
	release := make(chan struct{})
	// The stuck handler ends when the test ends, so that nothing leaks.
	t.Cleanup(func() { close(release) })
	go func() {
		<-release
		stuck.Done()
	}()
	budget := lifecycle.NewStopBudget(time.Second)
	p := &lifecycle.Process{
		Drainer: drainer, Budget: budget,
		Public:   lifecycle.Listener{Server: &http.Server{}, Listener: listen(t)},
		Admin:    lifecycle.Listener{Server: &http.Server{}, Listener: listen(t)},
		Handlers: stuck,
		Log:      logr.Discard(),
	}
	drainer.Force()
	start := time.Now()
	err := p.Run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "handlers still running") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Run = %v, want the handlers reported", err)
	}
	t.Logf("Run returned %s after a forced drain with a stuck handler (listener budget %s)", time.Since(start).Round(time.Millisecond), budget.Listeners)
}
