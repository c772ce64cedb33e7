package gateway

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus/testutil"
	testingclock "k8s.io/utils/clock/testing"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/admin/adminapi"
	"github.com/voicegateway/voicegateway/server/auth"
	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/ratelimit"
	"github.com/voicegateway/voicegateway/server/session/sessiontest"
)

// Credentials and client addresses used by the authentication tests. API
// keys must be at least auth.MinKeyLen bytes.
const (
	testAPIKey  = "test-api-key-0123456789abcdef"
	otherAPIKey = "other-api-key-0123456789abcdef"
	wrongAPIKey = "wrong-api-key-0123456789abcdef"
	// blockedIP and otherIP are documentation addresses (RFC 5737) sent in
	// X-Forwarded-For through a trusted loopback proxy.
	blockedIP = "203.0.113.7"
	otherIP   = "203.0.113.8"
)

// authReasons are the metric labels of authentication failures.
var authReasons = []string{auth.ReasonMissing, auth.ReasonMalformed, auth.ReasonInvalid, auth.ReasonExpired}

// withAuth returns a harness mutation that turns authentication on with a
// key file holding testAPIKey. Its rate limit thresholds are far above what
// a test fails on purpose, so that only the rate limiter's own tests are
// slowed or blocked; more, when set, runs last and may lower them.
func withAuth(t *testing.T, more func(*config.Config)) func(*config.Config) {
	t.Helper()
	keys := writeFile(t, "api-keys", "# test keys\n"+testAPIKey+"\n")
	return func(c *config.Config) {
		c.InsecureNoAuth = false
		c.APIKeysFile = keys
		c.RateLimit.SuspiciousAfter = 1000
		c.RateLimit.BlockAfter = 1001
		if more != nil {
			more(c)
		}
	}
}

// withBlocking is the rate limiting the limiter tests run with: suspicious
// after two failures, blocked after four, and loopback trusted as a proxy
// so that each test client can speak for an address of its choosing.
func withBlocking(delay time.Duration) func(*config.Config) {
	return func(c *config.Config) {
		c.RateLimit.SuspiciousAfter = 2
		c.RateLimit.BlockAfter = 4
		c.RateLimit.SuspiciousDelay = delay
		c.RateLimit.TrustedProxies = []string{"127.0.0.1"}
	}
}

// headers builds a request header from name/value pairs.
func headers(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Add(kv[i], kv[i+1])
	}
	return h
}

func bearer(credential string) http.Header { return headers("Authorization", "Bearer "+credential) }

// from returns h with X-Forwarded-For set to ip, as a trusted proxy in
// front of the gateway would send it.
func from(ip string, h http.Header) http.Header {
	h = h.Clone()
	if h == nil {
		h = http.Header{}
	}
	h.Set("X-Forwarded-For", ip)
	return h
}

// refusal is a response that refused a request before any session existed.
type refusal struct {
	status int
	header http.Header
	body   []byte
}

// errorBody returns error.code and error.type of a refusal's JSON body
// and fails the test unless the body is exactly {"error": {...}}.
func (r refusal) errorBody(t *testing.T) (code, typ, message string) {
	t.Helper()
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &doc); err != nil {
		t.Fatalf("refusal body %q is not a JSON object: %v", r.body, err)
	}
	if len(doc) != 1 || doc["error"] == nil {
		t.Fatalf("refusal body %s: want exactly one field, error", r.body)
	}
	var e struct{ Code, Type, Message string }
	if err := json.Unmarshal(doc["error"], &e); err != nil {
		t.Fatalf("refusal body %s: %v", r.body, err)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("refusal Content-Type = %q, want application/json", ct)
	}
	return e.Code, e.Type, e.Message
}

// retryAfter parses the Retry-After header in seconds, failing the test if
// it is missing or not a number.
func (r refusal) retryAfter(t *testing.T) int {
	t.Helper()
	v := r.header.Get("Retry-After")
	n, err := strconv.Atoi(v)
	if err != nil {
		t.Fatalf("Retry-After = %q, want whole seconds", v)
	}
	return n
}

// dialResult is what one WebSocket handshake ended with: a connection, or
// the refusal, or an error that is neither.
type dialResult struct {
	conn    *websocket.Conn
	refused *refusal
	err     error
}

// dialRaw opens a session as a browser or SDK would and never calls into
// testing.T, so it may run on any goroutine.
func dialRaw(ctx context.Context, url string, header http.Header, subprotocols []string) dialResult {
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{HTTPHeader: header, Subprotocols: subprotocols})
	if err == nil {
		c.SetReadLimit(1 << 20)
		return dialResult{conn: c}
	}
	if resp == nil || resp.StatusCode == http.StatusSwitchingProtocols {
		return dialResult{err: err}
	}
	r := &refusal{status: resp.StatusCode, header: resp.Header}
	if resp.Body != nil {
		// The client library hands back the first KiB of the body, already
		// read; refusals are far shorter.
		r.body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	return dialResult{refused: r}
}

// realtimeURL returns the session URL with query appended.
func (h *harness) realtimeURL(query string) string {
	if query == "" {
		return h.wsURL
	}
	return h.wsURL + "?" + query
}

// tryAuthDial opens a session and returns the connection, closed when the
// test ends, or the refusal.
func (h *harness) tryAuthDial(query string, header http.Header, subprotocols ...string) (*websocket.Conn, *refusal) {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := dialRaw(ctx, h.realtimeURL(query), header, subprotocols)
	h.t.Cleanup(http.DefaultClient.CloseIdleConnections)
	switch {
	case res.err != nil:
		h.t.Fatalf("dial: %v", res.err)
	case res.conn != nil:
		h.t.Cleanup(func() { res.conn.CloseNow() })
	}
	return res.conn, res.refused
}

// mustOpen opens a session that must be accepted and returns it with its
// session.created event.
func (h *harness) mustOpen(query string, header http.Header, subprotocols ...string) (*websocket.Conn, sessiontest.Frame) {
	h.t.Helper()
	c, r := h.tryAuthDial(query, header, subprotocols...)
	if r != nil {
		h.t.Fatalf("upgrade refused with HTTP %d: %s", r.status, r.body)
	}
	return c, sessiontest.ReadUntil(h.t, c, "session.created")[0]
}

// mustRefuse attempts a session that must be refused with status and
// returns the refusal.
func (h *harness) mustRefuse(status int, query string, header http.Header, subprotocols ...string) refusal {
	h.t.Helper()
	c, r := h.tryAuthDial(query, header, subprotocols...)
	if c != nil {
		h.t.Fatalf("upgrade accepted (subprotocol %q), want HTTP %d", c.Subprotocol(), status)
	}
	if r.status != status {
		h.t.Fatalf("upgrade refused with HTTP %d %s, want %d", r.status, r.body, status)
	}
	return *r
}

// plainClient sends the tests' plain HTTP requests without keeping
// connections, so nothing idles past a test.
var plainClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// post sends a POST to the public listener.
func (h *harness) post(pathAndQuery string, header http.Header, body string) refusal {
	h.t.Helper()
	req, err := http.NewRequest(http.MethodPost, h.httpURL+pathAndQuery, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := plainClient.Do(req)
	if err != nil {
		h.t.Fatalf("POST %s: %v", pathAndQuery, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("POST %s: reading the body: %v", pathAndQuery, err)
	}
	return refusal{status: resp.StatusCode, header: resp.Header, body: data}
}

// mintedToken is the body of a 200 from POST /v1/client_tokens.
type mintedToken struct {
	Value     string `json:"value"`
	ExpiresAt int64  `json:"expires_at"`
}

// mint asks for a client token with apiKey and fails the test unless one
// is issued.
func (h *harness) mint(apiKey, body string) mintedToken {
	h.t.Helper()
	return mintAt[mintedToken](h, PathClientTokens, apiKey, body)
}

// mintAt POSTs body to a mint endpoint with apiKey and decodes the 200
// into T, failing the test on any other answer.
func mintAt[T any](h *harness, path, apiKey, body string) T {
	h.t.Helper()
	resp := h.post(path, bearer(apiKey), body)
	if resp.status != http.StatusOK {
		h.t.Fatalf("POST %s: HTTP %d %s", path, resp.status, resp.body)
	}
	var v T
	if err := json.Unmarshal(resp.body, &v); err != nil {
		h.t.Fatalf("POST %s response %q: %v", path, resp.body, err)
	}
	return v
}

// authFailures returns the auth failure counters by reason.
func (h *harness) authFailures() map[string]float64 {
	got := map[string]float64{}
	for _, r := range authReasons {
		got[r] = h.counter("auth_failures", r)
	}
	return got
}

// checkAuthFailures fails the test unless the counters grew from before by
// exactly one failure of reason (none when reason is empty).
func (h *harness) checkAuthFailures(before map[string]float64, reason string) {
	h.t.Helper()
	after := h.authFailures()
	for _, r := range authReasons {
		want := before[r]
		if r == reason {
			want++
		}
		if after[r] != want {
			h.t.Errorf("auth failures {reason=%q} = %v, want %v", r, after[r], want)
		}
	}
}

func (h *harness) tokensMinted() float64 {
	return testutil.ToFloat64(h.srv.Metrics().ClientTokensMinted)
}

// gatewayInfo returns the gateway object of a session.created event.
func gatewayInfo(t *testing.T, created sessiontest.Frame) map[string]any {
	t.Helper()
	gw, ok := created.Event["gateway"].(map[string]any)
	if !ok {
		t.Fatalf("session.created has no gateway object: %v", created.Event)
	}
	return gw
}

// closeNormally ends a session from the client side and waits until the
// server has let go of it.
func (h *harness) closeNormally(c *websocket.Conn, sessionsLeft int) {
	h.t.Helper()
	if err := c.Close(websocket.StatusNormalClosure, "done"); err != nil {
		h.t.Fatalf("close: %v", err)
	}
	h.waitSessions(sessionsLeft)
}

func TestUpgradeAuthentication(t *testing.T) {
	cases := []struct {
		name         string
		query        string
		header       http.Header
		subprotocols []string
		// wantReason is the auth failure metric label of the refusal;
		// empty means the session is accepted.
		wantReason string
	}{
		{name: "no credentials", wantReason: auth.ReasonMissing},
		{name: "unknown API key", header: bearer(wrongAPIKey), wantReason: auth.ReasonInvalid},
		{name: "API key in the query", query: "token=" + testAPIKey, wantReason: auth.ReasonMalformed},
		{name: "API key in the token subprotocol", subprotocols: []string{"realtime", auth.SubprotocolTokenPrefix + testAPIKey}, wantReason: auth.ReasonMalformed},
		{name: "API key in the OpenAI subprotocol", subprotocols: []string{"realtime", auth.SubprotocolOpenAIKeyPrefix + testAPIKey}, wantReason: auth.ReasonMalformed},
		{name: "Basic scheme", header: headers("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte("user:"+testAPIKey))), wantReason: auth.ReasonMalformed},
		{name: "empty bearer", header: headers("Authorization", "Bearer "), wantReason: auth.ReasonMalformed},
		{name: "two Authorization headers", header: headers("Authorization", "Bearer "+testAPIKey, "Authorization", "Bearer "+testAPIKey), wantReason: auth.ReasonMalformed},
		{name: "API key and a different token", query: "token=" + auth.TokenPrefix + "x.y", header: bearer(testAPIKey), wantReason: auth.ReasonMalformed},
		{name: "not a client token", query: "token=" + auth.TokenPrefix + "not-a-token", wantReason: auth.ReasonMalformed},
		{name: "API key in the header", header: bearer(testAPIKey)},
		{name: "lower-case scheme", header: headers("Authorization", "bearer "+testAPIKey)},
		{name: "API key in the header, realtime offered", header: bearer(testAPIKey), subprotocols: []string{"realtime"}},
	}
	h := start(t, withAuth(t, nil))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := *h
			h.t = t
			before := h.authFailures()
			if tc.wantReason == "" {
				c, created := h.mustOpen(tc.query, tc.header, tc.subprotocols...)
				if id, _ := gatewayInfo(t, created)["session_id"].(string); !strings.HasPrefix(id, "sess_") {
					t.Errorf("session_id = %q", id)
				}
				if want := strings.Join(tc.subprotocols, ""); c.Subprotocol() != want {
					t.Errorf("selected subprotocol = %q, want %q", c.Subprotocol(), want)
				}
				h.checkAuthFailures(before, "")
				h.closeNormally(c, 0)
				return
			}
			r := h.mustRefuse(http.StatusUnauthorized, tc.query, tc.header, tc.subprotocols...)
			code, typ, message := r.errorBody(t)
			if code != "unauthorized" || typ != "invalid_request_error" || message == "" {
				t.Errorf("error = {code %q, type %q, message %q}", code, typ, message)
			}
			if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Errorf("WWW-Authenticate = %q, want the Bearer scheme", got)
			}
			for _, secret := range []string{testAPIKey, wrongAPIKey} {
				if strings.Contains(string(r.body), secret) || strings.Contains(r.header.Get("WWW-Authenticate"), secret) {
					t.Errorf("the refusal repeats a credential: %s", r.body)
				}
			}
			h.checkAuthFailures(before, tc.wantReason)
			if n := h.srv.Sessions().Len(); n != 0 {
				t.Errorf("sessions = %d after a refusal", n)
			}
		})
	}
}

func TestMintClientToken(t *testing.T) {
	cases := []struct {
		name string
		body string
		// wantTTL is the lifetime expires_at must say.
		wantTTL time.Duration
	}{
		{name: "no body", body: "", wantTTL: 60 * time.Second},
		{name: "empty object", body: `{}`, wantTTL: 60 * time.Second},
		{name: "expires_in", body: `{"expires_in": 120}`, wantTTL: 120 * time.Second},
		{name: "the maximum", body: `{"expires_in": 600}`, wantTTL: 10 * time.Minute},
		{name: "session claims", body: `{"expires_in": 30, "session": {"audio": "binary"}}`, wantTTL: 30 * time.Second},
	}
	// A fake clock on a whole second makes expires_at exact.
	clk := testingclock.NewFakeClock(time.Unix(1_795_000_000, 0))
	h := startWithClock(t, clk, withAuth(t, nil))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := *h
			h.t = t
			minted := h.tokensMinted()
			resp := h.post(PathClientTokens, bearer(testAPIKey), tc.body)
			if resp.status != http.StatusOK {
				t.Fatalf("HTTP %d %s", resp.status, resp.body)
			}
			if got := resp.header.Get("Cache-Control"); got != "no-store" {
				t.Errorf("Cache-Control = %q, want no-store", got)
			}
			if got := resp.header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type = %q", got)
			}
			var body map[string]any
			if err := json.Unmarshal(resp.body, &body); err != nil {
				t.Fatalf("body %q: %v", resp.body, err)
			}
			value, _ := body["value"].(string)
			expiresAt, _ := body["expires_at"].(float64)
			if len(body) != 2 || !strings.HasPrefix(value, auth.TokenPrefix) {
				t.Fatalf("body = %s, want {value: %s…, expires_at}", resp.body, auth.TokenPrefix)
			}
			if want := clk.Now().Add(tc.wantTTL).Unix(); int64(expiresAt) != want {
				t.Errorf("expires_at = %v, want %d (now + %s)", expiresAt, want, tc.wantTTL)
			}
			if got := h.tokensMinted(); got != minted+1 {
				t.Errorf("tokens minted = %v, want %v", got, minted+1)
			}
		})
	}
}

func TestMintClientTokenRefusals(t *testing.T) {
	h := start(t, withAuth(t, nil))
	token := h.mint(testAPIKey, "").Value
	cases := []struct {
		name   string
		query  string
		header http.Header
		body   string
		// wantStatus and wantCode are the HTTP status and error.code.
		wantStatus int
		wantCode   string
	}{
		{name: "no credentials", wantStatus: http.StatusUnauthorized, wantCode: "unauthorized"},
		{name: "unknown API key", header: bearer(wrongAPIKey), wantStatus: http.StatusUnauthorized, wantCode: "unauthorized"},
		{name: "API key in the query", query: "?token=" + testAPIKey, wantStatus: http.StatusUnauthorized, wantCode: "unauthorized"},
		{name: "client token in the header", header: bearer(token), wantStatus: http.StatusForbidden, wantCode: "unauthorized"},
		{name: "client token in the query", query: "?token=" + token, wantStatus: http.StatusForbidden, wantCode: "unauthorized"},
		{name: "not JSON", header: bearer(testAPIKey), body: "expires_in=60", wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
		{name: "JSON array", header: bearer(testAPIKey), body: "[60]", wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
		{name: "expires_in as a string", header: bearer(testAPIKey), body: `{"expires_in": "60"}`, wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
		{name: "fractional expires_in", header: bearer(testAPIKey), body: `{"expires_in": 1.5}`, wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
		{name: "negative expires_in", header: bearer(testAPIKey), body: `{"expires_in": -1}`, wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
		{name: "expires_in over the maximum", header: bearer(testAPIKey), body: `{"expires_in": 601}`, wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
		{name: "expires_in of a year", header: bearer(testAPIKey), body: `{"expires_in": 31536000}`, wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
		{name: "expires_in overflowing a duration", header: bearer(testAPIKey), body: `{"expires_in": 18446744074}`, wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
		{name: "session claim with a space", header: bearer(testAPIKey), body: `{"session": {"audio": "bin ary"}}`, wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
		{name: "body over 4 KiB", header: bearer(testAPIKey), body: `{"expires_in": 60, "pad": "` + strings.Repeat("x", 5000) + `"}`, wantStatus: http.StatusBadRequest, wantCode: "invalid_event"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := *h
			h.t = t
			minted := h.tokensMinted()
			r := h.post(PathClientTokens+tc.query, tc.header, tc.body)
			if r.status != tc.wantStatus {
				t.Fatalf("HTTP %d %s, want %d", r.status, r.body, tc.wantStatus)
			}
			if code, _, message := r.errorBody(t); code != tc.wantCode || message == "" {
				t.Errorf("error code %q message %q, want code %s", code, message, tc.wantCode)
			}
			if got := r.header.Get("WWW-Authenticate"); r.status == http.StatusUnauthorized && !strings.HasPrefix(got, "Bearer") {
				t.Errorf("WWW-Authenticate = %q on a 401, want the Bearer scheme", got)
			}
			if strings.Contains(string(r.body), token) || strings.Contains(string(r.body), testAPIKey) {
				t.Errorf("the refusal carries a credential: %s", r.body)
			}
			if got := h.tokensMinted(); got != minted {
				t.Errorf("tokens minted went from %v to %v on a refusal", minted, got)
			}
		})
	}
}

func TestClientTokenOpensSession(t *testing.T) {
	cases := []struct {
		name string
		// mintBody is the body of the mint request.
		mintBody string
		// query, header and subprotocols carry the token tok.
		query        func(tok string) string
		header       func(tok string) http.Header
		subprotocols func(tok string) []string
		// wantSubprotocol is the protocol the server must select.
		wantSubprotocol string
		wantTransport   string
	}{
		{
			name:          "query",
			query:         func(tok string) string { return "token=" + tok },
			wantTransport: "base64",
		},
		{
			name:            "gateway subprotocol",
			subprotocols:    func(tok string) []string { return []string{"realtime", auth.SubprotocolTokenPrefix + tok} },
			wantSubprotocol: "realtime", wantTransport: "base64",
		},
		{
			name:            "gateway subprotocol offered first",
			subprotocols:    func(tok string) []string { return []string{auth.SubprotocolTokenPrefix + tok, "realtime"} },
			wantSubprotocol: "realtime", wantTransport: "base64",
		},
		{
			name:            "OpenAI subprotocol",
			subprotocols:    func(tok string) []string { return []string{"realtime", auth.SubprotocolOpenAIKeyPrefix + tok} },
			wantSubprotocol: "realtime", wantTransport: "base64",
		},
		{
			name:            "gateway protocol name",
			subprotocols:    func(tok string) []string { return []string{auth.SubprotocolTokenPrefix + tok, "voicegateway.v1"} },
			wantSubprotocol: "voicegateway.v1", wantTransport: "base64",
		},
		{
			name:          "Authorization header",
			header:        bearer,
			wantTransport: "base64",
		},
		{
			name:          "binary audio claim",
			mintBody:      `{"session": {"audio": "binary"}}`,
			query:         func(tok string) string { return "token=" + tok },
			wantTransport: "binary",
		},
		{
			name:            "binary audio claim in a subprotocol",
			mintBody:        `{"session": {"audio": "binary"}}`,
			subprotocols:    func(tok string) []string { return []string{"realtime", auth.SubprotocolOpenAIKeyPrefix + tok} },
			wantSubprotocol: "realtime", wantTransport: "binary",
		},
		{
			name:          "binary audio asked for in the query",
			query:         func(tok string) string { return "audio=binary&token=" + tok },
			wantTransport: "binary",
		},
	}
	h := start(t, withAuth(t, nil))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := *h
			h.t = t
			tok := h.mint(testAPIKey, tc.mintBody).Value
			var query string
			var header http.Header
			var subprotocols []string
			if tc.query != nil {
				query = tc.query(tok)
			}
			if tc.header != nil {
				header = tc.header(tok)
			}
			if tc.subprotocols != nil {
				subprotocols = tc.subprotocols(tok)
			}
			before := h.authFailures()
			c, created := h.mustOpen(query, header, subprotocols...)
			if c.Subprotocol() != tc.wantSubprotocol {
				t.Errorf("selected subprotocol = %q, want %q", c.Subprotocol(), tc.wantSubprotocol)
			}
			if got := gatewayInfo(t, created)["audio_transport"]; got != tc.wantTransport {
				t.Errorf("audio_transport = %v, want %s", got, tc.wantTransport)
			}
			h.checkAuthFailures(before, "")
			h.closeNormally(c, 0)
		})
	}
}

// tamper returns tok with its payload rewritten by edit and its signature
// kept, as an attacker who cannot sign would make it.
func tamper(t *testing.T, tok string, edit func(payload map[string]any)) string {
	t.Helper()
	parts := strings.Split(strings.TrimPrefix(tok, auth.TokenPrefix), ".")
	if len(parts) != 3 {
		t.Fatalf("token is not <key id>.<payload>.<signature>")
	}
	keyID, signed, mac := parts[0], parts[1], parts[2]
	raw, err := base64.RawURLEncoding.DecodeString(signed)
	if err != nil {
		t.Fatal(err)
	}
	var payload map[string]any
	if err := json.Unmarshal(raw, &payload); err != nil {
		t.Fatal(err)
	}
	edit(payload)
	raw, err = json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	return auth.TokenPrefix + keyID + "." + base64.RawURLEncoding.EncodeToString(raw) + "." + mac
}

func TestClientTokenRefused(t *testing.T) {
	t.Run("expired", func(t *testing.T) {
		clk := testingclock.NewFakeClock(time.Unix(1_795_000_000, 0))
		h := startWithClock(t, clk, withAuth(t, nil))
		tok := h.mint(testAPIKey, `{"expires_in": 30}`)
		if want := clk.Now().Add(30 * time.Second).Unix(); tok.ExpiresAt != want {
			t.Fatalf("expires_at = %d, want %d", tok.ExpiresAt, want)
		}
		clk.Step(29 * time.Second)
		c, _ := h.mustOpen("token="+tok.Value, nil)
		h.closeNormally(c, 0)

		clk.Step(time.Second)
		before := h.authFailures()
		r := h.mustRefuse(http.StatusUnauthorized, "token="+tok.Value, nil)
		if code, _, message := r.errorBody(t); code != "unauthorized" || !strings.Contains(message, "expired") {
			t.Errorf("error code %q message %q, want unauthorized saying the token expired", code, message)
		}
		h.checkAuthFailures(before, auth.ReasonExpired)
	})

	t.Run("tampered", func(t *testing.T) {
		h := start(t, withAuth(t, nil))
		tok := h.mint(testAPIKey, `{"expires_in": 30}`).Value
		cases := []struct {
			name string
			edit func(map[string]any)
		}{
			{name: "lifetime extended", edit: func(p map[string]any) { p["exp"] = p["exp"].(float64) + 3600 }},
			{name: "binary audio granted", edit: func(p map[string]any) { p["ses"] = map[string]any{"audio": "binary"} }},
		}
		for _, tc := range cases {
			t.Run(tc.name, func(t *testing.T) {
				h := *h
				h.t = t
				before := h.authFailures()
				r := h.mustRefuse(http.StatusUnauthorized, "token="+tamper(t, tok, tc.edit), nil)
				if code, _, _ := r.errorBody(t); code != "unauthorized" {
					t.Errorf("error code %q, want unauthorized", code)
				}
				h.checkAuthFailures(before, auth.ReasonInvalid)
			})
		}
		// The untouched token still works.
		c, _ := h.mustOpen("token="+tok, nil)
		h.closeNormally(c, 0)
	})

	t.Run("minted by another server", func(t *testing.T) {
		// Without --fleet-secret-dir each process signs with its own
		// key, so its tokens are worth nothing elsewhere; with fleet
		// Secrets of their own, the same.
		a := start(t, withAuth(t, withoutFleetSecret))
		b := start(t, withAuth(t, withoutFleetSecret))
		c := start(t, withAuth(t, nil))
		for _, tok := range []string{b.mint(testAPIKey, "").Value, c.mint(testAPIKey, "").Value} {
			before := a.authFailures()
			a.mustRefuse(http.StatusUnauthorized, "token="+tok, nil)
			a.checkAuthFailures(before, auth.ReasonInvalid)
		}
	})

	t.Run("shared fleet secret", func(t *testing.T) {
		dir := writeFleetDir(t)
		shared := func(c *config.Config) { c.FleetSecretDir = dir }
		a := start(t, withAuth(t, shared))
		b := start(t, withAuth(t, shared))
		tok := b.mint(testAPIKey, "").Value
		c, _ := a.mustOpen("token="+tok, nil)
		a.closeNormally(c, 0)
	})

	t.Run("minting key revoked", func(t *testing.T) {
		clk := testingclock.NewFakeClock(time.Unix(1_795_000_000, 0))
		keys := writeFile(t, "api-keys", testAPIKey+"\n"+otherAPIKey+"\n")
		h := startWithClock(t, clk, withAuth(t, func(c *config.Config) { c.APIKeysFile = keys }))
		kept := h.mint(testAPIKey, "").Value
		revoked := h.mint(otherAPIKey, "").Value
		c, _ := h.mustOpen("token="+revoked, nil)
		h.closeNormally(c, 0)

		if err := os.WriteFile(keys, []byte(testAPIKey+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		// The key file is polled on the server's clock.
		testkit.Eventually(t, 5*time.Second, testkit.That("the key file reloaded", func() bool {
			if !h.srv.keys.Keys().HasID(auth.KeyID(otherAPIKey)) {
				return true
			}
			clk.Step(h.cfg.SecretPollInterval)
			return false
		}))
		before := h.authFailures()
		h.mustRefuse(http.StatusUnauthorized, "token="+revoked, nil)
		h.mustRefuse(http.StatusUnauthorized, "", bearer(otherAPIKey))
		if got := h.authFailures()[auth.ReasonInvalid] - before[auth.ReasonInvalid]; got != 2 {
			t.Errorf("invalid auth failures = %v, want 2", got)
		}
		c, _ = h.mustOpen("token="+kept, nil)
		h.closeNormally(c, 0)
	})
}

func TestClientTokensNeedAuthentication(t *testing.T) {
	h := start(t, nil) // --insecure-no-auth
	r := h.post(PathClientTokens, bearer(testAPIKey), `{}`)
	if r.status != http.StatusNotFound {
		t.Fatalf("HTTP %d %s, want 404", r.status, r.body)
	}
	if code, _, message := r.errorBody(t); !strings.Contains(message, "insecure-no-auth") {
		t.Errorf("error code %q message %q: want it to name --insecure-no-auth", code, message)
	}
	if got := h.tokensMinted(); got != 0 {
		t.Errorf("tokens minted = %v", got)
	}
}

// failAuth makes one upgrade attempt with a wrong key from ip and requires
// the 401 that counts it.
func (h *harness) failAuth(ip string) {
	h.t.Helper()
	h.mustRefuse(http.StatusUnauthorized, "", from(ip, bearer(wrongAPIKey)))
}

// checkRateLimited checks a 429 refusal and returns its Retry-After.
func checkRateLimited(t *testing.T, r refusal) int {
	t.Helper()
	if code, typ, _ := r.errorBody(t); code != "rate_limited" || typ != "invalid_request_error" {
		t.Errorf("error code %q type %q, want rate_limited", code, typ)
	}
	if got := r.header.Get("WWW-Authenticate"); got != "" {
		t.Errorf("WWW-Authenticate = %q on a 429", got)
	}
	retry := r.retryAfter(t)
	if retry < 1 {
		t.Errorf("Retry-After = %d, want at least 1", retry)
	}
	return retry
}

// limiterState is what the server's rate limiter holds, as it would write
// it to its state file.
func (h *harness) limiterState() ratelimit.State {
	return h.srv.limiter.Export()
}

// stateEntry returns the entry for ip, if st holds one.
func stateEntry(st ratelimit.State, ip string) (ratelimit.Entry, bool) {
	i := slices.IndexFunc(st.Entries, func(e ratelimit.Entry) bool { return e.IP == ip })
	if i < 0 {
		return ratelimit.Entry{}, false
	}
	return st.Entries[i], true
}

func TestAuthFailuresBlockClientIP(t *testing.T) {
	h := start(t, withAuth(t, withBlocking(10*time.Millisecond)))
	for i := 0; i < 4; i++ {
		h.failAuth(blockedIP)
	}
	if got := h.counter("auth_failures", auth.ReasonInvalid); got != 4 {
		t.Fatalf("invalid auth failures = %v, want 4", got)
	}

	cases := []struct {
		name   string
		header http.Header
		// mint tries POST /v1/client_tokens instead of a session.
		mint bool
	}{
		{name: "wrong key", header: from(blockedIP, bearer(wrongAPIKey))},
		{name: "no credentials", header: from(blockedIP, nil)},
		{name: "right key", header: from(blockedIP, bearer(testAPIKey))},
		{name: "right key, minting a token", header: from(blockedIP, bearer(testAPIKey)), mint: true},
		{name: "another address written by the client", header: from(otherIP+", "+blockedIP, bearer(testAPIKey))},
		{name: "behind a second trusted hop", header: from(blockedIP+", 127.0.0.1", bearer(testAPIKey))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := *h
			h.t = t
			before := h.authFailures()
			var r refusal
			if tc.mint {
				r = h.post(PathClientTokens, tc.header, "")
				if r.status != http.StatusTooManyRequests {
					t.Fatalf("HTTP %d %s, want 429", r.status, r.body)
				}
			} else {
				r = h.mustRefuse(http.StatusTooManyRequests, "", tc.header)
			}
			if retry := checkRateLimited(t, r); retry > int(h.cfg.RateLimit.BlockDuration/time.Second) {
				t.Errorf("Retry-After = %d, more than the block duration %s", retry, h.cfg.RateLimit.BlockDuration)
			}
			// Refused before any authentication work: nothing counted.
			h.checkAuthFailures(before, "")
		})
	}

	// Another client behind the same proxy is not affected.
	c, _ := h.mustOpen("", from(otherIP, bearer(testAPIKey)))
	h.closeNormally(c, 0)

	st := h.limiterState()
	e, ok := stateEntry(st, blockedIP)
	if !ok || e.BlockedUntil == nil || e.Failures != 4 {
		t.Errorf("limiter state entry for %s = %+v (found %v), want blocked with 4 failures", blockedIP, e, ok)
	}
	if _, ok := stateEntry(st, otherIP); ok {
		t.Errorf("limiter state lists %s, which never failed", otherIP)
	}
	if got := h.counter("auth_failures", auth.ReasonInvalid); got != 4 {
		t.Errorf("invalid auth failures = %v, want still 4", got)
	}
}

func TestForwardedForIgnoredWithoutTrustedProxies(t *testing.T) {
	h := start(t, withAuth(t, func(c *config.Config) {
		withBlocking(10 * time.Millisecond)(c)
		c.RateLimit.TrustedProxies = nil
	}))
	for i := 0; i < 4; i++ {
		h.failAuth(blockedIP)
	}
	// Every loopback client is the one peer address the limiter sees.
	for _, header := range []http.Header{from(otherIP, bearer(testAPIKey)), bearer(testAPIKey)} {
		checkRateLimited(t, h.mustRefuse(http.StatusTooManyRequests, "", header))
	}
	st := h.limiterState()
	if _, ok := stateEntry(st, "127.0.0.1"); !ok || len(st.Entries) != 1 {
		t.Errorf("limiter state = %+v, want only 127.0.0.1", st.Entries)
	}
}

// settledWaiters waits until the fake clock's waiters, the server's
// background tickers, stop changing and returns their number. There are at
// least two: the rate limiter's cleanup and the key file watcher.
func settledWaiters(t *testing.T, clk *testingclock.FakeClock) int {
	t.Helper()
	last, same := -1, 0
	testkit.Eventually(t, 5*time.Second, testkit.That("the server's background timers to settle", func() bool {
		n := clk.Waiters()
		if n == last && n >= 2 {
			same++
		} else {
			last, same = n, 0
		}
		return same >= 20
	}))
	return last
}

// asyncDial starts a handshake on another goroutine. When the test ends
// the handshake is abandoned if still going and a connection nobody took
// is closed.
func (h *harness) asyncDial(header http.Header) <-chan dialResult {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	done := make(chan dialResult, 1)
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		done <- dialRaw(ctx, h.realtimeURL(""), header, nil)
	}()
	h.t.Cleanup(func() {
		cancel()
		<-exited
		select {
		case res := <-done:
			if res.conn != nil {
				res.conn.CloseNow()
			}
		default:
		}
	})
	return done
}

// awaitDial waits for an asynchronous handshake and requires a session.
func (h *harness) awaitDial(done <-chan dialResult) *websocket.Conn {
	h.t.Helper()
	var res dialResult
	select {
	case res = <-done:
	case <-time.After(20 * time.Second):
		h.t.Fatal("the handshake did not finish")
	}
	switch {
	case res.err != nil:
		h.t.Fatalf("dial: %v", res.err)
	case res.refused != nil:
		h.t.Fatalf("upgrade refused with HTTP %d %s", res.refused.status, res.refused.body)
	}
	h.t.Cleanup(func() { res.conn.CloseNow() })
	sessiontest.ReadUntil(h.t, res.conn, "session.created")
	return res.conn
}

// stepThrough runs attempt while stepping the fake clock over every
// suspicious delay the server waits on, which shows as a waiter beyond the
// base ones.
func stepThrough(t *testing.T, clk *testingclock.FakeClock, base int, delay time.Duration, attempt func()) {
	t.Helper()
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			if clk.Waiters() > base {
				clk.Step(delay)
			}
		}
	}()
	defer func() {
		close(stop)
		<-stopped
	}()
	attempt()
}

func TestSuspiciousClientWaitsBeforeAuthentication(t *testing.T) {
	const delay = 5 * time.Second
	clk := testingclock.NewFakeClock(time.Unix(1_795_000_000, 0))
	h := startWithClock(t, clk, withAuth(t, withBlocking(delay)))
	h.failAuth(blockedIP)
	h.failAuth(blockedIP) // now suspicious
	base := settledWaiters(t, clk)

	done := h.asyncDial(from(blockedIP, bearer(testAPIKey)))
	testkit.Eventually(t, 5*time.Second, testkit.That("the suspicious attempt to wait on the clock", func() bool { return clk.Waiters() > base }))
	// An address in good standing is not held up meanwhile.
	c, _ := h.mustOpen("", from(otherIP, bearer(testAPIKey)))
	h.closeNormally(c, 0)

	clk.Step(delay - time.Millisecond)
	time.Sleep(20 * time.Millisecond) // give a wrong early answer the chance to show
	select {
	case res := <-done:
		t.Fatalf("the suspicious attempt finished before its delay: %+v", res)
	default:
	}
	if n := h.srv.Sessions().Len(); n != 0 {
		t.Fatalf("sessions = %d while the suspicious attempt waits", n)
	}
	clk.Step(time.Millisecond)
	c = h.awaitDial(done)
	h.closeNormally(c, 0)

	// A success lifts the suspicion: the next attempt is not held.
	c, _ = h.mustOpen("", from(blockedIP, bearer(testAPIKey)))
	h.closeNormally(c, 0)
	if got := h.counter("auth_failures", auth.ReasonInvalid); got != 2 {
		t.Errorf("invalid auth failures = %v, want 2", got)
	}
}

func TestBlockExpires(t *testing.T) {
	const (
		delay = time.Second
		block = time.Minute
	)
	clk := testingclock.NewFakeClock(time.Unix(1_795_000_000, 0))
	h := startWithClock(t, clk, withAuth(t, func(c *config.Config) {
		withBlocking(delay)(c)
		c.RateLimit.Window = 10 * time.Second
		c.RateLimit.BlockDuration = block
	}))
	base := settledWaiters(t, clk)
	for i := 0; i < 4; i++ {
		// From the third failure on the address is suspicious and waits.
		stepThrough(t, clk, base, delay, func() { h.failAuth(blockedIP) })
	}
	r := h.mustRefuse(http.StatusTooManyRequests, "", from(blockedIP, bearer(testAPIKey)))
	if retry := checkRateLimited(t, r); retry != int(block/time.Second) {
		t.Errorf("Retry-After = %d, want %d", retry, int(block/time.Second))
	}

	clk.Step(block - time.Second)
	r = h.mustRefuse(http.StatusTooManyRequests, "", from(blockedIP, bearer(testAPIKey)))
	if retry := checkRateLimited(t, r); retry != 1 {
		t.Errorf("Retry-After a second before the block ends = %d, want 1", retry)
	}

	clk.Step(time.Second)
	if n := clk.Waiters(); n != base {
		t.Fatalf("fake clock waiters = %d, want the %d background ones", n, base)
	}
	c, _ := h.mustOpen("", from(blockedIP, bearer(testAPIKey)))
	h.closeNormally(c, 0)
	if st := h.limiterState(); len(st.Entries) != 0 {
		t.Errorf("limiter state after the block = %+v, want empty", st.Entries)
	}
}

func TestLimiterStateHandOff(t *testing.T) {
	stateFile := filepath.Join(t.TempDir(), "ratelimit.json")
	mutate := withAuth(t, func(c *config.Config) {
		withBlocking(10 * time.Millisecond)(c)
		c.RateLimit.StateFile = stateFile
	})

	a := start(t, mutate)
	for i := 0; i < 4; i++ {
		a.failAuth(blockedIP)
	}
	if e, ok := stateEntry(a.limiterState(), blockedIP); !ok || e.BlockedUntil == nil {
		t.Fatalf("server A's limiter entry for %s = %+v (found %v), want blocked", blockedIP, e, ok)
	}
	if _, err := os.Stat(stateFile); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("state file before the drain: %v, want none", err)
	}

	a.srv.BeginDrain()
	if err := a.wait(10 * time.Second); err != nil {
		t.Fatalf("server A: Serve = %v", err)
	}
	http.DefaultClient.CloseIdleConnections()
	data, err := os.ReadFile(stateFile)
	if err != nil {
		t.Fatalf("state file after the drain: %v", err)
	}
	var st ratelimit.State
	if err := json.Unmarshal(data, &st); err != nil {
		t.Fatalf("state file %s: %v", data, err)
	}
	e, ok := stateEntry(st, blockedIP)
	if st.Version != ratelimit.StateVersion || !ok || e.BlockedUntil == nil {
		t.Fatalf("state file = %s, want %s blocked", data, blockedIP)
	}
	if _, err := os.Stat(stateFile + ".tmp"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("temporary state file left behind: %v", err)
	}

	b := start(t, mutate)
	before := b.authFailures()
	r := b.mustRefuse(http.StatusTooManyRequests, "", from(blockedIP, bearer(testAPIKey)))
	if retry := checkRateLimited(t, r); retry > int(b.cfg.RateLimit.BlockDuration/time.Second) {
		t.Errorf("Retry-After = %d, more than the block duration", retry)
	}
	b.checkAuthFailures(before, "")
	if _, ok := stateEntry(b.limiterState(), blockedIP); !ok {
		t.Errorf("server B's limiter does not list %s", blockedIP)
	}
	c, _ := b.mustOpen("", from(otherIP, bearer(testAPIKey)))
	b.closeNormally(c, 0)
}

func TestAdminReportsSessionsAndAuthFailures(t *testing.T) {
	h := start(t, withAuth(t, nil))
	t.Cleanup(http.DefaultClient.CloseIdleConnections)
	adminClient, err := adminapi.NewClient(h.adminURL, adminapi.ClientOptions{})
	if err != nil {
		t.Fatal(err)
	}
	status := func() adminapi.Status {
		t.Helper()
		st, err := adminClient.Status(context.Background())
		if err != nil {
			t.Fatalf("GET /status: %v", err)
		}
		return st
	}
	if st := status(); st.Sessions != 0 || !st.Ready || st.Draining || st.Backend != "echo" {
		t.Fatalf("status before any session = %+v", st)
	}

	first, _ := h.mustOpen("", bearer(testAPIKey))
	tok := h.mint(testAPIKey, "").Value
	h.mustOpen("token="+tok, nil)
	testkit.Eventually(t, 5*time.Second, testkit.That("/status to count 2 sessions", func() bool { return status().Sessions == 2 }))
	h.closeNormally(first, 1)
	if st := status(); st.Sessions != 1 {
		t.Errorf("status after one session closed = %+v, want 1 session", st)
	}

	h.mustRefuse(http.StatusUnauthorized, "", bearer(wrongAPIKey))
	h.mustRefuse(http.StatusUnauthorized, "", nil)
	code, metrics := h.getAdmin("/metrics")
	if code != http.StatusOK {
		t.Fatalf("GET /metrics: HTTP %d", code)
	}
	for _, want := range []string{
		`voicegateway_auth_failures_total{reason="invalid"} 1`,
		`voicegateway_auth_failures_total{reason="missing"} 1`,
		`voicegateway_upgrades_rejected_total{code="unauthorized"} 2`,
		`voicegateway_client_tokens_minted_total 1`,
		`voicegateway_sessions_active 1`,
		`voicegateway_ratelimit_failures_total 2`,
	} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("/metrics has no line %q", want)
		}
	}
	if strings.Contains(metrics, testAPIKey) || strings.Contains(metrics, tok) {
		t.Error("/metrics shows a credential")
	}
}

// TestZeroSuspiciousDelayAddsNone: --auth-suspicious-delay 0 means a
// suspicious address is only counted, never held.
func TestZeroSuspiciousDelayAddsNone(t *testing.T) {
	clk := testingclock.NewFakeClock(time.Unix(1_795_000_000, 0))
	h := startWithClock(t, clk, withAuth(t, withBlocking(0)))
	h.failAuth(blockedIP)
	h.failAuth(blockedIP) // suspicious, but with no delay to wait
	c, _ := h.mustOpen("", from(blockedIP, bearer(testAPIKey)))
	h.closeNormally(c, 0)
}
