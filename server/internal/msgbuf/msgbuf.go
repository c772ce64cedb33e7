// Package msgbuf holds the message buffers that sessions and relays share:
// one pool, so that a buffer freed by a client write can carry the next
// upstream read, and the one bounded reader of a WebSocket message. A
// session holds a buffer only while a message is in flight, so an idle
// session holds none.
package msgbuf

import (
	"errors"
	"io"
	"sync"
)

var pool = sync.Pool{New: func() any {
	b := make([]byte, 0, 8<<10)
	return &b
}}

// maxPooled keeps rare huge messages from pinning memory in the pool.
const maxPooled = 64 << 10

// Get returns an empty buffer with room for at least n bytes.
func Get(n int) *[]byte {
	b := pool.Get().(*[]byte)
	if cap(*b) < n {
		*b = make([]byte, 0, n)
	}
	*b = (*b)[:0]
	return b
}

// Put returns b to the pool; its contents must no longer be used.
func Put(b *[]byte) {
	if cap(*b) > maxPooled {
		return
	}
	pool.Put(b)
}

// ErrTooLarge reports a message longer than the reader's limit.
var ErrTooLarge = errors.New("message too large")

// ReadMessage reads one message from r into buf (growing it, and handing
// the grown buffer back through buf) and returns its length. It fails with
// ErrTooLarge as soon as more than limit bytes have arrived: the rest is
// never read, and the buffer never grows past limit+1.
func ReadMessage(r io.Reader, buf *[]byte, limit int64) (int, error) {
	b := *buf
	for {
		if len(b) == cap(b) {
			if int64(len(b)) > limit {
				return 0, ErrTooLarge
			}
			grow := max(2*cap(b), 4<<10)
			if int64(grow) > limit+1 {
				grow = int(limit + 1)
			}
			nb := make([]byte, len(b), grow)
			copy(nb, b)
			b = nb
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		*buf = b
		if int64(len(b)) > limit {
			return 0, ErrTooLarge
		}
		if err == io.EOF {
			return len(b), nil
		}
		if err != nil {
			return 0, err
		}
	}
}
