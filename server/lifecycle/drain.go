// Package lifecycle owns the voice server's termination: the drain that
// turns a SIGTERM or a preStop call into readiness failing, new sessions
// refused, clients told to reconnect elsewhere, and the last sessions closed
// at a deadline derived from the pod's grace period — in that order, every
// step bounded, nothing left running.
package lifecycle

import (
	"context"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/server/metrics"
	"github.com/voicegateway/voicegateway/server/protocol"
	"github.com/voicegateway/voicegateway/server/session"
)

// Phase is where the server is in its life. The values are exported as the
// voicegateway_drain_phase metric.
type Phase int32

const (
	// Serving: ready, taking sessions.
	Serving Phase = iota
	// Terminating: readiness fails; sessions are still accepted while
	// load balancers stop sending new ones (the propagation delay).
	Terminating
	// Refusing: new sessions get 503; live ones are told to reconnect and may finish.
	Refusing
	// Closing: the drain deadline passed; the rest are closed with 1012.
	Closing
	// Stopped: no session is left.
	Stopped
)

func (p Phase) String() string {
	switch p {
	case Serving:
		return "serving"
	case Terminating:
		return "terminating"
	case Refusing:
		return "refusing"
	case Closing:
		return "closing"
	case Stopped:
		return "stopped"
	}
	return "unknown"
}

// Config holds the drain timings. Validation that they fit the grace
// period lives with the rest of the server's configuration.
type Config struct {
	// DrainTimeout is from termination start to the drain deadline (the
	// grace period less the exit margin).
	DrainTimeout     time.Duration
	PropagationDelay time.Duration
	NotifyWindow     time.Duration
	ReconnectAfter   time.Duration
	// CloseTimeout bounds waiting for sessions to finish closing after
	// the deadline (their close handshakes).
	CloseTimeout time.Duration
	// AbortTimeout bounds waiting for the sessions cut off after that
	// (their peers ignored the close); zero means CloseTimeout.
	AbortTimeout time.Duration
}

// Drainer runs the drain. Begin and Force may be called from any
// goroutine, any number of times; Run carries the drain out.
type Drainer struct {
	cfg      Config
	clock    clock.WithTicker
	sessions *session.Registry
	metrics  *metrics.Server
	log      logr.Logger

	phase     atomic.Int32
	beginOnce sync.Once
	begun     chan struct{}
	forceOnce sync.Once
	forced    chan struct{}
	refusing  chan struct{}

	mu       sync.Mutex
	start    time.Time
	deadline time.Time
	notified int
}

// NewDrainer returns a drainer for the sessions in reg.
func NewDrainer(cfg Config, clk clock.WithTicker, reg *session.Registry, m *metrics.Server, log logr.Logger) *Drainer {
	return &Drainer{
		cfg: cfg, clock: clk, sessions: reg, metrics: m, log: log,
		begun: make(chan struct{}), forced: make(chan struct{}), refusing: make(chan struct{}),
	}
}

// Begin starts termination (preStop or the first signal): readiness fails
// from this moment and the drain deadline is fixed. It reports whether this
// call began it.
func (d *Drainer) Begin() bool {
	began := false
	d.beginOnce.Do(func() {
		now := d.clock.Now()
		d.mu.Lock()
		d.start, d.deadline = now, now.Add(d.cfg.DrainTimeout)
		d.mu.Unlock()
		d.metrics.DrainDeadline.Set(float64(d.deadline.UnixMilli()) / 1000)
		d.setPhase(Terminating)
		close(d.begun)
		began = true
		d.log.Info("termination begun: readiness now fails", "deadline", d.deadline,
			"propagationDelay", d.cfg.PropagationDelay.String(), "sessions", d.sessions.Len())
	})
	return began
}

// Force makes the drain skip its waits (the second signal): sessions are
// closed with 1012 at once, then the server stops in the usual order.
func (d *Drainer) Force() {
	d.Begin()
	d.forceOnce.Do(func() {
		d.log.Info("second signal: closing all sessions now")
		close(d.forced)
	})
}

// Phase is the current phase.
func (d *Drainer) Phase() Phase { return Phase(d.phase.Load()) }

// Ready reports whether the server should receive new sessions.
func (d *Drainer) Ready() bool { return d.Phase() == Serving }

// Refusing reports whether new sessions are to be refused.
func (d *Drainer) Refusing() bool { return d.Phase() >= Refusing }

// Status describes the drain for /status.
type Status struct {
	Phase    Phase
	Start    time.Time
	Deadline time.Time
	Notified int
}

// Status returns the drain's state.
func (d *Drainer) Status() Status {
	d.mu.Lock()
	defer d.mu.Unlock()
	return Status{Phase: d.Phase(), Start: d.start, Deadline: d.deadline, Notified: d.notified}
}

// WaitRefusing blocks until the propagation delay has passed (new sessions
// are refused) or ctx is done. The preStop hook uses it so that the kubelet
// sends SIGTERM only after endpoints have caught up.
func (d *Drainer) WaitRefusing(ctx context.Context) error {
	select {
	case <-d.refusing:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (d *Drainer) setPhase(p Phase) {
	d.phase.Store(int32(p))
	d.metrics.DrainPhase.Set(float64(p))
}

// Run waits for Begin (or ctx, which counts as a forced drain: the server
// is stopping for another reason) and carries the drain out. It returns once
// every session has ended.
func (d *Drainer) Run(ctx context.Context) error {
	select {
	case <-d.begun:
	case <-ctx.Done():
		d.Force()
	}
	// A later cancellation of ctx forces the drain too.
	stopOnCancel := context.AfterFunc(ctx, d.Force)
	defer stopOnCancel()

	st := d.Status()
	// 1. Readiness already fails. Keep accepting while endpoints update.
	d.sleepUntil(st.Start.Add(d.cfg.PropagationDelay))
	// 2. Refuse new sessions.
	d.sessions.Close()
	d.setPhase(Refusing)
	close(d.refusing)
	d.log.Info("refusing new sessions", "sessions", d.sessions.Len())
	// 3. Tell each live session, spread over the window.
	d.notifyAll(st.Deadline)
	// ...and let them finish on their own until the deadline.
	waitCtx, cancel := d.contextUntil(st.Deadline, true)
	_ = d.sessions.Wait(waitCtx)
	cancel()
	// 4. Close the rest with 1012.
	left := d.sessions.Snapshot()
	d.setPhase(Closing)
	if len(left) > 0 {
		d.log.Info("drain deadline: closing remaining sessions", "sessions", len(left))
	}
	for _, s := range left {
		s.Shutdown()
	}
	closeCtx, cancelClose := d.contextUntil(d.clock.Now().Add(d.cfg.CloseTimeout), false)
	err := d.sessions.Wait(closeCtx)
	cancelClose()
	if err != nil {
		// Peers that do not answer a close frame would hold the exit for
		// the WebSocket library's own handshake timeout: cut them.
		stuck := d.sessions.Snapshot()
		d.log.Info("cutting sessions whose close handshake did not finish", "sessions", len(stuck))
		for _, s := range stuck {
			s.Abort()
		}
		abortTimeout := d.cfg.AbortTimeout
		if abortTimeout == 0 {
			abortTimeout = d.cfg.CloseTimeout
		}
		abortCtx, cancelAbort := d.contextUntil(d.clock.Now().Add(abortTimeout), false)
		err = d.sessions.Wait(abortCtx)
		cancelAbort()
	}
	d.setPhase(Stopped)
	elapsed := d.clock.Since(st.Start)
	d.metrics.DrainDuration.Set(elapsed.Seconds())
	d.log.Info("drain finished", "duration", elapsed.String(), "closedAtDeadline", len(left))
	return err
}

// notifyAll sends gateway.draining to every live session, spreading the
// sends evenly over the notify window so that reconnects do not arrive as
// one wave. Each client also gets a jittered reconnect hint.
func (d *Drainer) notifyAll(deadline time.Time) {
	live := d.sessions.Snapshot()
	if len(live) == 0 {
		return
	}
	start := d.clock.Now()
	step := d.cfg.NotifyWindow / time.Duration(len(live))
	for i, s := range live {
		if i > 0 && step > 0 {
			if !d.sleepUntil(start.Add(step * time.Duration(i))) {
				// Forced: skip the spreading, tell the rest at once.
				step = 0
			}
		}
		jitter := time.Duration(rand.Int64N(int64(d.cfg.ReconnectAfter/2) + 1))
		if s.NotifyDraining(&protocol.DrainingEvent{
			EventHeader:      protocol.EventHeader{Type: protocol.TypeGatewayDraining},
			ReconnectAfterMS: (d.cfg.ReconnectAfter + jitter).Milliseconds(),
			Deadline:         deadline.UTC(),
		}) {
			d.metrics.DrainNotified.Inc()
			d.mu.Lock()
			d.notified++
			d.mu.Unlock()
		}
	}
}

// sleepUntil waits until t on the injected clock; it returns false early
// when the drain is forced.
func (d *Drainer) sleepUntil(t time.Time) bool {
	wait := t.Sub(d.clock.Now())
	if wait <= 0 {
		return true
	}
	timer := d.clock.NewTimer(wait)
	defer timer.Stop()
	select {
	case <-timer.C():
		return true
	case <-d.forced:
		return false
	}
}

// contextUntil returns a context that is done at t on the injected clock
// (or, with orForced, when the drain is forced). Its cancel function stops
// the timer goroutine and waits for it, so nothing outlives the caller.
func (d *Drainer) contextUntil(t time.Time, orForced bool) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	forced := d.forced
	if !orForced {
		forced = nil // a nil channel never fires
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	timer := d.clock.NewTimer(max(t.Sub(d.clock.Now()), 0))
	go func() {
		defer close(done)
		defer timer.Stop()
		select {
		case <-timer.C():
		case <-forced:
		case <-stop:
		}
		cancel()
	}()
	return ctx, func() {
		close(stop)
		<-done
	}
}
