package voiceclient

import (
	"context"
	"crypto/sha1"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Calls on a shared Pacer are paced by its slots' goroutines, not one
// goroutine each, and lose nothing: every frame they send is echoed, each
// on the call's own schedule.
func TestPacerSharesGoroutines(t *testing.T) {
	const calls = 2 * paceSlots
	s := startVoiceServer(t, nil)
	pacer := NewPacer()
	defer pacer.Close()
	recs := make([]*recorder, calls)
	conns := make([]*Conn, calls)
	for i := range calls {
		recs[i] = newRecorder()
		conns[i] = recs[i].open(t, Options{URL: s.url, Binary: true, SampleRate: 24000})
	}
	frames := make([]int, calls)
	talking := make([]*Call, calls)
	for i := range calls {
		talking[i] = NewCall(CallOptions{SampleRate: 24000, CommitEvery: 5, Pacer: pacer,
			OnFrame: func(FrameHeader, time.Duration) { frames[i]++ }})
		talking[i].Start(context.Background(), conns[i])
		time.Sleep(time.Millisecond) // spread the calls over the slots, as a ramp does
	}
	time.Sleep(200 * time.Millisecond)
	own, slots := pacingGoroutines()
	if own != 0 || slots == 0 || slots > paceSlots {
		t.Errorf("%d calls talking: %d goroutines of their own, %d of the pacer's; want 0 and 1..%d", calls, own, slots, paceSlots)
	}
	for _, call := range talking {
		call.Stop()
	}
	for i, call := range talking {
		call.Finish(context.Background(), 5*time.Second)
		if call.Sent() < 5 || int64(frames[i]) != call.Sent() {
			t.Errorf("call %d: sent %d, OnFrame saw %d", i, call.Sent(), frames[i])
		}
		recs[i].checkEchoed(t, call.Sent())
	}
}

// pacingGoroutines counts the goroutines pacing calls: a call's own
// (paceAlone) and a Pacer's slots (paceSlot.run).
func pacingGoroutines() (own, slots int) {
	buf := make([]byte, 1<<20)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	for _, g := range strings.Split(string(buf), "\n\n") {
		switch {
		case strings.Contains(g, "voiceclient.(*Call).paceAlone"):
			own++
		case strings.Contains(g, "voiceclient.(*paceSlot).run"):
			slots++
		}
	}
	return own, slots
}

// A call stopped on a shared Pacer sends nothing more, and one started
// again goes on from where its numbering was.
func TestPacerStopAndRestart(t *testing.T) {
	s := startVoiceServer(t, nil)
	pacer := NewPacer()
	defer pacer.Close()
	rec := newRecorder()
	conn := rec.open(t, Options{URL: s.url, Binary: true, SampleRate: 24000})
	call := NewCall(CallOptions{SampleRate: 24000, CommitEvery: 5, Pacer: pacer})
	call.Start(context.Background(), conn)
	time.Sleep(200 * time.Millisecond)
	call.Stop()
	stopped := call.Sent()
	time.Sleep(100 * time.Millisecond)
	if call.Sent() != stopped || stopped == 0 {
		t.Fatalf("sent %d before Stop, %d after", stopped, call.Sent())
	}
	ctx, cancel := context.WithCancel(context.Background())
	call.Start(ctx, conn)
	time.Sleep(100 * time.Millisecond)
	cancel() // the pacer lets the call go at its next tick
	waitFor(t, "the call to leave the pacer", func() bool {
		for i := range pacer.slots {
			sl := &pacer.slots[i]
			sl.mu.Lock()
			n := len(sl.talks)
			sl.mu.Unlock()
			if n > 0 {
				return false
			}
		}
		return true
	})
	if call.Sent() <= stopped {
		t.Fatalf("no frame after the restart: %d", call.Sent())
	}
	call.Finish(context.Background(), 5*time.Second)
	rec.checkEchoed(t, call.Sent())
}

// A frame goes out without allocating: its header is stamped over the
// call's tone in place and its write carries no context of its own (a
// deadline per write allocated a timer and a cancel function per frame).
func TestSendFrameDoesNotAllocate(t *testing.T) {
	url := startSink(t)
	conn, err := Dial(context.Background(), Options{URL: url, PlainEcho: true, Binary: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseNow()
	call := NewCall(CallOptions{SampleRate: 24000})
	call.cur = conn
	tk := &talk{ctx: context.Background(), frame: toneFrame(24000)}
	for _, audio := range []string{"binary", "base64"} {
		conn.binary.Store(audio == "binary")
		if err := call.sendFrame(conn, tk, 0); err != nil { // sizes the base64 buffer
			t.Fatal(err)
		}
		allocs := testing.AllocsPerRun(200, func() {
			if err := call.sendFrame(conn, tk, 0); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("%s: %.1f allocations per frame sent, want 0", audio, allocs)
		}
	}
}

// startSink runs a WebSocket server that reads every byte and answers
// nothing, so that only the sender runs while a test counts allocations.
// It upgrades by hand and reads the raw connection into one buffer: a
// WebSocket library's reader (or io.Discard's pooled buffer, which the race
// detector's sync.Pool drops at random) would allocate in this process
// while the sender is being counted.
func startSink(t *testing.T) string {
	t.Helper()
	var handlers sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		handlers.Add(1)
		defer handlers.Done()
		sum := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
			"Sec-WebSocket-Accept: " + base64.StdEncoding.EncodeToString(sum[:]) + "\r\n\r\n")
		if brw.Flush() != nil {
			return
		}
		buf := make([]byte, 64<<10)
		for {
			if _, err := brw.Read(buf); err != nil {
				return
			}
		}
	}))
	t.Cleanup(func() {
		srv.CloseClientConnections()
		srv.Close()
		handlers.Wait()
	})
	return "ws://" + srv.Listener.Addr().String() + "/"
}
