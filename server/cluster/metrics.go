package cluster

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Kinds of traffic, the kind label of the byte counters.
const (
	trafficBroadcast = iota
	trafficState
	trafficKinds
)

var kindNames = [trafficKinds]string{"broadcast", "state"}

// Reasons a message is dropped, the reason label.
const (
	reasonCorrupt = iota
	reasonOversized
	reasonVersion
	reasons
)

var reasonNames = [reasons]string{"corrupt", "oversized", "version"}

// Metrics are the fleet membership's metrics. They exist, at zero, whether
// or not the replica gossips, so that dashboards and alerts see the same
// series on every server.
type Metrics struct {
	peer atomic.Pointer[Peer]

	members, health            atomic.Int64
	stateBytes, stateRecords   atomic.Int64
	received, statesMerged     atomic.Uint64
	joinFailures, queueDropped atomic.Uint64
	stateTruncated             atomic.Uint64
	logErrors, logWarnings     atomic.Uint64
	sentBytes, receivedBytes   [trafficKinds]atomic.Uint64
	dropped                    [reasons]atomic.Uint64
}

// NewMetrics returns the metrics, to register in the server's registry.
func NewMetrics() *Metrics { return &Metrics{} }

var (
	membersDesc = prometheus.NewDesc("voicegateway_cluster_members",
		"Fleet members this replica sees alive, itself included; 0 when it does not gossip.", nil, nil)
	settledDesc = prometheus.NewDesc("voicegateway_cluster_settled",
		"1 once this replica took a peer's state, found no peer or waited the settle timeout.", nil, nil)
	healthDesc = prometheus.NewDesc("voicegateway_cluster_health_score",
		"memberlist's awareness score: 0 is healthy, higher means this replica misses probes.", nil, nil)
	stateBytesDesc = prometheus.NewDesc("voicegateway_cluster_state_bytes",
		"Size of the full limiter state this replica last sent in a push/pull.", nil, nil)
	stateRecordsDesc = prometheus.NewDesc("voicegateway_cluster_state_records",
		"Client IPs in the full limiter state this replica last sent in a push/pull.", nil, nil)
	queuedDesc = prometheus.NewDesc("voicegateway_cluster_broadcast_queue",
		"Limiter changes waiting to be gossiped.", nil, nil)
	sentDesc = prometheus.NewDesc("voicegateway_cluster_sent_bytes_total",
		"Limiter state sent to peers, before encryption: gossiped changes (broadcast) and full states (state).", []string{"kind"}, nil)
	receivedDesc = prometheus.NewDesc("voicegateway_cluster_received_bytes_total",
		"Limiter state received from peers, after decryption.", []string{"kind"}, nil)
	receivedMsgsDesc = prometheus.NewDesc("voicegateway_cluster_messages_received_total",
		"Gossiped limiter changes applied.", nil, nil)
	statesDesc = prometheus.NewDesc("voicegateway_cluster_states_merged_total",
		"Full limiter states merged from push/pulls.", nil, nil)
	droppedDesc = prometheus.NewDesc("voicegateway_cluster_messages_dropped_total",
		"Limiter messages or states from peers dropped as corrupt, oversized or of an unknown version.", []string{"reason"}, nil)
	queueDroppedDesc = prometheus.NewDesc("voicegateway_cluster_broadcasts_dropped_total",
		"Queued limiter changes dropped because a broadcast queue was full; push/pull still carries them.", nil, nil)
	truncatedDesc = prometheus.NewDesc("voicegateway_cluster_state_truncated_total",
		"Full states cut at the size bound (blocks are sent first).", nil, nil)
	joinFailuresDesc = prometheus.NewDesc("voicegateway_cluster_join_failures_total",
		"Join attempts no peer answered.", nil, nil)
	memberlistLogDesc = prometheus.NewDesc("voicegateway_cluster_memberlist_problems_total",
		"memberlist's own errors and warnings (failed probes, undecryptable packets, refused streams).", []string{"level"}, nil)
)

// Describe implements prometheus.Collector.
func (m *Metrics) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{membersDesc, settledDesc, healthDesc, stateBytesDesc, stateRecordsDesc, queuedDesc,
		sentDesc, receivedDesc, receivedMsgsDesc, statesDesc, droppedDesc, queueDroppedDesc, truncatedDesc, joinFailuresDesc, memberlistLogDesc} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (m *Metrics) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	settled, queued := 0.0, 0
	if p := m.peer.Load(); p != nil {
		if p.Settled() {
			settled = 1
		}
		queued = p.blocks.NumQueued() + p.failures.NumQueued()
	}
	gauge(membersDesc, float64(m.members.Load()))
	gauge(settledDesc, settled)
	gauge(healthDesc, float64(m.health.Load()))
	gauge(stateBytesDesc, float64(m.stateBytes.Load()))
	gauge(stateRecordsDesc, float64(m.stateRecords.Load()))
	gauge(queuedDesc, float64(queued))
	for k := range trafficKinds {
		counter(sentDesc, m.sentBytes[k].Load(), kindNames[k])
		counter(receivedDesc, m.receivedBytes[k].Load(), kindNames[k])
	}
	counter(receivedMsgsDesc, m.received.Load())
	counter(statesDesc, m.statesMerged.Load())
	for r := range reasons {
		counter(droppedDesc, m.dropped[r].Load(), reasonNames[r])
	}
	counter(queueDroppedDesc, m.queueDropped.Load())
	counter(truncatedDesc, m.stateTruncated.Load())
	counter(joinFailuresDesc, m.joinFailures.Load())
	counter(memberlistLogDesc, m.logErrors.Load(), "error")
	counter(memberlistLogDesc, m.logWarnings.Load(), "warning")
}
