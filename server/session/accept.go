package session

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/voicegateway/voicegateway/server/memory"
	"github.com/voicegateway/voicegateway/server/protocol"
)

// AudioQueryParam negotiates the binary audio fast path on the upgrade
// URL: ?audio=binary.
const AudioQueryParam = "audio"

// ResumeQueryParam carries a resume handle on the upgrade URL:
// ?resume=<handle> (docs/protocol.md, "Resuming a session").
const ResumeQueryParam = "resume"

// Grant is what admission decided for a request that may become a session.
type Grant struct {
	// BinaryAudio selects the binary audio fast path whatever the URL
	// says (a client token may fix it).
	BinaryAudio bool
	// Subprotocol is echoed in the handshake; empty echoes none.
	Subprotocol string
	// Identity is whose session it would be: what the limits per API key
	// and per client network count, and what revocation looks for.
	Identity Identity
	// Claims are what a client token fixes for the session; a
	// session.update may not change them.
	Claims protocol.SessionClaims
	// Model is the model the client asked for: the URL's model parameter,
	// or the client token's model claim (admission refuses the two
	// differing).
	Model string
	// Release, when set, gives back what admission took for the session
	// (a use of a client token) if the request does not become one: the
	// upgrade failed or a limit refused it.
	Release func()
}

// Acceptor is the one place where a request becomes a session, in this
// order: the cap on handshakes in progress (503 server_busy), admission
// (draining, the client's standing, its credential — decided by Admit,
// which answers refusals in HTTP itself), the WebSocket upgrade on a
// hijacked connection with small buffers, the limits that a new session
// must fit (the registry's caps on sessions, per API key and per client
// network, and the memory budget's promise; a refusal is a close with a
// documented code, which a browser can see where it cannot see an HTTP
// status), registration, and the session's run on a goroutine of its own,
// counted until it ends. It is the http.Handler of the sessions path;
// tests serve it as the gateway does.
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
	// Memory is the process's memory budget; every session must get its
	// promise from it. Nil admits without accounting.
	Memory *memory.Budget
	// MaxHandshakes caps the requests that are not a session yet
	// (admission, upgrade); more are refused with 503 server_busy before
	// any work is done for them. 0 means no cap.
	MaxHandshakes int
	// Refuse writes an HTTP refusal (the gateway's, with its metrics);
	// nil writes the same JSON body without them.
	Refuse func(w http.ResponseWriter, status int, code protocol.Code, message string, retryAfter time.Duration)
	// Revoked, when set, reports whether the credential a session was
	// admitted with has been revoked since. It is asked once the session is
	// registered: a revocation that looks at the registry before that
	// misses the session, and this check, which comes after, does not.
	Revoked func(Identity) bool

	own        sync.WaitGroup
	handshakes atomic.Int64
}

func (a *Acceptor) inFlight() *sync.WaitGroup {
	if a.InFlight != nil {
		return a.InFlight
	}
	return &a.own
}

// Wait waits until every request the acceptor took has ended.
func (a *Acceptor) Wait() { a.inFlight().Wait() }

// beginHandshake takes a handshake slot; the function it returns gives it
// back and may be called more than once.
func (a *Acceptor) beginHandshake() (end func(), ok bool) {
	if a.MaxHandshakes <= 0 {
		return func() {}, true
	}
	if a.handshakes.Add(1) > int64(a.MaxHandshakes) {
		a.handshakes.Add(-1)
		return nil, false
	}
	var gauge prometheus.Gauge
	if m := a.Options.Metrics; m != nil {
		gauge = m.Admission.HandshakesInFlight
		gauge.Inc()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			a.handshakes.Add(-1)
			if gauge != nil {
				gauge.Dec()
			}
		})
	}, true
}

// limits is the step where an upgraded session must fit: the memory
// budget's promise, then the registry's caps (sessions, per API key, per
// client network; draining), which register it, then the credential's last
// look (Revoked). The session gets its memory account before it is
// registered: from then on revocation and the drain may reach it, and what
// they send is charged to that account. It returns the function that
// unregisters the session, or the refusal the client is told; a refused
// session is unregistered and its account is closed once it is rejected
// (Session.Reject).
func (a *Acceptor) limits(sess *Session) (remove func(), refusal *protocol.Error) {
	if a.Memory != nil {
		acct, ok := a.Memory.Open()
		if !ok {
			// A cap of the registry's says more (a caller at its share
			// should not retry): it wins when both refuse.
			if refusal := registryRefusal(a.Registry.admits(sess)); refusal != nil {
				return nil, refusal
			}
			return nil, protocol.Fatal(protocol.CodeMemoryLimit, protocol.CloseTryAgainLater,
				"this server's memory is promised to the sessions it holds; retry shortly (another server may have room)")
		}
		sess.admit(acct)
	}
	remove, err := a.Registry.Add(sess)
	if err != nil {
		return nil, registryRefusal(err)
	}
	if a.Revoked != nil && a.Revoked(sess.Identity()) {
		remove()
		return nil, protocol.Fatal(protocol.CodeCredentialRevoked, protocol.ClosePolicyViolation,
			"the API key this session was opened with was revoked")
	}
	return remove, nil
}

// registryRefusal is what the client is told when the registry does not
// take its session; nil for no error.
func registryRefusal(err error) *protocol.Error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrLimit):
		return protocol.Fatal(protocol.CodeSessionLimit, protocol.CloseTryAgainLater, "this server is at its session limit; retry shortly")
	case errors.Is(err, ErrAPIKeyLimit):
		return protocol.Fatal(protocol.CodeAPIKeySessionLimit, protocol.ClosePolicyViolation,
			"this API key holds as many sessions on this server as it may; end one first")
	case errors.Is(err, ErrClientIPLimit):
		return protocol.Fatal(protocol.CodeClientIPSessionLimit, protocol.ClosePolicyViolation,
			"your address holds as many sessions on this server as it may; end one first")
	}
	return protocol.Fatal(protocol.CodeServerDraining, protocol.CloseTryAgainLater, "this server is shutting down; retry")
}

// refuse answers a request before the upgrade.
func (a *Acceptor) refuse(w http.ResponseWriter, status int, code protocol.Code, message string, retryAfter time.Duration) {
	if a.Refuse != nil {
		a.Refuse(w, status, code, message, retryAfter)
		return
	}
	if retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(retryAfter.Seconds()))))
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]protocol.ErrorBody{"error": {Type: protocol.ErrorTypeServer, Code: code, Message: message}})
}

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
	endHandshake, ok := a.beginHandshake()
	if !ok {
		a.refuse(w, http.StatusServiceUnavailable, protocol.CodeServerBusy,
			"this server is busy with other connections; retry shortly", time.Second)
		return
	}
	defer endHandshake()
	var grant Grant
	if a.Admit != nil {
		if grant, ok = a.Admit(w, r); !ok {
			return
		}
	}
	admitted := false
	defer func() {
		if !admitted && grant.Release != nil {
			grant.Release()
		}
	}()
	var subprotocols []string
	if grant.Subprotocol != "" {
		subprotocols = []string{grant.Subprotocol}
	}
	// The callbacks below stay with the connection: they hold the
	// reader, never the hijacker, whose ResponseWriter would keep
	// net/http's per-connection state (4 KiB buffers, the request) alive.
	read := &readConn{}
	hijacker := &smallBufferWriter{ResponseWriter: w, read: read}
	conn, err := websocket.Accept(hijacker, r, &websocket.AcceptOptions{
		Subprotocols: subprotocols,
		// Credentials travel as bearer values, never as cookies, so a
		// cross-origin page gains nothing it did not already hold; browser
		// apps on any origin may connect.
		InsecureSkipVerify: true,
		// Audio does not compress, and each deflate context costs tens of
		// kilobytes per session.
		CompressionMode: websocket.CompressionDisabled,
		// After a control frame the library reads on for the next data
		// message; these let that read park (readConn.Read).
		OnPingReceived: func(context.Context, []byte) bool {
			read.controlFrameRead()
			return true
		},
		OnPongReceived: func(context.Context, []byte) { read.controlFrameRead() },
	})
	if err != nil {
		a.Options.Log.V(1).Info("upgrade failed", "error", err.Error())
		return
	}
	opts := a.Options
	opts.BinaryAudio = grant.BinaryAudio || r.URL.Query().Get(AudioQueryParam) == protocol.AudioTransportBinary
	opts.RawConn = hijacker.conn
	opts.readConn, opts.readBuf, opts.frameWriter = hijacker.read, hijacker.br, hijacker.write
	opts.Identity, opts.Claims, opts.Model = grant.Identity, grant.Claims, grant.Model
	opts.ResumeHandle = r.URL.Query().Get(ResumeQueryParam)
	sess := New(conn, opts)
	remove, refusal := a.limits(sess)
	if refusal != nil {
		// What admission took (a client token's use) goes back at once,
		// before the close handshake: a client that saw the refusal and
		// retries must find it given back.
		if grant.Release != nil {
			grant.Release()
			grant.Release = nil
		}
		// The refusal keeps its handshake slot until the connection is
		// closed (Reject cuts a client that does not answer its close
		// frame after abortCloseTimeout): clients refused again and again
		// hold at most --max-handshakes connections between them.
		sess.Reject(refusal)
		sess.acct.Close()
		return
	}
	admitted = true
	// The session runs on its own goroutine so that the handler returns and
	// net/http's per-connection state (request, buffers, a deep stack) is
	// freed for the rest of the call.
	handedOver = true
	go sess.Run(func() {
		remove()
		inFlight.Done()
	})
}
