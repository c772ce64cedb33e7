package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Results of voicegateway_operator_drains_total.
const (
	// DrainAllEnded: every session of the pod ended before it went.
	DrainAllEnded = "all_ended"
	// DrainSessionsLeft: the pod went at or after its drain deadline with
	// sessions still open (the deadline closed them with 1012, or the pod
	// was killed). A pod that stops before its deadline ended its sessions.
	DrainSessionsLeft = "sessions_left"
)

// drainsFinished counts the drains the operator saw end, from the same
// comparison that records the DrainFinished events. The pods' own counters
// cannot tell this reliably: a pod whose deadline closes its sessions exits
// seconds later, before a scrape may see it. It lives in controller-runtime's
// registry, which the manager serves on its metrics endpoint.
var drainsFinished = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "voicegateway_operator_drains_total",
	Help: "Drains of voice server pods that ended, by result: all_ended (every session ended before the pod went) or sessions_left (the pod went at or after its drain deadline with sessions open).",
}, []string{"result"})

func init() {
	metrics.Registry.MustRegister(drainsFinished)
	// Both results exist from the start, so that increase() sees the first.
	drainsFinished.WithLabelValues(DrainAllEnded)
	drainsFinished.WithLabelValues(DrainSessionsLeft)
}

func countDrainFinished(sessionsLeft bool) {
	result := DrainAllEnded
	if sessionsLeft {
		result = DrainSessionsLeft
	}
	drainsFinished.WithLabelValues(result).Inc()
}
