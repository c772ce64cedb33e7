package session_test

import (
	"io"
	"strings"
	"testing"
	"time"
)

// TestPingBetweenFragmentsKeepsSession: a client sends the first fragment of a
// text message, a ping, and after a pause the last fragment. The ping's
// atFrame made the library's read of the next frame header parkable,
// although that read is inside a message: the sweep's kick ended the
// session as "connection lost". Only the library's wait for a next message
// may park.
func TestPingBetweenFragmentsKeepsSession(t *testing.T) {
	for _, park := range []bool{false, true} {
		t.Run(map[bool]string{true: "parker", false: "noparker"}[park], func(t *testing.T) {
			var opts []option
			if !park {
				opts = append(opts, withoutParker())
			}
			h := serve(t, nil, opts...)
			c := rawSession(t, h.url)
			if park {
				h.waitParked(1)
			}
			msg := []byte(`{"type":"session.update","session":{"instructions":"still here"}}`)
			first, rest := msg[:10], msg[10:]
			// text, fin=0, masked with a zero key
			if _, err := c.Write(append([]byte{0x01, 0x80 | byte(len(first)), 0, 0, 0, 0}, first...)); err != nil {
				t.Fatal(err)
			}
			// a ping with an empty payload
			if _, err := c.Write([]byte{0x89, 0x80, 1, 2, 3, 4}); err != nil {
				t.Fatal(err)
			}
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			var pong [2]byte
			if _, err := io.ReadFull(c, pong[:]); err != nil || pong != [2]byte{0x8a, 0} {
				t.Fatalf("pong %x, %v", pong, err)
			}
			time.Sleep(10 * testParkAfter)
			// continuation, fin=1
			if _, err := c.Write(append([]byte{0x80, 0x80 | byte(len(rest)), 0, 0, 0, 0}, rest...)); err != nil {
				t.Fatal(err)
			}
			var hdr [2]byte
			if _, err := io.ReadFull(c, hdr[:]); err != nil || hdr[0] != 0x81 {
				t.Fatalf("answer to the fragmented session.update: header %x, %v (sessions closed 1006: %v)", hdr, err, h.counter("closed", "1006"))
			}
			body := make([]byte, int(hdr[1]&0x7f))
			if hdr[1]&0x7f == 126 {
				var n [2]byte
				_, _ = io.ReadFull(c, n[:])
				body = make([]byte, int(n[0])<<8|int(n[1]))
			}
			if _, err := io.ReadFull(c, body); err != nil || !strings.Contains(string(body), `"session.updated"`) {
				t.Fatalf("answer: %.80s, %v", body, err)
			}
		})
	}
}
