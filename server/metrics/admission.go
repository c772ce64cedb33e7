package metrics

import "github.com/prometheus/client_golang/prometheus"

// Admission holds the metrics of what keeps one pod standing whatever its
// clients do: the memory budget (server/memory), the handshakes in
// progress, and the client-token replay cache (RegisterTokenUses).
type Admission struct {
	// MemoryBudget is the bytes clients may make the server hold (0: no
	// budget, nothing is refused for memory).
	MemoryBudget prometheus.Gauge
	// MemoryReserved is what counts against the budget: every session's
	// promised bytes, or what it holds when that is more.
	MemoryReserved prometheus.Gauge
	// MemoryAccounted is what sessions hold, by kind (MemoryKinds).
	MemoryAccounted *prometheus.GaugeVec
	// MemoryRefusals counts what the budget refused, by what
	// (MemoryRefusalKinds).
	MemoryRefusals *prometheus.CounterVec

	// HandshakesInFlight are requests on the sessions path that are not
	// a session yet (admission, upgrade, a refusal's close).
	HandshakesInFlight prometheus.Gauge
	// AuthDelayed are requests from suspicious client addresses waiting
	// out the rate limiter's delay before they are looked at.
	AuthDelayed prometheus.Gauge

	registry *prometheus.Registry
}

// RegisterTokenUses exposes the client-token replay cache: stats reports
// the tokens it tracks and the ones it dropped before they expired.
func (a Admission) RegisterTokenUses(stats func() (tracked int, evictions int64)) {
	a.registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: namespace, Name: "client_token_uses_tracked",
			Help: "Client tokens in the replay cache (each kept until it expires).",
		}, func() float64 { n, _ := stats(); return float64(n) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: namespace, Name: "client_token_uses_evictions_total",
			Help: "Client tokens dropped from the full replay cache before they expired.",
		}, func() float64 { _, n := stats(); return float64(n) }),
	)
}

// MemoryKinds are the kind labels of voicegateway_memory_accounted_bytes.
var MemoryKinds = []string{"session", "audio", "outbound", "upstream", "inbound"}

// MemoryRefusalKinds are the what labels of voicegateway_memory_refusals_total:
// a new session, buffering in a session, a client's outbound queue.
var MemoryRefusalKinds = []string{"session", "buffer", "outbound"}

func newAdmission(reg *prometheus.Registry) Admission {
	a := Admission{
		MemoryBudget: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "memory_budget_bytes",
			Help: "Bytes clients may make this process hold (half of --memory-limit or GOMEMLIMIT); 0 when no limit is known.",
		}),
		MemoryReserved: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "memory_reserved_bytes",
			Help: "Bytes counted against the memory budget: each session's promised bytes, or what it holds when more (output let through to clients that read past a spent budget included).",
		}),
		MemoryAccounted: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Namespace: namespace, Name: "memory_accounted_bytes",
			Help: "Bytes sessions hold, by kind: session (per-session cost and kept settings), audio (buffered input and turns), outbound (queued for clients), upstream (queued for upstreams), inbound (client messages being read).",
		}, []string{"kind"}),
		MemoryRefusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Name: "memory_refusals_total",
			Help: "What the memory budget refused: session (a new session, memory_limit), buffer (buffering in a session, buffer_full), outbound (a client's queue, slow_consumer).",
		}, []string{"what"}),
		HandshakesInFlight: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "handshakes_in_flight",
			Help: "Requests on the sessions path that are not a session yet (at most --max-handshakes; more are refused with server_busy).",
		}),
		AuthDelayed: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: namespace, Name: "auth_delayed_requests",
			Help: "Requests from suspicious client addresses waiting out --auth-suspicious-delay (at most half of --max-handshakes; more are refused with rate_limited).",
		}),
		registry: reg,
	}
	reg.MustRegister(a.MemoryBudget, a.MemoryReserved, a.MemoryAccounted, a.MemoryRefusals, a.HandshakesInFlight, a.AuthDelayed)
	for _, kind := range MemoryKinds {
		a.MemoryAccounted.WithLabelValues(kind)
	}
	for _, what := range MemoryRefusalKinds {
		a.MemoryRefusals.WithLabelValues(what)
	}
	return a
}
