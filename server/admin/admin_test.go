package admin

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/voicegateway/voicegateway/server/lifecycle"
	"github.com/voicegateway/voicegateway/server/ratelimit"
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
		want   Status
	}{
		{
			name: "serving", sessions: 2, uptime: 90 * time.Second,
			want: Status{Sessions: 2, Ready: true, Draining: false, Phase: "serving", UptimeSeconds: 90},
		},
		{
			name: "idle", sessions: 0,
			want: Status{Sessions: 0, Ready: true, Phase: "serving"},
		},
		{
			name: "terminating", sessions: 1, uptime: time.Hour, begin: true,
			want: Status{Sessions: 1, Ready: false, Draining: true, Phase: "terminating", UptimeSeconds: 3600},
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

			var got Status
			h.getJSON("/status", &got)
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
	var got MemStats
	h.getJSON("/debug/memstats", &got)
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
			eventually(t, "the request to begin the drain", func() bool {
				return h.drainer.Phase() == lifecycle.Terminating && h.clk.HasWaiters()
			})
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
				eventually(t, "the handler to return", func() bool { return h.inFlight.Load() == 0 })
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
			var st Status
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

// TestRateLimitStateRoundTrip hands a block from one server to its
// successor the way a rollout does: GET on the old pod, PUT on the new.
func TestRateLimitStateRoundTrip(t *testing.T) {
	blocked := netip.MustParseAddr("203.0.113.7")
	old := newHarness(t)
	for i := 0; ; i++ {
		if old.limiter.Failure(blocked).Verdict == ratelimit.Block {
			break
		}
		if i > 1000 {
			t.Fatal("no block after 1000 failures")
		}
	}

	var exported ratelimit.State
	old.getJSON("/ratelimit/state", &exported)
	if exported.Version != ratelimit.StateVersion || len(exported.Entries) != 1 || exported.Entries[0].IP != blocked.String() ||
		exported.Entries[0].BlockedUntil == nil {
		t.Fatalf("exported state = %+v, want one blocked entry for %v", exported, blocked)
	}
	wantUntil := epoch.Add(old.limiter.Config().BlockDuration)
	if !exported.Entries[0].BlockedUntil.Equal(wantUntil) {
		t.Errorf("blocked_until = %v, want %v", exported.Entries[0].BlockedUntil, wantUntil)
	}
	body, err := json.Marshal(exported)
	if err != nil {
		t.Fatal(err)
	}

	successor := newHarness(t)
	if got := successor.limiter.Check(blocked).Verdict; got != ratelimit.Allow {
		t.Fatalf("fresh limiter says %v", got)
	}
	code, ctype, resp := successor.do(http.MethodPut, "/ratelimit/state", bytes.NewReader(body))
	if code != http.StatusOK || ctype != "application/json" || strings.TrimSpace(resp) != `{"imported":1}` {
		t.Fatalf("PUT /ratelimit/state = %d %q %s, want 200 {\"imported\":1}", code, ctype, resp)
	}
	if d := successor.limiter.Check(blocked); d.Verdict != ratelimit.Block || d.RetryAfter != old.limiter.Config().BlockDuration {
		t.Errorf("successor decision for %v = %+v, want Block for the full block duration", blocked, d)
	}
	if got := successor.limiter.Check(netip.MustParseAddr("203.0.113.8")).Verdict; got != ratelimit.Allow {
		t.Errorf("successor decision for another address = %v, want allow", got)
	}
	// The successor hands on the same state.
	var again ratelimit.State
	successor.getJSON("/ratelimit/state", &again)
	if len(again.Entries) != 1 || again.Entries[0].IP != blocked.String() || !again.Entries[0].BlockedUntil.Equal(wantUntil) {
		t.Errorf("successor exports %+v, want the imported block", again.Entries)
	}
}

// TestRateLimitStateImportRefused checks PUT bodies the server must not
// take, and that refusing one leaves the limiter as it was.
func TestRateLimitStateImportRefused(t *testing.T) {
	future := epoch.Add(time.Minute).Format(time.RFC3339)
	cases := []struct {
		name     string
		body     func() io.Reader
		wantCode int
		// wantError is part of the error message expected.
		wantError string
		// wantImported is the "imported" count a refusal reports: entries
		// that could be read are kept even when others could not.
		wantImported int
		// wantTracked is how many IPs the limiter holds afterwards.
		wantTracked int
	}{
		{name: "not JSON", body: text("not json"), wantCode: http.StatusBadRequest, wantError: "not valid JSON"},
		{name: "truncated JSON", body: text(`{"version":1,"entries":[`), wantCode: http.StatusBadRequest, wantError: "not valid JSON"},
		{name: "wrong field type", body: text(`{"version":"1"}`), wantCode: http.StatusBadRequest, wantError: "not valid JSON"},
		{name: "empty body", body: text(""), wantCode: http.StatusBadRequest, wantError: "not valid JSON"},
		{name: "wrong version", body: text(`{"version":2,"entries":[{"ip":"192.0.2.1","blocked_until":"` + future + `"}]}`),
			wantCode: http.StatusBadRequest, wantError: "version 2"},
		{name: "no version", body: text(`{"entries":[{"ip":"192.0.2.1","blocked_until":"` + future + `"}]}`),
			wantCode: http.StatusBadRequest, wantError: "version 0"},
		{name: "unreadable entry", body: text(`{"version":1,"entries":[{"ip":"not-an-ip","blocked_until":"` + future + `"}]}`),
			wantCode: http.StatusBadRequest, wantError: "not an IP address"},
		{name: "some entries unreadable", body: text(`{"version":1,"entries":[{"ip":"not-an-ip","blocked_until":"` + future + `"},` +
			`{"ip":"192.0.2.2","blocked_until":"` + future + `"}]}`),
			wantCode: http.StatusBadRequest, wantError: "skipped 1 of 2", wantImported: 1, wantTracked: 1},
		{name: "one byte over the size limit", body: paddedState(maxStateBody + 1), wantCode: http.StatusRequestEntityTooLarge, wantError: "larger than 32 MiB"},
		{name: "exactly the size limit", body: paddedState(maxStateBody), wantCode: http.StatusOK, wantImported: 1, wantTracked: 1},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t)
			// A recorder rather than the loopback server: a server may
			// answer an oversized body before the client has sent it all,
			// and the client may then report the broken write instead.
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPut, "/ratelimit/state", tc.body())
			req.Header.Set("Authorization", "Bearer "+testAdminToken)
			h.handler.ServeHTTP(rec, req)
			if rec.Code != tc.wantCode {
				t.Errorf("PUT = %d %s, want %d", rec.Code, rec.Body, tc.wantCode)
			}
			if ctype := rec.Header().Get("Content-Type"); ctype != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ctype)
			}
			var resp map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
				t.Fatalf("response %s is not JSON: %v", rec.Body, err)
			}
			if tc.wantError != "" {
				if msg, _ := resp["error"].(string); !strings.Contains(msg, tc.wantError) {
					t.Errorf("error = %q, want it to mention %q", msg, tc.wantError)
				}
			}
			if imported, ok := resp["imported"]; (ok || tc.wantImported > 0) && imported != float64(tc.wantImported) {
				t.Errorf("response reports imported %v, want %d", imported, tc.wantImported)
			}
			if got := h.limiter.Stats().Tracked; got != tc.wantTracked {
				t.Errorf("limiter tracks %d IPs, want %d", got, tc.wantTracked)
			}
		})
	}
}

func text(s string) func() io.Reader {
	return func() io.Reader { return strings.NewReader(s) }
}

// paddedState is a valid state of exactly size bytes, one blocked entry
// padded with JSON whitespace, produced without holding it in memory.
func paddedState(size int) func() io.Reader {
	return func() io.Reader {
		head := fmt.Sprintf(`{"version":1,"exported_at":%q,"entries":[{"ip":"192.0.2.1","blocked_until":%q}]`,
			epoch.Format(time.RFC3339), epoch.Add(time.Minute).Format(time.RFC3339))
		const tail = `}`
		return io.MultiReader(strings.NewReader(head), io.LimitReader(spaces{}, int64(size-len(head)-len(tail))), strings.NewReader(tail))
	}
}

type spaces struct{}

func (spaces) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	return len(p), nil
}
