// Package openaitest is a local stand-in for the OpenAI Realtime API, for
// tests. It speaks the documented GA event flow over WebSocket (session.created,
// session.updated, input_audio_buffer.committed, response.created,
// response.output_audio.delta … response.done, error), checks the bearer
// key, records everything it is sent, and injects faults on demand: a
// refused key, a hung handshake, a close or a dropped connection
// mid-stream, silence (no events, no pongs), malformed, binary and oversized
// messages, session_expired; and it can stop reading altogether (SetDeaf).
//
// Its responses echo the committed audio back, so a test can check that
// audio went through the gateway and back unchanged.
package openaitest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
)

// Path is the endpoint the server answers on, as the OpenAI API does.
const Path = "/v1/realtime"

// SampleRate is the only PCM rate the server accepts, as the GA API.
const SampleRate = 24000

// AuthFailure is how a refused key is answered.
type AuthFailure int

const (
	// AuthFailureEvent is what the OpenAI Realtime API does: accept the
	// WebSocket, send an invalid_api_key error event, close with 3000.
	AuthFailureEvent AuthFailure = iota
	// AuthFailureHTTP refuses the handshake with HTTP 401.
	AuthFailureHTTP
)

// Options configure a Server.
type Options struct {
	// Keys are the bearer keys accepted; empty accepts any key.
	Keys []string
	// AuthFailure selects how a wrong key is refused.
	AuthFailure AuthFailure
	// BetaNames makes responses use the beta event names
	// (response.audio.delta, response.audio_transcript.delta, …).
	BetaNames bool
	// ChunkBytes is the PCM carried by each audio delta; 0 means 4800
	// (100 ms at 24 kHz).
	ChunkBytes int
	// OversizedBytes is the size of the message FaultOversized sends; 0
	// means 5 MiB.
	OversizedBytes int
	// StreamEcho answers every input_audio_buffer.append at once with a
	// response.output_audio.delta carrying the same audio, as a model that
	// speaks while it listens: each 20 ms frame makes one round trip, so a
	// load tool can time frames through the gateway and directly alike.
	StreamEcho bool
	// NoRecord keeps nothing of what is sent and received (Received, Sent,
	// Appended, Conversation and ResponseContexts stay empty): for load
	// runs, where the records would grow without bound.
	NoRecord bool
}

// Server is a running stand-in. Close it at the end of the test.
type Server struct {
	// URL is the WebSocket endpoint, ws://127.0.0.1:port/v1/realtime.
	URL string

	opts    Options
	httpSrv *httptest.Server
	closing chan struct{}

	mu    sync.Mutex
	keys  []string
	hang  bool
	conns []*Conn
	// changed is closed and replaced whenever a connection starts or ends.
	changed chan struct{}

	open     atomic.Int64
	attempts atomic.Int64
}

// New starts a server on a loopback port.
func New(opts Options) *Server {
	if opts.ChunkBytes <= 0 {
		opts.ChunkBytes = 4800
	}
	if opts.OversizedBytes <= 0 {
		opts.OversizedBytes = 5 << 20
	}
	s := &Server{opts: opts, keys: slices.Clone(opts.Keys), closing: make(chan struct{}), changed: make(chan struct{})}
	s.httpSrv = httptest.NewServer(http.HandlerFunc(s.serve))
	s.URL = "ws" + strings.TrimPrefix(s.httpSrv.URL, "http") + Path
	return s
}

// Close ends every connection (abruptly, as a crashing upstream would) and
// waits until all of them, and every handler, are gone.
func (s *Server) Close() {
	select {
	case <-s.closing:
	default:
		close(s.closing)
	}
	s.httpSrv.Close()
}

// SetKeys replaces the accepted keys (key rotation).
func (s *Server) SetKeys(keys ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys = slices.Clone(keys)
}

// SetHangHandshake makes the server accept TCP connections but never
// answer their upgrade requests, until it is switched off or closed.
func (s *Server) SetHangHandshake(hang bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.hang = hang
}

// OpenConns is the number of WebSocket connections not yet fully closed.
func (s *Server) OpenConns() int { return int(s.open.Load()) }

// Attempts is the number of upgrade requests received, accepted or not.
func (s *Server) Attempts() int { return int(s.attempts.Load()) }

// Conns returns every connection accepted so far, oldest first.
func (s *Server) Conns() []*Conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.conns)
}

// WaitConn waits until the n-th (1-based) connection is accepted and
// returns it, or nil after timeout.
func (s *Server) WaitConn(n int, timeout time.Duration) *Conn {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		changed := s.changed
		if len(s.conns) >= n {
			c := s.conns[n-1]
			s.mu.Unlock()
			return c
		}
		s.mu.Unlock()
		select {
		case <-changed:
		case <-deadline.C:
			return nil
		}
	}
}

// WaitIdle waits until no connection is open and reports whether that
// happened within timeout.
func (s *Server) WaitIdle(timeout time.Duration) bool {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		changed := s.changed
		s.mu.Unlock()
		if s.open.Load() == 0 {
			return true
		}
		select {
		case <-changed:
		case <-deadline.C:
			return s.open.Load() == 0
		}
	}
}

func (s *Server) notifyLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.attempts.Add(1)
	if r.URL.Path != Path {
		http.NotFound(w, r)
		return
	}
	s.mu.Lock()
	hang, keys := s.hang, s.keys
	s.mu.Unlock()
	if hang {
		select {
		case <-r.Context().Done():
		case <-s.closing:
		}
		return
	}
	key, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	authorized := len(keys) == 0 || slices.Contains(keys, key)
	if !authorized && s.opts.AuthFailure == AuthFailureHTTP {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		_ = json.NewEncoder(w).Encode(map[string]any{"error": errorBody("invalid_request_error", "invalid_api_key", "Incorrect API key provided.", nil, nil)})
		return
	}
	c := &Conn{
		srv: s, Header: r.Header.Clone(), Query: r.URL.Query(),
		commands: make(chan command), done: make(chan struct{}), closeStatus: -1,
		deafChanged: make(chan struct{}, 1),
	}
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{
		// A stalled upstream answers no pings either.
		OnPingReceived: func(context.Context, []byte) bool { return !c.stalled.Load() },
	})
	if err != nil {
		return
	}
	ws.SetReadLimit(64 << 20)
	c.ws = ws
	s.open.Add(1)
	s.mu.Lock()
	s.conns = append(s.conns, c)
	s.notifyLocked()
	s.mu.Unlock()
	defer func() {
		s.open.Add(-1)
		close(c.done)
		s.mu.Lock()
		s.notifyLocked()
		s.mu.Unlock()
	}()
	c.run(authorized)
}

// errorBody is the error object of the API's error events and HTTP errors.
func errorBody(typ, code, message string, param, eventID any) map[string]any {
	return map[string]any{"type": typ, "code": code, "message": message, "param": param, "event_id": eventID}
}

// Received is one client message the server read.
type Received struct {
	Type    string
	EventID string
	Raw     []byte
	Binary  bool
	At      time.Time
}

// Sent is one event the server wrote.
type Sent struct {
	Type    string
	EventID string
	Raw     []byte
	At      time.Time
}
