package main

import (
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"

	dto "github.com/prometheus/client_model/go"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// traffic counts every request the operator sends to the API server, by
// verb and resource, and the answers that cost a retry (409 Conflict, 429
// Too Many Requests), so that a phase can be told in requests per
// VoiceGateway, reads included: a pass that writes nothing may still read
// what a cache should have answered.
type traffic struct {
	mu        sync.Mutex
	byKind    map[string]int
	conflicts int
	throttled int
}

func newTraffic() *traffic { return &traffic{byKind: map[string]int{}} }

// Wrap counts the requests that go through rt.
func (t *traffic) Wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		kind := requestKind(req)
		resp, err := rt.RoundTrip(req)
		t.mu.Lock()
		t.byKind[kind]++
		if resp != nil {
			switch resp.StatusCode {
			case http.StatusConflict:
				t.conflicts++
			case http.StatusTooManyRequests:
				t.throttled++
			}
		}
		t.mu.Unlock()
		return resp, err
	})
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// requestKind names a request "VERB resource[/subresource]", with LIST
// and WATCH told apart from GET: /apis/apps/v1/namespaces/scale/deployments/x
// is "GET deployments", .../voicegateways/x/status "PATCH voicegateways/status".
func requestKind(req *http.Request) string {
	parts := strings.Split(strings.Trim(req.URL.Path, "/"), "/")
	// Drop the group prefix: api/v1 or apis/<group>/<version>.
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		parts = parts[3:]
	default:
		return req.Method + " " + req.URL.Path
	}
	if len(parts) >= 2 && parts[0] == "namespaces" {
		if len(parts) == 2 {
			return req.Method + " namespaces"
		}
		parts = parts[2:]
	}
	verb := req.Method
	switch {
	case len(parts) == 0:
		return verb + " (discovery)"
	case len(parts) == 1 && verb == http.MethodGet && req.URL.Query().Get("watch") == "true":
		return "WATCH " + parts[0]
	case len(parts) == 1 && verb == http.MethodGet:
		return "LIST " + parts[0]
	case len(parts) >= 3:
		return verb + " " + parts[0] + "/" + parts[2]
	}
	return verb + " " + parts[0]
}

// trafficSnapshot is what traffic counted since the last take.
type trafficSnapshot struct {
	byKind               map[string]int
	conflicts, throttled int
}

// take returns the counts and starts over.
func (t *traffic) take() trafficSnapshot {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := trafficSnapshot{byKind: t.byKind, conflicts: t.conflicts, throttled: t.throttled}
	t.byKind, t.conflicts, t.throttled = map[string]int{}, 0, 0
	return s
}

func (s trafficSnapshot) total() int {
	n := 0
	for _, c := range s.byKind {
		n += c
	}
	return n
}

// describe lists the counts, most frequent first, per VoiceGateway when
// per is positive.
func (s trafficSnapshot) describe(per int) string {
	kinds := make([]string, 0, len(s.byKind))
	for k := range s.byKind {
		kinds = append(kinds, k)
	}
	sort.Slice(kinds, func(i, j int) bool {
		if s.byKind[kinds[i]] != s.byKind[kinds[j]] {
			return s.byKind[kinds[i]] > s.byKind[kinds[j]]
		}
		return kinds[i] < kinds[j]
	})
	var b strings.Builder
	fmt.Fprintf(&b, "%d requests", s.total())
	if per > 0 {
		fmt.Fprintf(&b, " (%.2f per VoiceGateway)", float64(s.total())/float64(per))
	}
	b.WriteString(":")
	for _, k := range kinds {
		fmt.Fprintf(&b, " %s %d,", k, s.byKind[k])
	}
	fmt.Fprintf(&b, " 409 Conflict %d, 429 %d", s.conflicts, s.throttled)
	return b.String()
}

// reconcileStats are the controller's own histograms and counters
// (controller-runtime's metrics registry), read before and after a phase.
type reconcileStats struct {
	// buckets are the cumulative counts of controller_runtime_reconcile_time_seconds.
	bounds  []float64
	buckets []uint64
	count   uint64
	sum     float64
	// queueBuckets are those of workqueue_queue_duration_seconds: how long
	// a request waited in the queue before a worker took it.
	queueBounds  []float64
	queueBuckets []uint64
	queueCount   uint64
	// results counts controller_runtime_reconcile_total by result.
	results map[string]float64
}

func readReconcileStats() reconcileStats {
	var s reconcileStats
	s.results = map[string]float64{}
	families, err := metrics.Registry.Gather()
	if err != nil {
		return s
	}
	for _, f := range families {
		for _, m := range f.GetMetric() {
			if !hasLabel(m, "controller", "voicegateway") && !hasLabel(m, "name", "voicegateway") {
				continue
			}
			switch f.GetName() {
			case "controller_runtime_reconcile_time_seconds":
				s.bounds, s.buckets = histogramBuckets(m.GetHistogram())
				s.count, s.sum = m.GetHistogram().GetSampleCount(), m.GetHistogram().GetSampleSum()
			case "workqueue_queue_duration_seconds":
				s.queueBounds, s.queueBuckets = histogramBuckets(m.GetHistogram())
				s.queueCount = m.GetHistogram().GetSampleCount()
			case "controller_runtime_reconcile_total":
				for _, l := range m.GetLabel() {
					if l.GetName() == "result" {
						s.results[l.GetValue()] += m.GetCounter().GetValue()
					}
				}
			}
		}
	}
	return s
}

func hasLabel(m *dto.Metric, name, value string) bool {
	return slices.ContainsFunc(m.GetLabel(), func(l *dto.LabelPair) bool { return l.GetName() == name && l.GetValue() == value })
}

func histogramBuckets(h *dto.Histogram) ([]float64, []uint64) {
	var bounds []float64
	var counts []uint64
	for _, b := range h.GetBucket() {
		bounds = append(bounds, b.GetUpperBound())
		counts = append(counts, b.GetCumulativeCount())
	}
	return bounds, counts
}

// since is what happened between before and s.
func (s reconcileStats) since(before reconcileStats) reconcileStats {
	d := reconcileStats{bounds: s.bounds, count: s.count - before.count, sum: s.sum - before.sum,
		queueBounds: s.queueBounds, queueCount: s.queueCount - before.queueCount, results: map[string]float64{}}
	d.buckets = diffBuckets(s.buckets, before.buckets)
	d.queueBuckets = diffBuckets(s.queueBuckets, before.queueBuckets)
	for k, v := range s.results {
		d.results[k] = v - before.results[k]
	}
	return d
}

func diffBuckets(after, before []uint64) []uint64 {
	out := make([]uint64, len(after))
	for i := range after {
		out[i] = after[i]
		if i < len(before) {
			out[i] -= before[i]
		}
	}
	return out
}

// quantile is the upper bound of the histogram bucket holding the q-th
// quantile ("≤ bound"); the buckets are controller-runtime's.
func quantile(bounds []float64, cumulative []uint64, count uint64, q float64) string {
	if count == 0 {
		return "-"
	}
	rank := uint64(q*float64(count) + 0.999999)
	for i, c := range cumulative {
		if c >= rank {
			return fmt.Sprintf("≤ %gs", bounds[i])
		}
	}
	return fmt.Sprintf("> %gs", bounds[len(bounds)-1])
}

func (s reconcileStats) String() string {
	mean := 0.0
	if s.count > 0 {
		mean = s.sum / float64(s.count)
	}
	return fmt.Sprintf("%d reconciles (%v); reconcile time mean %.1f ms, p50 %s, p99 %s; queue wait p50 %s, p99 %s",
		s.count, s.results, 1000*mean,
		quantile(s.bounds, s.buckets, s.count, 0.50), quantile(s.bounds, s.buckets, s.count, 0.99),
		quantile(s.queueBounds, s.queueBuckets, s.queueCount, 0.50), quantile(s.queueBounds, s.queueBuckets, s.queueCount, 0.99))
}
