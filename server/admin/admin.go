// Package admin serves the voice server's operational endpoints on their own
// listener, apart from client traffic: liveness, readiness, status for the
// operator, Prometheus metrics, the drain that preStop begins, the rate
// limiter's state, and profiling.
//
// Who may call what (docs/operations.md, "The admin plane"):
//
//   - anyone who reaches the port: /healthz and /readyz (the kubelet),
//     /metrics and /status (scrapers and the operator; they hold counts and
//     the drain's phase, never a client address or a secret);
//   - holders of the admin token (Authorization: Bearer, from the fleet
//     Secret): /drain, /ratelimit/state, and /debug/* when the server runs
//     with --debug-endpoints.
//
// Without an admin token (a plain local run) the guarded endpoints answer
// 403 and do nothing; SIGTERM still drains.
package admin

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/utils/clock"

	"github.com/voicegateway/voicegateway/server/lifecycle"
	"github.com/voicegateway/voicegateway/server/metrics"
	"github.com/voicegateway/voicegateway/server/ratelimit"
	"github.com/voicegateway/voicegateway/server/session"
	"github.com/voicegateway/voicegateway/server/version"
)

// maxStateBody bounds an imported rate-limiter state (a full table of
// 100k entries is about 10 MiB of JSON).
const maxStateBody = 32 << 20

// TokenSource supplies the current admin token; an auth.SecretFile that
// follows the mounted fleet Secret is one.
type TokenSource interface {
	Value() string
}

// Reasons, the label values of voicegateway_admin_auth_failures_total.
const (
	ReasonMissing  = "missing"  // no Bearer credential
	ReasonInvalid  = "invalid"  // a credential that is not the admin token
	ReasonDisabled = "disabled" // the server has no admin token
)

// maxAuthorizationLen bounds the Authorization header looked at.
const maxAuthorizationLen = 1024

// Options are the parts the admin endpoints report on.
type Options struct {
	// AdminToken guards the endpoints that change or reveal state; nil, or
	// an empty value, disables them.
	AdminToken TokenSource
	// RefreshAdminToken, when set, is asked to read the token again before
	// a request is refused: the caller (the preStop hook) may hold a token
	// that was rotated moments ago. It must bound its own cost; it reports
	// whether the token changed.
	RefreshAdminToken func() bool
	// DebugEndpoints serves /debug/pprof/* and /debug/memstats (to holders
	// of the admin token).
	DebugEndpoints bool
	Drainer        *lifecycle.Drainer
	Sessions       *session.Registry
	Metrics        *metrics.Server
	Limiter        *ratelimit.Limiter
	Backend        string
	SessionLimit   int
	Clock          clock.PassiveClock
	Started        time.Time
	Log            logr.Logger
}

// Status is the JSON document at /status; the operator reads it.
type Status struct {
	Version       string     `json:"version"`
	Backend       string     `json:"backend"`
	Sessions      int        `json:"sessions"`
	SessionLimit  int        `json:"session_limit"`
	Ready         bool       `json:"ready"`
	Draining      bool       `json:"draining"`
	Phase         string     `json:"phase"`
	DrainStarted  *time.Time `json:"drain_started,omitempty"`
	DrainDeadline *time.Time `json:"drain_deadline,omitempty"`
	Notified      int        `json:"notified"`
	UptimeSeconds float64    `json:"uptime_seconds"`
}

// NewHandler returns the admin mux.
func NewHandler(o Options) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		// Liveness stays healthy through the drain: a restart now would
		// cut the calls the drain is protecting.
		writeText(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !o.Drainer.Ready() {
			writeText(w, http.StatusServiceUnavailable, "draining\n")
			return
		}
		writeText(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, o.status())
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Metrics.Registry, promhttp.HandlerOpts{}))
	// Begun by the preStop hook (`voice-server drain`). It returns after
	// the propagation delay, so that the kubelet's SIGTERM comes once
	// endpoints no longer route here. POST only: a drain cuts calls, and
	// no GET may do that.
	mux.HandleFunc("POST /drain", o.requireAdmin(func(w http.ResponseWriter, r *http.Request) {
		o.Log.Info("Drain requested on the admin port", "remote", r.RemoteAddr)
		o.Drainer.Begin()
		if err := o.Drainer.WaitRefusing(r.Context()); err != nil {
			return // the caller gave up; the drain goes on regardless
		}
		writeJSON(w, http.StatusOK, o.status())
	}))
	mux.HandleFunc("GET /ratelimit/state", o.requireAdmin(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, o.Limiter.Export())
	}))
	mux.HandleFunc("PUT /ratelimit/state", o.requireAdmin(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxStateBody))
		if err != nil {
			writeJSON(w, http.StatusRequestEntityTooLarge, map[string]string{"error": "state larger than 32 MiB"})
			return
		}
		var st ratelimit.State
		if err := json.Unmarshal(body, &st); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "state is not valid JSON: " + err.Error()})
			return
		}
		n, err := o.Limiter.Import(st)
		if err != nil {
			// Import keeps the entries it could read: say how many, so
			// that a 400 is not taken to mean nothing changed.
			if n > 0 {
				o.Log.Info("rate limiter state imported in part", "entries", n, "error", err.Error())
			}
			writeJSON(w, http.StatusBadRequest, map[string]any{"error": err.Error(), "imported": n})
			return
		}
		o.Log.Info("rate limiter state imported", "entries", n)
		writeJSON(w, http.StatusOK, map[string]int{"imported": n})
	}))
	if o.DebugEndpoints {
		registerDebug(mux, o)
	}
	return mux
}

// adminError is the JSON body of a refused admin request.
type adminError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// requireAdmin lets a request through only with the admin token. A refusal
// changes nothing, is counted by reason and logged with the caller's
// address, never with what it presented.
func (o Options) requireAdmin(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		reason := o.checkAdmin(r)
		if reason != "" && reason != ReasonMissing && o.RefreshAdminToken != nil && o.RefreshAdminToken() {
			reason = o.checkAdmin(r)
		}
		if reason == "" {
			next(w, r)
			return
		}
		o.Metrics.AdminAuthFailures.WithLabelValues(reason).Inc()
		o.Log.Info("Admin request refused", "path", r.URL.Path, "method", r.Method, "remote", r.RemoteAddr, "reason", reason)
		var body adminError
		status := http.StatusUnauthorized
		switch reason {
		case ReasonDisabled:
			status = http.StatusForbidden
			body.Error.Code = "admin_disabled"
			body.Error.Message = "this endpoint needs the admin token, and this server has none (--fleet-secret-dir with an admin-token file); SIGTERM still drains"
		case ReasonMissing:
			body.Error.Code = "unauthorized"
			body.Error.Message = "send Authorization: Bearer <admin token> (the admin-token of the fleet Secret)"
		default:
			body.Error.Code = "unauthorized"
			body.Error.Message = "invalid admin token"
		}
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="voicegateway-admin"`)
		}
		writeJSON(w, status, body)
	}
}

// checkAdmin returns "" when the request carries the admin token, and the
// reason of the refusal otherwise. Digests of both sides are compared in
// constant time, so that neither the token's length nor how much of it a
// guess got right shows in the time taken.
func (o Options) checkAdmin(r *http.Request) string {
	if o.AdminToken == nil {
		return ReasonDisabled
	}
	want := o.AdminToken.Value()
	if want == "" {
		return ReasonDisabled
	}
	header := r.Header.Values("Authorization")
	switch {
	case len(header) == 0:
		return ReasonMissing
	case len(header) > 1 || len(header[0]) > maxAuthorizationLen:
		return ReasonInvalid
	}
	scheme, presented, ok := strings.Cut(header[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return ReasonMissing
	}
	got, expected := sha256.Sum256([]byte(strings.TrimSpace(presented))), sha256.Sum256([]byte(want))
	if subtle.ConstantTimeCompare(got[:], expected[:]) != 1 {
		return ReasonInvalid
	}
	return ""
}

func (o Options) status() Status {
	ds := o.Drainer.Status()
	st := Status{
		Version: version.Version, Backend: o.Backend, Sessions: o.Sessions.Len(), SessionLimit: o.SessionLimit,
		Ready: ds.Phase == lifecycle.Serving, Draining: ds.Phase != lifecycle.Serving, Phase: ds.Phase.String(),
		Notified: ds.Notified, UptimeSeconds: o.Clock.Since(o.Started).Seconds(),
	}
	if !ds.Start.IsZero() {
		start, deadline := ds.Start.UTC(), ds.Deadline.UTC()
		st.DrainStarted, st.DrainDeadline = &start, &deadline
	}
	return st
}

func writeText(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
