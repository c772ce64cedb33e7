package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Bounds on what the client reads of an answer, so that a broken or hostile
// server cannot make its caller (the operator, polling every pod) hold an
// unbounded body.
const (
	// MaxDocumentBytes bounds a JSON document (Status, DrainResponse,
	// MemStats) and the body of a refusal. The documents are a few hundred
	// bytes.
	MaxDocumentBytes = 64 << 10
	// MaxMetricsBytes bounds the Prometheus text of /metrics.
	MaxMetricsBytes = 16 << 20
	// MaxProfileBytes bounds a Go profile from /debug/pprof/.
	MaxProfileBytes = 64 << 20
)

// maxErrorMessage bounds the part of a refusal's body an error repeats.
const maxErrorMessage = 512

// Client calls the admin endpoints of one voice server. It is safe for
// concurrent use; it holds no connection of its own (the *http.Client
// does).
type Client struct {
	base  string
	token string
	http  *http.Client
}

// ClientOptions are the optional parts of a Client.
type ClientOptions struct {
	// Token is the admin token (the fleet Secret's admin-token), sent as
	// "Authorization: Bearer" with every request; empty sends none, which
	// the open endpoints (status, probes, metrics) do not need.
	Token string
	// HTTPClient makes the requests, e.g. one whose transport the caller
	// pools across pods or restricts to loopback. Nil means a client with
	// no proxy (the admin token must not pass through one), no keep-alives
	// (nothing left open between calls) and no redirects (no admin
	// endpoint redirects). Bound each call with its context.
	HTTPClient *http.Client
}

// NewClient returns a client of the admin server at address: a base URL
// ("http://10.0.0.7:9090", "https://admin.example/prefix") or a host:port
// ("10.0.0.7:9090", "[::1]:9090"), which means plain http.
func NewClient(address string, opts ClientOptions) (*Client, error) {
	base, err := baseURL(address)
	if err != nil {
		return nil, err
	}
	httpClient := opts.HTTPClient
	if httpClient == nil {
		httpClient = &http.Client{
			Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true},
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	return &Client{base: base, token: opts.Token, http: httpClient}, nil
}

func baseURL(address string) (string, error) {
	if address == "" {
		return "", errors.New("admin address is empty")
	}
	if !strings.Contains(address, "://") {
		if _, _, err := net.SplitHostPort(address); err != nil {
			return "", fmt.Errorf("admin address %q is neither a URL nor host:port: %w", address, err)
		}
		return "http://" + address, nil
	}
	u, err := url.Parse(address)
	switch {
	case err != nil:
		return "", fmt.Errorf("admin address: %w", err)
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("admin address %q: the scheme must be http or https", u.Redacted())
	case u.Host == "":
		return "", fmt.Errorf("admin address %q has no host", u.Redacted())
	case u.User != nil:
		// A credential in a URL ends up in logs and errors; the admin
		// token goes in ClientOptions.Token, which no error repeats.
		return "", fmt.Errorf("admin address %q must not carry credentials: pass the admin token as the token", u.Redacted())
	case u.RawQuery != "" || u.Fragment != "":
		return "", fmt.Errorf("admin address %q must not have a query or fragment", u.Redacted())
	}
	return strings.TrimRight(u.String(), "/"), nil
}

// String is the server's base URL, for messages; it never holds the token.
func (c *Client) String() string { return c.base }

// Status reads GET /status.
func (c *Client) Status(ctx context.Context) (Status, error) {
	var st Status
	err := c.getJSON(ctx, http.MethodGet, PathStatus, &st)
	return st, err
}

// Drain begins the server's drain (POST /drain, admin token) and returns
// once it refuses new sessions, after its propagation delay: bound ctx by
// more than that delay. A caller that gives up leaves the drain going.
func (c *Client) Drain(ctx context.Context) (DrainResponse, error) {
	var resp DrainResponse
	err := c.getJSON(ctx, http.MethodPost, PathDrain, &resp)
	return resp, err
}

// MemStats reads GET /debug/memstats (admin token; the server runs with
// --debug-endpoints). The server forces garbage collections first.
func (c *Client) MemStats(ctx context.Context) (MemStats, error) {
	var m MemStats
	err := c.getJSON(ctx, http.MethodGet, PathMemStats, &m)
	return m, err
}

// Ready reports whether GET /readyz answers 200 (true) or 503 (false: the
// server drains); any other answer is an error.
func (c *Client) Ready(ctx context.Context) (bool, error) {
	code, body, err := c.do(ctx, http.MethodGet, PathReadyz, nil, MaxDocumentBytes)
	switch {
	case err != nil:
		return false, err
	case code == http.StatusOK:
		return true, nil
	case code == http.StatusServiceUnavailable:
		return false, nil
	}
	return false, c.statusError(http.MethodGet, PathReadyz, code, body)
}

// Metrics returns the Prometheus text of GET /metrics.
func (c *Client) Metrics(ctx context.Context) ([]byte, error) {
	return c.getBytes(ctx, PathMetrics, nil, MaxMetricsBytes)
}

// Profile returns the Go profile name ("heap", "profile", "goroutine"…)
// from GET /debug/pprof/<name> with query (e.g. seconds=30, gc=1): admin
// token, --debug-endpoints. A CPU profile takes as long as it samples.
func (c *Client) Profile(ctx context.Context, name string, query url.Values) ([]byte, error) {
	if name == "" || strings.ContainsAny(name, "/?#") {
		return nil, fmt.Errorf("profile name %q is not a name", name)
	}
	return c.getBytes(ctx, PathPprof+name, query, MaxProfileBytes)
}

// StatusError is an admin answer other than success.
type StatusError struct {
	Method string
	Path   string
	// StatusCode is the HTTP status, e.g. 401.
	StatusCode int
	// Code is the ErrorResponse's code when the body was one, e.g.
	// CodeUnauthorized; empty otherwise.
	Code string
	// Message is the ErrorResponse's message, or the start of a body that
	// was not one. It never holds the client's admin token.
	Message string
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("%s %s: HTTP %d", e.Method, e.Path, e.StatusCode)
	if e.Code != "" {
		msg += " " + e.Code
	}
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// getJSON expects 200 and decodes the body into v. Decoding is lenient so
// that a server of an older or newer version still reports what it has:
// fields this version does not know are ignored, and fields the server
// does not send stay zero. A field of another type is an error: its zero
// would be a wrong report, not a missing one.
func (c *Client) getJSON(ctx context.Context, method, path string, v any) error {
	code, body, err := c.do(ctx, method, path, nil, MaxDocumentBytes)
	if err != nil {
		return err
	}
	if code != http.StatusOK {
		return c.statusError(method, path, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("%s %s: decoding the answer: %w", method, path, err)
	}
	return nil
}

func (c *Client) getBytes(ctx context.Context, path string, query url.Values, limit int64) ([]byte, error) {
	code, body, err := c.do(ctx, http.MethodGet, path, query, limit)
	if err != nil {
		return nil, err
	}
	if code != http.StatusOK {
		return nil, c.statusError(http.MethodGet, path, code, body)
	}
	return body, nil
}

// do sends one request and reads at most limit bytes of a successful
// answer, MaxDocumentBytes of any other. Transport errors are returned as
// the *http.Client gives them (a *url.Error wrapping, e.g.,
// syscall.ECONNREFUSED), with the URL but never the token.
func (c *Client) do(ctx context.Context, method, path string, query url.Values, limit int64) (int, []byte, error) {
	target := c.base + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return 0, nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		limit = MaxDocumentBytes
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return 0, nil, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if int64(len(body)) > limit {
		if resp.StatusCode != http.StatusOK {
			// A refusal is read for its message only; its start will do.
			return resp.StatusCode, body[:limit], nil
		}
		return 0, nil, fmt.Errorf("%s %s: the answer is larger than %d bytes", method, path, limit)
	}
	return resp.StatusCode, body, nil
}

// statusError describes a refusal from its body: an ErrorResponse's code
// and message, or the start of whatever else it was (net/http's "404 page
// not found", a proxy's page), without the token, which a proxy might
// echo.
func (c *Client) statusError(method, path string, code int, body []byte) error {
	e := &StatusError{Method: method, Path: path, StatusCode: code}
	var refusal ErrorResponse
	if json.Unmarshal(body, &refusal) == nil && refusal.Error.Code != "" {
		e.Code, e.Message = refusal.Error.Code, refusal.Error.Message
	} else {
		e.Message = string(bytes.TrimSpace(body))
	}
	if c.token != "" {
		e.Message = strings.ReplaceAll(e.Message, c.token, "[admin token]")
	}
	e.Message = truncate(e.Message, maxErrorMessage)
	return e
}

// truncate cuts s to at most n bytes on a rune boundary.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
