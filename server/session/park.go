package session

import (
	"bufio"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/voicegateway/voicegateway/server/protocol"
)

// A session's reader waits for the client's next message outside the
// WebSocket library whenever nothing is left to read: in Go's netpoller,
// in a shallow frame that the Parker's sweep may interrupt (a read
// deadline in the past, which only this wait ever sees). Interrupted, the
// reader parks: it gives its read buffer back, registers the connection
// with the Parker and returns, and the goroutine is gone. Readability or
// the session's ending continues the session on a new goroutine (serve).
//
// The wait costs the system calls a read in the library would have made:
// one look at the socket (a peek, where the library's read would have met
// EAGAIN) before it waits, none after a readiness notice.

// Reader states (parking.state).
const (
	readerActive  uint32 = iota // reading, or about to
	readerWaiting               // waiting for readability outside the library
	readerKicked                // asked to park: its wait ends with a past deadline
	readerParked                // no goroutine: the Parker holds the connection
)

// parkedBufferSize is the read buffer a parked session keeps (bufio's
// smallest): the close handshake of a session ended while parked reads
// through it.
const parkedBufferSize = 16

// parking is a session's side of parking. mu orders the sweep's request,
// the reader's parking, the Parker's wake-up and the session's ending.
type parking struct {
	mu     sync.Mutex
	state  atomic.Uint32
	ending bool  // the session is ending: never park again
	token  int32 // the Parker's registration while parked
}

// readDeadliner is the raw connection's read deadline.
type readDeadliner interface{ SetReadDeadline(time.Time) error }

// pastDeadline ends a read in progress at once: the sweep's request to
// park, and the close of a session whose client's input is refused.
var pastDeadline = time.Unix(1, 0)

// setReadDeadline sets the raw connection's read deadline, when it has
// one (every connection a session parks or refuses input on does).
func (s *Session) setReadDeadline(t time.Time) {
	if rc, ok := s.opts.RawConn.(readDeadliner); ok {
		_ = rc.SetReadDeadline(t)
	}
}

// canPark reports whether the session's reader may park at all: it has a
// Parker and a connection the Parker can watch.
func (s *Session) canPark() bool {
	return s.opts.Parker != nil && s.rc != nil && s.opts.readConn != nil && s.opts.readBuf != nil
}

// waitToRead returns once the connection has something to read, or after
// the reader parked (true): the session then continues on another
// goroutine, and the caller must return at once.
func (s *Session) waitToRead() (parked bool) {
	rc := s.opts.readConn
	if !s.canPark() || s.opts.readBuf.Buffered() > 0 || rc.early.Load() {
		return false
	}
	s.park.state.Store(readerWaiting)
	first, notice := true, false
	err := s.rc.Read(func(fd uintptr) bool {
		if !first {
			notice = true
			// A readiness notice ended the wait: the library's read takes
			// the bytes (a stale notice costs that read one EAGAIN and a
			// wait inside the library, never a lost message).
			return true
		}
		first = false
		// Always look first: RawConn.Read clears the poller's readiness
		// notice before it calls this, so bytes that came after the
		// library's last read and before this wait left no notice to
		// wait for. Skipping the look when the last read had not filled
		// its buffer left such a message unread until the next sweep
		// kicked the reader (a commit echoed 2.5 s late).
		return readable(fd)
	})
	if s.park.state.CompareAndSwap(readerWaiting, readerActive) {
		// Not asked to park: readable, or the connection failed, which
		// the library's read reports. A notice may be stale (an edge for
		// bytes already read, harvested late): the library's first read
		// stays parkable.
		if notice {
			rc.atFrame.Store(true)
		}
		return false
	}
	return s.parkKicked(err == nil)
}

// parkKicked runs on the reader after the sweep asked it to park (its wait
// ended with the deadline the sweep set, or with bytes that beat it).
func (s *Session) parkKicked(dataReady bool) bool {
	s.park.mu.Lock()
	defer s.park.mu.Unlock()
	if s.park.ending {
		// finish already cleared the deadline.
		s.park.state.Store(readerActive)
		return false
	}
	s.setReadDeadline(time.Time{})
	if dataReady {
		s.park.state.Store(readerActive)
		return false
	}
	// Nothing is buffered (waitToRead checked, and only this goroutine
	// reads until the session ends): the read buffer goes back to the
	// heap, and so does the decoder's.
	*s.opts.readBuf = *bufio.NewReaderSize(s.opts.readConn, parkedBufferSize)
	s.dec = protocol.Decoder{}
	token, ok := s.opts.Parker.register(s, s.rc)
	if !ok {
		*s.opts.readBuf = *bufio.NewReaderSize(s.opts.readConn, sessionBufferSize)
		s.park.state.Store(readerActive)
		return false
	}
	s.park.token = token
	s.park.state.Store(readerParked)
	return true
}

// unkick takes back the sweep's request to park from a reader whose read
// found bytes first.
func (s *Session) unkick() {
	s.park.mu.Lock()
	defer s.park.mu.Unlock()
	if !s.park.ending {
		s.setReadDeadline(time.Time{})
	}
	s.park.state.Store(readerActive)
}

// kickedInLibrary reports whether a read error from the library is the
// sweep's request to park (readConn.Read): the reader then parks.
func (s *Session) kickedInLibrary() bool {
	return s.canPark() && s.park.state.Load() == readerKicked
}

// kick asks a reader waiting outside the library to park. It runs on the
// Parker's sweep.
func (s *Session) kick() {
	s.park.mu.Lock()
	defer s.park.mu.Unlock()
	if s.park.ending || !s.park.state.CompareAndSwap(readerWaiting, readerKicked) {
		return
	}
	// Only the wait sees this deadline: the reader clears it (under mu)
	// before it reads anything.
	s.setReadDeadline(pastDeadline)
}

// unpark continues a parked session on a new goroutine: its connection
// turned readable, or the Parker stops.
func (s *Session) unpark() {
	s.park.mu.Lock()
	if s.park.state.Load() != readerParked {
		// The session's ending took it back first.
		s.park.mu.Unlock()
		return
	}
	s.opts.Parker.deregister(s.park.token, s.rc)
	s.park.state.Store(readerActive)
	if !s.park.ending {
		*s.opts.readBuf = *bufio.NewReaderSize(s.opts.readConn, sessionBufferSize)
	}
	s.park.mu.Unlock()
	go s.serve()
}

// endParking is the session's ending as parking sees it: no reader parks
// from now on; a parked session is taken back from the Parker, before its
// connection may be closed, and reported (true) so that the caller
// continues it; a reader asked to park gets its deadline cleared.
func (s *Session) endParking() (wasParked bool) {
	if !s.canPark() {
		return false
	}
	s.park.mu.Lock()
	defer s.park.mu.Unlock()
	s.park.ending = true
	switch s.park.state.Load() {
	case readerKicked:
		s.setReadDeadline(time.Time{})
	case readerParked:
		s.opts.Parker.deregister(s.park.token, s.rc)
		s.park.state.Store(readerActive)
		return true
	}
	return false
}

// Parked reports whether the session's reader is parked (no goroutine).
func (s *Session) Parked() bool { return s.park.state.Load() == readerParked }

// rawConnOf is the connection's syscall.RawConn, or nil when it has none
// (then the session never parks).
func rawConnOf(c any) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	if _, ok := c.(readDeadliner); !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return rc
}
