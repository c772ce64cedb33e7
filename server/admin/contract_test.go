package admin

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/admin/adminapi"
	"github.com/voicegateway/voicegateway/server/lifecycle"
)

// adminClient is the contract's client of the harness's handler, with
// token ("" sends none). It keeps no connection open between calls, so
// that one harness's client leaves nothing for another's leak check.
func (h *harness) adminClient(token string) *adminapi.Client {
	h.t.Helper()
	c, err := adminapi.NewClient(h.url, adminapi.ClientOptions{Token: token})
	if err != nil {
		h.t.Fatal(err)
	}
	return c
}

// TestContractPhases: the phases the server reports are the ones the
// contract names, in the same order.
func TestContractPhases(t *testing.T) {
	want := []string{adminapi.PhaseServing, adminapi.PhaseTerminating, adminapi.PhaseRefusing, adminapi.PhaseClosing, adminapi.PhaseStopped}
	for phase := lifecycle.Serving; phase <= lifecycle.Stopped; phase++ {
		if int(phase) >= len(want) || phase.String() != want[phase] {
			t.Errorf("lifecycle phase %d reports %q, which the contract does not name in that place", phase, phase.String())
		}
	}
	if got := (lifecycle.Stopped + 1).String(); got != "unknown" {
		t.Errorf("a phase after Stopped reports %q: name it in adminapi", got)
	}
}

// TestContractClient runs the contract's client against the real handler:
// what the server encodes is what every caller decodes, and its refusals
// arrive as the documented codes.
func TestContractClient(t *testing.T) {
	ctx := context.Background()
	h := newHarness(t)
	h.openSessions(2)
	admin := h.adminClient(testAdminToken)

	if ready, err := admin.Ready(ctx); err != nil || !ready {
		t.Fatalf("Ready() = %v, %v; want true", ready, err)
	}
	if st, err := admin.Status(ctx); err != nil || st.Sessions != 2 || st.Phase != adminapi.PhaseServing || st.SessionLimit != sessionLimit {
		t.Fatalf("Status() = %+v, %v", st, err)
	}
	if text, err := admin.Metrics(ctx); err != nil || len(text) == 0 {
		t.Fatalf("Metrics() = %d bytes, %v", len(text), err)
	}
	if p, err := admin.Profile(ctx, "goroutine", nil); err != nil || len(p) == 0 {
		t.Fatalf("Profile(goroutine) = %d bytes, %v", len(p), err)
	}

	for name, tc := range map[string]struct {
		client   *adminapi.Client
		wantHTTP int
		wantCode string
	}{
		"no token":    {client: h.adminClient(""), wantHTTP: http.StatusUnauthorized, wantCode: adminapi.CodeUnauthorized},
		"wrong token": {client: h.adminClient("vgw_admin_wrong"), wantHTTP: http.StatusUnauthorized, wantCode: adminapi.CodeUnauthorized},
		"admin disabled": {client: newHarness(t, func(o *Options) { o.AdminToken = nil }).adminClient(testAdminToken),
			wantHTTP: http.StatusForbidden, wantCode: adminapi.CodeAdminDisabled},
	} {
		_, memErr := tc.client.MemStats(ctx)
		_, drainErr := tc.client.Drain(ctx)
		for _, err := range []error{memErr, drainErr} {
			var se *adminapi.StatusError
			if !errors.As(err, &se) || se.StatusCode != tc.wantHTTP || se.Code != tc.wantCode {
				t.Errorf("%s: error = %v, want HTTP %d %s", name, err, tc.wantHTTP, tc.wantCode)
			}
		}
	}
	if got := h.drainer.Phase(); got != lifecycle.Serving {
		t.Fatalf("phase after refused drains = %v, want serving", got)
	}

	// The drain answers once new sessions are refused.
	type result struct {
		resp adminapi.DrainResponse
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := admin.Drain(ctx)
		done <- result{resp, err}
	}()
	testkit.Eventually(t, hangTimeout, testkit.That("the drain to wait out the propagation delay", func() bool {
		return h.drainer.Phase() == lifecycle.Terminating && h.clk.HasWaiters()
	}))
	if ready, err := admin.Ready(ctx); err != nil || ready {
		t.Errorf("Ready() while draining = %v, %v; want false", ready, err)
	}
	h.clk.Step(drainConfig.PropagationDelay)
	r := waitResult(t, done)
	if r.err != nil || !r.resp.Draining || r.resp.Ready || r.resp.Sessions != 2 || r.resp.DrainDeadline == nil ||
		!r.resp.DrainDeadline.Equal(epoch.Add(drainConfig.DrainTimeout)) {
		t.Errorf("Drain() = %+v, %v; want draining with 2 sessions and the deadline", r.resp, r.err)
	}
}
