package controllers

import (
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
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

// The operator's metrics are per VoiceGateway, with the labels the voice
// servers' series get from the chart's PodMonitor: namespace and
// voicegateway (the chart's ServiceMonitor honors them over the
// operator's own namespace). Each VoiceGateway's series exist, at 0, from
// its first reconcile, and go with it.
var (
	// drainsFinished counts the drains the operator saw end, from the same
	// comparison that records the DrainFinished events. The pods' own
	// counters cannot tell this reliably: a pod whose deadline closes its
	// sessions exits seconds later, before a scrape may see it.
	drainsFinished = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "voicegateway_operator_drains_total",
		Help: "Drains of voice server pods that ended, by result: all_ended (every session ended before the pod went) or sessions_left (the pod went at or after its drain deadline with sessions open).",
	}, []string{"namespace", "voicegateway", "result"})
	// podsRunning is what the voice servers' own up series are compared
	// with: a VoiceGateway with running pods none of which is scraped.
	podsRunning = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "voicegateway_operator_pods_running",
		Help: "Voice server pods of the VoiceGateway that run (phase Running, not terminating), as the operator last listed them.",
	}, []string{"namespace", "voicegateway"})
)

// They live in controller-runtime's registry, which the manager serves on
// its metrics endpoint.
func init() {
	metrics.Registry.MustRegister(drainsFinished, podsRunning)
}

// observeGatewayMetrics creates a VoiceGateway's series (so that
// increase() sees the first drain) and sets its running pods.
func observeGatewayMetrics(gateway types.NamespacedName, pods []corev1.Pod) {
	for _, result := range []string{DrainAllEnded, DrainSessionsLeft} {
		drainsFinished.WithLabelValues(gateway.Namespace, gateway.Name, result)
	}
	running := 0
	for i := range pods {
		if pods[i].DeletionTimestamp == nil && pods[i].Status.Phase == corev1.PodRunning {
			running++
		}
	}
	podsRunning.WithLabelValues(gateway.Namespace, gateway.Name).Set(float64(running))
}

// forgetGatewayMetrics drops the series of a VoiceGateway that is gone.
func forgetGatewayMetrics(gateway types.NamespacedName) {
	labels := prometheus.Labels{"namespace": gateway.Namespace, "voicegateway": gateway.Name}
	drainsFinished.DeletePartialMatch(labels)
	podsRunning.DeletePartialMatch(labels)
}

func countDrainFinished(gateway types.NamespacedName, sessionsLeft bool) {
	result := DrainAllEnded
	if sessionsLeft {
		result = DrainSessionsLeft
	}
	drainsFinished.WithLabelValues(gateway.Namespace, gateway.Name, result).Inc()
}
