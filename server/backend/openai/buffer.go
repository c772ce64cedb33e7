package openai

import (
	"errors"
	"io"
	"sync"
)

// bufferPool recycles the buffers of relayed messages in both directions; a
// session holds one only while a message is in flight, so an idle session
// holds none.
var bufferPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 4<<10)
	return &b
}}

// maxPooledBuffer keeps rare large messages from pinning memory in the pool.
const maxPooledBuffer = 64 << 10

func getBuffer(n int) *[]byte {
	b := bufferPool.Get().(*[]byte)
	if cap(*b) < n {
		*b = make([]byte, 0, n)
	}
	*b = (*b)[:0]
	return b
}

func putBuffer(b *[]byte) {
	if cap(*b) > maxPooledBuffer {
		return
	}
	bufferPool.Put(b)
}

var errTooLarge = errors.New("message too large")

// readMessage reads one message into buf, failing with errTooLarge as soon
// as it holds more than limit bytes (the rest is never read).
func readMessage(r io.Reader, buf *[]byte, limit int64) error {
	b := *buf
	for {
		if len(b) == cap(b) {
			grow := max(2*cap(b), 4<<10)
			if int64(grow) > limit+1 {
				grow = int(limit + 1)
			}
			if grow <= len(b) {
				return errTooLarge
			}
			nb := make([]byte, len(b), grow)
			copy(nb, b)
			b = nb
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		*buf = b
		if int64(len(b)) > limit {
			return errTooLarge
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
