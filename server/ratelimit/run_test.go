package ratelimit

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/internal/testkit"
)

// stopWatchClock is a fake clock whose tickers report Stop, which the fake
// clock's own tickers do not.
type stopWatchClock struct {
	*clocktesting.FakeClock
	stopped atomic.Int32
}

func (c *stopWatchClock) NewTicker(d time.Duration) clock.Ticker {
	return &stopWatchTicker{Ticker: c.FakeClock.NewTicker(d), clk: c}
}

type stopWatchTicker struct {
	clock.Ticker
	clk *stopWatchClock
}

func (t *stopWatchTicker) Stop() {
	t.clk.stopped.Add(1)
	t.Ticker.Stop()
}

// plainClock hides NewTicker, as a clock.Clock that is not a
// clock.WithTicker would.
type plainClock struct{ clock.Clock }

func TestRun(t *testing.T) {
	tests := []struct {
		name string
		// wrap turns the fake clock into the clock the Limiter gets.
		wrap func(*clocktesting.FakeClock) (clock.Clock, *atomic.Int32)
	}{
		{
			name: "clock with tickers",
			wrap: func(fc *clocktesting.FakeClock) (clock.Clock, *atomic.Int32) {
				c := &stopWatchClock{FakeClock: fc}
				return c, &c.stopped
			},
		},
		{
			name: "clock without tickers falls back to a timer",
			wrap: func(fc *clocktesting.FakeClock) (clock.Clock, *atomic.Int32) {
				return plainClock{fc}, nil
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer goleak.VerifyNone(t)

			fake := clocktesting.NewFakeClock(t0)
			clk, stopped := tt.wrap(fake)
			cfg := testConfig() // CleanupInterval 30s, Window 1m
			l, err := New(cfg, clk)
			if err != nil {
				t.Fatal(err)
			}
			l.Failure(nthAddr(1))
			failN(l, nthAddr(2), cfg.BlockAfter)

			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- l.Run(ctx) }()
			testkit.Eventually(t, 10*time.Second, testkit.That("Run to start its ticker", fake.HasWaiters))

			if err := l.Run(ctx); !errors.Is(err, ErrAlreadyRunning) {
				t.Errorf("second Run = %v, want ErrAlreadyRunning", err)
			}

			// Nothing has expired at the first tick.
			fake.Step(cfg.CleanupInterval)
			// Both failures leave the window by the third tick; the block
			// stays.
			for range 2 {
				testkit.Eventually(t, 10*time.Second, testkit.That("the tick to be taken", func() bool { return fake.Waiters() == 1 }))
				fake.Step(cfg.CleanupInterval)
			}
			testkit.Eventually(t, 10*time.Second, testkit.That("the sweep to drop the idle IP", func() bool { return l.Stats().Tracked == 1 }))
			if d := l.Check(nthAddr(2)); d.Verdict != Block {
				t.Errorf("blocked IP reads %+v after the sweep, want Block", d)
			}

			// Once the block ends, the next sweep drops it too.
			testkit.Eventually(t, 10*time.Second, testkit.That("the tick to be taken", func() bool { return fake.Waiters() == 1 }))
			fake.Step(cfg.BlockDuration)
			testkit.Eventually(t, 10*time.Second, testkit.That("the sweep to drop the expired block", func() bool { return l.Stats().Tracked == 0 }))

			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run = %v after cancel, want nil", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("Run did not return after its context was cancelled")
			}
			if stopped != nil && stopped.Load() != 1 {
				t.Errorf("ticker stopped %d times, want 1", stopped.Load())
			}

			// Run may be started again once the last one has returned.
			ctx2, cancel2 := context.WithCancel(t.Context())
			cancel2()
			if err := l.Run(ctx2); err != nil {
				t.Errorf("Run after the first returned = %v, want nil", err)
			}
		})
	}
}

// TestSweepShrinksMap checks that a flood's memory is handed back once it
// has been swept, not only its entries.
func TestSweepShrinksMap(t *testing.T) {
	cfg := testConfig()
	cfg.MaxTracked = maxShards * 2 * shrinkAbove // every shard grows past shrinkAbove
	l, clk := newTestLimiter(t, cfg)
	for i := range cfg.MaxTracked {
		l.Failure(nthAddr(i))
	}
	clk.Step(2 * cfg.Window)
	l.Failure(nthAddr(0))
	l.sweep()
	for i := range l.shards {
		if s := &l.shards[i]; s.peak > 1 {
			t.Errorf("shard %d: peak %d after the sweep, want the map rebuilt", i, s.peak)
		}
	}
	if got := l.Stats().Tracked; got != 1 {
		t.Errorf("Tracked = %d, want 1", got)
	}
}
