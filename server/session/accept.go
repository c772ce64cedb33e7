package session

import (
	"errors"
	"net/http"
	"sync"

	"github.com/coder/websocket"

	"github.com/voicegateway/voicegateway/server/protocol"
)

// AudioQueryParam negotiates the binary audio fast path on the upgrade
// URL: ?audio=binary.
const AudioQueryParam = "audio"

// Grant is what admission decided for a request that may become a session.
type Grant struct {
	// BinaryAudio selects the binary audio fast path whatever the URL
	// says (a client token may fix it).
	BinaryAudio bool
	// Subprotocol is echoed in the handshake; empty echoes none.
	Subprotocol string
}

// Acceptor is the one place where a request becomes a session, in this
// order: admission (draining, the client's standing, its credential —
// decided by Admit, which answers refusals in HTTP itself), the WebSocket
// upgrade on a hijacked connection with small buffers, the limits that a
// new session must fit (the registry's cap; a refusal is a close with a
// documented code), registration, and the session's run on a goroutine of
// its own, counted until it ends. It is the http.Handler of the sessions
// path; tests serve it as the gateway does.
type Acceptor struct {
	Registry *Registry
	// Options are every session's; BinaryAudio and RawConn are set per
	// connection.
	Options Options
	// Admit decides before the upgrade; it writes the HTTP refusal itself
	// and reports whether the request may go on. Nil admits every request
	// with a zero Grant.
	Admit func(w http.ResponseWriter, r *http.Request) (Grant, bool)
	// InFlight counts requests from their start until their session has
	// ended or was refused: http.Server.Shutdown stops tracking a
	// connection once it is hijacked, so this is what the stop sequence
	// waits on. Nil uses the acceptor's own (see Wait).
	InFlight *sync.WaitGroup

	own sync.WaitGroup
}

func (a *Acceptor) inFlight() *sync.WaitGroup {
	if a.InFlight != nil {
		return a.InFlight
	}
	return &a.own
}

// Wait waits until every request the acceptor took has ended.
func (a *Acceptor) Wait() { a.inFlight().Wait() }

// ServeHTTP admits, upgrades, registers and runs one session.
func (a *Acceptor) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	inFlight := a.inFlight()
	inFlight.Add(1)
	handedOver := false
	defer func() {
		if !handedOver {
			inFlight.Done()
		}
	}()
	var grant Grant
	if a.Admit != nil {
		var ok bool
		if grant, ok = a.Admit(w, r); !ok {
			return
		}
	}
	var subprotocols []string
	if grant.Subprotocol != "" {
		subprotocols = []string{grant.Subprotocol}
	}
	hijacker := &smallBufferWriter{ResponseWriter: w}
	conn, err := websocket.Accept(hijacker, r, &websocket.AcceptOptions{
		Subprotocols: subprotocols,
		// Credentials travel as bearer values, never as cookies, so a
		// cross-origin page gains nothing it did not already hold; browser
		// apps on any origin may connect.
		InsecureSkipVerify: true,
		// Audio does not compress, and each deflate context costs tens of
		// kilobytes per session.
		CompressionMode: websocket.CompressionDisabled,
	})
	if err != nil {
		a.Options.Log.V(1).Info("upgrade failed", "error", err.Error())
		return
	}
	opts := a.Options
	opts.BinaryAudio = grant.BinaryAudio || r.URL.Query().Get(AudioQueryParam) == protocol.AudioTransportBinary
	opts.RawConn = hijacker.conn
	sess := New(conn, opts)
	remove, err := a.Registry.Add(sess)
	switch {
	case errors.Is(err, ErrLimit):
		sess.Reject(protocol.Fatal(protocol.CodeSessionLimit, protocol.CloseTryAgainLater, "this server is at its session limit; retry shortly"))
		return
	case err != nil:
		sess.Reject(protocol.Fatal(protocol.CodeServerDraining, protocol.CloseTryAgainLater, "this server is shutting down; retry"))
		return
	}
	// The session runs on its own goroutine so that the handler returns and
	// net/http's per-connection state (request, buffers, a deep stack) is
	// freed for the rest of the call.
	handedOver = true
	go func() {
		defer inFlight.Done()
		defer remove()
		sess.Run()
	}()
}
