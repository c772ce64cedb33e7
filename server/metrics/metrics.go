// Package metrics holds the voice server's Prometheus metrics. They live in
// a registry the server owns (not the global default) so that every test and
// every server instance in one process has its own, and nothing outlives it.
package metrics

import (
	"slices"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/voicegateway/voicegateway/server/protocol"
)

const namespace = "voicegateway"

// Server is every metric the voice server records.
type Server struct {
	Registry *prometheus.Registry

	SessionsActive     prometheus.Gauge
	SessionsLimit      prometheus.Gauge // the configured --session-limit
	SessionsTotal      prometheus.Counter
	SessionDuration    prometheus.Histogram
	SessionsClosed     *prometheus.CounterVec // by close code
	AudioFramesIn      prometheus.Counter
	AudioFramesOut     prometheus.Counter
	ResponseLatency    prometheus.Histogram   // a commit to the first audio sent back
	DroppedFrames      *prometheus.CounterVec // by reason
	Errors             *prometheus.CounterVec // by error code
	AuthFailures       *prometheus.CounterVec // by reason
	AdminAuthFailures  *prometheus.CounterVec // by reason (missing, invalid, disabled)
	UpgradesRejected   *prometheus.CounterVec // by error code, before a session exists
	DrainPhase         prometheus.Gauge
	DrainDuration      prometheus.Gauge
	DrainDeadline      prometheus.Gauge // unix seconds; 0 until a drain begins
	DrainNotified      prometheus.Counter
	ClientTokensMinted prometheus.Counter

	// Relaying backends (openai).
	UpstreamDialSeconds prometheus.Histogram
	UpstreamErrors      *prometheus.CounterVec // by kind (UpstreamErrorKinds)
	UpstreamConnections prometheus.Gauge
	UpstreamRelayQueue  prometheus.Gauge

	// Admission: the memory budget, handshakes, the token replay cache.
	Admission Admission
}

// UpstreamErrorKinds are the kind labels of voicegateway_upstream_errors_total.
var UpstreamErrorKinds = []string{
	"unauthorized", "unreachable", "dial_timeout", "refused",
	"closed", "stalled", "malformed", "too_large", "session_expired",
}

// CloseCodes are the code labels of voicegateway_sessions_closed_total: the
// close codes the gateway sends, 1006 for a lost connection, and what
// clients send most; any other code a client closes with is counted as
// "other", so that clients cannot grow the series.
var CloseCodes = []string{"1000", "1001", "1006", "1008", "1009", "1011", "1012", "1013"}

// CloseCodeOther is the code label of every close code not in CloseCodes.
const CloseCodeOther = "other"

// CloseCodeLabel is the code label of a WebSocket close code.
func CloseCodeLabel(code int) string {
	label := strconv.Itoa(code)
	if slices.Contains(CloseCodes, label) {
		return label
	}
	return CloseCodeOther
}

// Label values of the other labelled metrics, created at start (below).
var (
	// DropReasons are the reason labels of voicegateway_dropped_frames_total.
	DropReasons = []string{"inbound_rate", "slow_consumer"}
	// AuthFailureReasons are the reason labels of voicegateway_auth_failures_total.
	AuthFailureReasons = []string{"missing", "malformed", "invalid", "expired", "reused"}
	// AdminAuthFailureReasons are the reason labels of voicegateway_admin_auth_failures_total.
	AdminAuthFailureReasons = []string{"missing", "invalid", "disabled"}
	// RejectionCodes are the code labels of voicegateway_upgrades_rejected_total:
	// the codes of the HTTP refusals before a session exists.
	RejectionCodes = []protocol.Code{
		protocol.CodeUnauthorized, protocol.CodeRateLimited, protocol.CodeServerDraining,
		protocol.CodeInvalidEvent, protocol.CodeInternal, protocol.CodeServerBusy,
		protocol.CodeModelNotAllowed,
	}
)

// New creates the metrics and registers them, with the Go and process
// collectors, in a fresh registry. Every documented label value is created
// at zero (docs/operations.md, "Metrics"), so that a counter is visible
// before its first event and rate() and alerts see a zero, not a gap.
func New() *Server {
	m := &Server{
		Registry: prometheus.NewRegistry(),
		SessionsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "sessions_active", Help: "Sessions currently open.",
		}),
		SessionsLimit: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "sessions_limit", Help: "Sessions this process accepts at once (--session-limit); more are refused with session_limit.",
		}),
		SessionsTotal: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "sessions_total", Help: "Sessions opened since start.",
		}),
		SessionDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "session_duration_seconds", Help: "How long sessions lasted.",
			Buckets: []float64{1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200},
		}),
		SessionsClosed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "sessions_closed_total", Help: "Sessions closed, by WebSocket close code.",
		}, []string{"code"}),
		AudioFramesIn: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "audio_frames_in_total", Help: "Audio messages received from clients (binary or input_audio_buffer.append).",
		}),
		AudioFramesOut: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "audio_frames_out_total", Help: "Audio messages sent to clients.",
		}),
		ResponseLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "response_latency_seconds",
			Help:    "From a client's input_audio_buffer.commit to the first audio sent back to it: the echo backend's or the upstream's answer, through the gateway.",
			Buckets: []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}),
		DroppedFrames: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "dropped_frames_total", Help: "Client messages dropped, by reason.",
		}, []string{"reason"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "errors_total", Help: "Errors reported to clients, by error code.",
		}, []string{"code"}),
		AuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "auth_failures_total", Help: "Failed authentications, by reason.",
		}, []string{"reason"}),
		AdminAuthFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "admin_auth_failures_total", Help: "Admin requests refused for want of the admin token, by reason: missing, invalid, disabled.",
		}, []string{"reason"}),
		UpgradesRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "upgrades_rejected_total", Help: "WebSocket upgrades refused before a session started, by error code.",
		}, []string{"code"}),
		DrainPhase: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "drain_phase", Help: "Drain phase: 0 serving, 1 terminating, 2 refusing, 3 closing, 4 stopped.",
		}),
		DrainDuration: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "drain_duration_seconds", Help: "Seconds from termination start to the last session closing (set when the drain ends).",
		}),
		DrainDeadline: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "drain_deadline_timestamp_seconds", Help: "When the drain closes the sessions left (unix seconds); 0 until termination begins. A countdown: this minus time().",
		}),
		DrainNotified: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "drain_notified_sessions_total", Help: "Sessions told gateway.draining.",
		}),
		ClientTokensMinted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: namespace, Name: "client_tokens_minted_total", Help: "Client tokens issued by POST /v1/client_tokens.",
		}),
		UpstreamDialSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Namespace: namespace, Name: "upstream_dial_seconds", Help: "Time to a completed upstream WebSocket handshake (TCP, TLS, HTTP upgrade).",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10},
		}),
		UpstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "upstream_errors_total", Help: "Upstream failures that ended a session or kept it from starting, by kind.",
		}, []string{"kind"}),
		UpstreamConnections: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "upstream_connections", Help: "Upstream WebSocket connections currently open.",
		}),
		UpstreamRelayQueue: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "upstream_relay_queue_messages", Help: "Client messages queued for upstreams, summed over sessions.",
		}),
	}
	m.Registry.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.SessionsActive, m.SessionsLimit, m.SessionsTotal, m.SessionDuration, m.SessionsClosed,
		m.AudioFramesIn, m.AudioFramesOut, m.ResponseLatency, m.DroppedFrames, m.Errors, m.AuthFailures, m.AdminAuthFailures,
		m.UpgradesRejected, m.DrainPhase, m.DrainDuration, m.DrainDeadline, m.DrainNotified, m.ClientTokensMinted,
		m.UpstreamDialSeconds, m.UpstreamErrors, m.UpstreamConnections, m.UpstreamRelayQueue,
	)
	// Pre-create the labelled series so dashboards see zeros, not gaps.
	for _, c := range protocol.AllCodes {
		m.Errors.WithLabelValues(string(c))
	}
	for _, code := range append(slices.Clone(CloseCodes), CloseCodeOther) {
		m.SessionsClosed.WithLabelValues(code)
	}
	for _, reason := range DropReasons {
		m.DroppedFrames.WithLabelValues(reason)
	}
	for _, reason := range AuthFailureReasons {
		m.AuthFailures.WithLabelValues(reason)
	}
	for _, reason := range AdminAuthFailureReasons {
		m.AdminAuthFailures.WithLabelValues(reason)
	}
	for _, code := range RejectionCodes {
		m.UpgradesRejected.WithLabelValues(string(code))
	}
	for _, kind := range UpstreamErrorKinds {
		m.UpstreamErrors.WithLabelValues(kind)
	}
	m.Admission = newAdmission(m.Registry)
	return m
}
