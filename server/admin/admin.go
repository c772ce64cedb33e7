// Package admin serves the voice server's operational endpoints on their own
// listener, apart from client traffic: liveness, readiness, status for the
// operator, Prometheus metrics, the preStop drain hook, and the rate
// limiter's state for hand-off between pods.
package admin

import (
	"encoding/json"
	"io"
	"net/http"
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

// Options are the parts the admin endpoints report on.
type Options struct {
	Drainer      *lifecycle.Drainer
	Sessions     *session.Registry
	Metrics      *metrics.Server
	Limiter      *ratelimit.Limiter
	Backend      string
	SessionLimit int
	Clock        clock.PassiveClock
	Started      time.Time
	Log          logr.Logger
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
	// The preStop hook. Kubernetes' httpGet handler can only GET, so GET
	// is accepted beside POST. It returns after the propagation delay, so
	// that the kubelet's SIGTERM comes once endpoints no longer route here.
	drain := func(w http.ResponseWriter, r *http.Request) {
		o.Drainer.Begin()
		if err := o.Drainer.WaitRefusing(r.Context()); err != nil {
			return // the caller gave up; the drain goes on regardless
		}
		writeJSON(w, http.StatusOK, o.status())
	}
	mux.HandleFunc("POST /drain", drain)
	mux.HandleFunc("GET /drain", drain)
	mux.HandleFunc("GET /ratelimit/state", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, o.Limiter.Export())
	})
	mux.HandleFunc("PUT /ratelimit/state", func(w http.ResponseWriter, r *http.Request) {
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
	})
	registerDebug(mux, o)
	return mux
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
