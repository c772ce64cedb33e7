package openai

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/version"
)

// newHTTPClient is the client every upstream handshake goes through.
// Keep-alives are off: a successful handshake hands its connection to the
// WebSocket, and a refused one must not leave an idle connection (and its
// goroutines) behind. The dialer records each TCP connection in the
// rawConn carried by the request context, so that a close can be bounded
// by cutting it.
func newHTTPClient() *http.Client {
	dialer := &net.Dialer{KeepAlive: 30 * time.Second}
	return &http.Client{Transport: &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			conn, err := dialer.DialContext(ctx, network, addr)
			if err == nil {
				if raw, ok := ctx.Value(rawConnKey{}).(*rawConn); ok {
					raw.set(conn)
				}
			}
			return conn, err
		},
		DisableKeepAlives: true,
	}}
}

type rawConnKey struct{}

// rawConn is the TCP connection under an upstream WebSocket. Closing it is
// the last resort for a peer that answers neither data nor close frames:
// the library's own close waits seconds for such a peer.
type rawConn struct {
	mu   sync.Mutex
	conn net.Conn
}

func (r *rawConn) set(conn net.Conn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.conn = conn
}

func (r *rawConn) close() {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conn != nil {
		_ = r.conn.Close()
	}
}

// dial opens c's upstream WebSocket. Failures are classified, counted and
// returned as the *protocol.Error for the client; a session that ended
// while dialling gets its context's error, which is nobody's fault.
func (b *Backend) dial(c *conn) (*websocket.Conn, error) {
	dialCtx, cancel := context.WithTimeout(c.ctx, b.cfg.DialTimeout)
	defer cancel()
	dialCtx = context.WithValue(dialCtx, rawConnKey{}, c.raw)
	up, resp, err := websocket.Dial(dialCtx, c.url, &websocket.DialOptions{
		HTTPClient: b.client,
		HTTPHeader: http.Header{
			"Authorization": {"Bearer " + b.key.Value()},
			"User-Agent":    {"voicegateway/" + version.Version},
		},
		// Audio does not compress, and a deflate context costs tens of
		// kilobytes per session.
		CompressionMode: websocket.CompressionDisabled,
		// Control frames are signs of life too: a quiet upstream that
		// answers pings is idle, not stalled.
		OnPingReceived: func(context.Context, []byte) bool { c.heard(); return true },
		OnPongReceived: func(context.Context, []byte) { c.heard() },
	})
	if err == nil {
		// msgbuf.ReadMessage enforces the limit and reports it; the library's
		// own limit only backs it up.
		up.SetReadLimit(b.cfg.MaxMessageBytes + 1)
		return up, nil
	}
	if c.ctx.Err() != nil {
		return nil, c.ctx.Err()
	}
	var f fault
	switch {
	case resp != nil && (resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden):
		f = dialUnauthorized(resp.StatusCode)
	case resp != nil:
		f = dialRefused(resp.StatusCode)
	case errors.Is(dialCtx.Err(), context.DeadlineExceeded):
		f = dialTimedOut(b.cfg.DialTimeout)
	default:
		f = dialUnreachable()
	}
	b.metrics.UpstreamErrors.WithLabelValues(f.kind).Inc()
	// The URL may carry a credential in its query; neither the URL nor the
	// error, which may quote it, is logged as it is.
	b.log.Error(errors.New(config.RedactIn(err.Error(), c.url)), "upstream dial failed",
		"session", c.info.SessionID, "kind", f.kind, "url", config.RedactURL(c.url))
	return nil, f.err
}
