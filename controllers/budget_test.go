package controllers

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
	"github.com/voicegateway/voicegateway/server/lifecycle"
)

// TestStopSequenceFitsTheGracePeriod: for the CRD's defaults and extremes
// of drain.preStopDelay (0–60s) and drain.timeout (5s–2h), the voice
// server's drain deadline plus every wait of its stop sequence after it
// (server/lifecycle's StopBudget of the exit margin it is sent) fits in the
// pod's terminationGracePeriodSeconds, and the server's own idea of the
// grace period is the pod's.
func TestStopSequenceFitsTheGracePeriod(t *testing.T) {
	for _, preStop := range []time.Duration{0, 5 * time.Second, 60 * time.Second} {
		for _, timeout := range []time.Duration{5 * time.Second, 55 * time.Second, 2 * time.Hour} {
			t.Run(fmt.Sprintf("preStopDelay %s timeout %s", preStop, timeout), func(t *testing.T) {
				vg := budgetGateway()
				vg.Spec.Drain.PreStopDelay = &metav1.Duration{Duration: preStop}
				vg.Spec.Drain.Timeout = &metav1.Duration{Duration: timeout}
				notify := min(timeout/4, 10*time.Second)
				vg.Spec.Drain.NotifyWindow = &metav1.Duration{Duration: notify}
				cfg, err := serverConfig(vg)
				if err != nil {
					t.Fatal(err)
				}
				grace := time.Duration(drainTimingOf(vg.Spec.Drain).gracePeriodSeconds) * time.Second
				budget := lifecycle.NewStopBudget(cfg.Drain.ExitMargin)
				if got := cfg.Drain.Timeout + budget.Total(); got > grace {
					t.Errorf("drain timeout %s + stop budget %s = %s, past the grace period %s", cfg.Drain.Timeout, budget.Total(), got, grace)
				}
				if cfg.Drain.Timeout != preStop+timeout {
					t.Errorf("the server's drain deadline comes %s after preStop, want preStopDelay + timeout = %s", cfg.Drain.Timeout, preStop+timeout)
				}
				if cfg.GracePeriod() != grace {
					t.Errorf("the server's grace period %s, the pod's %s", cfg.GracePeriod(), grace)
				}
				if cfg.Drain.ExitMargin < 5*time.Second {
					t.Errorf("exit margin %s, want at least 5s", cfg.Drain.ExitMargin)
				}
			})
		}
	}
}

// budgetGateway is a VoiceGateway as the API server returns it after
// applying the CRD's defaults to an empty spec.
func budgetGateway() *vgv1.VoiceGateway {
	return withCRDDefaults(&vgv1.VoiceGateway{ObjectMeta: metav1.ObjectMeta{Name: "budget", Namespace: "default"}})
}
