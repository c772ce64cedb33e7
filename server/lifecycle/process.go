package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/sync/errgroup"
)

// StopBudget splits the exit margin — the time between the drain deadline
// and the kubelet's SIGKILL — among the steps of the stop sequence, so that
// the sum of every wait after the deadline is the margin and no more. Each
// step is bounded by its share; a step that finishes early leaves its time
// to the process's exit.
type StopBudget struct {
	// CloseHandshakes: the sessions closed with 1012 at the deadline
	// finish their close handshakes.
	CloseHandshakes time.Duration
	// CutPeers: sessions whose peers ignored the close frame are cut off
	// and their goroutines end.
	CutPeers time.Duration
	// Listeners: the public listener shuts down and requests still in
	// flight on it (an upgrade not yet a session) end.
	Listeners time.Duration
	// Exit: the rate limiter's state is handed to the fleet's peers (the
	// gossip peer's loop, within half of it) and written, the admin
	// listener shuts down, logs are flushed and the process exits.
	Exit time.Duration
}

// NewStopBudget divides an exit margin: two fifths for close handshakes
// (they cross the network), a fifth each for cutting deaf peers and for the
// public listener, and the rest for the exit.
func NewStopBudget(exitMargin time.Duration) StopBudget {
	b := StopBudget{
		CloseHandshakes: exitMargin * 2 / 5,
		CutPeers:        exitMargin / 5,
		Listeners:       exitMargin / 5,
	}
	b.Exit = exitMargin - b.CloseHandshakes - b.CutPeers - b.Listeners
	return b
}

// Total is the longest the stop sequence takes after the drain deadline.
func (b StopBudget) Total() time.Duration {
	return b.CloseHandshakes + b.CutPeers + b.Listeners + b.Exit
}

// Listener is an HTTP server with the listener it serves on.
type Listener struct {
	Server   *http.Server
	Listener net.Listener
}

// Process owns the voice server process from its first request to its
// exit: it serves the public and admin listeners, runs the background loops,
// and on termination (Drainer.Begin, a signal, or ctx) carries out the stop
// sequence in DESIGN.md's order — the drain (which ends every session by
// the deadline), the public listener, the loops, the state hand-off, the
// admin listener last so that /status and /metrics answer until the end —
// with every wait bounded by the drain deadline and the StopBudget.
type Process struct {
	Drainer *Drainer
	Budget  StopBudget
	Public  Listener
	Admin   Listener
	// Loops run until the drain is over; their context is cancelled then,
	// not when Run's ctx is (a cancelled ctx only forces the drain).
	Loops []func(context.Context) error
	// Handlers counts public requests that http.Server.Shutdown does not
	// wait for: upgrades whose connection was hijacked and that have not
	// become a registered session yet.
	Handlers *sync.WaitGroup
	// AfterDrain runs once every session has ended and the loops have
	// stopped, before the admin listener closes: the rate limiter's state
	// is handed on here.
	AfterDrain func() error
	Log        logr.Logger
}

// Run serves until the stop sequence is complete and returns nil when it
// ran in order; it takes ownership of both listeners. Every goroutine it
// starts has returned when it returns.
func (p *Process) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	loopsCtx, stopLoops := context.WithCancel(context.Background())
	defer stopLoops()

	g.Go(func() error { return serve(p.Public) })
	g.Go(func() error { return serve(p.Admin) })
	// A loop that fails stops the process (the errgroup forces the
	// drain); the stop sequence waits for every loop before the hand-off,
	// so that the state handed on is final.
	var loops sync.WaitGroup
	for _, loop := range p.Loops {
		loops.Add(1)
		g.Go(func() error {
			defer loops.Done()
			return loop(loopsCtx)
		})
	}
	g.Go(func() error {
		drainErr := p.Drainer.Run(gctx)
		if drainErr != nil {
			p.Log.Error(drainErr, "Sessions still closing when the drain ended")
		}
		err := p.stopPublic()
		stopLoops()
		loops.Wait()
		if p.AfterDrain != nil {
			err = errors.Join(err, p.AfterDrain())
		}
		exitCtx, cancel := context.WithTimeout(context.Background(), p.Budget.Exit)
		defer cancel()
		return errors.Join(err, p.Admin.Server.Shutdown(exitCtx))
	})
	return g.Wait()
}

// stopPublic shuts the public listener down within the Listeners budget:
// Shutdown waits for ordinary requests for three quarters of it; requests
// still running then (a client waiting out the rate limiter's delay) are
// cut by Close, which cancels their contexts; the last quarter waits for
// them and for the hijacked handlers that never became sessions.
func (p *Process) stopPublic() error {
	ctx, cancel := context.WithTimeout(context.Background(), p.Budget.Listeners)
	defer cancel()
	shutdownCtx, cancelShutdown := context.WithTimeout(ctx, p.Budget.Listeners*3/4)
	defer cancelShutdown()
	if err := p.Public.Server.Shutdown(shutdownCtx); err != nil {
		p.Log.Info("Public requests still running at the listener budget; closing their connections")
		if err := p.Public.Server.Close(); err != nil {
			return err
		}
	}
	if p.Handlers == nil {
		return nil
	}
	return waitGroupWithin(ctx, p.Handlers)
}

// waitGroupWithin waits for wg until ctx is done. When ctx ends first the
// waiting goroutine outlives the call until wg is done: the process is
// exiting on a broken path and says so in the error.
func waitGroupWithin(ctx context.Context, wg *sync.WaitGroup) error {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("public request handlers still running when the listener budget ran out: %w", ctx.Err())
	}
}

// serve runs srv until Shutdown or Close, which are not errors.
func serve(l Listener) error {
	if err := l.Server.Serve(l.Listener); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// NotifySignals makes the first SIGTERM or SIGINT begin the drain and a
// second one force it. The returned stop function stops the notification
// and waits for the goroutine it started.
func NotifySignals(d *Drainer, log logr.Logger) (stop func()) {
	signals := make(chan os.Signal, 2)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		count := 0
		for {
			select {
			case sig := <-signals:
				count++
				log.Info("signal received", "signal", sig.String(), "count", count)
				if count == 1 {
					d.Begin()
				} else {
					d.Force()
				}
			case <-done:
				return
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			signal.Stop(signals)
			close(done)
			<-finished
		})
	}
}
