package ticker

import (
	"testing"
	"time"

	"k8s.io/utils/clock"
	clocktesting "k8s.io/utils/clock/testing"
)

const interval = 10 * time.Second

var epoch = time.Date(2025, time.March, 14, 9, 26, 53, 0, time.UTC)

// timerOnlyClock hides NewTicker, as a clock.Clock that is not a
// clock.WithTicker would.
type timerOnlyClock struct{ clock.Clock }

func ticked(t *Ticker) bool {
	select {
	case <-t.C():
		return true
	default:
		return false
	}
}

// stepThroughTicks checks that ticks arrive every interval of the fake
// clock, and not before, as long as each is handled with Ticked.
func stepThroughTicks(t *testing.T, fake *clocktesting.FakeClock, tk *Ticker) {
	t.Helper()
	if !fake.HasWaiters() {
		t.Fatal("New armed nothing on the clock")
	}
	fake.Step(interval - time.Nanosecond)
	if ticked(tk) {
		t.Fatal("ticked before the interval")
	}
	for i := range 3 {
		fake.Step(time.Nanosecond)
		if !ticked(tk) {
			t.Fatalf("tick %d did not arrive", i+1)
		}
		tk.Ticked()
		fake.Step(interval - time.Nanosecond)
		if ticked(tk) {
			t.Fatalf("tick %d came early", i+2)
		}
	}
}

// TestClockTicker: a clock with tickers lends its own. (The fake clock's
// tickers ignore Stop; TestRealClock shows that Stop reaches the ticker.)
func TestClockTicker(t *testing.T) {
	fake := clocktesting.NewFakeClock(epoch)
	tk := New(fake, interval)
	defer tk.Stop()
	stepThroughTicks(t, fake, tk)
}

// TestTimerFallback: a clock without tickers gets a re-armed timer, which
// Stop releases: the clock forgets it and no tick arrives, however far the
// clock moves.
func TestTimerFallback(t *testing.T) {
	fake := clocktesting.NewFakeClock(epoch)
	tk := New(timerOnlyClock{fake}, interval)
	stepThroughTicks(t, fake, tk)
	tk.Stop()
	if fake.HasWaiters() {
		t.Error("the timer is still armed after Stop")
	}
	fake.Step(3 * interval)
	if ticked(tk) {
		t.Error("a tick arrived after Stop")
	}
}

// TestTimerWaitsForTicked: on the timer path the next tick is armed only
// once the last one was handled, so a slow handler delays ticks rather
// than being handed a backlog.
func TestTimerWaitsForTicked(t *testing.T) {
	fake := clocktesting.NewFakeClock(epoch)
	tk := New(timerOnlyClock{fake}, interval)
	defer tk.Stop()
	fake.Step(interval)
	if !ticked(tk) {
		t.Fatal("the first tick did not arrive")
	}
	fake.Step(5 * interval)
	if ticked(tk) {
		t.Fatal("a tick arrived before the last one was handled")
	}
	tk.Ticked()
	fake.Step(interval)
	if !ticked(tk) {
		t.Fatal("no tick after Ticked")
	}
}

// TestRealClock: a nil clock is the real one; its ticks arrive, and after
// Stop none does (a stopped time.Ticker delivers nothing more, so one that
// was not stopped is seen within a few of its millisecond ticks).
func TestRealClock(t *testing.T) {
	tk := New(nil, time.Millisecond)
	select {
	case <-tk.C():
	case <-time.After(10 * time.Second):
		t.Fatal("no tick from the real clock")
	}
	tk.Ticked()
	tk.Stop()
	select {
	case <-tk.C():
		t.Fatal("a tick arrived after Stop")
	case <-time.After(20 * time.Millisecond):
	}
}
