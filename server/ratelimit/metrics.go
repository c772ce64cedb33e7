package ratelimit

import "github.com/prometheus/client_golang/prometheus"

// Stats is a point-in-time summary of the table.
type Stats struct {
	Tracked        int    // IPs held now
	Blocked        int    // IPs blocked now
	BlocksTotal    uint64 // blocks started since New
	EvictionsTotal uint64 // IPs still holding state that were evicted to make room
	FailuresTotal  uint64 // failures recorded since New
}

// Stats counts blocked IPs by looking at every entry, one shard lock at a
// time. That costs about a millisecond for a full default table, cheap at
// scrape intervals, and keeps Check free of bookkeeping; a running counter
// could not know when a block ends without a timer per block.
func (l *Limiter) Stats() Stats {
	now := l.now()
	var st Stats
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		st.Tracked += len(s.entries)
		for _, e := range s.entries {
			if now < e.blockedUntil {
				st.Blocked++
			}
		}
		st.BlocksTotal += s.blocksTotal
		st.EvictionsTotal += s.evictionsTotal
		st.FailuresTotal += s.failuresTotal
		s.mu.Unlock()
	}
	return st
}

var (
	trackedDesc = prometheus.NewDesc("voicegateway_ratelimit_tracked_ips",
		"Client IPs tracked for failed authentication.", nil, nil)
	blockedDesc = prometheus.NewDesc("voicegateway_ratelimit_blocked_ips",
		"Client IPs blocked now for failed authentication.", nil, nil)
	blocksDesc = prometheus.NewDesc("voicegateway_ratelimit_blocks_total",
		"Blocks started because of failed authentication.", nil, nil)
	evictionsDesc = prometheus.NewDesc("voicegateway_ratelimit_evictions_total",
		"Tracked IPs evicted because the table was full; if this grows, raise the max tracked IPs.", nil, nil)
	failuresDesc = prometheus.NewDesc("voicegateway_ratelimit_failures_total",
		"Failed authentication attempts recorded.", nil, nil)
)

// The server registers the Limiter in its own registry.
var _ prometheus.Collector = (*Limiter)(nil)

// Describe implements prometheus.Collector.
func (l *Limiter) Describe(ch chan<- *prometheus.Desc) {
	ch <- trackedDesc
	ch <- blockedDesc
	ch <- blocksDesc
	ch <- evictionsDesc
	ch <- failuresDesc
}

// Collect implements prometheus.Collector.
func (l *Limiter) Collect(ch chan<- prometheus.Metric) {
	st := l.Stats()
	ch <- prometheus.MustNewConstMetric(trackedDesc, prometheus.GaugeValue, float64(st.Tracked))
	ch <- prometheus.MustNewConstMetric(blockedDesc, prometheus.GaugeValue, float64(st.Blocked))
	ch <- prometheus.MustNewConstMetric(blocksDesc, prometheus.CounterValue, float64(st.BlocksTotal))
	ch <- prometheus.MustNewConstMetric(evictionsDesc, prometheus.CounterValue, float64(st.EvictionsTotal))
	ch <- prometheus.MustNewConstMetric(failuresDesc, prometheus.CounterValue, float64(st.FailuresTotal))
}
