// Package ticker is a stoppable ticker on an injected clock.Clock, for the
// process's background loops (the API key and secret file watchers, the
// rate limiter's sweep), so that every one of them can be driven by a fake
// clock in tests and stops what it started when it returns.
//
// A clock.Clock alone offers only Tick, which can never be stopped: a loop
// built on it would leave a ticker behind every time it ends. New uses the
// clock's own Ticker where it has one (the real and the fake clocks both
// do) and otherwise a Timer that is re-armed after every tick.
package ticker

import (
	"time"

	"k8s.io/utils/clock"
)

// Ticker delivers ticks on C until Stop. After handling each tick the
// owner calls Ticked, which re-arms the timer behind a clock without
// tickers; on the timer path a slow handler therefore delays the next tick
// rather than piling ticks up, as a Ticker drops the ones it cannot
// deliver.
type Ticker struct {
	c        <-chan time.Time
	ticker   clock.Ticker // the clock's own ticker, or nil
	timer    clock.Timer  // the fallback, or nil
	interval time.Duration
}

// New starts a ticker of interval on clk; a nil clk is the real clock.
func New(clk clock.Clock, interval time.Duration) *Ticker {
	if clk == nil {
		clk = clock.RealClock{}
	}
	if tc, ok := clk.(clock.WithTicker); ok {
		t := tc.NewTicker(interval)
		return &Ticker{c: t.C(), ticker: t, interval: interval}
	}
	t := clk.NewTimer(interval)
	return &Ticker{c: t.C(), timer: t, interval: interval}
}

// C is the channel the ticks arrive on.
func (t *Ticker) C() <-chan time.Time { return t.c }

// Ticked is called once a tick has been handled: it arms the next one.
func (t *Ticker) Ticked() {
	if t.timer != nil {
		t.timer.Reset(t.interval)
	}
}

// Stop releases the ticker or timer; no tick arrives after it. The owner
// stops it on every return path.
func (t *Ticker) Stop() {
	if t.ticker != nil {
		t.ticker.Stop()
		return
	}
	t.timer.Stop()
}
