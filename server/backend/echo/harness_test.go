package echo_test

import (
	"context"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/backend/backendtest"
	"github.com/voicegateway/voicegateway/server/backend/echo"
	"github.com/voicegateway/voicegateway/server/protocol"
)

// harness is one echo session driven by a fake clock, so that a test
// decides when each paced chunk is due.
type harness struct {
	*backendtest.Session
	clk *testingclock.FakeClock
	// cancelContext ends the session's context alone, leaving its sink
	// open, to show what the context does by itself.
	cancelContext context.CancelFunc
}

var testEpoch = time.Date(2025, time.March, 14, 9, 26, 53, 0, time.UTC)

func defaultInfo() backend.Info { return backendtest.DefaultInfo() }

// open starts a session on sink. It is closed at the end of the test,
// before goleak looks for its goroutine.
func open(t *testing.T, info backend.Info, sink *backendtest.Sink) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	clk := testingclock.NewFakeClock(testEpoch)
	s, err := backendtest.TryOpen(t, ctx, echo.New(clk), info, sink)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return &harness{Session: s, clk: clk, cancelContext: cancel}
}

// tick waits until a pacing ticker exists and moves the clock one chunk
// forward. The fake ticker's channel holds one tick, so the step is not lost
// if the speaker has not reached its select yet; callers wait for a chunk
// (sent after the response's ticker is made) before each tick, and for the
// next chunk before ticking again. The fake clock never forgets a ticker
// (its Stop is a no-op), so HasWaiters alone cannot tell responses apart.
func (h *harness) tick() {
	h.T.Helper()
	testkit.Eventually(h.T, backendtest.WaitTimeout, testkit.That("the speaker's ticker", h.clk.HasWaiters))
	h.clk.Step(20 * time.Millisecond)
}

// play drives a response of n chunks to its end, the first of which is sent
// at once, and returns its response.done.
func (h *harness) play(first, n int, done int) map[string]any {
	h.T.Helper()
	h.Sink.WaitChunks(h.T, first+1)
	for i := 1; i < n; i++ {
		h.tick()
		h.Sink.WaitChunks(h.T, first+i+1)
	}
	return h.Sink.WaitType(h.T, protocol.TypeResponseDone, done).Object
}

// manual turns turn detection off, as an app that commits and asks for
// responses itself does: a commit then only commits.
func (h *harness) manual() {
	h.T.Helper()
	n := h.Sink.Count(protocol.TypeSessionUpdated)
	h.MustSend(`{"type":"session.update","session":{"audio":{"input":{"turn_detection":null}}}}`)
	h.Sink.WaitType(h.T, protocol.TypeSessionUpdated, n+1)
}

// turn commits the input buffer and asks for a response (turn detection
// off).
func (h *harness) turn() {
	h.T.Helper()
	h.MustSend(commitMsg)
	h.MustSend(createMsg)
}
