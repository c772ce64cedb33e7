// Package backend defines how a voice session talks to an AI speech backend.
// The session owns the client connection; a backend only sees a Sink to send
// through and the client events it is handed, so that every backend gets the
// same limits, error handling and drain behaviour for free.
package backend

import (
	"context"
	"errors"
	"time"

	"github.com/go-logr/logr"

	"github.com/voicegateway/voicegateway/server/memory"
	"github.com/voicegateway/voicegateway/server/protocol"
	"github.com/voicegateway/voicegateway/server/resume"
)

// ErrSessionClosed is returned by a Sink once its session has ended; a
// backend that sees it stops producing.
var ErrSessionClosed = errors.New("session closed")

// Sink is the client side of a session as a backend sees it. Its methods
// never block: output is queued on the session's bounded outbound queue, and
// a client that cannot keep up ends the session rather than growing memory.
type Sink interface {
	// Event queues a server event; the session stamps its event_id.
	Event(ev protocol.Event) error
	// Raw queues an already encoded JSON event unchanged (relays use it so
	// that upstream events keep their fields and event_id).
	Raw(data []byte) error
	// Audio queues output audio, as a binary message or a base64
	// response.output_audio.delta, whichever the client negotiated. pcm is
	// copied before Audio returns.
	Audio(ref protocol.ContentRef, pcm []byte) error
	// Fail ends the session with a fatal error; it returns at once.
	Fail(err *protocol.Error)
}

// Info describes the session a backend connection serves.
type Info struct {
	SessionID   string
	SampleRate  int
	BinaryAudio bool
	// MaxMessageBytes is the client's inbound message limit, announced to the client.
	MaxMessageBytes int64
	Log             logr.Logger
	// Memory is the session's share of the memory budget: what a backend
	// buffers for the session (audio, messages for an upstream) is
	// reserved from it first, and a refused reservation is answered with
	// a non-fatal buffer_full, never by buffering anyway. Nil grants all.
	Memory *memory.Account
	// MaxBufferedBytes bounds the audio a backend holds for the session
	// (--max-buffered-audio); 0 leaves it to the backend.
	MaxBufferedBytes int64
	// Model is the model the client asked for (the session URL's model
	// parameter, or its client token's claim); empty when it named none.
	// A backend that does not serve it refuses the session with
	// protocol.CodeModelNotAllowed.
	Model string
	// Resume, when set, is the conversation the client brought from
	// another server in a resume handle: a Resumer rebuilds it and tells
	// the client gateway.resumed (with what it restored and dropped)
	// before anything else of the conversation. A backend that is not a
	// Resumer never sees it.
	Resume *resume.State
}

// Capped is implemented by backends whose upstream ends every session
// after a fixed time (the OpenAI Realtime API: 60 minutes), so that the
// session can warn its client in time (session.Config.ResumeNotice).
type Capped interface {
	MaxSessionLength() time.Duration
}

// Resumer is implemented by the connections of backends that can carry a
// conversation to another server (docs/protocol.md, "Resuming a session").
type Resumer interface {
	// ResumeState is what the conversation needs to continue elsewhere:
	// the configuration and completed items, bounded. It is called from
	// another goroutine than Handle's, at any time before Close.
	ResumeState() resume.State
}

// Backend opens one backend connection per session.
type Backend interface {
	// Name is the backend's name as configured (--backend).
	Name() string
	// Open starts serving a session. ctx is the session's lifetime: when it
	// is done, everything Open started must stop. An error here is reported
	// to the client as the fatal *protocol.Error it is or wraps, and as
	// backend_unavailable otherwise.
	Open(ctx context.Context, info Info, sink Sink) (Conn, error)
}

// Runner is implemented by backends that keep a background loop for the
// whole process (the openai backend watches its key file). The gateway runs
// it under its errgroup until every session has ended; Run returns nil when
// ctx is done.
type Runner interface {
	Run(ctx context.Context) error
}

// Conn is one session's backend connection.
type Conn interface {
	// Handle processes one client event, in arrival order, on the session's
	// reader goroutine. A non-fatal *protocol.Error becomes an error event
	// and the session goes on; a fatal one ends it. ev and the buffers it
	// points into are the session's again once Handle returns: whatever a
	// backend keeps, it copies.
	Handle(ctx context.Context, ev *protocol.ClientEvent) *protocol.Error
	// Close stops everything the connection started and waits for it. The
	// session calls it exactly once, after its context is done.
	Close() error
}
