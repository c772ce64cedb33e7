package session_test

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// TestParkerWakesMoreThan128: more parked connections turn readable
// at once than one epoll_wait returns (128): every one is answered.
func TestParkerWakesMoreThan128(t *testing.T) {
	h := serve(t, nil, withLimit(300))
	const sessions = 200
	conns := make([]net.Conn, sessions)
	for i := range conns {
		conns[i] = rawSession(t, h.url)
	}
	h.waitSessions(sessions)
	h.waitParked(sessions)
	for round := 0; round < 2; round++ {
		for _, c := range conns {
			if _, err := c.Write([]byte{0x89, 0x80, 1, 2, 3, 4}); err != nil {
				t.Fatal(err)
			}
		}
		var wg sync.WaitGroup
		for i, c := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
				var pong [2]byte
				if _, err := io.ReadFull(c, pong[:]); err != nil || pong != [2]byte{0x8a, 0} {
					t.Errorf("round %d session %d: %x, %v", round, i, pong, err)
				}
			}()
		}
		wg.Wait()
		h.waitParked(sessions)
	}
}
