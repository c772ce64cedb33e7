package openai

import (
	"context"
	"encoding/base64"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr"
	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/protocol"
)

const (
	// relayQueueMessages bounds the client messages waiting for the
	// upstream: about five seconds of 20 ms audio frames. An upstream that
	// lets it fill has stopped taking data.
	relayQueueMessages = 256
	// minRelayQueueBytes bounds their bytes, unless two of the largest
	// client messages (base64-encoded, if they came as binary) are more.
	minRelayQueueBytes = 4 << 20
	// upstreamCloseTimeout bounds closing the upstream at the end of a
	// session. It is a resource bound, not behaviour, so it runs on real
	// time.
	upstreamCloseTimeout = time.Second
)

// upstream is the part of *websocket.Conn the relay uses; benchmarks put a
// stand-in behind it to measure the relay alone.
type upstream interface {
	Reader(ctx context.Context) (websocket.MessageType, io.Reader, error)
	Write(ctx context.Context, typ websocket.MessageType, p []byte) error
	Ping(ctx context.Context) error
	Close(code websocket.StatusCode, reason string) error
	CloseNow() error
}

// conn is one session's upstream connection.
type conn struct {
	b    *Backend
	info backend.Info
	sink backend.Sink
	log  logr.Logger

	// ctx is the connection's lifetime: the session's, ended early by a
	// fault or by Close. It stops the writer, the watchdog and a pinger;
	// the reader ends when the upstream connection closes.
	ctx    context.Context
	cancel context.CancelFunc

	up  upstream
	raw *rawConn
	// url is the upstream endpoint of this session: the configured one,
	// with the client's model when it asked for an allowed one.
	url string
	// byteAudio is set once a session.update asked for G.711 output
	// (audio/pcmu, audio/pcma): one byte a sample, so an audio delta of an
	// odd length is whole samples.
	byteAudio atomic.Bool

	// queue carries client messages to the writer; queueBytes counts
	// their bytes against maxQueueBytes.
	queue         chan *[]byte
	queueBytes    atomic.Int64
	maxQueueBytes int64

	// The watchdog's timer only flags checkDue: a fake clock runs timer
	// callbacks under its lock, so they must not call the clock.
	timer     clock.Timer
	checkDue  chan struct{}
	lastHeard atomic.Int64 // unix nanoseconds of the last frame from the upstream
	pinging   atomic.Bool
	stall     time.Duration
	pingAfter time.Duration

	fault     atomic.Pointer[fault] // the first upstream fault; the session is ending
	closing   atomic.Bool
	closeOnce sync.Once
	// loops are the writer and the watchdog, stopped before the upstream
	// is closed; readers are the reader and a pinger, which end with it.
	loops   sync.WaitGroup
	readers sync.WaitGroup

	// conv is what the session remembers of its conversation for a
	// resume on another server.
	conv conversation
	// replayAcks count the upstream's answers to a resume's replay still
	// to come, which are not relayed to the client.
	replayAcks struct{ updated, added, done atomic.Int64 }

	// Reader-goroutine state.
	ev  upstreamEvent
	ref protocol.ContentRef
}

func newConn(ctx context.Context, b *Backend, info backend.Info, sink backend.Sink) *conn {
	ctx, cancel := context.WithCancel(ctx)
	stall := b.cfg.StallTimeout
	return &conn{
		b: b, info: info, sink: sink, log: info.Log,
		ctx: ctx, cancel: cancel,
		raw:           &rawConn{},
		queue:         make(chan *[]byte, relayQueueMessages),
		maxQueueBytes: max(minRelayQueueBytes, 2*int64(base64.StdEncoding.EncodedLen(int(info.MaxMessageBytes))+4<<10)),
		checkDue:      make(chan struct{}, 1),
		stall:         stall,
		// Half the stall timeout leaves the pong a whole half to arrive.
		pingAfter: stall / 2,
		conv:      conversation{acct: info.Memory},
	}
}

// start runs the relay on an open upstream.
//
// A resumed session's conversation is replayed first (replay), with the
// reader already taking the upstream's answers and before the writer can
// send any client message; the client is then told gateway.resumed.
func (c *conn) start(up upstream) {
	c.up = up
	c.heard()
	st := c.info.Resume
	own := st != nil && st.Backend == Name
	if own {
		// The upstream's answers to the replay are the client's own
		// conversation told again: they are followed, not relayed (a
		// thousand of them would overflow the client's queue).
		if len(st.Config) > 0 {
			c.replayAcks.updated.Store(1)
		}
		c.replayAcks.added.Store(int64(len(st.Items)))
		c.replayAcks.done.Store(int64(len(st.Items)))
		// Set before the reader runs, which may count drops of its own.
		c.conv.dropped = st.Dropped
	}
	c.readers.Add(1)
	go c.readLoop()
	restored, replayed := 0, true
	if own {
		restored, replayed = c.replay(st)
	}
	c.timer = c.b.clock.AfterFunc(c.pingAfter, c.timerFired)
	c.loops.Add(2)
	go c.writeLoop()
	go c.watchLoop()
	if !replayed {
		c.fail(upstreamLost())
		return
	}
	if st != nil {
		_ = c.sink.Event(&protocol.ResumedEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeGatewayResumed},
			SessionID: c.info.SessionID, Restored: restored, Dropped: st.Dropped + len(st.Items) - restored})
	}
}

// heard records a sign of life from the upstream: any message, ping or pong.
func (c *conn) heard() { c.lastHeard.Store(c.b.clock.Now().UnixNano()) }

// fail ends the session for an upstream fault, once: it counts and logs the
// fault, tells the client, and cuts a broken upstream at once so that both
// connections are freed without waiting for Close. Faults that surface
// while the session is ending for another reason (or because of the first
// fault) are consequences, not news, and are dropped. It returns the error
// the client is told, or nil when it was dropped.
func (c *conn) fail(f fault) *protocol.Error {
	if c.closing.Load() || c.ctx.Err() != nil || !c.fault.CompareAndSwap(nil, &f) {
		return nil
	}
	c.b.metrics.UpstreamErrors.WithLabelValues(f.kind).Inc()
	c.log.Info("upstream failed", "session", c.info.SessionID, "kind", f.kind, "code", string(f.err.Code), "detail", f.err.Message)
	c.sink.Fail(f.err)
	if f.broken {
		_ = c.up.CloseNow()
	}
	return f.err
}

// Close implements backend.Conn: it stops the writer and the watchdog,
// closes the upstream (normally, with 1000, unless it is broken) within
// upstreamCloseTimeout, and waits for the reader.
func (c *conn) Close() error {
	c.closeOnce.Do(func() {
		c.closing.Store(true)
		c.cancel()
		c.timer.Stop()
		// A writer stuck on an upstream that takes no data, or an
		// upstream that never answers the close frame, is cut off. A cut
		// that fired is waited for: nothing outlives Close.
		cutDone := make(chan struct{})
		cut := time.AfterFunc(upstreamCloseTimeout, func() {
			defer close(cutDone)
			c.cut()
		})
		defer func() {
			if !cut.Stop() {
				<-cutDone
			}
		}()
		c.loops.Wait()
		if f := c.fault.Load(); f != nil && f.broken {
			_ = c.up.CloseNow()
		} else if err := c.up.Close(protocol.CloseNormal, ""); err != nil {
			c.log.V(1).Info("upstream close handshake incomplete", "session", c.info.SessionID, "error", err.Error())
		}
		c.readers.Wait()
		c.dropQueued()
		c.conv.close()
		c.b.metrics.UpstreamConnections.Dec()
	})
	return nil
}

func (c *conn) cut() {
	c.raw.close()
	_ = c.up.CloseNow()
}

// dropQueued releases what the writer did not send; the session is over.
func (c *conn) dropQueued() {
	for {
		select {
		case buf := <-c.queue:
			c.dequeued(buf)
			c.release(buf)
		default:
			return
		}
	}
}
