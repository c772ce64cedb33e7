package ratelimit

import (
	"time"

	"k8s.io/utils/clock"
)

// ticker is what Run needs from a clock: ticks it can stop.
type ticker interface {
	C() <-chan time.Time
	// Ticked is called after each tick has been handled.
	Ticked()
	Stop()
}

// newTicker uses the clock's Ticker where it has one (the real and the fake
// clocks both do). A clock.Clock alone offers only Tick, which can never be
// stopped, so it gets a Timer re-armed after every tick instead.
func newTicker(clk clock.Clock, d time.Duration) ticker {
	if tc, ok := clk.(clock.WithTicker); ok {
		return clockTicker{tc.NewTicker(d)}
	}
	return &timerTicker{timer: clk.NewTimer(d), interval: d}
}

type clockTicker struct{ clock.Ticker }

func (clockTicker) Ticked() {}

type timerTicker struct {
	timer    clock.Timer
	interval time.Duration
}

func (t *timerTicker) C() <-chan time.Time { return t.timer.C() }
func (t *timerTicker) Ticked()             { t.timer.Reset(t.interval) }
func (t *timerTicker) Stop()               { t.timer.Stop() }
