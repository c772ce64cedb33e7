package session

import (
	"fmt"
	"runtime/debug"
	"testing"
	"time"
	"unsafe"

	"github.com/coder/websocket"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/internal/msgbuf"
)

func textMessage(s string) message {
	return message{typ: websocket.MessageText, data: []byte(s)}
}

// pooledMessage is a message whose data lives in a pooled buffer.
func pooledMessage(s string) message {
	buf := msgbuf.Get(len(s))
	*buf = append(*buf, s...)
	return message{typ: websocket.MessageText, data: *buf, buf: buf}
}

// testOutbox is an outbox whose writer starts are only counted: the test
// plays the writer itself.
type testOutbox struct {
	*outbox
	starts int
}

func newTestOutbox(limit int) *testOutbox {
	o := &testOutbox{}
	o.outbox = newOutbox(limit, 0, func() { o.starts++ })
	return o
}

func TestOutboxPush(t *testing.T) {
	type push struct {
		force bool
		want  pushResult
	}
	cases := []struct {
		name  string
		limit int
		// closeFirst closes the outbox before the pushes.
		closeFirst bool
		pushes     []push
		wantQueued int
	}{
		{name: "up to the limit", limit: 2,
			pushes:     []push{{false, pushed}, {false, pushed}},
			wantQueued: 2},
		{name: "past the limit is full", limit: 2,
			pushes:     []push{{false, pushed}, {false, pushed}, {false, pushFull}, {false, pushFull}},
			wantQueued: 2},
		{name: "force ignores the limit", limit: 1,
			pushes:     []push{{false, pushed}, {false, pushFull}, {true, pushed}},
			wantQueued: 2},
		{name: "closed refuses everything", limit: 2, closeFirst: true,
			pushes:     []push{{false, pushClosed}, {true, pushClosed}},
			wantQueued: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := newTestOutbox(tc.limit)
			if tc.closeFirst {
				o.close(false)
			}
			var queued []string
			for i, p := range tc.pushes {
				data := fmt.Sprint("message ", i)
				if got := o.push(textMessage(data), p.force); got != p.want {
					t.Fatalf("push %d (force %v) = %v, want %v", i, p.force, got, p.want)
				}
				if p.want == pushed {
					queued = append(queued, data)
				}
			}
			got, timerDue, closed := o.take(nil)
			if len(got) != tc.wantQueued || closed != tc.closeFirst || timerDue {
				t.Errorf("take = %d messages, timer due %v, closed %v; want %d, false, %v", len(got), timerDue, closed, tc.wantQueued, tc.closeFirst)
			}
			for i, m := range got {
				if i < len(queued) && string(m.data) != queued[i] {
					t.Errorf("message %d = %q, want %q: the queued pushes in order", i, m.data, queued[i])
				}
			}
			if o.starts != 1 {
				t.Errorf("writer started %d times, want once", o.starts)
			}
		})
	}
}

// TestOutboxWriterSwitch checks that a writer runs exactly while there is
// work: the first work starts one, more work only wakes it, and a writer
// that found nothing to do may stop only if nothing came meanwhile.
func TestOutboxWriterSwitch(t *testing.T) {
	o := newTestOutbox(8)
	if o.starts != 0 || len(o.ready) != 0 {
		t.Fatal("a new outbox started a writer")
	}
	if !o.stopIfIdle() {
		t.Fatal("stopIfIdle on an empty outbox = false")
	}

	for range 3 {
		o.push(textMessage("x"), false)
	}
	if o.starts != 1 {
		t.Fatalf("three pushes started %d writers, want 1", o.starts)
	}
	if len(o.ready) != 1 {
		t.Fatalf("ready holds %d wake-ups for the running writer, want 1", len(o.ready))
	}
	<-o.ready
	if o.stopIfIdle() {
		t.Fatal("writer allowed to stop with messages queued")
	}
	if got, _, _ := o.take(nil); len(got) != 3 {
		t.Fatalf("took %d messages, want 3", len(got))
	}
	if !o.stopIfIdle() {
		t.Fatal("writer not allowed to stop with nothing to do")
	}

	// With the writer gone, work starts a new one.
	o.push(textMessage("y"), false)
	if o.starts != 2 {
		t.Fatalf("push after the writer stopped: %d starts, want 2", o.starts)
	}
	o.take(nil)

	// A fired timer is work too, and is reported once.
	o.timerFired()
	if o.stopIfIdle() {
		t.Fatal("writer allowed to stop with the timer due")
	}
	if _, due, _ := o.take(nil); !due {
		t.Fatal("take did not report the timer due")
	}
	if _, due, _ := o.take(nil); due {
		t.Fatal("take reported the timer due twice for one firing")
	}
	if !o.stopIfIdle() {
		t.Fatal("writer not allowed to stop after handling the timer")
	}
	o.timerFired()
	if o.starts != 3 {
		t.Fatalf("timer firing with no writer: %d starts, want 3", o.starts)
	}
	o.take(nil)
	if !o.stopIfIdle() {
		t.Fatal("writer not allowed to stop")
	}

	// Closing needs a writer to close the connection, and it never stops.
	o.close(false)
	if o.starts != 4 {
		t.Fatalf("close with no writer: %d starts, want 4", o.starts)
	}
	if o.stopIfIdle() {
		t.Fatal("writer allowed to stop on a closed outbox")
	}
	o.timerFired()
	if _, due, closed := o.take(nil); due || !closed {
		t.Errorf("take after close = timer due %v, closed %v; want false, true (a closed outbox ignores the timer)", due, closed)
	}
	o.push(textMessage("late"), true)
	if o.starts != 4 {
		t.Errorf("pushes after close started %d writers, want none", o.starts-4)
	}
}

func TestOutboxTakeReusesStorage(t *testing.T) {
	o := newTestOutbox(64)
	dst := make([]message, 0, 8)
	for round := range 3 {
		for i := range 5 {
			o.push(textMessage(fmt.Sprint(round, i)), false)
		}
		got, _, _ := o.take(dst[:0])
		if len(got) != 5 {
			t.Fatalf("round %d: took %d, want 5", round, len(got))
		}
		if unsafe.SliceData(got) != unsafe.SliceData(dst) {
			t.Fatalf("round %d: take allocated a new slice although dst had room", round)
		}
		clear(got)
	}
	// The queue's own storage is reused between small batches too.
	o.push(textMessage("a"), false)
	before := unsafe.SliceData(o.msgs)
	o.take(dst[:0])
	o.push(textMessage("b"), false)
	if unsafe.SliceData(o.msgs) != before {
		t.Error("the queue reallocated after a small batch")
	}
}

// TestOutboxReleasesMemory checks that a queue gives its memory back after
// a burst and keeps nothing reachable from messages already taken.
func TestOutboxReleasesMemory(t *testing.T) {
	cases := []struct {
		name  string
		burst int
		// wantNil: the queue's storage is dropped, not kept for next time.
		wantNil bool
	}{
		{name: "small batch keeps a small queue", burst: 3},
		{name: "batch of exactly smallQueue", burst: smallQueue},
		{name: "burst past smallQueue drops the queue", burst: smallQueue + 1, wantNil: true},
		{name: "large burst drops the queue", burst: 1000, wantNil: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := newTestOutbox(2000)
			for i := range tc.burst {
				o.push(textMessage(fmt.Sprint(i)), false)
			}
			got, _, _ := o.take(nil)
			if len(got) != tc.burst {
				t.Fatalf("took %d, want %d", len(got), tc.burst)
			}
			if len(o.msgs) != 0 {
				t.Fatalf("%d messages left queued after take", len(o.msgs))
			}
			if tc.wantNil && o.msgs != nil {
				t.Errorf("queue capacity %d kept after a burst of %d, want it released", cap(o.msgs), tc.burst)
			}
			if c := cap(o.msgs); c > smallQueue {
				t.Errorf("queue capacity %d after take, want at most %d", c, smallQueue)
			}
			// Storage that is kept must not pin the taken messages' data.
			for i, m := range o.msgs[:cap(o.msgs)] {
				if m.data != nil || m.buf != nil {
					t.Errorf("kept queue slot %d still references a message", i)
				}
			}
		})
	}
}

func TestOutboxClose(t *testing.T) {
	cases := []struct {
		name    string
		discard bool
		// wantKept is how many queued messages the writer still gets.
		wantKept int
	}{
		{name: "close keeps queued messages for the writer", discard: false, wantKept: 3},
		{name: "close with discard drops them", discard: true, wantKept: 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			o := newTestOutbox(8)
			for i := range 3 {
				o.push(pooledMessage(fmt.Sprint("queued ", i)), false)
			}
			o.close(tc.discard)
			if tc.discard && o.msgs != nil {
				t.Errorf("discarding close kept the queue's storage (cap %d)", cap(o.msgs))
			}
			got, _, closed := o.take(nil)
			if len(got) != tc.wantKept || !closed {
				t.Errorf("take after close = %d messages, closed %v; want %d, true", len(got), closed, tc.wantKept)
			}
			for _, m := range got {
				m.release()
			}
		})
	}
}

// TestOutboxCloseDiscardReleasesBuffers checks that dropped messages hand
// their pooled buffers back: a slow client's queue must not leak them.
func TestOutboxCloseDiscardReleasesBuffers(t *testing.T) {
	// No GC while looking: a collection may empty the pool at any time.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))

	const queued = 64
	o := newTestOutbox(queued)
	dropped := make(map[*[]byte]bool, queued)
	for i := range queued {
		m := pooledMessage(fmt.Sprint("dropped ", i))
		dropped[m.buf] = true
		o.push(m, false)
	}
	o.close(true)

	// sync.Pool may drop any Put (it does so at random under the race
	// detector), so finding some of 64 is what can be relied on.
	found := 0
	for range 4 * queued {
		if dropped[msgbuf.Get(0)] {
			found++
		}
	}
	if found == 0 {
		t.Errorf("none of the %d discarded messages' buffers came back to the pool", queued)
	}
}

// TestOutboxCloseWakesWaitRoom: a reader waiting for room in a full queue
// is woken when the session ends (Shutdown, Abort and every other end
// close the outbox), not left waiting out its timeout; and a queue that
// stays full until the timeout reports no room. Timers are on a fake
// clock, so neither depends on the wall clock.
func TestOutboxCloseWakesWaitRoom(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Unix(0, 0))
	o := newTestOutbox(2)
	for i := range 2 {
		o.push(textMessage(fmt.Sprint("message ", i)), false)
	}
	woke := make(chan bool, 1)
	go func() { woke <- o.waitRoom(clk, time.Hour) }()
	testkit.Eventually(t, 5*time.Second, testkit.That("the reader to wait on its timer", clk.HasWaiters))
	o.close(true)
	select {
	case ok := <-woke:
		if !ok {
			t.Fatal("waitRoom on a closed outbox reported no room: the reader would end the session as slow")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("closing the outbox did not wake a reader waiting for room")
	}

	full := newTestOutbox(2)
	for i := range 2 {
		full.push(textMessage(fmt.Sprint("message ", i)), false)
	}
	go func() { woke <- full.waitRoom(clk, time.Second) }()
	testkit.Eventually(t, 5*time.Second, testkit.That("the reader to wait on its timer", clk.HasWaiters))
	clk.Step(time.Second)
	if <-woke {
		t.Fatal("a queue full until the timeout reported room")
	}
}
