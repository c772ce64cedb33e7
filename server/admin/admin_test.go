package admin

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/admin/adminapi"
	"github.com/voicegateway/voicegateway/server/lifecycle"
	"github.com/voicegateway/voicegateway/server/version"
)

// drainTo drives the harness's drain to phase.
func (h *harness) drainTo(phase lifecycle.Phase) {
	h.t.Helper()
	switch phase {
	case lifecycle.Serving:
	case lifecycle.Terminating:
		h.drainer.Begin()
		h.waitForTimer()
	case lifecycle.Stopped:
		h.drainer.Begin()
		h.waitForTimer()
		h.clk.Step(drainConfig.PropagationDelay)
		h.waitRun()
	default:
		h.t.Fatalf("drainTo %v is not supported", phase)
	}
	if got := h.drainer.Phase(); got != phase {
		h.t.Fatalf("phase = %v, want %v", got, phase)
	}
}

// TestProbes checks liveness and readiness through the drain: liveness
// stays healthy so the kubelet never restarts a draining pod, readiness
// fails from the moment termination begins.
func TestProbes(t *testing.T) {
	cases := []struct {
		name      string
		phase     lifecycle.Phase
		wantReady int
		wantBody  string
	}{
		{name: "serving", phase: lifecycle.Serving, wantReady: http.StatusOK, wantBody: "ok\n"},
		{name: "terminating", phase: lifecycle.Terminating, wantReady: http.StatusServiceUnavailable, wantBody: "draining\n"},
		{name: "stopped", phase: lifecycle.Stopped, wantReady: http.StatusServiceUnavailable, wantBody: "draining\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.drainTo(tc.phase)
			if code, ctype, body := h.do(http.MethodGet, "/healthz", nil); code != http.StatusOK || body != "ok\n" || !strings.HasPrefix(ctype, "text/plain") {
				t.Errorf("/healthz = %d %q %q, want 200 text ok", code, ctype, body)
			}
			if code, _, body := h.do(http.MethodGet, "/readyz", nil); code != tc.wantReady || body != tc.wantBody {
				t.Errorf("/readyz = %d %q, want %d %q", code, body, tc.wantReady, tc.wantBody)
			}
		})
	}
}

func TestStatus(t *testing.T) {
	cases := []struct {
		name     string
		sessions int
		// uptime passes on the clock before termination (if any) begins.
		uptime time.Duration
		begin  bool
		want   adminapi.Status
	}{
		{
			name: "serving", sessions: 2, uptime: 90 * time.Second,
			want: adminapi.Status{Sessions: 2, Ready: true, Draining: false, Phase: adminapi.PhaseServing, UptimeSeconds: 90},
		},
		{
			name: "idle", sessions: 0,
			want: adminapi.Status{Sessions: 0, Ready: true, Phase: adminapi.PhaseServing},
		},
		{
			name: "terminating", sessions: 1, uptime: time.Hour, begin: true,
			want: adminapi.Status{Sessions: 1, Ready: false, Draining: true, Phase: adminapi.PhaseTerminating, UptimeSeconds: 3600},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			h.openSessions(tc.sessions)
			h.clk.Step(tc.uptime)
			if tc.begin {
				h.drainTo(lifecycle.Terminating)
			}

			var raw map[string]any
			h.getJSON("/status", &raw)
			for _, field := range []string{"version", "backend", "sessions", "session_limit", "ready", "draining", "phase", "notified", "uptime_seconds"} {
				if _, ok := raw[field]; !ok {
					t.Errorf("/status has no %q: %v", field, raw)
				}
			}
			for _, field := range []string{"drain_started", "drain_deadline"} {
				if _, ok := raw[field]; ok != tc.begin {
					t.Errorf("/status has %q: %v, want %v", field, ok, tc.begin)
				}
			}

			// What every caller reads, through the contract's client.
			got, err := h.adminClient("").Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			want := tc.want
			want.Version, want.Backend, want.SessionLimit = version.Version, "echo", sessionLimit
			if tc.begin {
				start, deadline := epoch.Add(tc.uptime), epoch.Add(tc.uptime+drainConfig.DrainTimeout)
				if got.DrainStarted == nil || !got.DrainStarted.Equal(start) {
					t.Errorf("drain_started = %v, want %v", got.DrainStarted, start)
				}
				if got.DrainDeadline == nil || !got.DrainDeadline.Equal(deadline) {
					t.Errorf("drain_deadline = %v, want %v", got.DrainDeadline, deadline)
				}
			}
			got.DrainStarted, got.DrainDeadline = nil, nil
			if got != want {
				t.Errorf("/status = %+v\nwant      %+v", got, want)
			}
		})
	}
}

func TestMetricsEndpoint(t *testing.T) {
	h := newHarness(t)
	h.openSessions(2)
	h.limiter.Failure(netip.MustParseAddr("198.51.100.9"))

	code, ctype, body := h.do(http.MethodGet, "/metrics", nil)
	if code != http.StatusOK || !strings.HasPrefix(ctype, "text/plain") {
		t.Fatalf("/metrics = %d %q", code, ctype)
	}
	for _, line := range []string{
		"voicegateway_sessions_active 2",
		"voicegateway_sessions_total 2",
		"voicegateway_drain_phase 0",
		"voicegateway_ratelimit_tracked_ips 1",
		"voicegateway_ratelimit_failures_total 1",
		`voicegateway_errors_total{code="drain_deadline"} 0`,
	} {
		if !slices.Contains(strings.Split(body, "\n"), line) {
			t.Errorf("/metrics has no line %q", line)
		}
	}
}

func TestDebugMemstats(t *testing.T) {
	h := newHarness(t)
	h.openSessions(1)
	got, err := h.adminClient(testAdminToken).MemStats(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if got.Sessions != 1 || got.Goroutines <= 0 || got.HeapInuseBytes == 0 {
		t.Errorf("/debug/memstats = %+v, want 1 session and nonzero goroutines and heap", got)
	}
}

// TestDrainEndpoint checks the preStop hook: it begins the drain at once and
// answers only when new sessions are refused, so the kubelet's SIGTERM comes
// after endpoints have caught up; a caller that gives up leaves the drain
// going.
func TestDrainEndpoint(t *testing.T) {
	cases := []struct {
		name   string
		method string
		// cancel gives up on the request while it waits.
		cancel bool
	}{
		{name: "POST waits for the propagation delay", method: http.MethodPost},
		{name: "POST given up", method: http.MethodPost, cancel: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, tc.method, h.url+"/drain", nil)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+testAdminToken)
			type result struct {
				code int
				body []byte
				err  error
			}
			done := make(chan result, 1)
			go func() {
				resp, err := h.client.Do(req)
				if err != nil {
					done <- result{err: err}
					return
				}
				defer resp.Body.Close()
				body, err := io.ReadAll(resp.Body)
				done <- result{code: resp.StatusCode, body: body, err: err}
			}()

			// The request begins the drain and the drainer waits out the delay.
			testkit.Eventually(t, hangTimeout, testkit.That("the request to begin the drain", func() bool {
				return h.drainer.Phase() == lifecycle.Terminating && h.clk.HasWaiters()
			}))
			if code, _, _ := h.do(http.MethodGet, "/readyz", nil); code != http.StatusServiceUnavailable {
				t.Errorf("/readyz while the hook waits = %d, want 503", code)
			}
			h.clk.Step(drainConfig.PropagationDelay - time.Nanosecond)
			select {
			case r := <-done:
				t.Fatalf("/drain answered %d %s (%v) before the propagation delay passed", r.code, r.body, r.err)
			default:
			}

			if tc.cancel {
				cancel()
				r := waitResult(t, done)
				if !errors.Is(r.err, context.Canceled) {
					t.Errorf("given-up request = %d, %v; want context.Canceled", r.code, r.err)
				}
				testkit.Eventually(t, hangTimeout, testkit.That("the handler to return", func() bool { return h.inFlight.Load() == 0 }))
				if got := h.drainer.Phase(); got != lifecycle.Terminating {
					t.Errorf("phase after the hook gave up = %v, want terminating", got)
				}
				// The drain goes on regardless.
				h.clk.Step(time.Nanosecond)
				h.waitRun()
				return
			}

			h.clk.Step(time.Nanosecond)
			r := waitResult(t, done)
			if r.err != nil || r.code != http.StatusOK {
				t.Fatalf("/drain = %d %s, %v; want 200", r.code, r.body, r.err)
			}
			var st adminapi.DrainResponse
			if err := json.Unmarshal(r.body, &st); err != nil {
				t.Fatalf("/drain body %s: %v", r.body, err)
			}
			if st.Ready || !st.Draining || !slices.Contains([]string{"refusing", "closing", "stopped"}, st.Phase) ||
				st.DrainStarted == nil || !st.DrainStarted.Equal(epoch) {
				t.Errorf("/drain status = %+v, want draining, refusing or later, started at %v", st, epoch)
			}
			if !h.drainer.Refusing() {
				t.Errorf("phase after /drain answered = %v, want refusing or later", h.drainer.Phase())
			}
			// A second call (the kubelet retries) answers at once.
			if code, _, _ := h.do(tc.method, "/drain", nil); code != http.StatusOK {
				t.Errorf("second /drain = %d, want 200", code)
			}
		})
	}
}

func waitResult[T any](t *testing.T, ch <-chan T) T {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(hangTimeout):
		t.Fatal("request did not return")
		var zero T
		return zero
	}
}

// TestDrainEndpointMethods checks that only POST begins a drain: no GET may
// cut calls.
func TestDrainEndpointMethods(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		t.Run(method, func(t *testing.T) {
			h := newHarness(t)
			if code, _, _ := h.do(method, "/drain", nil); code != http.StatusMethodNotAllowed {
				t.Errorf("%s /drain = %d, want 405", method, code)
			}
			if got := h.drainer.Phase(); got != lifecycle.Serving {
				t.Errorf("phase after %s /drain = %v, want serving", method, got)
			}
		})
	}
}
