// Package session runs one client's realtime voice session: it reads and
// validates client messages, enforces the per-session limits (message size,
// inbound rate, bounded outbound queue, idle timeout, maximum duration),
// hands events to a backend, and writes what the backend answers.
//
// Every session owns a reader goroutine (the one running Run, or the one
// that continues it after it parked), a writer goroutine that runs only
// while there is output to send, one timer, and whatever its backend
// connection starts; the session's done function runs only after all of
// them have stopped, on every path — a clean close, a client error, a
// backend failure, a slow client, a drain. A quiet session's reader parks
// (park.go): an idle session then costs no goroutine at all.
package session

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"
	"github.com/go-logr/logr"
	"golang.org/x/time/rate"
	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/internal/msgbuf"
	"github.com/voicegateway/voicegateway/server/memory"
	"github.com/voicegateway/voicegateway/server/metrics"
	"github.com/voicegateway/voicegateway/server/protocol"
	"github.com/voicegateway/voicegateway/server/resume"
)

// Config holds the per-session limits.
type Config struct {
	MaxMessageBytes int64
	InboundRate     float64
	InboundBurst    int
	OutboundQueue   int
	IdleTimeout     time.Duration
	MaxDuration     time.Duration
	// ResumeNotice is how long before MaxDuration (or the backend's
	// session cap, backend.Capped) the client gets gateway.draining with
	// a resume handle; 0 sends none.
	ResumeNotice time.Duration
	WriteTimeout time.Duration
	SampleRate   int
	// OutboundQueueBytes bounds the outbound queue's bytes as
	// OutboundQueue bounds its messages; 0 means no byte bound.
	OutboundQueueBytes int64
	// MaxBufferedAudio bounds the audio the backend holds for the session
	// (docs/protocol.md, buffer_full); 0 leaves it to the backend.
	MaxBufferedAudio time.Duration
}

// MaxBufferedBytes is MaxBufferedAudio in bytes of PCM16 at SampleRate.
func (c Config) MaxBufferedBytes() int64 {
	return int64(c.MaxBufferedAudio/time.Millisecond) * int64(c.SampleRate) * 2 / 1000
}

// Identity says whose session it is, as admission found it; nothing in it
// is secret. The limits per API key and per client network count by it,
// and a revoked API key ends the sessions that carry its id.
type Identity struct {
	// APIKeyID names the API key presented, or the one that minted the
	// client token presented; empty without authentication.
	APIKeyID string
	// TokenID names the client token presented, if one was.
	TokenID string
	// ClientIP is the client's address; ClientNet what the per-address
	// limit counts: the address itself for IPv4, its /64 for IPv6 (one
	// subscriber's allocation).
	ClientIP  netip.Addr
	ClientNet netip.Prefix
}

// Options are what a session needs besides its connection.
type Options struct {
	Config  Config
	Clock   clock.WithTickerAndDelayedExecution
	Backend backend.Backend
	Metrics *metrics.Server
	Log     logr.Logger
	// BinaryAudio is the negotiated audio transport (see docs/protocol.md).
	BinaryAudio bool
	// RawConn is the connection under the WebSocket; Abort closes it.
	RawConn io.Closer
	// Identity and Claims are set per connection from the Grant.
	Identity Identity
	Claims   protocol.SessionClaims
	// Model is the model the client asked for (?model= or the client
	// token's claim), set per connection from the Grant; the backend
	// decides whether it serves it.
	Model string
	// Sealer seals the resume handles of gateway.draining and opens the
	// ones clients present (?resume=); nil disables resuming.
	Sealer *resume.Sealer
	// ResumeHandle is the handle the client presented, set per
	// connection. It is a bearer secret: never logged.
	ResumeHandle string
	// ResumeGrace is how long after the drain deadline a handle stays
	// valid; 0 means a minute.
	ResumeGrace time.Duration
	// Parker holds quiet sessions' readers without a goroutine; nil
	// keeps a reader goroutine per session.
	Parker *Parker

	// readConn and readBuf are what the WebSocket library reads the
	// connection through, set per connection by the Acceptor.
	readConn *readConn
	readBuf  *bufio.Reader
	// frameWriter is what the library's writes go through; the writer
	// batches queued messages with it. Nil for a connection that was not
	// hijacked here (tests).
	frameWriter *frameWriter
}

// ending is why a session ends and how the client is told.
type ending struct {
	closeCode websocket.StatusCode
	reason    string
	// event, when set, is sent as an error event before the close.
	event *protocol.Error
	// abort drops queued output and skips the close handshake's wait for
	// output: the client is too slow or the connection is broken.
	abort bool
	// broken means the connection is unusable: close without a handshake.
	broken bool
	// refuseInput: what the client still sends is not read (the rest of
	// a message over the size limit). The close frame is written, but the
	// close handshake does not wait for the client's answer behind it.
	refuseInput bool
}

// Session is one client session.
type Session struct {
	id string
	// key is the session's own in the registry: a resumed session takes
	// the id of the one it continues, which may still be ending here.
	key     string
	conn    *websocket.Conn
	opts    Options
	log     logr.Logger
	started time.Time

	ctx    context.Context // the session's lifetime, given to the backend
	cancel context.CancelFunc

	out *outbox
	// acct is the session's share of the memory budget, set when it is
	// admitted (nil for a session refused at once) and closed when it ends.
	acct    *memory.Account
	seq     atomic.Uint64
	lastAct atomic.Int64 // unix nanoseconds of the last message either way

	endOnce sync.Once
	ended   chan struct{}
	end     ending
	// cut closes the connection of a session ended as too slow if its
	// writer is still stuck in a write after abortCloseTimeout; Run (or
	// Reject) stops it once the writer is out.
	cut *time.Timer

	// timer enforces the idle timeout and maximum duration; nil for
	// rejected sessions. Run stops it.
	timer clock.Timer
	// writers counts writer goroutines (at most one runs at a time).
	writers sync.WaitGroup

	draining atomic.Bool
	// endNoticed is set once the notice before the session's end
	// (Config.ResumeNotice) is queued; only the writer reads and writes it.
	endNoticed bool
	// committedAt is when the client last committed its audio (unix
	// nanoseconds on the session's clock) while no answer has started yet;
	// 0 otherwise. The first audio sent back ends the wait
	// (voicegateway_response_latency_seconds).
	committedAt atomic.Int64

	// resumed is the conversation the client's resume handle carried;
	// resumeRefused, when set, is why its handle was refused (the client
	// is told once the session runs, and gets a fresh conversation).
	resumed       *resume.State
	resumeRefused *protocol.Error
	// bconn is the backend connection once open, for the drain's resume
	// handle.
	bconn atomic.Pointer[backend.Conn]

	// The reader's state, kept here rather than on its stack because a
	// parked reader has none: the backend connection it hands messages
	// to, the inbound rate limiter (made at the first message), the
	// decoder and the count of messages dropped in a row over the rate.
	backendConn backend.Conn
	limiter     *rate.Limiter
	dec         protocol.Decoder
	overLimit   int
	// rc is the raw connection a parked reader is watched through; nil
	// when the session cannot park.
	rc   syscall.RawConn
	park parking
	// done runs once the session has ended and all it started stopped.
	done func()
}

// New prepares a session on an accepted connection. Nothing runs until Run
// (or Reject).
func New(conn *websocket.Conn, opts Options) *Session {
	ctx, cancel := context.WithCancel(context.Background())
	s := &Session{
		id:      newID(),
		conn:    conn,
		opts:    opts,
		started: opts.Clock.Now(),
		ctx:     ctx,
		cancel:  cancel,
		ended:   make(chan struct{}),
	}
	s.out = newOutbox(opts.Config.OutboundQueue, opts.Config.OutboundQueueBytes, func() {
		s.writers.Add(1)
		go s.writeLoop()
	})
	// Not WithValues: a zap logger with fields costs each idle session
	// over a kilobyte. Log calls name the session instead.
	s.log = opts.Log
	s.lastAct.Store(s.started.UnixNano())
	s.key = s.id
	if opts.Parker != nil {
		s.rc = rawConnOf(opts.RawConn)
		if opts.readConn != nil {
			opts.readConn.s = s
		}
	}
	s.openHandle()
	// The reader reads one byte past the limit to tell "exactly at the
	// limit" from "over it"; the library's own limit sits just above so
	// that the gateway, not the library, reports frame_too_large.
	conn.SetReadLimit(opts.Config.MaxMessageBytes + 1)
	return s
}

// openHandle opens the resume handle the client presented: the session
// continues its id and conversation, or is told why not and starts fresh.
func (s *Session) openHandle() {
	h := s.opts.ResumeHandle
	s.opts.ResumeHandle = ""
	if h == "" {
		return
	}
	if s.opts.Sealer == nil {
		s.refuseResume(protocol.CodeResumeInvalid, "this server does not resume sessions")
		return
	}
	st, err := s.opts.Sealer.Open(h, s.opts.Identity.APIKeyID, s.opts.Clock.Now())
	switch {
	case err == nil:
		s.resumed = &st
		s.id = st.SessionID
	case errors.Is(err, resume.ErrExpired):
		s.refuseResume(protocol.CodeResumeExpired, "the resume handle has expired; this is a new conversation")
	case errors.Is(err, resume.ErrForeign):
		s.refuseResume(protocol.CodeResumeForeign, "the resume handle belongs to another credential; this is a new conversation")
	case errors.Is(err, resume.ErrTooLarge):
		s.refuseResume(protocol.CodeResumeTooLarge, "the resume handle is too large; this is a new conversation")
	default:
		s.refuseResume(protocol.CodeResumeInvalid, "the resume handle is not valid here; this is a new conversation")
	}
}

// refuseResume drops the conversation a handle carried: the session is a
// fresh one, with an id of its own, and tells the client why.
func (s *Session) refuseResume(code protocol.Code, message string) {
	if s.resumed != nil {
		s.resumed = nil
		s.id = newID()
	}
	s.resumeRefused = &protocol.Error{Code: code, Type: protocol.ErrorTypeInvalidRequest, Message: message}
}

// resumeHandle seals the session's conversation for another server, valid
// until deadline and ResumeGrace more (a minute when unset); empty when
// there is nothing to carry or no sealer.
func (s *Session) resumeHandle(deadline time.Time) string {
	if s.opts.Sealer == nil {
		return ""
	}
	grace := s.opts.ResumeGrace
	if grace <= 0 {
		grace = time.Minute
	}
	expires := deadline.Add(grace)
	st := resume.State{SessionID: s.id, Backend: s.opts.Backend.Name()}
	if c := s.bconn.Load(); c != nil {
		if r, ok := (*c).(backend.Resumer); ok {
			st = r.ResumeState()
			st.SessionID, st.Backend = s.id, s.opts.Backend.Name()
		}
	}
	h, _, err := s.opts.Sealer.Seal(st, s.opts.Identity.APIKeyID, expires)
	if err != nil {
		s.log.Error(err, "sealing a resume handle", "session", s.id)
		return ""
	}
	return h
}

// ID is the session id, also sent to the client.
func (s *Session) ID() string { return s.id }

// Identity is whose session it is.
func (s *Session) Identity() Identity { return s.opts.Identity }

// admit gives the session its share of the memory budget; it is called
// once, before Run.
func (s *Session) admit(acct *memory.Account) {
	s.acct = acct
	s.out.acct = acct
}

// Started is when the session began.
func (s *Session) Started() time.Time { return s.started }

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "sess_" + hex.EncodeToString(b[:])
}

// Reject ends a session that was never admitted (a limit, draining) with
// an error event and close code, and waits until the connection is closed:
// at most abortCloseTimeout, after which a client that has not answered
// the close frame is cut off (the library would wait five seconds to write
// the close and five more for the answer).
func (s *Session) Reject(e *protocol.Error) {
	var cut *time.Timer
	if s.opts.RawConn != nil {
		cut = time.AfterFunc(abortCloseTimeout, func() { _ = s.opts.RawConn.Close() })
	}
	s.finish(ending{closeCode: e.CloseCode, reason: string(e.Code), event: e})
	s.writers.Wait()
	s.stopCut()
	if cut != nil {
		cut.Stop()
	}
}

// stopCut stops the cut of a slow session's connection; the writer is out.
func (s *Session) stopCut() {
	if s.cut != nil {
		s.cut.Stop()
	}
}

// Run serves the session until it ends and everything it started has
// stopped, then calls done (the caller unregisters it there). Run may
// return earlier, when the session's reader parks: the session then
// continues on a goroutine of its own when its client sends something or
// it ends, and done is called at the end all the same.
func (s *Session) Run(done func()) {
	s.done = done
	m := s.opts.Metrics
	m.SessionsActive.Inc()
	m.SessionsTotal.Inc()
	s.log.V(1).Info("session started", "session", s.id, "binaryAudio", s.opts.BinaryAudio,
		"apiKey", s.opts.Identity.APIKeyID, "token", s.opts.Identity.TokenID)

	s.timer = s.opts.Clock.AfterFunc(s.untilNextCheck(), s.out.timerFired)
	if s.resumeRefused != nil {
		// Before the backend opens: the refusal is the first thing the
		// client hears of this session.
		s.reportError(s.resumeRefused)
	}

	bconn, err := s.opts.Backend.Open(s.ctx, backend.Info{
		SessionID: s.id, SampleRate: s.opts.Config.SampleRate, BinaryAudio: s.opts.BinaryAudio,
		MaxMessageBytes: s.opts.Config.MaxMessageBytes, Log: s.log,
		Memory: s.acct, MaxBufferedBytes: s.opts.Config.MaxBufferedBytes(),
		Model: s.opts.Model, Resume: s.resumed,
	}, (*sink)(s))
	s.backendConn = bconn
	if err == nil {
		s.bconn.Store(&bconn)
		s.announceResume(bconn)
	}
	if err != nil {
		s.log.Error(err, "backend unavailable", "session", s.id)
		// A backend that knows why it could not open says so with a
		// fatal *protocol.Error (an upstream refusing its key is not the
		// same trouble as an upstream that cannot be reached).
		var perr *protocol.Error
		if !errors.As(err, &perr) || !perr.Fatal {
			perr = protocol.Fatal(protocol.CodeBackendUnavailable, protocol.CloseInternalError, "the speech backend is unavailable")
		}
		s.Fail(perr)
		s.wrapUp()
		return
	}
	s.serve()
}

// serve reads client messages until the session ends or its reader parks.
// It is Run's second half, and what a parked session continues with.
func (s *Session) serve() {
	select {
	case <-s.ended:
	default:
		if parked := s.readLoop(); parked {
			return
		}
	}
	s.wrapUp()
}

// wrapUp waits until everything the session started has stopped and gives
// back what it held; the session is over.
func (s *Session) wrapUp() {
	m := s.opts.Metrics
	bconn := s.backendConn
	// Whatever ended the read loop, make sure the session is ending (a
	// client close or a broken connection gets here without a cause yet).
	s.finish(ending{closeCode: protocol.CloseNormal, broken: true})
	s.cancel()
	// Once finished, the outbox starts no writer but the closing one.
	s.writers.Wait()
	s.stopCut()
	s.timer.Stop()
	if bconn != nil {
		if err := bconn.Close(); err != nil {
			s.log.Error(err, "closing backend connection", "session", s.id)
		}
	}
	// Nothing the session started runs any more: what it held goes back
	// to the budget, on every path.
	s.acct.Close()
	m.SessionsActive.Dec()
	m.SessionDuration.Observe(s.opts.Clock.Since(s.started).Seconds())
	m.SessionsClosed.WithLabelValues(metrics.CloseCodeLabel(int(s.end.closeCode))).Inc()
	s.log.V(1).Info("session ended", "session", s.id, "closeCode", int(s.end.closeCode), "reason", s.end.reason)
	if s.done != nil {
		s.done()
	}
}

// finish records why the session ends, queues the final error event, stops
// the outbox and wakes the writer, which closes the connection. Only the
// first call counts.
func (s *Session) finish(e ending) {
	s.endOnce.Do(func() {
		// Before the writer may close the connection: a parked session
		// leaves the Parker first.
		wasParked := s.endParking()
		s.end = e
		if e.event != nil {
			s.opts.Metrics.Errors.WithLabelValues(string(e.event.Code)).Inc()
			if !e.abort && !e.broken {
				s.pushEvent(protocol.NewErrorEvent(e.event, s.id), true)
			}
		}
		s.out.close(e.abort || e.broken)
		if e.abort && s.opts.RawConn != nil {
			// A writer blocked on a client that reads nothing would hold
			// the session until --write-timeout.
			s.cut = time.AfterFunc(abortCloseTimeout, func() { _ = s.opts.RawConn.Close() })
		}
		close(s.ended)
		// Cancelling stops the backend; the connection itself stays open
		// until the writer has sent what is queued and closed it.
		s.cancel()
		if wasParked {
			// Nobody reads for a parked session: a goroutine of its
			// own sees it end.
			go s.serve()
		}
	})
}

// Fail ends the session with a fatal error event and close code.
func (s *Session) Fail(e *protocol.Error) {
	s.finish(ending{closeCode: e.CloseCode, reason: string(e.Code), event: e})
}

// Shutdown closes the session at the drain deadline with 1012.
func (s *Session) Shutdown() {
	s.opts.Metrics.Errors.WithLabelValues(string(protocol.CodeDrainDeadline)).Inc()
	s.finish(ending{closeCode: protocol.CloseServiceRestart, reason: string(protocol.CodeDrainDeadline)})
}

// Abort cuts the connection without a close handshake, for a session
// whose peer does not answer its close frame when the drain runs out of
// time. The session then ends as it would on a broken connection.
func (s *Session) Abort() {
	s.finish(ending{closeCode: protocol.CloseServiceRestart, reason: string(protocol.CodeDrainDeadline), broken: true})
	if s.opts.RawConn != nil {
		_ = s.opts.RawConn.Close()
	}
}

// NotifyDraining tells the client the server is draining, with a resume
// handle valid until the deadline and ResumeGrace more. It reports whether
// the event was queued.
func (s *Session) NotifyDraining(ev *protocol.DrainingEvent) bool {
	if !s.draining.CompareAndSwap(false, true) {
		return false
	}
	withHandle := *ev
	withHandle.Resume = s.resumeHandle(ev.Deadline)
	return s.pushEvent(&withHandle, false) == pushed
}

// announceResume tells the client what became of its resume handle: why
// it was refused, or, for a backend that cannot carry a conversation, that
// the session continues without its items. A Resumer tells
// gateway.resumed itself, once it has rebuilt the conversation.
func (s *Session) announceResume(bconn backend.Conn) {
	if s.resumed == nil {
		return
	}
	if _, ok := bconn.(backend.Resumer); ok {
		return
	}
	_ = (*sink)(s).Event(&protocol.ResumedEvent{EventHeader: protocol.EventHeader{Type: protocol.TypeGatewayResumed},
		SessionID: s.id, Dropped: len(s.resumed.Items) + s.resumed.Dropped})
}

// Done is closed when the session has started ending.
func (s *Session) Done() <-chan struct{} { return s.ended }

func (s *Session) touch() { s.lastAct.Store(s.opts.Clock.Now().UnixNano()) }

// readLoop reads client messages until the connection fails or the
// session ends (false), or until its reader parked (true).
func (s *Session) readLoop() (parked bool) {
	cfg := s.opts.Config
	bconn := s.backendConn
	// The read context is never cancelled: cancelling it would make the
	// library drop the connection without a close frame (1006 at the
	// client). The writer's Close ends a blocked read instead.
	readCtx := context.Background()
	for {
		// Backpressure: a client message may make the server answer, so
		// the next one is read only once the outbound queue has room for
		// answers again. A client that reads gets it as fast as it takes
		// its output; one that does not is a slow consumer after
		// --write-timeout, never because it sent a burst.
		if !s.out.waitRoom(s.opts.Clock, cfg.WriteTimeout) {
			s.slowConsumer()
			return false
		}
		if s.waitToRead() {
			return true
		}
		if s.opts.readConn != nil {
			s.opts.readConn.inReader.Store(true)
		}
		typ, r, err := s.conn.Reader(readCtx)
		if s.opts.readConn != nil {
			s.opts.readConn.inReader.Store(false)
		}
		if err != nil {
			if s.kickedInLibrary() {
				if parked := s.parkKicked(false); parked {
					return true
				}
				continue
			}
			s.readFailed(err)
			return false
		}
		in := s.readMessage(r)
		if in.err != nil && !errors.Is(in.err, msgbuf.ErrRefused) {
			in.free()
			if errors.Is(in.err, msgbuf.ErrTooLarge) {
				e := protocol.Fatal(protocol.CodeFrameTooLarge, protocol.CloseMessageTooBig,
					"message larger than "+strconv.FormatInt(cfg.MaxMessageBytes, 10)+" bytes")
				s.finish(ending{closeCode: e.CloseCode, reason: string(e.Code), event: e, refuseInput: true})
				return false
			}
			s.readFailed(in.err)
			return false
		}
		data := in.data()
		s.touch()
		if s.limiter == nil {
			s.limiter = rate.NewLimiter(rate.Limit(cfg.InboundRate), cfg.InboundBurst)
		}
		if !s.limiter.AllowN(s.opts.Clock.Now(), 1) {
			in.free()
			s.opts.Metrics.DroppedFrames.WithLabelValues("inbound_rate").Inc()
			s.overLimit++
			// A client that keeps sending past its budget for a whole
			// burst is not a jittery client: end it rather than answer
			// every dropped message.
			if s.overLimit > cfg.InboundBurst {
				s.Fail(protocol.Fatal(protocol.CodeInboundRateExceeded, protocol.ClosePolicyViolation, "inbound message rate exceeded"))
				return false
			}
			if s.overLimit == 1 {
				s.reportError(&protocol.Error{Code: protocol.CodeInboundRateExceeded, Type: protocol.ErrorTypeInvalidRequest,
					Message: "message dropped: more than " + strconv.FormatFloat(cfg.InboundRate, 'f', -1, 64) + " messages per second"})
			}
			continue
		}
		s.overLimit = 0
		if in.err != nil {
			// Read and dropped: holding it would have passed the memory
			// budget.
			in.free()
			s.reportError(protocol.BufferFull("message dropped: holding it would pass this server's memory budget; send smaller messages, or retry shortly"))
			continue
		}
		ev := clientEvents.Get().(*protocol.ClientEvent)
		var perr *protocol.Error
		if typ == websocket.MessageBinary {
			*ev, perr = s.dec.DecodeBinary(data)
		} else {
			*ev, perr = s.dec.DecodeText(data)
		}
		if perr == nil {
			perr = protocol.CheckClaims(ev, s.opts.Claims)
		}
		if perr == nil {
			switch ev.Type {
			case protocol.TypeInputAudioAppend:
				s.opts.Metrics.AudioFramesIn.Inc()
			case protocol.TypeInputAudioCommit:
				s.committedAt.CompareAndSwap(0, s.opts.Clock.Now().UnixNano())
			}
			perr = bconn.Handle(s.ctx, ev)
		}
		in.free()
		eventID := ev.EventID
		*ev = protocol.ClientEvent{} // the pool must not keep the message's buffers alive
		clientEvents.Put(ev)
		if perr != nil {
			if perr.EventID == "" {
				perr.EventID = eventID
			}
			if perr.Fatal {
				s.Fail(perr)
				return false
			}
			s.reportError(perr)
		}
		select {
		case <-s.ended:
			return false
		default:
		}
	}
}

// clientEvents holds the decoded form of client messages while a backend
// handles them: handed to the backend through an interface, an event on the
// reader's stack would move to the heap, an allocation per audio frame; one
// per session would be held by every idle session too.
var clientEvents = sync.Pool{New: func() any { return new(protocol.ClientEvent) }}

// inbound is one client message as read: its buffer and what the
// session's memory account was charged for it.
type inbound struct {
	s       *Session
	buf     *[]byte
	n       int
	charged int64
	err     error
}

func (in *inbound) data() []byte { return (*in.buf)[:in.n] }

// free gives the message's buffer back to the pool and its bytes back to
// the account.
func (in *inbound) free() {
	in.s.acct.Release(memory.Inbound, in.charged)
	msgbuf.Put(in.buf)
}

// readMessage reads one client message. It starts in a small buffer, which
// the session's own cost covers; as the buffer grows, what it grows to
// beyond that is charged to the session's memory account first (as
// memory.Inbound, until free), so that clients sending large messages at
// once cannot hold more than the budget. When the account refuses, the
// rest of the message is read and dropped (msgbuf.ErrRefused).
func (s *Session) readMessage(r io.Reader) inbound {
	in := inbound{s: s, buf: msgbuf.Get(0)}
	in.n, in.err = msgbuf.ReadMessage(r, in.buf, s.opts.Config.MaxMessageBytes, func(newCap int) bool {
		extra := int64(newCap-msgbuf.Small) - in.charged
		if !s.acct.Reserve(memory.Inbound, extra) {
			return false
		}
		in.charged += max(extra, 0)
		return true
	})
	return in
}

// readFailed classifies a read error: the client closed, or the connection broke.
func (s *Session) readFailed(err error) {
	if code := websocket.CloseStatus(err); code != -1 {
		s.finish(ending{closeCode: code, reason: "client closed"})
		return
	}
	select {
	case <-s.ended: // our own close ended the read
		return
	default:
	}
	s.log.V(1).Info("connection lost", "session", s.id, "error", err.Error())
	s.finish(ending{closeCode: websocket.StatusAbnormalClosure, reason: "connection lost", broken: true})
}

// reportError sends a non-fatal error event.
func (s *Session) reportError(e *protocol.Error) {
	s.opts.Metrics.Errors.WithLabelValues(string(e.Code)).Inc()
	s.pushEvent(protocol.NewErrorEvent(e, s.id), false)
}
