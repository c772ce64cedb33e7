package admin

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/voicegateway/voicegateway/server/admin/adminapi"
	"github.com/voicegateway/voicegateway/server/lifecycle"
)

// guarded are the admin endpoints that change or reveal state: each must
// refuse a caller without the admin token and change nothing.
var guarded = []struct{ method, path, body string }{
	{http.MethodPost, "/drain", ""},
	{http.MethodGet, "/debug/pprof/", ""},
	{http.MethodGet, "/debug/pprof/cmdline", ""},
	{http.MethodGet, "/debug/pprof/symbol", ""},
	{http.MethodGet, "/debug/memstats", ""},
}

// TestAdminPlaneRefusesWithoutToken sends every guarded request without
// the token, with a wrong one and in the wrong scheme, then checks that the
// server still serves and every refusal was counted under its reason.
func TestAdminPlaneRefusesWithoutToken(t *testing.T) {
	callers := []struct {
		name          string
		authorization string
		reason        string
	}{
		{name: "no credential", authorization: "", reason: ReasonMissing},
		{name: "wrong token", authorization: "Bearer vgw_admin_not-the-token-0123456789abcd", reason: ReasonInvalid},
		{name: "token prefix only", authorization: "Bearer " + testAdminToken[:len(testAdminToken)-1], reason: ReasonInvalid},
		{name: "token with a suffix", authorization: "Bearer " + testAdminToken + "x", reason: ReasonInvalid},
		{name: "basic scheme", authorization: "Basic " + testAdminToken, reason: ReasonMissing},
		{name: "empty bearer", authorization: "Bearer ", reason: ReasonMissing},
		{name: "oversized header", authorization: "Bearer " + strings.Repeat("a", maxAuthorizationLen), reason: ReasonInvalid},
	}
	for _, c := range callers {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			for _, g := range guarded {
				code, ctype, body := h.doAs(c.authorization, g.method, g.path, strings.NewReader(g.body))
				if code != http.StatusUnauthorized || ctype != "application/json" {
					t.Errorf("%s %s = %d %q %s, want 401 JSON", g.method, g.path, code, ctype, body)
				}
				if strings.Contains(body, testAdminToken) {
					t.Errorf("%s %s refusal reveals something: %s", g.method, g.path, body)
				}
			}
			if got := h.drainer.Phase(); got != lifecycle.Serving {
				t.Errorf("phase after refused requests = %v, want serving", got)
			}
			if got := testutil.ToFloat64(h.metrics.AdminAuthFailures.WithLabelValues(c.reason)); got != float64(len(guarded)) {
				t.Errorf("admin_auth_failures_total{reason=%q} = %v, want %d", c.reason, got, len(guarded))
			}
		})
	}
}

// TestAdminPlaneWithToken checks that the token opens every guarded
// endpoint, in either case of the scheme name.
func TestAdminPlaneWithToken(t *testing.T) {
	h := newHarness(t)
	for _, g := range guarded {
		if g.path == "/drain" {
			continue // TestDrainEndpoint covers it; it would end the harness's drain
		}
		code, _, body := h.doAs("bearer "+testAdminToken, g.method, g.path, strings.NewReader(g.body))
		if code != http.StatusOK {
			t.Errorf("%s %s with the token = %d %s, want 200", g.method, g.path, code, body)
		}
	}
}

// TestAdminPlaneDisabled: without an admin token the guarded endpoints are
// off, not open, whatever a caller sends; probes, metrics and status still
// answer.
func TestAdminPlaneDisabled(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.AdminToken = nil })
	for _, g := range guarded {
		for _, authorization := range []string{"", "Bearer " + testAdminToken, "Bearer "} {
			code, _, body := h.doAs(authorization, g.method, g.path, strings.NewReader(g.body))
			var refusal adminapi.ErrorResponse
			_ = json.Unmarshal([]byte(body), &refusal)
			if code != http.StatusForbidden || refusal.Error.Code != adminapi.CodeAdminDisabled {
				t.Errorf("%s %s (%q) = %d %s, want 403 admin_disabled", g.method, g.path, authorization, code, body)
			}
		}
	}
	if got := h.drainer.Phase(); got != lifecycle.Serving {
		t.Errorf("phase = %v, want serving", got)
	}
	for _, path := range []string{"/healthz", "/readyz", "/metrics", "/status"} {
		if code, _, _ := h.doAs("", http.MethodGet, path, nil); code != http.StatusOK {
			t.Errorf("GET %s without a token = %d, want 200", path, code)
		}
	}
	// An empty token from the source counts as none.
	empty := newHarness(t, func(o *Options) { o.AdminToken = staticToken("") })
	if code, _, _ := empty.doAs("Bearer ", http.MethodPost, "/drain", nil); code != http.StatusForbidden {
		t.Errorf("POST /drain with an empty admin token configured = %d, want 403", code)
	}
}

// TestDebugEndpointsOffByDefault: without --debug-endpoints there is no
// /debug path at all, even for the token's holder.
func TestDebugEndpointsOffByDefault(t *testing.T) {
	h := newHarness(t, func(o *Options) { o.DebugEndpoints = false })
	for _, path := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/memstats"} {
		if code, _, _ := h.do(http.MethodGet, path, nil); code != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, code)
		}
	}
}

// swappableToken is an admin token source whose file "changes" when
// Refresh is asked after next was set, as a rotated Secret does.
type swappableToken struct {
	current, next string
	refreshes     int
}

func (s *swappableToken) Value() string { return s.current }

func (s *swappableToken) refresh() bool {
	s.refreshes++
	if s.next == "" || s.next == s.current {
		return false
	}
	s.current = s.next
	return true
}

// TestAdminTokenRefreshedBeforeRefusal: the preStop hook reads a rotated
// admin token at once, the server at its next poll; a request with a token
// that differs makes the server read the file before it refuses.
func TestAdminTokenRefreshedBeforeRefusal(t *testing.T) {
	token := &swappableToken{current: testAdminToken}
	h := newHarness(t, func(o *Options) {
		o.AdminToken = token
		o.RefreshAdminToken = token.refresh
	})
	rotated := "vgw_admin_rotated-token-0123456789abcdef"
	if code, _, _ := h.doAs("Bearer "+rotated, "GET", adminapi.PathMemStats, nil); code != 401 {
		t.Fatalf("a token the server does not hold = %d, want 401", code)
	}
	token.next = rotated
	if code, _, body := h.doAs("Bearer "+rotated, "GET", adminapi.PathMemStats, nil); code != 200 {
		t.Fatalf("after the file changed = %d %s, want 200", code, body)
	}
	before := token.refreshes
	if code, _, _ := h.doAs("", "GET", adminapi.PathMemStats, nil); code != 401 || token.refreshes != before {
		t.Fatalf("a request without a credential = %d and %d refreshes; want 401 and none", code, token.refreshes-before)
	}
}
