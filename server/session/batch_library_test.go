package session

import (
	"context"
	"encoding/binary"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestBatchesThroughTheLibrary drives frameWriter batches through the real
// library while the client pings hard and finally closes: every message
// must arrive whole and in order, and the client's close must get its echo.
func TestBatchesThroughTheLibrary(t *testing.T) {
	for round := 0; round < 5; round++ {
		batchRound(t, round)
	}
}

// serveBatching starts a server that accepts WebSockets through
// smallBufferWriter, as the Acceptor does, and hands each connection and
// its hijacker (whose write is the frameWriter) to run.
func serveBatching(t *testing.T, run func(c *websocket.Conn, hj *smallBufferWriter)) *httptest.Server {
	t.Helper()
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hj := &smallBufferWriter{ResponseWriter: w}
		c, err := websocket.Accept(hj, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			t.Error(err)
			return
		}
		run(c, hj)
	}))
}

// sendBatch writes msgs as the session's writer writes a batch: one write
// deadline, the frames kept by the frameWriter and sent at its end.
func sendBatch(c *websocket.Conn, hj *smallBufferWriter, timeout time.Duration, msgs ...[]byte) error {
	_ = hj.conn.SetWriteDeadline(time.Now().Add(timeout))
	defer hj.conn.SetWriteDeadline(time.Time{}) //nolint:errcheck // a failed connection fails its next write
	hj.write.beginBatch()
	for _, m := range msgs {
		if err := c.Write(context.Background(), websocket.MessageBinary, m); err != nil {
			_ = hj.write.endBatch()
			return err
		}
	}
	return hj.write.endBatch()
}

// readUntilError is the library's reader: it answers pings and the close
// handshake.
func readUntilError(c *websocket.Conn) {
	for {
		if _, _, err := c.Read(context.Background()); err != nil {
			return
		}
	}
}

func batchRound(t *testing.T, round int) {
	var wg sync.WaitGroup
	srv := serveBatching(t, func(c *websocket.Conn, hj *smallBufferWriter) {
		wg.Add(2)
		go func() {
			defer wg.Done()
			readUntilError(c)
		}()
		go func() { // the session's writer
			defer wg.Done()
			defer c.CloseNow()
			seq := uint32(0)
			sizes := []int{4, 14, 15, 100, 1500, 9000, 20}
			for b := 0; ; b++ {
				var batch [][]byte
				for k := 0; k < 2+b%7; k++ {
					n := sizes[(b+k)%len(sizes)]
					p := make([]byte, n)
					binary.BigEndian.PutUint32(p, seq)
					for i := 4; i < n; i++ {
						p[i] = byte(seq) + byte(i)
					}
					batch = append(batch, p)
					seq++
				}
				if sendBatch(c, hj, 5*time.Second, batch...) != nil {
					return
				}
			}
		}()
	})
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	c.SetReadLimit(1 << 20)
	stopPing := make(chan struct{})
	pingDone := make(chan struct{})
	go func() {
		defer close(pingDone)
		for {
			select {
			case <-stopPing:
				return
			default:
			}
			pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
			err := c.Ping(pctx)
			pcancel()
			if err != nil {
				return
			}
		}
	}()
	want := uint32(0)
	for want < 3000 {
		_, p, err := c.Read(ctx)
		if err != nil {
			t.Fatalf("round %d: read after %d messages: %v", round, want, err)
		}
		if got := binary.BigEndian.Uint32(p); got != want {
			t.Fatalf("round %d: message %d, want %d", round, got, want)
		}
		for i := 4; i < len(p); i++ {
			if p[i] != byte(want)+byte(i) {
				t.Fatalf("round %d: message %d corrupt at %d", round, want, i)
			}
		}
		want++
	}
	close(stopPing)
	// Close reads (and discards) what the server still sends until the echo.
	if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil && !errors.Is(err, context.Canceled) {
		t.Errorf("round %d: close handshake: %v", round, err)
	}
	<-pingDone
	wg.Wait()
}
