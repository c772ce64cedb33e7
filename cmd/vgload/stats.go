package main

import (
	"maps"
	"slices"
	"sync"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
)

// Latencies are recorded in nanoseconds with three significant digits from
// 1 µs up to two minutes: enough to tell a 0.1 ms gateway cost from noise
// and to keep a stalled frame rather than clip it.
const (
	histLowest  = int64(time.Microsecond)
	histHighest = int64(2 * time.Minute)
	histDigits  = 3
	// histShards spreads concurrent recording over several histograms
	// (about 100 KB each), so a thousand sessions do not queue on one lock
	// and do not each carry a histogram.
	histShards = 16
)

// latency is a concurrency-safe HDR histogram of durations.
type latency struct {
	shards [histShards]latencyShard
}

type latencyShard struct {
	mu sync.Mutex
	h  *hdrhistogram.Histogram
	_  [40]byte // keep shards' locks on separate cache lines
}

func newLatency() *latency {
	l := &latency{}
	for i := range l.shards {
		l.shards[i].h = hdrhistogram.New(histLowest, histHighest, histDigits)
	}
	return l
}

// record adds d to the shard chosen by key (a session number). Values out
// of range are clamped, never dropped: a two-minute stall is still a stall.
func (l *latency) record(key int, d time.Duration) {
	v := min(max(int64(d), histLowest), histHighest)
	s := &l.shards[uint(key)%histShards]
	s.mu.Lock()
	_ = s.h.RecordValue(v)
	s.mu.Unlock()
}

// merged returns one histogram of everything recorded so far.
func (l *latency) merged() *hdrhistogram.Histogram {
	out := hdrhistogram.New(histLowest, histHighest, histDigits)
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		out.Merge(s.h)
		s.mu.Unlock()
	}
	return out
}

// Summary is a latency distribution as reported, in milliseconds.
type Summary struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p99_9_ms"`
	Max   float64 `json:"max_ms"`
}

func ms(ns int64) float64 { return float64(ns) / float64(time.Millisecond) }

// summarize reads the reported percentiles off h. An empty histogram
// summarizes to zeros with Count 0, which reports show as "—".
func summarize(h *hdrhistogram.Histogram) Summary {
	if h.TotalCount() == 0 {
		return Summary{}
	}
	return Summary{
		Count: h.TotalCount(),
		Mean:  h.Mean() / float64(time.Millisecond),
		P50:   ms(h.ValueAtQuantile(50)),
		P90:   ms(h.ValueAtQuantile(90)),
		P99:   ms(h.ValueAtQuantile(99)),
		P999:  ms(h.ValueAtQuantile(99.9)),
		Max:   ms(h.Max()),
	}
}

// counter counts occurrences of string keys (close codes, error codes).
type counter struct {
	mu sync.Mutex
	m  map[string]int
}

func (c *counter) add(key string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]int{}
	}
	c.m[key] += n
}

func (c *counter) snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return maps.Clone(c.m)
}

// sortedKeys returns m's keys in order, for stable reports.
func sortedKeys[V any](m map[string]V) []string {
	return slices.Sorted(maps.Keys(m))
}
