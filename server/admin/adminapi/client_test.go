package adminapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const testToken = "vgw_admin_client-test-token-0123456789abcdef"

// answer is what the fake admin server sends for one request.
type answer struct {
	code int
	body string
}

// fakeServer answers each path as told and records the requests; the
// server's real handler is tested against this client in server/admin.
func fakeServer(t *testing.T, answers map[string]answer) (*httptest.Server, chan *http.Request) {
	t.Helper()
	requests := make(chan *http.Request, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case requests <- r:
		default:
		}
		a, ok := answers[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(a.code)
		fmt.Fprint(w, a.body)
	}))
	t.Cleanup(srv.Close)
	return srv, requests
}

func newTestClient(t *testing.T, address, token string) *Client {
	t.Helper()
	c, err := NewClient(address, ClientOptions{Token: token})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestNewClientAddress(t *testing.T) {
	tests := map[string]struct {
		address string
		// want is the base URL; empty means an error is wanted.
		want string
	}{
		"host:port":           {address: "10.0.0.7:9090", want: "http://10.0.0.7:9090"},
		"IPv6 host:port":      {address: "[::1]:9090", want: "http://[::1]:9090"},
		"URL":                 {address: "http://127.0.0.1:9090", want: "http://127.0.0.1:9090"},
		"URL with a slash":    {address: "http://127.0.0.1:9090/", want: "http://127.0.0.1:9090"},
		"https with a prefix": {address: "https://admin.example/pod-a/", want: "https://admin.example/pod-a"},
		"empty":               {address: ""},
		"no port":             {address: "10.0.0.7"},
		"other scheme":        {address: "ws://127.0.0.1:9090"},
		"no host":             {address: "http:///status"},
		"credentials":         {address: "http://user:secret@127.0.0.1:9090"},
		"query":               {address: "http://127.0.0.1:9090?x=1"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c, err := NewClient(tc.address, ClientOptions{})
			if tc.want == "" {
				if err == nil {
					t.Fatalf("NewClient(%q) = %s, want an error", tc.address, c)
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("the error repeats the URL's password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.String() != tc.want {
				t.Errorf("base = %q, want %q", c.String(), tc.want)
			}
		})
	}
}

// TestStatusLenient: a server of another version still reports what it
// has; a field whose type changed is an error, not a zero.
func TestStatusLenient(t *testing.T) {
	deadline := time.Date(2030, 3, 4, 5, 7, 7, 0, time.UTC)
	tests := map[string]struct {
		body    string
		want    Status
		wantErr string
	}{
		"a newer server's unknown fields are ignored": {
			body: `{"sessions":3,"draining":true,"phase":"refusing","drain_deadline":"2030-03-04T05:07:07Z","resume":{"enabled":true},"pods":[1]}`,
			want: Status{Sessions: 3, Draining: true, Phase: PhaseRefusing, DrainDeadline: &deadline},
		},
		"an older server's missing fields stay zero": {
			body: `{"sessions":2,"ready":true}`,
			want: Status{Sessions: 2, Ready: true},
		},
		"a field of another type": {
			body:    `{"sessions":"two"}`,
			wantErr: "decoding the answer",
		},
		"not JSON": {
			body:    `<html>`,
			wantErr: "decoding the answer",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv, _ := fakeServer(t, map[string]answer{PathStatus: {http.StatusOK, tc.body}})
			got, err := newTestClient(t, srv.URL, "").Status(context.Background())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("Status() error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (got.DrainDeadline == nil) != (tc.want.DrainDeadline == nil) ||
				(got.DrainDeadline != nil && !got.DrainDeadline.Equal(*tc.want.DrainDeadline)) {
				t.Errorf("drain deadline = %v, want %v", got.DrainDeadline, tc.want.DrainDeadline)
			}
			got.DrainDeadline, tc.want.DrainDeadline = nil, nil
			if got != tc.want {
				t.Errorf("Status() = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestRequests: each method asks the documented path with the documented
// method, and sends the token only when it has one.
func TestRequests(t *testing.T) {
	srv, requests := fakeServer(t, map[string]answer{
		PathStatus:          {http.StatusOK, `{"sessions":1}`},
		PathDrain:           {http.StatusOK, `{"draining":true,"phase":"refusing","sessions":4}`},
		PathMemStats:        {http.StatusOK, `{"goroutines":12,"open_files":-1,"sessions":4}`},
		PathReadyz:          {http.StatusOK, "ok\n"},
		PathMetrics:         {http.StatusOK, "voicegateway_sessions_active 4\n"},
		PathPprof + "heap":  {http.StatusOK, "profile"},
		PathPprof + "other": {http.StatusOK, "x"},
	})
	ctx := context.Background()
	for _, token := range []string{testToken, ""} {
		c := newTestClient(t, strings.TrimPrefix(srv.URL, "http://"), token)
		check := func(method, path, query string) {
			t.Helper()
			r := <-requests
			if r.Method != method || r.URL.Path != path || r.URL.RawQuery != query {
				t.Errorf("request %s %s?%s, want %s %s?%s", r.Method, r.URL.Path, r.URL.RawQuery, method, path, query)
			}
			want := ""
			if token != "" {
				want = "Bearer " + token
			}
			if got := r.Header.Get("Authorization"); got != want {
				t.Errorf("%s %s: Authorization %q, want %q", method, path, got, want)
			}
		}
		if st, err := c.Status(ctx); err != nil || st.Sessions != 1 {
			t.Errorf("Status() = %+v, %v", st, err)
		}
		check(http.MethodGet, PathStatus, "")
		if d, err := c.Drain(ctx); err != nil || !d.Draining || d.Phase != PhaseRefusing || d.Sessions != 4 {
			t.Errorf("Drain() = %+v, %v", d, err)
		}
		check(http.MethodPost, PathDrain, "")
		if m, err := c.MemStats(ctx); err != nil || m.Goroutines != 12 || m.OpenFiles != -1 {
			t.Errorf("MemStats() = %+v, %v", m, err)
		}
		check(http.MethodGet, PathMemStats, "")
		if ready, err := c.Ready(ctx); err != nil || !ready {
			t.Errorf("Ready() = %v, %v", ready, err)
		}
		check(http.MethodGet, PathReadyz, "")
		if text, err := c.Metrics(ctx); err != nil || !strings.Contains(string(text), "sessions_active 4") {
			t.Errorf("Metrics() = %q, %v", text, err)
		}
		check(http.MethodGet, PathMetrics, "")
		if p, err := c.Profile(ctx, "heap", url.Values{"gc": {"1"}}); err != nil || string(p) != "profile" {
			t.Errorf("Profile() = %q, %v", p, err)
		}
		check(http.MethodGet, PathPprof+"heap", "gc=1")
	}
	c := newTestClient(t, srv.URL, "")
	for _, name := range []string{"", "../status", "heap?debug=1"} {
		if _, err := c.Profile(ctx, name, nil); err == nil {
			t.Errorf("Profile(%q) sent a request", name)
		}
	}
}

// TestRefusals: an answer other than success is a *StatusError with the
// refusal's code and message, and never repeats the admin token, even from
// a server or proxy that echoes it.
func TestRefusals(t *testing.T) {
	tests := map[string]struct {
		answer   answer
		wantCode string
		// wantInError are parts of the error's text.
		wantInError []string
	}{
		"unauthorized": {
			answer:      answer{http.StatusUnauthorized, `{"error":{"code":"unauthorized","message":"invalid admin token"}}`},
			wantCode:    CodeUnauthorized,
			wantInError: []string{"HTTP 401", "unauthorized", "invalid admin token"},
		},
		"admin disabled": {
			answer:      answer{http.StatusForbidden, `{"error":{"code":"admin_disabled","message":"no admin token"}}`},
			wantCode:    CodeAdminDisabled,
			wantInError: []string{"HTTP 403", "admin_disabled"},
		},
		"a plain text refusal": {
			answer:      answer{http.StatusBadGateway, "upstream said no\n"},
			wantInError: []string{"HTTP 502", "upstream said no"},
		},
		"a proxy echoing the request": {
			answer:      answer{http.StatusBadRequest, "bad request: Authorization: Bearer " + testToken},
			wantInError: []string{"HTTP 400", "[admin token]"},
		},
		"an echo in a JSON refusal": {
			answer:      answer{http.StatusUnauthorized, `{"error":{"code":"unauthorized","message":"you sent ` + testToken + `"}}`},
			wantCode:    CodeUnauthorized,
			wantInError: []string{"[admin token]"},
		},
		"a huge refusal": {
			answer:      answer{http.StatusInternalServerError, strings.Repeat("é", MaxDocumentBytes)},
			wantInError: []string{"HTTP 500", "…"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv, _ := fakeServer(t, map[string]answer{PathDrain: tc.answer, PathReadyz: tc.answer})
			c := newTestClient(t, srv.URL, testToken)
			_, drainErr := c.Drain(context.Background())
			_, readyErr := c.Ready(context.Background())
			for _, err := range []error{drainErr, readyErr} {
				var se *StatusError
				if !errors.As(err, &se) {
					t.Fatalf("error = %v, want a *StatusError", err)
				}
				if se.StatusCode != tc.answer.code || se.Code != tc.wantCode {
					t.Errorf("StatusError = %+v, want HTTP %d code %q", se, tc.answer.code, tc.wantCode)
				}
				for _, part := range tc.wantInError {
					if !strings.Contains(err.Error(), part) {
						t.Errorf("error %q does not mention %q", err, part)
					}
				}
				if strings.Contains(err.Error(), testToken) || len(err.Error()) > 2*maxErrorMessage {
					t.Errorf("error of %d bytes holds the token or too much: %.200s", len(err.Error()), err)
				}
			}
		})
	}
}

// TestReadyWhileDraining: 503 from /readyz is an answer, not an error.
func TestReadyWhileDraining(t *testing.T) {
	srv, _ := fakeServer(t, map[string]answer{PathReadyz: {http.StatusServiceUnavailable, "draining\n"}})
	ready, err := newTestClient(t, srv.URL, "").Ready(context.Background())
	if err != nil || ready {
		t.Errorf("Ready() = %v, %v; want false, nil", ready, err)
	}
}

// TestBounds: an answer larger than its bound is refused rather than read.
func TestBounds(t *testing.T) {
	padded := func(n int) string {
		const head = `{"sessions":5}`
		return head + strings.Repeat(" ", n-len(head))
	}
	tests := map[string]struct {
		body    string
		wantErr bool
	}{
		"exactly the bound": {body: padded(MaxDocumentBytes)},
		"a byte over":       {body: padded(MaxDocumentBytes + 1), wantErr: true},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			srv, _ := fakeServer(t, map[string]answer{PathStatus: {http.StatusOK, tc.body}})
			st, err := newTestClient(t, srv.URL, "").Status(context.Background())
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "larger than") {
					t.Errorf("Status() = %+v, %v; want an error about the size", st, err)
				}
				return
			}
			if err != nil || st.Sessions != 5 {
				t.Errorf("Status() = %+v, %v", st, err)
			}
		})
	}
}

// TestTransportError: a server that is gone gives an error that still says
// why (the operator tells a stopped pod by ECONNREFUSED) and holds no token.
func TestTransportError(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	address := l.Addr().String()
	_ = l.Close()
	_, err = newTestClient(t, address, testToken).Status(context.Background())
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("error = %v, want ECONNREFUSED", err)
	}
	if strings.Contains(err.Error(), testToken) {
		t.Errorf("error holds the token: %v", err)
	}
}

// TestNoRedirects: the default client does not follow a redirect, which
// would send the request, and its token, somewhere else.
func TestNoRedirects(t *testing.T) {
	followed := make(chan struct{}, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			followed <- struct{}{}
			return
		}
		http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
	}))
	t.Cleanup(srv.Close)
	_, err := newTestClient(t, srv.URL, testToken).Drain(context.Background())
	var se *StatusError
	if !errors.As(err, &se) || se.StatusCode != http.StatusTemporaryRedirect {
		t.Errorf("Drain() error = %v, want the 307 itself", err)
	}
	select {
	case <-followed:
		t.Error("the redirect was followed")
	default:
	}
}
