package echo_test

import (
	"context"
	"encoding/json"
	"sync"
	"testing"
	"time"

	testingclock "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/backend/echo"
	"github.com/voicegateway/voicegateway/server/protocol"
)

// waitTimeout bounds every wait for the speaker goroutine; it is only reached
// when a test is about to fail.
const waitTimeout = 10 * time.Second

// chunk is one Audio call.
type chunk struct {
	ref protocol.ContentRef
	pcm []byte
}

// recordingSink is a backend.Sink that records what a backend sends: events
// as the JSON a client would read, audio chunks as copies. It is safe for
// concurrent use by the reader (Handle) and the speaker goroutine.
type recordingSink struct {
	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every change
	events  []map[string]any
	chunks  []chunk
	fails   []*protocol.Error
	closed  bool
	// closeWhen, when set, is asked before each call with the event type
	// or "audio"; once it returns true the sink behaves like the sink of an
	// ended session and returns backend.ErrSessionClosed from then on.
	closeWhen func(kind string) bool
	// closeErr is what a closed sink returns; backend.ErrSessionClosed
	// unless a test sets another error.
	closeErr error
}

var _ backend.Sink = (*recordingSink)(nil)

func newSink() *recordingSink {
	return &recordingSink{changed: make(chan struct{}), closeErr: backend.ErrSessionClosed}
}

// admit reports whether a call may go through. s.mu must be held.
func (s *recordingSink) admit(kind string) bool {
	if !s.closed && s.closeWhen != nil && s.closeWhen(kind) {
		s.closed = true
		s.notify()
	}
	return !s.closed
}

func (s *recordingSink) notify() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *recordingSink) Event(ev protocol.Event) error {
	data, err := json.Marshal(ev)
	if err != nil {
		return err
	}
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	typ, _ := m["type"].(string)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.admit(typ) {
		return s.closeErr
	}
	s.events = append(s.events, m)
	s.notify()
	return nil
}

func (s *recordingSink) Raw(data []byte) error {
	var m map[string]any
	if err := json.Unmarshal(data, &m); err != nil {
		return err
	}
	typ, _ := m["type"].(string)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.admit(typ) {
		return s.closeErr
	}
	s.events = append(s.events, m)
	s.notify()
	return nil
}

func (s *recordingSink) Audio(ref protocol.ContentRef, pcm []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.admit("audio") {
		return s.closeErr
	}
	s.chunks = append(s.chunks, chunk{ref: ref, pcm: append([]byte(nil), pcm...)})
	s.notify()
	return nil
}

func (s *recordingSink) Fail(err *protocol.Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fails = append(s.fails, err)
	s.closed = true
	s.notify()
}

// wait blocks until cond, evaluated under the sink's lock, holds.
func (s *recordingSink) wait(t testing.TB, what string, cond func() bool) {
	t.Helper()
	timeout := time.NewTimer(waitTimeout)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		ok := cond()
		changed := s.changed
		s.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-changed:
		case <-timeout.C:
			t.Fatalf("timed out after %s waiting for %s; events so far: %v", waitTimeout, what, s.types())
		}
	}
}

// waitChunks waits until n audio chunks have been sent.
func (s *recordingSink) waitChunks(t testing.TB, n int) {
	t.Helper()
	s.wait(t, "audio chunk", func() bool { return len(s.chunks) >= n })
}

// waitEvent waits for the n-th (1-based) event of type typ and returns it.
func (s *recordingSink) waitEvent(t testing.TB, typ string, n int) map[string]any {
	t.Helper()
	var found map[string]any
	s.wait(t, typ, func() bool {
		seen := 0
		for _, ev := range s.events {
			if ev["type"] == typ {
				if seen++; seen == n {
					found = ev
					return true
				}
			}
		}
		return false
	})
	return found
}

func (s *recordingSink) types() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.events))
	for i, ev := range s.events {
		out[i], _ = ev["type"].(string)
	}
	return out
}

func (s *recordingSink) count(typ string) int {
	n := 0
	for _, got := range s.types() {
		if got == typ {
			n++
		}
	}
	return n
}

func (s *recordingSink) allChunks() []chunk {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]chunk(nil), s.chunks...)
}

func (s *recordingSink) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *recordingSink) last() map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.events) == 0 {
		return nil
	}
	return s.events[len(s.events)-1]
}

// harness is one open echo session driven by a fake clock.
type harness struct {
	t       *testing.T
	clk     *testingclock.FakeClock
	sink    *recordingSink
	conn    backend.Conn
	cancel  context.CancelFunc
	decoder protocol.Decoder
	info    backend.Info
	closed  bool
}

var testEpoch = time.Date(2025, time.March, 14, 9, 26, 53, 0, time.UTC)

func defaultInfo() backend.Info {
	return backend.Info{SessionID: "sess_test", SampleRate: 24000, MaxMessageBytes: 1 << 20}
}

// open starts a session. The connection is closed at the end of the test,
// before goleak looks for its goroutine.
func open(t *testing.T, info backend.Info, sink *recordingSink) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	clk := testingclock.NewFakeClock(testEpoch)
	conn, err := echo.New(clk).Open(ctx, info, sink)
	if err != nil {
		cancel()
		t.Fatalf("Open: %v", err)
	}
	h := &harness{t: t, clk: clk, sink: sink, conn: conn, cancel: cancel, info: info}
	t.Cleanup(h.close)
	return h
}

// close ends the session as a session does: cancel its context, then Close
// once.
func (h *harness) close() {
	if h.closed {
		return
	}
	h.closed = true
	h.cancel()
	if err := h.conn.Close(); err != nil {
		h.t.Errorf("Close: %v", err)
	}
}

// send decodes a client message the way a session does and hands it to the
// backend.
func (h *harness) send(msg string) *protocol.Error {
	h.t.Helper()
	ev, err := h.decoder.DecodeText([]byte(msg))
	if err != nil {
		h.t.Fatalf("test message does not decode: %v: %s", err, msg)
	}
	return h.conn.Handle(context.Background(), &ev)
}

// mustSend sends msg and fails the test on a rejection.
func (h *harness) mustSend(msg string) {
	h.t.Helper()
	if err := h.send(msg); err != nil {
		h.t.Fatalf("%s rejected: %v", truncate(msg), err)
	}
}

// sendBinary hands over a binary audio message.
func (h *harness) sendBinary(pcm []byte) *protocol.Error {
	h.t.Helper()
	ev, err := h.decoder.DecodeBinary(pcm)
	if err != nil {
		h.t.Fatalf("test audio does not decode: %v", err)
	}
	return h.conn.Handle(context.Background(), &ev)
}

// tick waits until a pacing ticker exists and moves the clock one chunk
// forward. The fake ticker's channel holds one tick, so the step is not lost
// if the speaker has not reached its select yet; callers wait for a chunk
// (sent after the response's ticker is made) before each tick, and for the
// next chunk before ticking again. The fake clock never forgets a ticker
// (its Stop is a no-op), so HasWaiters alone cannot tell responses apart.
func (h *harness) tick() {
	h.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !h.clk.HasWaiters() {
		if time.Now().After(deadline) {
			h.t.Fatal("timed out waiting for the speaker's ticker")
		}
		time.Sleep(100 * time.Microsecond)
	}
	h.clk.Step(20 * time.Millisecond)
}

// play drives a response of n chunks to its end, the first of which is sent
// at once, and returns its response.done.
func (h *harness) play(first, n int, done int) map[string]any {
	h.t.Helper()
	h.sink.waitChunks(h.t, first+1)
	for i := 1; i < n; i++ {
		h.tick()
		h.sink.waitChunks(h.t, first+i+1)
	}
	return h.sink.waitEvent(h.t, protocol.TypeResponseDone, done)
}

func truncate(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}
