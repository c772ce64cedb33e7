package session

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestBatchToAStalledClientThatPings: a client that reads nothing but pings;
// the writer's endBatch blocks on a full socket while the library's reader
// wants to send pongs. The batch's write deadline must end it all.
func TestBatchToAStalledClientThatPings(t *testing.T) {
	writerDone := make(chan error, 1)
	readerDone := make(chan struct{})
	srv := serveBatching(t, func(c *websocket.Conn, hj *smallBufferWriter) {
		if tc, ok := hj.conn.(*net.TCPConn); ok {
			_ = tc.SetWriteBuffer(4096)
		}
		go func() {
			defer close(readerDone)
			readUntilError(c)
		}()
		go func() {
			p := make([]byte, 3000)
			for {
				if err := sendBatch(c, hj, time.Second, p, p, p, p, p); err != nil {
					_ = c.CloseNow()
					writerDone <- err
					return
				}
			}
		}()
	})
	defer srv.Close()
	raw, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	_ = raw.(*net.TCPConn).SetReadBuffer(4096)
	req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
	if _, err := raw.Write([]byte(req)); err != nil {
		t.Fatal(err)
	}
	stop := time.After(4 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
loop:
	for {
		select {
		case err := <-writerDone:
			t.Logf("writer ended: %v", err)
			break loop
		case <-stop:
			t.Fatal("writer still blocked 4 s after a 1 s write deadline")
		case <-tick.C:
			_ = raw.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			_, _ = raw.Write([]byte{0x89, 0x80, 1, 2, 3, 4})
		}
	}
	select {
	case <-readerDone:
	case <-time.After(3 * time.Second):
		t.Fatal("library reader stuck after the writer gave up")
	}
}
