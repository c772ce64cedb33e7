package metrics_test

import (
	"slices"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/voicegateway/voicegateway/server/metrics"
	"github.com/voicegateway/voicegateway/server/protocol"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// TestNewTwice checks that servers in one process (tests, mostly) each get
// their own registry: creating a second does not panic on duplicate
// registration, and their values are independent.
func TestNewTwice(t *testing.T) {
	first := metrics.New()
	second := metrics.New()
	if first.Registry == second.Registry {
		t.Fatal("two servers share a registry")
	}
	first.SessionsActive.Inc()
	first.Errors.WithLabelValues(string(protocol.CodeIdleTimeout)).Inc()
	if got := testutil.ToFloat64(second.SessionsActive); got != 0 {
		t.Errorf("second server's sessions_active = %v after the first's changed, want 0", got)
	}
	if got := testutil.ToFloat64(second.Errors.WithLabelValues(string(protocol.CodeIdleTimeout))); got != 0 {
		t.Errorf("second server's errors_total = %v after the first's changed, want 0", got)
	}
}

// TestRegistered checks that every metric is in the server's registry
// under its documented name, with the Go and process collectors beside.
func TestRegistered(t *testing.T) {
	m := metrics.New()
	// Labelled series appear once they have a child.
	m.SessionsClosed.WithLabelValues("1000")
	m.DroppedFrames.WithLabelValues("slow_consumer")
	m.AuthFailures.WithLabelValues("invalid")
	m.UpgradesRejected.WithLabelValues(string(protocol.CodeRateLimited))
	m.SessionDuration.Observe(1)
	m.UpstreamDialSeconds.Observe(0.1)

	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	types := map[string]string{}
	for _, f := range families {
		types[f.GetName()] = f.GetType().String()
	}
	want := map[string]string{
		"voicegateway_sessions_active":               "GAUGE",
		"voicegateway_sessions_total":                "COUNTER",
		"voicegateway_session_duration_seconds":      "HISTOGRAM",
		"voicegateway_sessions_closed_total":         "COUNTER",
		"voicegateway_audio_frames_in_total":         "COUNTER",
		"voicegateway_audio_frames_out_total":        "COUNTER",
		"voicegateway_dropped_frames_total":          "COUNTER",
		"voicegateway_errors_total":                  "COUNTER",
		"voicegateway_auth_failures_total":           "COUNTER",
		"voicegateway_upgrades_rejected_total":       "COUNTER",
		"voicegateway_drain_phase":                   "GAUGE",
		"voicegateway_drain_duration_seconds":        "GAUGE",
		"voicegateway_drain_notified_sessions_total": "COUNTER",
		"voicegateway_client_tokens_minted_total":    "COUNTER",
		"voicegateway_upstream_dial_seconds":         "HISTOGRAM",
		"voicegateway_upstream_errors_total":         "COUNTER",
		"voicegateway_upstream_connections":          "GAUGE",
		"voicegateway_upstream_relay_queue_messages": "GAUGE",
		"go_goroutines":                              "GAUGE",
		"process_cpu_seconds_total":                  "COUNTER",
	}
	for name, typ := range want {
		got, ok := types[name]
		if !ok {
			t.Errorf("%s is not registered", name)
			continue
		}
		if got != typ {
			t.Errorf("%s is a %v, want %v", name, got, typ)
		}
	}
}

// TestErrorsPreCreated checks that every documented error code has a
// series from the start, so dashboards see zeros rather than gaps.
func TestErrorsPreCreated(t *testing.T) {
	m := metrics.New()
	if got, want := testutil.CollectAndCount(m.Errors, "voicegateway_errors_total"), len(protocol.AllCodes); got != want {
		t.Errorf("errors_total has %d series, want one per error code (%d)", got, want)
	}
	families, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var codes []string
	for _, f := range families {
		if f.GetName() != "voicegateway_errors_total" {
			continue
		}
		for _, metric := range f.GetMetric() {
			if v := metric.GetCounter().GetValue(); v != 0 {
				t.Errorf("errors_total %v = %v on a new server, want 0", metric.GetLabel(), v)
			}
			for _, l := range metric.GetLabel() {
				if l.GetName() == "code" {
					codes = append(codes, l.GetValue())
				}
			}
		}
	}
	for _, c := range protocol.AllCodes {
		if !slices.Contains(codes, string(c)) {
			t.Errorf("errors_total has no series for code %q", c)
		}
	}
}

// TestUpstreamErrorsPreCreated: every upstream error kind has a series
// from the start.
func TestUpstreamErrorsPreCreated(t *testing.T) {
	m := metrics.New()
	if got, want := testutil.CollectAndCount(m.UpstreamErrors, "voicegateway_upstream_errors_total"), len(metrics.UpstreamErrorKinds); got != want {
		t.Errorf("upstream_errors_total has %d series, want one per kind (%d)", got, want)
	}
}

// TestLint runs Prometheus' metric linter (naming, units, help) over every
// metric.
func TestLint(t *testing.T) {
	m := metrics.New()
	m.SessionsClosed.WithLabelValues("1000")
	m.DroppedFrames.WithLabelValues("slow_consumer")
	m.AuthFailures.WithLabelValues("invalid")
	m.UpgradesRejected.WithLabelValues(string(protocol.CodeRateLimited))
	cases := map[string]prometheus.Collector{
		"sessions_active":      m.SessionsActive,
		"sessions_total":       m.SessionsTotal,
		"session_duration":     m.SessionDuration,
		"sessions_closed":      m.SessionsClosed,
		"audio_frames_in":      m.AudioFramesIn,
		"audio_frames_out":     m.AudioFramesOut,
		"dropped_frames":       m.DroppedFrames,
		"errors":               m.Errors,
		"auth_failures":        m.AuthFailures,
		"upgrades_rejected":    m.UpgradesRejected,
		"drain_phase":          m.DrainPhase,
		"drain_duration":       m.DrainDuration,
		"drain_notified":       m.DrainNotified,
		"client_tokens_minted": m.ClientTokensMinted,
		"upstream_dial":        m.UpstreamDialSeconds,
		"upstream_errors":      m.UpstreamErrors,
		"upstream_connections": m.UpstreamConnections,
		"upstream_relay_queue": m.UpstreamRelayQueue,
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			problems, err := testutil.CollectAndLint(c)
			if err != nil {
				t.Fatalf("CollectAndLint: %v", err)
			}
			for _, p := range problems {
				t.Errorf("%s: %s", p.Metric, p.Text)
			}
		})
	}
	t.Run("whole registry", func(t *testing.T) {
		problems, err := testutil.GatherAndLint(m.Registry)
		if err != nil {
			t.Fatalf("GatherAndLint: %v", err)
		}
		for _, p := range problems {
			t.Errorf("%s: %s", p.Metric, p.Text)
		}
	})
}

// TestCloseCodeLabel: the close codes the gateway uses and 1006 are their
// own label; any other code a client sends counts as other, so that
// clients cannot grow the series.
func TestCloseCodeLabel(t *testing.T) {
	for code, want := range map[int]string{1000: "1000", 1006: "1006", 1012: "1012", 1013: "1013", 4000: "other", 3999: "other", 1005: "other"} {
		if got := metrics.CloseCodeLabel(code); got != want {
			t.Errorf("CloseCodeLabel(%d) = %q, want %q", code, got, want)
		}
	}
}

// TestLabelledSeriesExistAtStart: every label value the server names is a
// series before any event.
func TestLabelledSeriesExistAtStart(t *testing.T) {
	m := metrics.New()
	count := func(name string) int {
		families, err := m.Registry.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range families {
			if f.GetName() == name {
				return len(f.GetMetric())
			}
		}
		return 0
	}
	for name, want := range map[string]int{
		"voicegateway_sessions_closed_total":            len(metrics.CloseCodes) + 1,
		"voicegateway_dropped_frames_total":             len(metrics.DropReasons),
		"voicegateway_auth_failures_total":              len(metrics.AuthFailureReasons),
		"voicegateway_admin_auth_failures_total":        len(metrics.AdminAuthFailureReasons),
		"voicegateway_upgrades_rejected_total":          len(metrics.RejectionCodes),
		"voicegateway_errors_total":                     len(protocol.AllCodes),
		"voicegateway_upstream_errors_total":            len(metrics.UpstreamErrorKinds),
		"voicegateway_response_latency_seconds":         1,
		"voicegateway_drain_deadline_timestamp_seconds": 1,
		"voicegateway_sessions_limit":                   1,
	} {
		if got := count(name); got != want {
			t.Errorf("%s: %d series at start, want %d", name, got, want)
		}
	}
}
