package controllers

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
)

// withCRDDefaults fills vg's spec as the API server does from the CRD's
// markers: a field is defaulted only when it is absent, and the fields of
// an object only when the object is there (or was itself defaulted to
// {}). The builders read the defaulted spec without fallbacks of their
// own, so their tests must build what the controller really reads;
// TestCRDDefaultsMatchTheAPIServer (envtest) proves this function agrees
// with the generated CRD.
func withCRDDefaults(vg *vgv1.VoiceGateway) *vgv1.VoiceGateway {
	s := &vg.Spec
	if s.Replicas == nil {
		s.Replicas = ptr.To(int32(2))
	}
	if s.ImagePullPolicy == "" {
		s.ImagePullPolicy = corev1.PullIfNotPresent
	}
	if s.Backend.Type == "" {
		s.Backend.Type = vgv1.BackendEcho
	}
	if s.Backend.OpenAI != nil && s.Backend.OpenAI.Model == "" {
		s.Backend.OpenAI.Model = "gpt-realtime"
	}
	defaultDuration(&s.Auth.ClientTokenTTL, time.Minute)
	if s.Auth.MaxSessionsPerToken == 0 {
		s.Auth.MaxSessionsPerToken = 1
	}
	if s.Sessions.MaxPerPod == 0 {
		s.Sessions.MaxPerPod = 1000
	}
	defaultDuration(&s.Sessions.IdleTimeout, 2*time.Minute)
	defaultDuration(&s.Sessions.MaxDuration, time.Hour)
	defaultDuration(&s.Sessions.MaxBufferedAudio, 10*time.Second)
	defaultDuration(&s.RateLimit.Window, time.Minute)
	if s.RateLimit.SuspiciousAfter == 0 {
		s.RateLimit.SuspiciousAfter = 5
	}
	if s.RateLimit.BlockAfter == 0 {
		s.RateLimit.BlockAfter = 10
	}
	defaultDuration(&s.RateLimit.BlockDuration, 15*time.Minute)
	if s.RateLimit.MaxTracked == 0 {
		s.RateLimit.MaxTracked = 100000
	}
	defaultDuration(&s.Drain.PreStopDelay, 5*time.Second)
	defaultDuration(&s.Drain.Timeout, 55*time.Second)
	if s.Service.Type == "" {
		s.Service.Type = corev1.ServiceTypeClusterIP
	}
	if s.Service.Port == 0 {
		s.Service.Port = 80
	}
	if s.Disruption.MaxUnavailable == nil {
		s.Disruption.MaxUnavailable = ptr.To(intstr.FromInt32(1))
	}
	if s.Resources == nil {
		s.Resources = &corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")},
			Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("512Mi")},
		}
	}
	if s.LogLevel == "" {
		s.LogLevel = "info"
	}
	if s.NetworkPolicy.Enabled == nil {
		s.NetworkPolicy.Enabled = ptr.To(true)
	}
	if s.Autoscaling.MinReplicas == 0 {
		s.Autoscaling.MinReplicas = 1
	}
	if s.Autoscaling.MaxReplicas == 0 {
		s.Autoscaling.MaxReplicas = 10
	}
	defaultDuration(&s.Autoscaling.ScaleDownStabilizationWindow, 5*time.Minute)
	return vg
}

func defaultDuration(field **metav1.Duration, d time.Duration) {
	if *field == nil {
		*field = &metav1.Duration{Duration: d}
	}
}

// TestCheckDefaulted: a defaulted spec passes; one from a CRD without the
// defaults is refused with the fields named and the fix.
func TestCheckDefaulted(t *testing.T) {
	if err := checkDefaulted(withCRDDefaults(&vgv1.VoiceGateway{}).Spec); err != nil {
		t.Errorf("a defaulted spec: %v", err)
	}
	openai := withCRDDefaults(&vgv1.VoiceGateway{Spec: vgv1.VoiceGatewaySpec{Backend: vgv1.BackendSpec{
		Type: vgv1.BackendOpenAI, OpenAI: &vgv1.OpenAIBackendSpec{APIKeySecretRef: &vgv1.SecretKeyRef{Name: "k", Key: "k"}}}}})
	if err := checkDefaulted(openai.Spec); err != nil {
		t.Errorf("a defaulted openai spec: %v", err)
	}
	stale := withCRDDefaults(&vgv1.VoiceGateway{})
	stale.Spec.Drain.Timeout, stale.Spec.Replicas = nil, nil
	err := checkDefaulted(stale.Spec)
	if err == nil || !strings.Contains(err.Error(), "spec.replicas, spec.drain.timeout") || !strings.Contains(err.Error(), "apply the CRD of this release") {
		t.Errorf("a spec without defaults: %v", err)
	}
	if err := checkDefaulted(vgv1.VoiceGatewaySpec{}); err == nil || strings.Count(err.Error(), "spec.") != 21 {
		t.Errorf("an empty spec: %v, want each of the 21 defaulted fields named", err)
	}
}
