package session

import (
	"bytes"
	"context"
	"time"

	"github.com/coder/websocket"

	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/internal/msgbuf"
	"github.com/voicegateway/voicegateway/server/memory"
	"github.com/voicegateway/voicegateway/server/protocol"
)

// writerLinger is how long a writer with nothing to do waits for more
// before it exits. Within a conversation output comes every 20 ms, so the
// writer stays; an idle session gives its goroutine back. It is a resource
// heuristic, not behaviour, so it runs on real time.
const writerLinger = 2 * time.Second

// abortCloseTimeout bounds the close of a session cut off as too slow.
const abortCloseTimeout = time.Second

// writeLoop is the session's only writer: it sends queued messages in
// order, each batch bounded by the write timeout, runs the timeout checks
// when the timer fired, and once the session ends it sends what remains
// (unless told to discard it) and closes the connection. It exits once a
// whole writerLinger (up to two) passed without work; the outbox starts a
// new one when work comes.
func (s *Session) writeLoop() {
	defer s.writers.Done()
	var batch []message
	// The linger timer is armed once and re-armed when it fires after
	// work, rather than reset after every batch: a timer change per audio
	// frame was a measurable share of a talking session's CPU.
	var linger *time.Timer
	worked := false
	defer func() {
		if linger != nil {
			linger.Stop()
		}
	}()
	for {
		var timerDue, closed bool
		batch, timerDue, closed = s.out.take(batch[:0])
		if len(batch) == 0 && !timerDue && !closed {
			if linger == nil {
				linger = time.NewTimer(writerLinger)
			}
			select {
			case <-s.out.ready:
				continue
			case <-linger.C:
				if worked {
					worked = false
					linger.Reset(writerLinger)
					continue
				}
				if s.out.stopIfIdle() {
					return
				}
				linger.Reset(writerLinger)
				continue
			}
		}
		worked = true
		err := s.writeBatch(batch, closed && (s.end.abort || s.end.broken))
		for _, m := range batch {
			s.out.free(m)
		}
		clear(batch)
		if cap(batch) > smallQueue {
			batch = nil
		}
		if err != nil {
			s.finish(ending{closeCode: websocket.StatusAbnormalClosure, reason: string(protocol.CodeWriteFailed),
				event: &protocol.Error{Code: protocol.CodeWriteFailed}, broken: true})
			s.closeConn()
			return
		}
		if closed {
			s.closeConn()
			return
		}
		if timerDue {
			s.checkTimeouts()
		}
	}
}

// writeDeadliner is the connection under the WebSocket as the writer bounds
// its writes.
type writeDeadliner interface{ SetWriteDeadline(time.Time) error }

// writeBatch sends batch (nothing of it with discard) within the write
// timeout: one deadline for the batch rather than a context per message,
// which was a measurable share of the relay's CPU. The messages stay
// queued in the memory account until the caller frees them, after they
// are on the socket. A batch of several leaves in one system call
// (frameWriter keeps their frames; the library's own control frames,
// from other goroutines, go out in order and at once).
func (s *Session) writeBatch(batch []message, discard bool) error {
	if discard {
		return nil
	}
	ctx := context.Background()
	dl, _ := s.opts.RawConn.(writeDeadliner)
	if dl == nil || dl.SetWriteDeadline(time.Now().Add(s.opts.Config.WriteTimeout)) != nil {
		// A connection without deadlines (or one already closed, which
		// the write then reports) is bounded by a context, as the
		// library's own writes are.
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, s.opts.Config.WriteTimeout)
		defer cancel()
		dl = nil
	} else {
		// Cleared afterwards: the library's own writes between batches
		// (pongs, the close frame) must not meet a passed deadline.
		defer dl.SetWriteDeadline(time.Time{}) //nolint:errcheck // a closed connection fails its next write anyway
	}
	// Messages queued together leave in one system call: all of them were
	// ready, so none waits for another.
	fw := s.opts.frameWriter
	batched := fw != nil && len(batch) > 1
	if batched {
		fw.beginBatch()
	}
	var err error
	for _, m := range batch {
		if err = s.write(ctx, m); err != nil {
			break
		}
	}
	if batched {
		if endErr := fw.endBatch(); err == nil {
			err = endErr
		}
	}
	return err
}

// write sends one message within the batch's bound. The context is
// independent of the session's lifetime: final messages are written after
// the session context is cancelled.
func (s *Session) write(ctx context.Context, m message) error {
	if err := s.conn.Write(ctx, m.typ, m.data); err != nil {
		return err
	}
	s.touch()
	return nil
}

// closeConn closes the connection the way the ending asks.
func (s *Session) closeConn() {
	e := s.end
	if e.broken {
		_ = s.conn.CloseNow()
		return
	}
	if e.abort && s.opts.RawConn != nil {
		// A client too slow to read its queue will not answer a close
		// frame either: give it a moment, then cut the connection rather
		// than wait the library's five seconds per step.
		cut := time.AfterFunc(abortCloseTimeout, func() { _ = s.opts.RawConn.Close() })
		defer cut.Stop()
	}
	if e.refuseInput {
		// The library's close handshake reads whatever the client still
		// sends, byte by byte, for up to five seconds, looking for its
		// close frame: behind a refused oversized message that is the rest
		// of it, as long as the client claims. 20 clients sending 1 MiB
		// messages again and again kept the server's cores busy that way,
		// and honest callers heard their echo half a second late. A read
		// deadline in the past ends that read at once; the close frame is
		// still written.
		s.setReadDeadline(pastDeadline)
	}
	if err := s.conn.Close(e.closeCode, e.reason); err != nil {
		s.log.V(1).Info("close handshake incomplete", "session", s.id, "error", err.Error())
	}
}

// pushEvent encodes ev and queues it.
func (s *Session) pushEvent(ev protocol.Event, force bool) pushResult {
	data, err := protocol.Marshal(ev, protocol.EventID(s.seq.Add(1)))
	if err != nil {
		s.log.Error(err, "encoding server event", "session", s.id)
		return pushClosed
	}
	return s.push(message{typ: websocket.MessageText, data: data}, force)
}

// messageOverhead is what a queued message costs besides its bytes.
const messageOverhead = 64

// push queues m; a full queue means the client cannot keep up, which ends
// the session (memory never grows with a slow client). Queued bytes count
// against the session's memory account; beyond the session's promise and
// with the budget spent, a client that already holds memory.OutputGrace of
// output counts as slow too (memory.Account.ReserveOutput).
func (s *Session) push(m message, force bool) pushResult {
	// What the message holds for the client: its bytes and a little for
	// its place in the queue (a pooled buffer's spare room is the pool's).
	m.size = int64(len(m.data)) + messageOverhead
	switch {
	case force:
		s.acct.Force(memory.Outbound, m.size)
	case !s.acct.ReserveOutput(m.size):
		m.release()
		s.slowConsumer()
		return pushFull
	}
	res := s.out.push(m, force)
	switch res {
	case pushFull:
		s.out.free(m)
		s.slowConsumer()
	case pushClosed:
		s.out.free(m)
	}
	return res
}

// slowConsumer ends the session of a client that does not take its output.
func (s *Session) slowConsumer() {
	s.opts.Metrics.DroppedFrames.WithLabelValues("slow_consumer").Inc()
	s.finish(ending{closeCode: protocol.ClosePolicyViolation, reason: string(protocol.CodeSlowConsumer),
		event: &protocol.Error{Code: protocol.CodeSlowConsumer}, abort: true})
}

// sink is the Session as its backend sees it.
type sink Session

var _ backend.Sink = (*sink)(nil)

func (k *sink) Event(ev protocol.Event) error {
	return result((*Session)(k).pushEvent(ev, false))
}

func (k *sink) Raw(data []byte) error {
	s := (*Session)(k)
	// A relayed audio delta answers a commit as well; the message is only
	// looked into while a commit waits for its answer.
	answersCommit := s.committedAt.Load() != 0 && bytes.Contains(data, audioDeltaType)
	buf := msgbuf.Get(len(data))
	*buf = append(*buf, data...)
	res := s.push(message{typ: websocket.MessageText, data: *buf, buf: buf}, false)
	if res == pushed && answersCommit {
		s.answered()
	}
	return result(res)
}

// audioDeltaType is how a relayed audio delta names its type.
var audioDeltaType = []byte(`"` + protocol.TypeOutputAudioDelta + `"`)

// answered records the wait from the client's commit to the first audio
// sent back, once per commit.
func (s *Session) answered() {
	if at := s.committedAt.Swap(0); at != 0 {
		waited := s.opts.Clock.Now().UnixNano() - at
		s.opts.Metrics.ResponseLatency.Observe(time.Duration(waited).Seconds())
	}
}

func (k *sink) Audio(ref protocol.ContentRef, pcm []byte) error {
	s := (*Session)(k)
	var m message
	if s.opts.BinaryAudio {
		buf := msgbuf.Get(len(pcm))
		*buf = append(*buf, pcm...)
		m = message{typ: websocket.MessageBinary, data: *buf, buf: buf}
	} else {
		buf := msgbuf.Get(protocol.AudioDeltaSize(ref, len(pcm)))
		*buf = protocol.AppendAudioDelta(*buf, s.seq.Add(1), ref, pcm)
		m = message{typ: websocket.MessageText, data: *buf, buf: buf}
	}
	res := s.push(m, false)
	if res == pushed {
		s.opts.Metrics.AudioFramesOut.Inc()
		s.answered()
	}
	return result(res)
}

func (k *sink) Fail(e *protocol.Error) { (*Session)(k).Fail(e) }

func result(r pushResult) error {
	if r == pushed {
		return nil
	}
	return backend.ErrSessionClosed
}
