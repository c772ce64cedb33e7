package session_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/protocol"
	"github.com/voicegateway/voicegateway/server/session"
	"github.com/voicegateway/voicegateway/server/session/sessiontest"
)

// parkedSessions counts the registry's sessions whose reader is parked.
func (h *harness) parkedSessions() int {
	n := 0
	for _, s := range h.registry.Snapshot() {
		if s.Parked() {
			n++
		}
	}
	return n
}

func (h *harness) waitParked(n int) {
	h.t.Helper()
	testkit.Eventually(h.t, 10*time.Second, func() error {
		if got := h.parkedSessions(); got != n {
			return fmt.Errorf("%d sessions parked, want %d", got, n)
		}
		return nil
	})
}

// rawSession opens a session over a bare TCP connection and reads its
// session.created: a client that holds no goroutine and no buffer, so that
// what the process holds per session is the server's.
func rawSession(t *testing.T, url string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "ws://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: gateway\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// One byte at a time: nothing of the first frame may stay in a buffer
	// of ours.
	br := bufio.NewReaderSize(c, 16)
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
	}
	var hdr [4]byte
	if _, err := io.ReadFull(br, hdr[:2]); err != nil {
		t.Fatal(err)
	}
	n := int(hdr[1] & 127)
	if n == 126 {
		if _, err := io.ReadFull(br, hdr[2:4]); err != nil {
			t.Fatal(err)
		}
		n = int(hdr[2])<<8 | int(hdr[3])
	}
	if _, err := io.CopyN(io.Discard, br, int64(n)); err != nil {
		t.Fatal(err)
	}
	if br.Buffered() != 0 {
		t.Fatal("more than session.created arrived")
	}
	_ = c.SetDeadline(time.Time{})
	return c
}

// TestIdleSessionsHoldNoGoroutine: once quiet, a session's reader parks
// and its writer has lingered out: idle sessions cost no goroutine at all.
// Without the Parker each would hold one (its reader).
func TestIdleSessionsHoldNoGoroutine(t *testing.T) {
	for _, park := range []bool{true, false} {
		t.Run(fmt.Sprintf("parker=%v", park), func(t *testing.T) {
			opts := []option{withLimit(300)}
			if !park {
				opts = append(opts, withoutParker())
			}
			h := serve(t, nil, opts...)
			const sessions = 200
			before := runtime.NumGoroutine()
			for i := 0; i < sessions; i++ {
				rawSession(t, h.url)
			}
			h.waitSessions(sessions)
			want := 0
			if park {
				h.waitParked(sessions)
			} else {
				want = sessions
			}
			// The writers linger 2 s after the last output, then exit.
			testkit.Eventually(t, 15*time.Second, func() error {
				if per := float64(runtime.NumGoroutine()-before) / sessions; per > float64(want)/sessions+0.05 {
					return fmt.Errorf("%.2f goroutines per idle session, want %d", per, want/sessions)
				}
				return nil
			})
			if got := runtime.NumGoroutine() - before; park && got > sessions/20 || !park && got < sessions*9/10 {
				t.Fatalf("%d goroutines for %d idle sessions (parker %v)", got, sessions, park)
			}
		})
	}
}

// TestParkedSessionWakes: a parked session answers its next message, a
// ping and a close handshake as a waiting one would, and parks again.
func TestParkedSessionWakes(t *testing.T) {
	h := serve(t, nil)
	c := h.dial("audio=binary", nil)
	sessiontest.ReadUntil(t, c, "session.created")
	for round := 0; round < 3; round++ {
		h.waitParked(1)
		tone := sessiontest.Tone(4800) // 100 ms, the least a commit takes
		sessiontest.SendRaw(t, c, websocket.MessageBinary, tone)
		sessiontest.Send(t, c, map[string]any{"type": "input_audio_buffer.commit"})
		if got := sessiontest.EchoedAudio(t, sessiontest.ReadUntil(t, c, "response.done")); string(got) != string(tone) {
			t.Fatalf("round %d: echo of %d bytes, want the %d sent", round, len(got), len(tone))
		}
	}
	h.waitParked(1)
	// The close handshake completes: Close returns nil only when the
	// server answered the close frame.
	if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
		t.Fatalf("close of a parked session: %v", err)
	}
	h.waitSessions(0)
	if got := h.counter("closed", "1000"); got != 1 {
		t.Fatalf("sessions closed 1000 = %v, want 1", got)
	}
}

// TestParkedSessionAnswersPing: the library's reader answers a ping; a
// parked session wakes for it and parks again, without a data message in
// between (clients that keep a connection alive with pings, as many
// WebSocket libraries do by default, must not keep a goroutine each). A
// pong a client sends unasked is taken the same way. The session then
// still reads its messages.
func TestParkedSessionAnswersPing(t *testing.T) {
	h := serve(t, nil)
	c := rawSession(t, h.url)
	for round := 0; round < 3; round++ {
		h.waitParked(1)
		// A masked ping with an empty payload, and an unasked pong.
		if _, err := c.Write([]byte{0x89, 0x80, 1, 2, 3, 4}); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		var pong [2]byte
		if _, err := io.ReadFull(c, pong[:]); err != nil || pong != [2]byte{0x8a, 0} {
			t.Fatalf("round %d: answer to a ping %x, %v; want an empty pong", round, pong, err)
		}
		h.waitParked(1)
		if _, err := c.Write([]byte{0x8a, 0x80, 1, 2, 3, 4}); err != nil {
			t.Fatal(err)
		}
	}
	h.waitParked(1)
	// session.update, masked with a zero key: the session answers it.
	msg := []byte(`{"type":"session.update","session":{"instructions":"still here"}}`)
	frame := append([]byte{0x81, 0x80 | byte(len(msg)), 0, 0, 0, 0}, msg...)
	if _, err := c.Write(frame); err != nil {
		t.Fatal(err)
	}
	var hdr [2]byte
	if _, err := io.ReadFull(c, hdr[:]); err != nil || hdr[0] != 0x81 {
		t.Fatalf("answer to session.update: header %x, %v", hdr, err)
	}
	body := make([]byte, int(hdr[1]&0x7f))
	if hdr[1]&0x7f == 126 {
		var n [2]byte
		io.ReadFull(c, n[:])
		body = make([]byte, int(n[0])<<8|int(n[1]))
	}
	if _, err := io.ReadFull(c, body); err != nil || !strings.Contains(string(body), `"session.updated"`) {
		t.Fatalf("answer to session.update: %.80s, %v", body, err)
	}
}

// TestParkedSessionEnds: what ends a session reaches it while parked —
// the drain's notice and its deadline, a revocation (Fail), the idle
// timeout, a peer that goes away — and each leaves the Parker.
func TestParkedSessionEnds(t *testing.T) {
	t.Run("drain", func(t *testing.T) {
		h := serve(t, nil)
		c := h.dial("", nil)
		sessiontest.ReadUntil(t, c, "session.created")
		h.waitParked(1)
		s := h.registry.Snapshot()[0]
		if !s.NotifyDraining(&protocol.DrainingEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeGatewayDraining},
			Deadline: time.Now().Add(time.Minute)}) {
			t.Fatal("draining notice not queued")
		}
		sessiontest.ReadUntil(t, c, "gateway.draining")
		h.waitParked(1)
		s.Shutdown()
		if code, _ := sessiontest.ReadClose(t, c); code != websocket.StatusServiceRestart {
			t.Fatalf("close code %v, want 1012", code)
		}
		h.waitSessions(0)
	})
	t.Run("revoked", func(t *testing.T) {
		h := serve(t, nil)
		c := h.dial("", nil)
		sessiontest.ReadUntil(t, c, "session.created")
		h.waitParked(1)
		h.registry.Snapshot()[0].Fail(protocol.Fatal(protocol.CodeCredentialRevoked, protocol.ClosePolicyViolation, "revoked"))
		code, frames := sessiontest.ReadClose(t, c)
		if code != websocket.StatusPolicyViolation || len(frames) == 0 || frames[len(frames)-1].ErrorCode() != "credential_revoked" {
			t.Fatalf("close %v after %d frames, want 1008 credential_revoked", code, len(frames))
		}
		h.waitSessions(0)
	})
	t.Run("idle timeout", func(t *testing.T) {
		h := serve(t, func(c *session.Config) { c.IdleTimeout = 500 * time.Millisecond })
		c := h.dial("", nil)
		sessiontest.ReadUntil(t, c, "session.created")
		code, frames := sessiontest.ReadClose(t, c)
		if code != websocket.StatusPolicyViolation || len(frames) == 0 || frames[len(frames)-1].ErrorCode() != "idle_timeout" {
			t.Fatalf("close %v, want 1008 idle_timeout", code)
		}
		h.waitSessions(0)
	})
	t.Run("peer gone", func(t *testing.T) {
		h := serve(t, nil)
		c := rawSession(t, h.url)
		h.waitParked(1)
		c.Close()
		h.waitSessions(0)
		if got := h.counter("closed", "1006"); got != 1 {
			t.Fatalf("sessions closed 1006 = %v, want 1", got)
		}
	})
}

// TestIdleSessionMemory: what an idle session holds once parked, heap and
// stacks, counted from runtime.MemStats over many sessions (their bare TCP
// clients are in the count too). Parked sessions held 6.1–10.1 KB each
// here, sessions that keep their reader goroutine (withoutParker) 21 KB;
// the bound is generous.
func TestIdleSessionMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 300 sessions")
	}
	h := serve(t, nil, withLimit(400))
	const sessions = 300
	inUse := func() int64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return int64(ms.HeapInuse + ms.StackInuse)
	}
	before, goroutines := inUse(), runtime.NumGoroutine()
	for i := 0; i < sessions; i++ {
		rawSession(t, h.url)
	}
	h.waitParked(sessions)
	// The writers linger 2 s after session.created, then exit.
	testkit.Eventually(t, 15*time.Second, testkit.That("no goroutine per idle session", func() bool {
		return runtime.NumGoroutine()-goroutines < sessions/20
	}))
	per := (inUse() - before) / sessions
	t.Logf("%d bytes of heap and stacks per idle session", per)
	if per > idleSessionBound {
		t.Fatalf("%d bytes of heap and stacks per idle session, want at most %d", per, idleSessionBound)
	}
}

// idleSessionBound is TestIdleSessionMemory's bound.
const idleSessionBound = 12 << 10

// TestParkerWaitsInTheNetpoller: the Parker's goroutine waits for parked
// connections in Go's netpoller ("IO wait"), never in a blocking
// epoll_wait ("syscall"). A goroutine blocked in a system call keeps its
// P until sysmon takes it back; with GOMAXPROCS=1 every wait froze the
// whole server, timers included, for up to 20 ms (docs/benchmarks.md).
func TestParkerWaitsInTheNetpoller(t *testing.T) {
	p := &session.Parker{After: time.Hour}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	buf := make([]byte, 1<<20)
	var last string
	testkit.Eventually(t, 5*time.Second, func() error {
		dump := string(buf[:runtime.Stack(buf, true)])
		for _, g := range strings.Split(dump, "\n\n") {
			if !strings.Contains(g, "session.(*Parker).Run(") {
				continue
			}
			header, _, _ := strings.Cut(g, "\n")
			last = header
			if strings.Contains(header, "[IO wait") {
				return nil
			}
			return fmt.Errorf("the Parker's goroutine is %q, want it waiting in the netpoller (IO wait)", header)
		}
		return fmt.Errorf("no goroutine runs Parker.Run (last seen: %q)", last)
	})
}

// TestParkingWaveReleasesMemory: once a wave of sessions has parked (their
// readers' stacks and buffers are free memory the runtime keeps until a
// collection, which a quiet server does not start), the Parker hands the
// memory back, once per wave: sessions that stay parked ask for nothing
// more, and a wave smaller than ReleaseAfter asks for nothing.
func TestParkingWaveReleasesMemory(t *testing.T) {
	var releases atomic.Int32
	h := serve(t, nil, func(a *session.Acceptor) {
		a.Options.Parker.ReleaseAfter = 8
		a.Options.Parker.ReleaseMemory = func() { releases.Add(1) }
	})
	for i := 0; i < 5; i++ {
		rawSession(t, h.url)
	}
	h.waitSessions(5)
	h.waitParked(5)
	// Several sweeps with 5 parked: below the wave, nothing.
	time.Sleep(4 * testParkAfter)
	if n := releases.Load(); n != 0 {
		t.Fatalf("%d releases after 5 sessions parked, want 0 (ReleaseAfter 8)", n)
	}
	for i := 0; i < 5; i++ {
		rawSession(t, h.url)
	}
	h.waitSessions(10)
	h.waitParked(10)
	testkit.Eventually(t, 10*time.Second, func() error {
		if n := releases.Load(); n != 1 {
			return fmt.Errorf("%d releases after 10 sessions parked, want 1", n)
		}
		return nil
	})
	time.Sleep(4 * testParkAfter)
	if n := releases.Load(); n != 1 {
		t.Fatalf("%d releases with the same sessions still parked, want 1", n)
	}
}
