package observability

import (
	"context"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
	"github.com/voicegateway/voicegateway/internal/testkit"
)

// TestMonitorsOnTheAPIServer installs the Prometheus Operator's CRDs (from
// its Go module, bin/tools/prometheus-operator-crds) on a real API server,
// creates the chart's PodMonitor, ServiceMonitor, PrometheusRule and
// dashboard ConfigMap there (the CRDs' schemas validate them), then lets
// the real operator build a VoiceGateway's Deployment and checks that the
// PodMonitor selects its pods and scrapes a port they have.
func TestMonitorsOnTheAPIServer(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(repoRoot, "bin", "tools", "prometheus-operator-crds")
	toolPath(t, "tools", filepath.Join("prometheus-operator-crds", "monitoring.coreos.com_podmonitors.yaml"))
	if _, err := envtest.InstallCRDs(testConfig, envtest.CRDInstallOptions{Paths: []string{dir}, ErrorIfPathMissing: true}); err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "voicegateway-system"}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	objects := renderChart(t, withMonitoringAPIs()...)
	var podMonitor *unstructured.Unstructured
	for _, kind := range []string{"PodMonitor", "ServiceMonitor", "PrometheusRule", "ConfigMap"} {
		obj := find(t, objects, kind)
		if kind == "PodMonitor" {
			podMonitor = obj
		}
		// The CRD's schema may need a moment to be served after install.
		testkit.Eventually(t, 30*time.Second, func() error {
			err := k8s.Create(ctx, obj.DeepCopy())
			if err != nil {
				return err
			}
			return nil
		})
	}

	// The operator's Deployment for a VoiceGateway: its pods must match.
	startOperator(t)
	gw := &vgv1.VoiceGateway{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "scraped"},
		Spec: vgv1.VoiceGatewaySpec{Backend: vgv1.BackendSpec{Type: vgv1.BackendEcho}}}
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	var d appsv1.Deployment
	testkit.Eventually(t, 60*time.Second, func() error {
		return k8s.Get(ctx, client.ObjectKey{Namespace: "default", Name: "scraped"}, &d)
	})
	selector, _, _ := unstructured.NestedStringMap(podMonitor.Object, "spec", "selector", "matchLabels")
	podLabels := d.Spec.Template.Labels
	for key, value := range selector {
		if podLabels[key] != value {
			t.Errorf("the PodMonitor selects %s=%s; the operator's pods are labelled %v", key, value, podLabels)
		}
	}
	if len(selector) == 0 || maps.Equal(selector, map[string]string{}) {
		t.Error("the PodMonitor selects every pod")
	}
	if any, _, _ := unstructured.NestedBool(podMonitor.Object, "spec", "namespaceSelector", "any"); !any {
		t.Error("the PodMonitor does not look in every namespace (no watchNamespaces given)")
	}
	endpoints, _, _ := unstructured.NestedSlice(podMonitor.Object, "spec", "podMetricsEndpoints")
	if len(endpoints) != 1 {
		t.Fatalf("podMetricsEndpoints %v", endpoints)
	}
	port := endpoints[0].(map[string]any)["port"]
	var ports []string
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, p := range c.Ports {
			ports = append(ports, p.Name)
		}
	}
	if !slices.Contains(ports, port.(string)) || endpoints[0].(map[string]any)["path"] != "/metrics" {
		t.Errorf("the PodMonitor scrapes port %v path %v; the pods' ports are %v", port, endpoints[0].(map[string]any)["path"], ports)
	}
}
