package controllers_test

import (
	"context"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
	"github.com/voicegateway/voicegateway/controllers"
)

// TestCRDDefaultsMatchTheAPIServer applies minimal VoiceGateways to the
// real API server, with the generated CRD, and compares the specs it
// stored with what the builders' tests build (controllers' withCRDDefaults):
// the defaults live in the CRD's markers alone, and the tests of code that
// reads them without fallbacks must build the same specs.
func TestCRDDefaultsMatchTheAPIServer(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	tests := map[string]vgv1.VoiceGatewaySpec{
		"empty": {},
		"openai without a model": {Backend: vgv1.BackendSpec{Type: vgv1.BackendOpenAI, OpenAI: &vgv1.OpenAIBackendSpec{
			APIKeySecretRef: &vgv1.SecretKeyRef{Name: "openai", Key: "api-key"}}}},
		"fields set are kept": {
			Replicas: ptr.To(int32(0)),
			Auth:     vgv1.AuthSpec{InsecureNoAuth: true},
			Drain:    vgv1.DrainSpec{PreStopDelay: &metav1.Duration{}, Timeout: &metav1.Duration{Duration: 20 * time.Second}},
			Service:  vgv1.ServiceSpec{Port: 8080},
			// A percentage: the default is a number.
			Disruption:    vgv1.DisruptionSpec{MaxUnavailable: ptr.To(intstr.FromString("50%"))},
			NetworkPolicy: vgv1.NetworkPolicySpec{Enabled: ptr.To(false)},
			Autoscaling: vgv1.AutoscalingSpec{Enabled: true, MaxReplicas: 4, TargetSessionsPerPod: ptr.To(int32(50)),
				ScaleDownStabilizationWindow: &metav1.Duration{}},
		},
	}
	for name, spec := range tests {
		t.Run(name, func(t *testing.T) {
			gw := &vgv1.VoiceGateway{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, GenerateName: "defaults-"}, Spec: spec}
			created := gw.DeepCopy()
			if err := k8s.Create(ctx, created); err != nil {
				t.Fatal(err)
			}
			// Read back, not the create's answer: what a reconcile reads.
			var stored vgv1.VoiceGateway
			if err := k8s.Get(ctx, client.ObjectKeyFromObject(created), &stored); err != nil {
				t.Fatal(err)
			}
			want := controllers.WithCRDDefaults(gw.DeepCopy()).Spec
			if !equality.Semantic.DeepEqual(stored.Spec, want) {
				t.Errorf("the API server stored\n%+v\nthe tests build\n%+v", stored.Spec, want)
			}
		})
	}
}
