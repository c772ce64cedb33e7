// Package backendtest is the test kit every backend shares: a recording
// Sink (what a backend sends its session), a Session harness that opens a
// backend connection and drives it the way server/session does, and Run, the
// conformance suite that every backend passes. A new backend gets the same
// checks as echo and openai by writing one Factory.
package backendtest

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/go-logr/logr"

	"github.com/voicegateway/voicegateway/server/backend"
	"github.com/voicegateway/voicegateway/server/protocol"
)

// DefaultInfo describes a base64 session at 24 kHz, the gateway's default
// rate and the only one the OpenAI API carries.
func DefaultInfo() backend.Info {
	return backend.Info{SessionID: "sess_test", SampleRate: 24000, MaxMessageBytes: 256 << 10, Log: logr.Discard()}
}

// Session is one open backend connection, driven as server/session drives
// it: client messages are decoded by protocol.Decoder and handed to Handle
// one at a time, with buffers that are overwritten once Handle returns (a
// backend must copy what it keeps); a fatal error from Handle or a Fail
// ends the session, which cancels its context; Close cancels the context
// and then closes the connection, once. It is closed when the test ends,
// and what its Sink noted as violations fails the test then.
type Session struct {
	T    testing.TB
	Info backend.Info
	Sink *Sink
	Conn backend.Conn

	ctx    context.Context
	cancel context.CancelFunc
	dec    protocol.Decoder

	// handling is set while Handle runs: a session never calls it
	// concurrently, nor Close while it runs.
	handling atomic.Bool
	// closing is set by the first Close; closed when it has returned.
	closing atomic.Bool
	closed  atomic.Bool
}

// Open opens a session on b with a fresh Sink and fails the test if Open
// fails.
func Open(t testing.TB, b backend.Backend, info backend.Info) *Session {
	t.Helper()
	s, err := TryOpen(t, context.Background(), b, info, NewSink())
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

// TryOpen opens a session whose lifetime is a child of parent and reports
// Open's error. An error that is a *protocol.Error must be one a session
// can end with (fatal, with a documented code and close code); anything
// else is reported to the client as backend_unavailable.
func TryOpen(t testing.TB, parent context.Context, b backend.Backend, info backend.Info, sink *Sink) (*Session, error) {
	t.Helper()
	ctx, cancel := context.WithCancel(parent)
	s := &Session{T: t, Info: info, Sink: sink, ctx: ctx, cancel: cancel}
	sink.mu.Lock()
	sink.onFail = cancel
	sink.mu.Unlock()
	conn, err := b.Open(ctx, info, sink)
	if err != nil {
		cancel()
		if conn != nil {
			t.Errorf("Open returned a connection with its error %v", err)
		}
		var perr *protocol.Error
		if errors.As(err, &perr) && (!perr.Fatal || perr.CloseCode < 1000 || !slices.Contains(protocol.AllCodes, perr.Code)) {
			t.Errorf("Open = %+v: a *protocol.Error from Open must be fatal, with a documented code and a close code", *perr)
		}
		reportViolations(t, sink)
		return nil, err
	}
	if conn == nil {
		cancel()
		t.Error("Open returned neither a connection nor an error")
		return nil, errors.New("Open returned neither a connection nor an error")
	}
	s.Conn = conn
	t.Cleanup(func() {
		if s.closing.Load() && !s.closed.Load() {
			t.Errorf("session %s: the connection's Close never returned", info.SessionID)
			return
		}
		s.Close()
		reportViolations(t, sink)
	})
	return s, nil
}

func reportViolations(t testing.TB, sink *Sink) {
	t.Helper()
	for _, v := range sink.Violations() {
		t.Errorf("backend broke the Sink contract: %s", v)
	}
}

// Context is the session's lifetime, as the backend was given it.
func (s *Session) Context() context.Context { return s.ctx }

// Send decodes a client text message as a session does and hands it to the
// backend, returning Handle's error. A message that does not decode fails
// the test: it is the test's mistake.
func (s *Session) Send(msg string) *protocol.Error {
	s.T.Helper()
	buf := []byte(msg)
	ev, perr := s.dec.DecodeText(buf)
	if perr != nil {
		s.T.Fatalf("test message does not decode: %v: %.100s", perr, msg)
	}
	return s.handle(&ev, buf)
}

// MustSend sends msg and fails the test if the backend refuses it.
func (s *Session) MustSend(msg string) {
	s.T.Helper()
	if err := s.Send(msg); err != nil {
		s.T.Fatalf("%.100s refused: %v", msg, err)
	}
}

// SendBinary hands over a binary audio message.
func (s *Session) SendBinary(pcm []byte) *protocol.Error {
	s.T.Helper()
	buf := slices.Clone(pcm)
	ev, perr := s.dec.DecodeBinary(buf)
	if perr != nil {
		s.T.Fatalf("test audio does not decode: %v", perr)
	}
	return s.handle(&ev, buf)
}

// handle calls Handle as the session's reader does.
func (s *Session) handle(ev *protocol.ClientEvent, buf []byte) *protocol.Error {
	s.T.Helper()
	if !s.handling.CompareAndSwap(false, true) {
		s.T.Error("Handle called while another Handle runs: a session has one reader")
	}
	perr := s.Conn.Handle(s.ctx, ev)
	s.handling.Store(false)
	// The session returns the message buffer to its pool and the
	// decoder reuses its audio buffer: a backend that kept either
	// without copying finds them overwritten.
	scribble(buf)
	scribble(ev.Audio)
	if perr == nil {
		return nil
	}
	if !slices.Contains(protocol.AllCodes, perr.Code) {
		s.T.Errorf("Handle = %+v: the code is not a documented one", *perr)
	}
	if perr.Fatal && perr.CloseCode < 1000 {
		s.T.Errorf("Handle = %+v: a fatal error needs a close code", *perr)
	}
	if perr.EventID == "" {
		perr.EventID = ev.EventID
	}
	if perr.Fatal {
		s.End()
	}
	return perr
}

func scribble(b []byte) {
	for i := range b {
		b[i] = 0xA5
	}
}

// End ends the session as server/session's finish does when the client
// goes, a limit is hit or the drain deadline passes: the sink refuses
// further output and the session's context is cancelled. The connection
// stays open until Close.
func (s *Session) End() {
	s.Sink.Close()
	s.cancel()
}

// Close ends the session and closes the connection, once, as a session's
// last step: after it returns, nothing the backend started may run or
// send. Later calls return at once. It is called when the test ends if the
// test does not call it.
func (s *Session) Close() {
	if !s.closing.CompareAndSwap(false, true) {
		return
	}
	if s.handling.Load() {
		s.T.Error("Close called while Handle runs: a session closes its backend after its reader has stopped")
	}
	s.End()
	s.closeConn()
}

// CloseOnly closes the connection without ending the session's context
// first, which a session never does but the interface allows: Close stops
// everything the connection started on its own. The context is cancelled
// afterwards.
func (s *Session) CloseOnly() {
	if !s.closing.CompareAndSwap(false, true) {
		return
	}
	s.closeConn()
	s.End()
}

func (s *Session) closeConn() {
	if err := s.Conn.Close(); err != nil {
		s.T.Errorf("Close: %v", err)
	}
	s.Sink.seal()
	s.closed.Store(true)
}
