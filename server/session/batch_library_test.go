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

func batchRound(t *testing.T, round int) {
	var wg sync.WaitGroup
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hj := &smallBufferWriter{ResponseWriter: w}
		c, err := websocket.Accept(hj, r, &websocket.AcceptOptions{CompressionMode: websocket.CompressionDisabled})
		if err != nil {
			t.Error(err)
			return
		}
		fw := hj.write
		wg.Add(2)
		go func() { // the library's reader: pongs, close echo
			defer wg.Done()
			for {
				if _, _, err := c.Read(context.Background()); err != nil {
					return
				}
			}
		}()
		go func() { // the session's writer
			defer wg.Done()
			defer c.CloseNow()
			seq := uint32(0)
			sizes := []int{4, 14, 15, 100, 1500, 9000, 20}
			for b := 0; ; b++ {
				_ = hj.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
				fw.beginBatch()
				for k := 0; k < 2+b%7; k++ {
					n := sizes[(b+k)%len(sizes)]
					p := make([]byte, n)
					binary.BigEndian.PutUint32(p, seq)
					for i := 4; i < n; i++ {
						p[i] = byte(seq) + byte(i)
					}
					if err := c.Write(context.Background(), websocket.MessageBinary, p); err != nil {
						_ = fw.endBatch()
						return
					}
					seq++
				}
				if err := fw.endBatch(); err != nil {
					return
				}
				_ = hj.conn.SetWriteDeadline(time.Time{})
			}
		}()
	}))
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
