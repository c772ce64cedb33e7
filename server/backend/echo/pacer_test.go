package echo_test

import (
	"context"
	"testing"
	"time"

	"go.uber.org/goleak"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/server/backend/backendtest"
	"github.com/voicegateway/voicegateway/server/backend/echo"
)

// TestOneTickerForAllSpeakers: sessions playing at the same time share the
// backend's one pacing ticker, instead of a ticker (and a wake-up every
// 20 ms) each; and it is gone with the last of them.
func TestOneTickerForAllSpeakers(t *testing.T) {
	clk := testingclock.NewFakeClock(testEpoch)
	b := echo.New(clk)
	const sessions = 5
	chunk := chunkBytes(24000)
	var all []*backendtest.Session
	for i := range sessions {
		ctx, cancel := context.WithCancel(context.Background())
		t.Cleanup(cancel)
		s, err := backendtest.TryOpen(t, ctx, b, defaultInfo(), backendtest.NewSink())
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		s.MustSend(`{"type":"session.update","session":{"audio":{"input":{"turn_detection":null}}}}`)
		s.MustSend(appendMsg(randomPCM(uint64(i), 10*chunk)))
		s.MustSend(commitMsg)
		s.MustSend(createMsg)
		s.Sink.WaitChunks(t, 1)
		all = append(all, s)
	}
	if n := clk.Waiters(); n != 1 {
		t.Errorf("%d timers for %d sessions playing, want 1", n, sessions)
	}
	clk.Step(20 * time.Millisecond)
	for _, s := range all {
		s.Sink.WaitChunks(t, 2)
	}
	for _, s := range all {
		s.CloseOnly()
	}
	if err := goleak.Find(); err != nil {
		t.Errorf("goroutines left after the sessions closed: %v", err)
	}
}
