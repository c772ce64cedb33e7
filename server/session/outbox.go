package session

import (
	"sync"
	"time"

	"github.com/coder/websocket"
	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/server/internal/msgbuf"
	"github.com/voicegateway/voicegateway/server/memory"
)

// message is one queued outbound WebSocket message. buf, when set, is the
// pooled buffer data lives in, returned to the pool once written.
type message struct {
	typ  websocket.MessageType
	data []byte
	buf  *[]byte
	// size is what the message holds, counted in the outbox's bytes and
	// the session's memory account (memory.Outbound) while it is queued.
	size int64
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
	// bytes are the queued messages' sizes; limitBytes bounds them (0: no
	// bound), except that one message always fits.
	bytes, limitBytes int64
	// acct is the session's memory account, set before the session runs;
	// free gives a message's bytes back to it.
	acct *memory.Account
	// room has room for one wake-up of a reader waiting for the queue to
	// empty (waitRoom); take and close give it.
	room chan struct{}
	// timerDue is set when the session's timer fired and the writer must
	// check the idle timeout and maximum duration.
	timerDue bool
	// writing is true while a writer goroutine runs.
	writing     bool
	startWriter func()
	// ready has room for one wake-up; the writer drains everything it finds.
	ready chan struct{}
}

func newOutbox(limit int, limitBytes int64, startWriter func()) *outbox {
	return &outbox{limit: limit, limitBytes: limitBytes, startWriter: startWriter,
		ready: make(chan struct{}, 1), room: make(chan struct{}, 1)}
}

// free gives back what a message held once it is written or dropped.
func (o *outbox) free(m message) {
	o.acct.Release(memory.Outbound, m.size)
	m.release()
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
	case !force && (len(o.msgs) >= o.limit || (o.limitBytes > 0 && len(o.msgs) > 0 && o.bytes+m.size > o.limitBytes)):
		return pushFull
	}
	o.msgs = append(o.msgs, m)
	o.bytes += m.size
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
	o.signalRoom()
	o.mu.Unlock()
	for _, m := range dropped {
		o.free(m)
	}
}

// queuedBytes is what the queue holds now.
func (o *outbox) queuedBytes() int64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.bytes
}

// hasRoomLocked reports whether a client message may be read: the queue
// keeps an eighth of its messages and a quarter of its bytes free for what
// the message (and the backend meanwhile) may add.
func (o *outbox) hasRoomLocked() bool {
	if o.closed {
		return true // the reader finds the session ending
	}
	headroom := max(1, o.limit/8)
	return len(o.msgs)+headroom <= o.limit && (o.limitBytes == 0 || o.bytes <= o.limitBytes-o.limitBytes/4)
}

// waitRoom waits until hasRoom, at most timeout on clk; false means the
// queue stayed full that long: the client does not take its output. The
// session's ending wakes it (close).
func (o *outbox) waitRoom(clk clock.WithTicker, timeout time.Duration) bool {
	o.mu.Lock()
	ok := o.hasRoomLocked()
	o.mu.Unlock()
	if ok {
		return true
	}
	t := clk.NewTimer(timeout)
	defer t.Stop()
	for {
		select {
		case <-o.room:
		case <-t.C():
			o.mu.Lock()
			defer o.mu.Unlock()
			return o.hasRoomLocked()
		}
		o.mu.Lock()
		ok := o.hasRoomLocked()
		o.mu.Unlock()
		if ok {
			return true
		}
	}
}

// signalRoom wakes a reader waiting for room (called with mu held).
func (o *outbox) signalRoom() {
	select {
	case o.room <- struct{}{}:
	default:
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
	o.bytes = 0
	o.signalRoom()
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
