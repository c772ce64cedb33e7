package main

import (
	"math"
	"sync"
	"testing"
	"time"
)

func TestSummarize(t *testing.T) {
	tests := map[string]struct {
		values []time.Duration
		want   Summary
		// tolerance is relative; 0 means three significant digits (0.1 %).
		tolerance float64
	}{
		"empty": {want: Summary{}},
		"one value": {
			values: []time.Duration{2 * time.Millisecond},
			want:   Summary{Count: 1, Mean: 2, P50: 2, P90: 2, P99: 2, P999: 2, Max: 2},
		},
		"1..1000 ms": {
			values: func() []time.Duration {
				v := make([]time.Duration, 1000)
				for i := range v {
					v[i] = time.Duration(i+1) * time.Millisecond
				}
				return v
			}(),
			want: Summary{Count: 1000, Mean: 500.5, P50: 500, P90: 900, P99: 990, P999: 999, Max: 1000},
		},
		"below the lowest value is clamped, not dropped": {
			values: []time.Duration{0, 10 * time.Nanosecond},
			want:   Summary{Count: 2, Mean: 0.001, P50: 0.001, P90: 0.001, P99: 0.001, P999: 0.001, Max: 0.001},
			// 1 µs is the histogram's resolution: a bucket, not a value.
			tolerance: 0.25,
		},
		"a stall beyond the range is kept at the top": {
			values: []time.Duration{time.Hour},
			want:   Summary{Count: 1, Mean: 120000, P50: 120000, P90: 120000, P99: 120000, P999: 120000, Max: 120000},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			l := newLatency()
			for i, v := range tc.values {
				l.record(i, v)
			}
			got := summarize(l.merged())
			tol := tc.tolerance
			if tol == 0 {
				tol = 0.001
			}
			near := func(a, b float64) bool { return math.Abs(a-b) <= tol*math.Max(math.Abs(b), 0.001) }
			if got.Count != tc.want.Count || !near(got.Mean, tc.want.Mean) || !near(got.P50, tc.want.P50) ||
				!near(got.P90, tc.want.P90) || !near(got.P99, tc.want.P99) || !near(got.P999, tc.want.P999) || !near(got.Max, tc.want.Max) {
				t.Fatalf("summary %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestLatencyConcurrent(t *testing.T) {
	l := newLatency()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 1000 {
				l.record(g*1000+i, time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if n := l.merged().TotalCount(); n != 8000 {
		t.Fatalf("recorded %d values, want 8000", n)
	}
}

func TestThousands(t *testing.T) {
	tests := map[string]struct {
		in   int64
		want string
	}{
		"zero":     {0, "0"},
		"hundreds": {999, "999"},
		"thousand": {1000, "1,000"},
		"million":  {1234567, "1,234,567"},
		"negative": {-10000, "-10,000"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := thousands(tc.in); got != tc.want {
				t.Fatalf("thousands(%d) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestSumMetric(t *testing.T) {
	text := []byte(`# HELP voicegateway_dropped_frames_total Frames dropped.
# TYPE voicegateway_dropped_frames_total counter
voicegateway_dropped_frames_total{reason="inbound_rate"} 3
voicegateway_dropped_frames_total{reason="slow_consumer"} 4.5
voicegateway_dropped_frames_total_extra 100
voicegateway_ratelimit_tracked_ips 100000
`)
	tests := map[string]struct {
		name string
		want float64
	}{
		"labelled samples add up":      {"voicegateway_dropped_frames_total", 7.5},
		"plain sample":                 {"voicegateway_ratelimit_tracked_ips", 100000},
		"a longer name is not a match": {"voicegateway_dropped_frames", 0},
		"absent":                       {"voicegateway_nothing", 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := sumMetric(text, tc.name); got != tc.want {
				t.Fatalf("sumMetric(%s) = %v, want %v", tc.name, got, tc.want)
			}
		})
	}
}
