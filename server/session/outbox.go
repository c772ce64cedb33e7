package session

import (
	"sync"

	"github.com/coder/websocket"

	"github.com/voicegateway/voicegateway/server/internal/msgbuf"
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
		msgbuf.Put(m.buf)
	}
}

// outbox is a session's bounded outbound queue and the switch for its
// writer goroutine. It grows lazily, so an idle session holds no queue
// memory, and it never holds more than limit messages: a client that cannot
// keep up is cut off, not buffered for. The writer runs only while there is
// work; whoever gives it work while none runs starts one (startWriter,
// called with mu held, so a start and a stop can never cross).
type outbox struct {
	mu     sync.Mutex
	msgs   []message
	limit  int
	closed bool
	// timerDue is set when the session's timer fired and the writer must
	// check the idle timeout and maximum duration.
	timerDue bool
	// writing is true while a writer goroutine runs.
	writing     bool
	startWriter func()
	// ready has room for one wake-up; the writer drains everything it finds.
	ready chan struct{}
}

func newOutbox(limit int, startWriter func()) *outbox {
	return &outbox{limit: limit, startWriter: startWriter, ready: make(chan struct{}, 1)}
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
	defer o.mu.Unlock()
	switch {
	case o.closed:
		return pushClosed
	case len(o.msgs) >= o.limit && !force:
		return pushFull
	}
	o.msgs = append(o.msgs, m)
	o.wakeLocked()
	return pushed
}

// timerFired records that the session timer fired. It is called from the
// timer's callback, which must not block or call the clock.
func (o *outbox) timerFired() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return
	}
	o.timerDue = true
	o.wakeLocked()
}

// wakeLocked starts a writer or wakes the running one.
func (o *outbox) wakeLocked() {
	if !o.writing {
		o.writing = true
		o.startWriter()
		return
	}
	select {
	case o.ready <- struct{}{}:
	default:
	}
}

// close stops further pushes and makes sure a writer runs to close the
// connection. With discard, queued messages are dropped (the client is too
// slow or gone); otherwise the writer still sends them.
func (o *outbox) close(discard bool) {
	o.mu.Lock()
	o.closed = true
	var dropped []message
	if discard {
		dropped, o.msgs = o.msgs, nil
	}
	o.wakeLocked()
	o.mu.Unlock()
	for _, m := range dropped {
		m.release()
	}
}

// take moves every queued message into dst (reusing its storage) and
// reports whether the timer is due and whether the outbox is closed. A
// take that reports closed has everything that will ever be queued.
func (o *outbox) take(dst []message) (msgs []message, timerDue, closed bool) {
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
	timerDue, o.timerDue = o.timerDue, false
	return dst, timerDue, o.closed
}

// stopIfIdle ends the running writer's turn if there is still nothing to
// do; it reports whether the writer must exit.
func (o *outbox) stopIfIdle() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.msgs) > 0 || o.timerDue || o.closed {
		return false
	}
	o.writing = false
	return true
}
