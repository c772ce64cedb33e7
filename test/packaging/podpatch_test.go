package packaging_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/voicegateway/voicegateway/internal/testenv"
	"github.com/voicegateway/voicegateway/internal/testkit"
)

// impersonating is the API server as the ServiceAccount sees it (its RBAC,
// the admission policies matching its user name), through impersonation by
// the test's admin.
func impersonating(t *testing.T, namespace, name string) *rest.Config {
	t.Helper()
	cfg := rest.CopyConfig(testConfig)
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + namespace + ":" + name,
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"},
	}
	return cfg
}

// checkPodPatchesLimited: with the operator's rights (cfg), a merge patch of
// a pod's deletion-cost annotation goes through, as the operator writes it;
// a patch of anything else (a label, another annotation, the spec) is
// refused by the ValidatingAdmissionPolicy, though RBAC allows patch.
func checkPodPatchesLimited(t *testing.T, cfg *rest.Config, namespace string) {
	t.Helper()
	ctx := context.Background()
	operator, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, GenerateName: "patched-", Labels: map[string]string{"app": "voice"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "voice-server", Image: "registry.test/voice:1"}},
			Tolerations: []corev1.Toleration{{Key: "a", Operator: corev1.TolerationOpExists}}},
	}
	if err := k8s.Create(ctx, pod); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), pod) })
	patch := func(body string) error {
		target := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: pod.Name}}
		return operator.Patch(ctx, target, client.RawPatch(types.MergePatchType, []byte(body)), client.FieldOwner("voicegateway-operator"))
	}
	refused := map[string]string{
		"a label":            `{"metadata":{"labels":{"app":"hijacked"}}}`,
		"a new label":        `{"metadata":{"labels":{"extra":"x"}}}`,
		"another annotation": `{"metadata":{"annotations":{"example.com/other":"x"}}}`,
		"the cost and a label": `{"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":"4"},` +
			`"labels":{"app":"hijacked"}}}`,
		"the spec":       `{"spec":{"activeDeadlineSeconds":5}}`,
		"a finalizer":    `{"metadata":{"finalizers":["example.com/keep"]}}`,
		"an owner":       `{"metadata":{"ownerReferences":[{"apiVersion":"v1","kind":"ConfigMap","name":"x","uid":"0f0e8e4b-5b0e-4f5c-9d7c-3c1c4a3f1e11"}]}}`,
		"the image":      `{"spec":{"containers":[{"name":"voice-server","image":"evil/image:1"}]}}`,
		"the annotation": `{"metadata":{"annotations":{"example.com/x":"1","controller.kubernetes.io/pod-deletion-cost":"2"}}}`,
	}
	// The policy takes a moment to reach the API server's admission: a
	// probe pod shows when it has.
	probe := pod.DeepCopy()
	probe.ResourceVersion, probe.Name, probe.UID = "", "", ""
	if err := k8s.Create(ctx, probe); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), probe) })
	attempt := 0
	testkit.Eventually(t, 30*time.Second, func() error {
		attempt++
		target := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: probe.Name}}
		body := fmt.Sprintf(`{"metadata":{"labels":{"probe":"%d"}}}`, attempt)
		if err := operator.Patch(ctx, target, client.RawPatch(types.MergePatchType, []byte(body))); err == nil {
			return fmt.Errorf("a label patched with the operator's rights")
		}
		return nil
	})
	for what, body := range refused {
		err := patch(body)
		if err == nil || !apierrors.IsForbidden(err) && !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "voicegateway operator") {
			t.Errorf("patching %s with the operator's rights: %v, want refused by the pod patch policy", what, err)
		}
	}
	// As the operator writes it: the annotation and the pod's UID (a
	// precondition).
	for _, cost := range []string{"8", "0", "16"} {
		if err := patch(`{"metadata":{"uid":"` + string(pod.UID) + `","annotations":{"controller.kubernetes.io/pod-deletion-cost":"` + cost + `"}}}`); err != nil {
			t.Errorf("the deletion cost %s: %v", cost, err)
		}
	}
	var got corev1.Pod
	if err := k8s.Get(ctx, client.ObjectKeyFromObject(pod), &got); err != nil {
		t.Fatal(err)
	}
	if got.Labels["app"] != "voice" || len(got.Labels) != 1 || got.Annotations[corev1.PodDeletionCost] != "16" ||
		len(got.Annotations) != 1 || got.Spec.Containers[0].Image != "registry.test/voice:1" || len(got.Finalizers) != 0 {
		t.Errorf("pod after the patches: labels %v annotations %v image %s finalizers %v", got.Labels, got.Annotations,
			got.Spec.Containers[0].Image, got.Finalizers)
	}
	// Removing the annotation is a cost change too.
	if err := patch(`{"metadata":{"annotations":{"controller.kubernetes.io/pod-deletion-cost":null}}}`); err != nil {
		t.Errorf("removing the deletion cost: %v", err)
	}
}
