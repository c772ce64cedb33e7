package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/auth"
	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/session/sessiontest"
)

// These tests hold the limits that keep one pod standing and one
// credential within its share, on real connections to a whole server.

// reusedFailures is the auth failure counter of reused client tokens.
func (h *harness) reusedFailures() float64 {
	return h.counter("auth_failures", auth.ReasonReused)
}

// TestClientTokenIsSingleUse: a client token opens one session on a
// process (--max-sessions-per-token 1, the default); a second upgrade with
// it is refused with 401 unauthorized before any upgrade, counted as a
// reused token and by the rate limiter, which blocks an address that keeps
// replaying tokens.
func TestClientTokenIsSingleUse(t *testing.T) {
	h := start(t, withAuth(t, func(c *config.Config) {
		withBlocking(0)(c)
	}))
	token := h.mint(testAPIKey, "").Value
	query := "token=" + token
	c, _ := h.mustOpen(query, from(otherIP, nil))
	for i := range 3 {
		r := h.mustRefuse(http.StatusUnauthorized, query, from(blockedIP, nil))
		code, _, message := r.errorBody(t)
		if code != "unauthorized" || !strings.Contains(message, "already opened") || strings.Contains(message, token) {
			t.Fatalf("reuse %d: %s %q", i+1, code, message)
		}
	}
	if got := h.reusedFailures(); got != 3 {
		t.Fatalf("reused-token failures = %v, want 3", got)
	}
	// Four failures block (withBlocking): the replaying address is shut out,
	// a fresh token included, while the first session goes on.
	h.mustRefuse(http.StatusUnauthorized, query, from(blockedIP, nil))
	r := h.mustRefuse(http.StatusTooManyRequests, "token="+h.mint(testAPIKey, "").Value, from(blockedIP, nil))
	if code, _, _ := r.errorBody(t); code != "rate_limited" {
		t.Fatalf("replaying address: %s, want rate_limited", code)
	}
	sessiontest.Send(t, c, map[string]any{"type": "session.update", "session": map[string]any{}})
	sessiontest.ReadUntil(t, c, "session.updated")
}

// TestMaxSessionsPerToken: a token may open as many sessions as
// --max-sessions-per-token says, and a use refused after the upgrade (the
// session limit) is given back.
func TestMaxSessionsPerToken(t *testing.T) {
	h := start(t, withAuth(t, func(c *config.Config) {
		c.Sessions.MaxPerToken = 2
		c.Sessions.Limit = 2
	}))
	query := "token=" + h.mint(testAPIKey, "").Value
	other, _ := h.mustOpen("", bearer(testAPIKey))
	h.mustOpen(query, nil)
	// The third session finds the process full: 1013 session_limit, and
	// the token keeps its second use.
	c, r := h.tryAuthDial(query, nil)
	if r != nil {
		t.Fatalf("upgrade refused with HTTP %d", r.status)
	}
	if code, frames := sessiontest.ReadClose(t, c); code != websocket.StatusTryAgainLater || frames[0].ErrorCode() != "session_limit" {
		t.Fatalf("at the session limit: close %v %v", code, frames)
	}
	h.closeNormally(other, 1)
	h.mustOpen(query, nil)
	h.mustRefuse(http.StatusUnauthorized, query, nil)
}

// TestSessionsPerAPIKey: an API key's sessions, opened with it or with the
// client tokens it minted, are capped together; other keys are not
// affected; a place that frees up is taken again.
func TestSessionsPerAPIKey(t *testing.T) {
	keys := writeFile(t, "api-keys", testAPIKey+"\n"+otherAPIKey+"\n")
	h := start(t, func(c *config.Config) {
		c.InsecureNoAuth, c.APIKeysFile = false, keys
		c.Sessions.MaxPerAPIKey = 2
		c.Sessions.MaxPerToken = 5
	})
	direct, _ := h.mustOpen("", bearer(testAPIKey))
	h.mustOpen("token="+h.mint(testAPIKey, "").Value, nil)
	for _, attempt := range []struct {
		name   string
		query  string
		header http.Header
	}{
		{"the key itself", "", bearer(testAPIKey)},
		{"a token the key minted", "token=" + h.mint(testAPIKey, "").Value, nil},
	} {
		c, r := h.tryAuthDial(attempt.query, attempt.header)
		if r != nil {
			t.Fatalf("%s: refused before the upgrade with %d", attempt.name, r.status)
		}
		code, frames := sessiontest.ReadClose(t, c)
		if code != websocket.StatusPolicyViolation || len(frames) != 1 || frames[0].ErrorCode() != "api_key_session_limit" {
			t.Fatalf("%s: close %v %v; want 1008 api_key_session_limit", attempt.name, code, frames)
		}
	}
	h.mustOpen("", bearer(otherAPIKey))
	h.closeNormally(direct, 2)
	h.mustOpen("", bearer(testAPIKey))
	if got := h.counter("errors", "api_key_session_limit"); got != 2 {
		t.Fatalf("api_key_session_limit errors = %v, want 2", got)
	}
}

// TestSessionsPerClientNetwork: the per-address cap counts an IPv6 client
// by its /64, so that a client cannot get past it by moving through the
// addresses of its own allocation; IPv4 addresses and other /64s count on
// their own. The rate limiter counts IPv6 the same way.
func TestSessionsPerClientNetwork(t *testing.T) {
	h := start(t, withAuth(t, func(c *config.Config) {
		withBlocking(0)(c)
		c.Sessions.MaxPerClientIP = 2
	}))
	h.mustOpen("", from("2001:db8:1:2::1", bearer(testAPIKey)))
	h.mustOpen("", from("2001:db8:1:2:ffff:ffff:ffff:ffff", bearer(testAPIKey)))
	c, r := h.tryAuthDial("", from("2001:db8:1:2::abcd", bearer(testAPIKey)))
	if r != nil {
		t.Fatalf("refused before the upgrade with %d", r.status)
	}
	if code, frames := sessiontest.ReadClose(t, c); code != websocket.StatusPolicyViolation || frames[0].ErrorCode() != "client_ip_session_limit" {
		t.Fatalf("third session of one /64: close %v %v; want 1008 client_ip_session_limit", code, frames)
	}
	h.mustOpen("", from("2001:db8:1:3::1", bearer(testAPIKey)))
	h.mustOpen("", from("203.0.113.20", bearer(testAPIKey)))
	h.mustOpen("", from("203.0.113.21", bearer(testAPIKey)))

	// Failed authentications from four addresses of one /64 block all of
	// it (withBlocking: blocked after four).
	for i := range 4 {
		h.mustRefuse(http.StatusUnauthorized, "", from(fmt.Sprintf("2001:db8:9:9::%x", i+1), bearer(wrongAPIKey)))
	}
	h.mustRefuse(http.StatusTooManyRequests, "", from("2001:db8:9:9:1:2:3:4", bearer(testAPIKey)))
	h.mustOpen("", from("2001:db8:9:a::1", bearer(testAPIKey)))
}

// TestRevokedAPIKeyEndsItsSessions: when an API key leaves the key file,
// the sessions it opened — with the key itself or through the tokens it
// minted — end with 1008 credential_revoked at the next poll; sessions of
// other keys go on.
func TestRevokedAPIKeyEndsItsSessions(t *testing.T) {
	keys := writeFile(t, "api-keys", testAPIKey+"\n"+otherAPIKey+"\n")
	h := start(t, func(c *config.Config) {
		c.InsecureNoAuth, c.APIKeysFile = false, keys
		c.SecretPollInterval = 100 * time.Millisecond
	})
	direct, _ := h.mustOpen("", bearer(testAPIKey))
	viaToken, _ := h.mustOpen("token="+h.mint(testAPIKey, "").Value, nil)
	kept, _ := h.mustOpen("", bearer(otherAPIKey))
	testkit.ReplaceFile(t, keys, otherAPIKey+"\n")
	for name, c := range map[string]*websocket.Conn{"the key's own": direct, "its token's": viaToken} {
		code, frames := sessiontest.ReadClose(t, c)
		if code != websocket.StatusPolicyViolation || len(frames) == 0 || frames[len(frames)-1].ErrorCode() != "credential_revoked" {
			t.Fatalf("%s session: close %v %v; want 1008 credential_revoked", name, code, frames)
		}
	}
	h.waitSessions(1)
	sessiontest.Send(t, kept, map[string]any{"type": "session.update", "session": map[string]any{}})
	sessiontest.ReadUntil(t, kept, "session.updated")
	h.mustRefuse(http.StatusUnauthorized, "", bearer(testAPIKey))
}

// TestTokenModelClaimHolds: a token minted for one model refuses a
// session.update that names another with invalid_event; the session goes
// on.
func TestTokenModelClaimHolds(t *testing.T) {
	h := start(t, withAuth(t, nil))
	token := h.mint(testAPIKey, `{"session":{"model":"gpt-realtime-mini","voice":"alloy"}}`).Value
	c, _ := h.mustOpen("token="+token, nil)
	sessiontest.Send(t, c, map[string]any{"type": "session.update", "session": map[string]any{"model": "gpt-realtime"}})
	f := sessiontest.ReadUntil(t, c, "error")
	if e := f[len(f)-1].Event["error"].(map[string]any); e["code"] != "invalid_event" || e["param"] != "session.model" {
		t.Fatalf("another model: %v", e)
	}
	sessiontest.Send(t, c, map[string]any{"type": "session.update", "session": map[string]any{"voice": "alloy"}})
	sessiontest.ReadUntil(t, c, "session.updated")
}

// TestHTTPLimits: headers over the limit are refused with 431, a keep-alive
// connection idle past the idle timeout and a client that does not finish
// its headers (slowloris) are closed by the server, and an ordinary request
// still works meanwhile.
func TestHTTPLimits(t *testing.T) {
	h := start(t, nil, func(s *Server) {
		s.httpLimits.idle = 300 * time.Millisecond
		s.httpLimits.readHeader = 300 * time.Millisecond
	})
	addr := strings.TrimPrefix(h.httpURL, "http://")

	t.Run("headers over 32 KiB", func(t *testing.T) {
		req, _ := http.NewRequest(http.MethodGet, h.httpURL+"/", nil)
		req.Header.Set("X-Filler", strings.Repeat("a", 40<<10))
		resp, err := plainClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Fatalf("40 KiB of headers: HTTP %d, want 431", resp.StatusCode)
		}
		req.Header.Set("X-Filler", strings.Repeat("a", 16<<10))
		if resp, err = plainClient.Do(req); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("16 KiB of headers: %v %v, want 200", resp, err)
		}
		resp.Body.Close()
	})

	t.Run("idle keep-alive", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		start := time.Now()
		if n, err := conn.Read(make([]byte, 1)); err == nil {
			t.Fatalf("read %d bytes from an idle connection", n)
		}
		if held := time.Since(start); held > 5*time.Second {
			t.Fatalf("an idle keep-alive connection was held %s", held)
		}
	})

	t.Run("slowloris", func(t *testing.T) {
		conn, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		start := time.Now()
		fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n")
		var closed bool
		for i := 0; i < 50 && !closed; i++ {
			time.Sleep(100 * time.Millisecond)
			if _, err := fmt.Fprintf(conn, "X-%d: y\r\n", i); err != nil {
				closed = true
			}
			_ = conn.SetReadDeadline(time.Now().Add(time.Millisecond))
			if _, err := conn.Read(make([]byte, 512)); err != nil && !os.IsTimeout(err) {
				closed = true
			}
		}
		if !closed {
			t.Fatalf("a client trickling its headers was still connected after %s", time.Since(start))
		}
	})
}

// TestSuspiciousWaitersAndHandshakeCap: the requests that are not a
// session yet are capped (--max-handshakes); one more gets 503
// server_busy with Retry-After before any work is done for it. Requests
// waiting out the rate limiter's delay may hold half of the slots; more are
// refused with 429 at once, so honest handshakes keep the other half.
func TestSuspiciousWaitersAndHandshakeCap(t *testing.T) {
	// wait holds n suspicious upgrades in the rate limiter's delay.
	wait := func(t *testing.T, h *harness, n int) {
		t.Helper()
		for range 2 { // two failures make the address suspicious
			h.mustRefuse(http.StatusUnauthorized, "", from(blockedIP, bearer(wrongAPIKey)))
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{}, n)
		for range n {
			go func() {
				dialRaw(ctx, h.realtimeURL(""), from(blockedIP, bearer(testAPIKey)), nil)
				done <- struct{}{}
			}()
		}
		t.Cleanup(func() {
			cancel()
			for range n {
				<-done
			}
		})
		testkit.Eventually(t, 5*time.Second, testkit.That(fmt.Sprintf("%d suspicious requests waiting", n), func() bool {
			return h.srv.suspiciousWaiting.Load() == int64(n)
		}))
	}
	t.Run("handshake cap", func(t *testing.T) {
		h := start(t, withAuth(t, func(c *config.Config) {
			withBlocking(3 * time.Second)(c)
			c.Sessions.MaxHandshakes = 1
		}))
		wait(t, h, 1)
		r := h.mustRefuse(http.StatusServiceUnavailable, "", from(otherIP, bearer(testAPIKey)))
		if code, _, _ := r.errorBody(t); code != "server_busy" || r.retryAfter(t) != 1 {
			t.Fatalf("with every slot taken: %s, Retry-After %d; want server_busy, 1", code, r.retryAfter(t))
		}
		if got := testutil.ToFloat64(h.srv.Metrics().UpgradesRejected.WithLabelValues("server_busy")); got != 1 {
			t.Fatalf("server_busy refusals = %v", got)
		}
	})
	t.Run("suspicious waiters take half", func(t *testing.T) {
		h := start(t, withAuth(t, func(c *config.Config) {
			withBlocking(3 * time.Second)(c)
			c.Sessions.MaxHandshakes = 4
		}))
		wait(t, h, 2)
		start := time.Now()
		r := h.mustRefuse(http.StatusTooManyRequests, "", from(blockedIP, bearer(testAPIKey)))
		if code, _, _ := r.errorBody(t); code != "rate_limited" || time.Since(start) > 2*time.Second {
			t.Fatalf("a third waiter: %s after %s; want rate_limited at once", code, time.Since(start))
		}
		h.mustOpen("", from(otherIP, bearer(testAPIKey)))
	})
}

// TestBoundedFileReads: files named by flags are read with a bound and
// only when they are regular files: an API key file that is a device or a
// named pipe fails the start at once; a rate limiter state file that is
// too large, a device or a pipe is ignored (the limiter starts empty) and
// the server serves.
func TestBoundedFileReads(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/dev/zero", fifo} {
		cfg := testConfig()
		cfg.InsecureNoAuth, cfg.APIKeysFile = false, path
		done := make(chan error, 1)
		go func() {
			_, err := New(cfg, testLogger(t), clock.RealClock{})
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), "--api-keys-file") {
				t.Errorf("--api-keys-file %s: %v, want a refusal naming the flag", path, err)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("--api-keys-file %s: New still running after 5 s", path)
		}
	}
	// The state file: too large, or a named pipe (never a device here:
	// the state is written back at shutdown, and a test must not be able
	// to replace one).
	big := filepath.Join(dir, "state.json")
	if err := os.WriteFile(big, []byte(`{"version":1,"entries":[`+strings.Repeat(" ", 2<<20)+`]}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{big, fifo} {
		cfg := testConfig()
		cfg.RateLimit.StateFile = path
		cfg.RateLimit.MaxTracked = 100 // a 1 MiB bound
		srv, err := New(cfg, testLogger(t), clock.RealClock{})
		if err != nil {
			t.Fatalf("state file %s: New: %v", path, err)
		}
		public, _ := net.Listen("tcp", "127.0.0.1:0")
		adminLn, _ := net.Listen("tcp", "127.0.0.1:0")
		done := make(chan error, 1)
		go func() { done <- srv.Serve(context.Background(), public, adminLn) }()
		c := sessiontest.Dial(t, "ws://"+public.Addr().String()+PathRealtime, "", nil)
		sessiontest.ReadUntil(t, c, "session.created")
		srv.ForceDrain()
		err = <-done
		info, statErr := os.Lstat(path)
		switch {
		case path == fifo && (err == nil || statErr != nil || info.Mode()&os.ModeNamedPipe == 0):
			t.Fatalf("state file a named pipe: Serve = %v; the pipe must be left as it is and the export refused", err)
		case path == big && err != nil:
			t.Fatalf("state file too large to read: Serve = %v; the export replaces it", err)
		}
	}
}
