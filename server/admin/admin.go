// Package admin serves the voice server's operational endpoints on their own
// listener, apart from client traffic: liveness, readiness, status for the
// operator, Prometheus metrics, the drain that preStop begins, and
// profiling. The paths and documents are the contract in adminapi, which
// the callers share.
//
// Who may call what (docs/operations.md, "The admin plane"):
//
//   - anyone who reaches the port: /healthz and /readyz (the kubelet),
//     /metrics and /status (scrapers and the operator; they hold counts and
//     the drain's phase, never a client address or a secret);
//   - holders of the admin token (Authorization: Bearer, from the fleet
//     Secret): /drain, and /debug/* when the server runs with
//     --debug-endpoints.
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

	"github.com/voicegateway/voicegateway/server/admin/adminapi"
	"github.com/voicegateway/voicegateway/server/lifecycle"
	"github.com/voicegateway/voicegateway/server/metrics"
	"github.com/voicegateway/voicegateway/server/session"
	"github.com/voicegateway/voicegateway/server/version"
)

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
	Backend        string
	SessionLimit   int
	Clock          clock.PassiveClock
	Started        time.Time
	Log            logr.Logger
	// Cluster, when set, reports the fleet membership; a replica that has
	// not settled (taken a peer's limiter state) is not ready.
	Cluster ClusterStatus
}

// ClusterStatus is the replica's view of the fleet's gossip
// (server/cluster's Peer).
type ClusterStatus interface {
	Status() (members int, membersDigest string, settled bool)
}

func (o Options) cluster() *adminapi.Cluster {
	members, digest, settled := o.Cluster.Status()
	return &adminapi.Cluster{Members: members, MembersDigest: digest, Settled: settled}
}

// NewHandler returns the admin mux.
func NewHandler(o Options) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+adminapi.PathHealthz, func(w http.ResponseWriter, _ *http.Request) {
		// Liveness stays healthy through the drain: a restart now would
		// cut the calls the drain is protecting.
		writeText(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("GET "+adminapi.PathReadyz, func(w http.ResponseWriter, _ *http.Request) {
		if !o.Drainer.Ready() {
			writeText(w, http.StatusServiceUnavailable, "draining\n")
			return
		}
		if o.Cluster != nil && !o.cluster().Settled {
			writeText(w, http.StatusServiceUnavailable, "settling: waiting for the fleet's limiter state\n")
			return
		}
		writeText(w, http.StatusOK, "ok\n")
	})
	mux.HandleFunc("GET "+adminapi.PathStatus, func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, o.status())
	})
	mux.Handle("GET "+adminapi.PathMetrics, promhttp.HandlerFor(o.Metrics.Registry, promhttp.HandlerOpts{}))
	// Begun by the preStop hook (`voice-server drain`). It returns after
	// the propagation delay, so that the kubelet's SIGTERM comes once
	// endpoints no longer route here. POST only: a drain cuts calls, and
	// no GET may do that.
	mux.HandleFunc("POST "+adminapi.PathDrain, o.requireAdmin(func(w http.ResponseWriter, r *http.Request) {
		o.Log.Info("Drain requested on the admin port", "remote", r.RemoteAddr)
		o.Drainer.Begin()
		if err := o.Drainer.WaitRefusing(r.Context()); err != nil {
			return // the caller gave up; the drain goes on regardless
		}
		writeJSON(w, http.StatusOK, adminapi.DrainResponse{Status: o.status()})
	}))
	if o.DebugEndpoints {
		registerDebug(mux, o)
	}
	return mux
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
		var body adminapi.ErrorResponse
		status := http.StatusUnauthorized
		switch reason {
		case ReasonDisabled:
			status = http.StatusForbidden
			body.Error.Code = adminapi.CodeAdminDisabled
			body.Error.Message = "this endpoint needs the admin token, and this server has none (--fleet-secret-dir with an admin-token file); SIGTERM still drains"
		case ReasonMissing:
			body.Error.Code = adminapi.CodeUnauthorized
			body.Error.Message = "send Authorization: Bearer <admin token> (the admin-token of the fleet Secret)"
		default:
			body.Error.Code = adminapi.CodeUnauthorized
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

func (o Options) status() adminapi.Status {
	ds := o.Drainer.Status()
	st := adminapi.Status{
		Version: version.Version, Backend: o.Backend, Sessions: o.Sessions.Len(), SessionLimit: o.SessionLimit,
		Ready: ds.Phase == lifecycle.Serving, Draining: ds.Phase != lifecycle.Serving, Phase: ds.Phase.String(),
		Notified: ds.Notified, UptimeSeconds: o.Clock.Since(o.Started).Seconds(),
	}
	if o.Cluster != nil {
		st.Cluster = o.cluster()
		st.Ready = st.Ready && st.Cluster.Settled
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
