// Package msgbuf holds the message buffers that sessions and relays share:
// pools, so that a buffer freed by a client write can carry the next
// upstream read, and the one bounded reader of a WebSocket message. A
// session holds a buffer only while a message is in flight, so an idle
// session holds none.
package msgbuf

import (
	"errors"
	"io"
	"sync"
)

// Small is the capacity of the buffers most messages fit in (an audio
// message is 1–2 KiB): Get hands out exactly this much for anything up to
// it, so that a small message never holds a large buffer.
const Small = 8 << 10

// small holds buffers of exactly Small bytes; large holds larger ones, up
// to maxPooled.
var (
	small = sync.Pool{New: func() any {
		b := make([]byte, 0, Small)
		return &b
	}}
	large sync.Pool
)

// maxPooled keeps rare huge messages from pinning memory in the pool.
const maxPooled = 64 << 10

// Get returns an empty buffer with room for at least n bytes; for n up to
// Small, its capacity is Small.
func Get(n int) *[]byte {
	if n <= Small {
		b := small.Get().(*[]byte)
		*b = (*b)[:0]
		return b
	}
	var b *[]byte
	if v := large.Get(); v != nil {
		b = v.(*[]byte)
	} else {
		b = new([]byte)
	}
	if cap(*b) < n {
		*b = make([]byte, 0, n)
	}
	*b = (*b)[:0]
	return b
}

// Put returns b to the pool; its contents must no longer be used.
func Put(b *[]byte) {
	switch c := cap(*b); {
	case c == Small:
		small.Put(b)
	case c > Small && c <= maxPooled:
		large.Put(b)
	}
}

// ErrTooLarge reports a message longer than the reader's limit.
var ErrTooLarge = errors.New("message too large")

// ErrRefused reports a message that was read and dropped because its
// buffer could not grow (the grow function refused).
var ErrRefused = errors.New("message refused: its buffer could not grow")

// ReadMessage reads one message from r into buf (growing it, and handing
// the grown buffer back through buf) and returns its length. It fails with
// ErrTooLarge as soon as more than limit bytes have arrived: the rest is
// never read, and the buffer never grows past limit+1.
//
// Before the buffer grows, grow (when not nil) is asked for the new
// capacity; when it refuses, the rest of the message is read into the
// buffer's room and dropped, and ReadMessage fails with ErrRefused (or
// ErrTooLarge, for a message over the limit after all).
func ReadMessage(r io.Reader, buf *[]byte, limit int64, grow func(newCap int) bool) (int, error) {
	b := *buf
	for {
		if len(b) == cap(b) {
			if int64(len(b)) > limit {
				return 0, ErrTooLarge
			}
			newCap := max(2*cap(b), 4<<10)
			if int64(newCap) > limit+1 {
				newCap = int(limit + 1)
			}
			if grow != nil && !grow(newCap) {
				return 0, drain(r, b[:cap(b)], int64(len(b)), limit)
			}
			nb := make([]byte, len(b), newCap)
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

// drain reads the rest of a message into scratch, over and over, and
// drops it: ErrRefused at its end, ErrTooLarge once more than limit bytes
// (read counts those already read) have arrived.
func drain(r io.Reader, scratch []byte, read, limit int64) error {
	if len(scratch) == 0 {
		scratch = make([]byte, 512)
	}
	for {
		n, err := r.Read(scratch)
		if read += int64(n); read > limit {
			return ErrTooLarge
		}
		if err == io.EOF {
			return ErrRefused
		}
		if err != nil {
			return err
		}
	}
}
