package session

import (
	"sync"

	"github.com/coder/websocket"
)

// message is one queued outbound WebSocket message. buf, when set, is the
// pooled buffer data lives in, returned to the pool once written.
type message struct {
	typ  websocket.MessageType
	data []byte
	buf  *[]byte
}

func (m message) release() {
	if m.buf != nil {
		putBuffer(m.buf)
	}
}

// outbox is a session's bounded outbound queue. It grows lazily, so an idle
// session holds no queue memory, and it never holds more than limit
// messages: a client that cannot keep up is cut off, not buffered for.
type outbox struct {
	mu     sync.Mutex
	msgs   []message
	limit  int
	closed bool
	// ready has room for one wake-up; the writer drains everything it finds.
	ready chan struct{}
}

func newOutbox(limit int) *outbox {
	return &outbox{limit: limit, ready: make(chan struct{}, 1)}
}

// smallQueue is the queue capacity kept between bursts.
const smallQueue = 16

type pushResult uint8

const (
	pushed pushResult = iota
	pushFull
	pushClosed
)

// push queues m. force ignores the limit: it is used once, for the final
// error event of a session that is ending.
func (o *outbox) push(m message, force bool) pushResult {
	o.mu.Lock()
	switch {
	case o.closed:
		o.mu.Unlock()
		return pushClosed
	case len(o.msgs) >= o.limit && !force:
		o.mu.Unlock()
		return pushFull
	}
	o.msgs = append(o.msgs, m)
	o.mu.Unlock()
	select {
	case o.ready <- struct{}{}:
	default:
	}
	return pushed
}

// close stops further pushes. With discard, queued messages are dropped
// (the client is too slow or gone); otherwise the writer still sends them.
func (o *outbox) close(discard bool) {
	o.mu.Lock()
	o.closed = true
	var dropped []message
	if discard {
		dropped, o.msgs = o.msgs, nil
	}
	o.mu.Unlock()
	for _, m := range dropped {
		m.release()
	}
	select {
	case o.ready <- struct{}{}:
	default:
	}
}

// take moves every queued message into dst (reusing its storage) and
// reports whether the outbox is closed.
func (o *outbox) take(dst []message) ([]message, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	dst = append(dst, o.msgs...)
	if cap(o.msgs) > smallQueue {
		// After a burst, give the queue's memory back rather than keep
		// the high-water mark for the rest of the session.
		o.msgs = nil
	} else {
		clear(o.msgs)
		o.msgs = o.msgs[:0]
	}
	return dst, o.closed
}

// bufferPool recycles outbound and inbound message buffers; a session holds
// one only while a message is in flight.
var bufferPool = sync.Pool{New: func() any {
	b := make([]byte, 0, 8<<10)
	return &b
}}

// maxPooledBuffer keeps rare huge messages from pinning memory in the pool.
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
