package session

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
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
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hj := &smallBufferWriter{ResponseWriter: w}
		c, err := websocket.Accept(hj, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			t.Error(err)
			return
		}
		if tc, ok := hj.conn.(*net.TCPConn); ok {
			_ = tc.SetWriteBuffer(4096)
		}
		fw := hj.write
		go func() {
			defer close(readerDone)
			for {
				if _, _, err := c.Read(context.Background()); err != nil {
					return
				}
			}
		}()
		go func() {
			p := make([]byte, 3000)
			for {
				_ = hj.conn.SetWriteDeadline(time.Now().Add(time.Second))
				fw.beginBatch()
				var err error
				for k := 0; k < 5 && err == nil; k++ {
					err = c.Write(context.Background(), websocket.MessageBinary, p)
				}
				if err2 := fw.endBatch(); err == nil {
					err = err2
				}
				if err != nil {
					_ = c.CloseNow()
					writerDone <- err
					return
				}
				_ = hj.conn.SetWriteDeadline(time.Time{})
			}
		}()
	}))
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
