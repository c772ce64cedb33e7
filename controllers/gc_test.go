package controllers_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
	"github.com/voicegateway/voicegateway/internal/testenv"
	"github.com/voicegateway/voicegateway/internal/testkit"
)

// TestDeletingGatewayCollectsItsObjects runs a real kube-controller-manager
// (garbage collector, Deployment and ReplicaSet controllers) against the API
// server: the Deployment the operator applies gets a ReplicaSet and pods,
// the Deployment's status reaches the VoiceGateway's, and deleting the
// VoiceGateway deletes everything it owns, down to the pods, the
// NetworkPolicy and the fleet Secret.
func TestDeletingGatewayCollectsItsObjects(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	logPath := filepath.Join(t.TempDir(), "kube-controller-manager.log")
	kcm, err := testenv.StartControllerManager(testEnv,
		[]string{"garbage-collector-controller", "deployment-controller", "replicaset-controller"}, logPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = kcm.Stop(context.Background())
		if t.Failed() {
			if out, err := os.ReadFile(logPath); err == nil {
				t.Logf("kube-controller-manager log:\n%s", tail(out, 8000))
			}
		}
	})
	startOperator(t, namespace, managerOptions{})

	gw := newGateway(namespace, "collected")
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(gw)
	waitForObjects(t, key)
	getSecret(t, client.ObjectKey{Namespace: namespace, Name: "collected-fleet"})

	inNamespace := client.InNamespace(namespace)
	testkit.Eventually(t, 60*time.Second, func() error {
		if exited, err := kcm.Exited(); exited {
			return fmt.Errorf("kube-controller-manager exited: %v", err)
		}
		var pods corev1.PodList
		if err := k8s.List(ctx, &pods, inNamespace); err != nil {
			return err
		}
		if len(pods.Items) != 2 {
			return fmt.Errorf("%d pods, want the Deployment's 2", len(pods.Items))
		}
		// The Deployment controller's status reaches the VoiceGateway.
		got := getGateway(t, key)
		if got.Status.Replicas != 2 || got.Status.UpdatedReplicas != 2 {
			return fmt.Errorf("status replicas %d updated %d, want 2 and 2", got.Status.Replicas, got.Status.UpdatedReplicas)
		}
		return nil
	})

	if err := k8s.Delete(ctx, gw); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 90*time.Second, func() error {
		for _, list := range []client.ObjectList{
			&appsv1.DeploymentList{}, &appsv1.ReplicaSetList{}, &corev1.PodList{},
			&corev1.ServiceList{}, &corev1.ConfigMapList{}, &policyv1.PodDisruptionBudgetList{},
			&networkingv1.NetworkPolicyList{}, &corev1.SecretList{}, &vgv1.VoiceGatewayList{},
		} {
			if err := k8s.List(ctx, list, inNamespace); err != nil {
				return err
			}
			if n := len(itemsOf(list)); n > 0 {
				return fmt.Errorf("%T still holds %d items", list, n)
			}
		}
		var accounts corev1.ServiceAccountList
		if err := k8s.List(ctx, &accounts, inNamespace); err != nil {
			return err
		}
		for _, sa := range accounts.Items {
			if sa.Name == key.Name {
				return errors.New("the ServiceAccount is still there")
			}
		}
		return nil
	})
}

// itemsOf returns a list's items but the kube-root-ca.crt ConfigMap that
// Kubernetes publishes in every namespace.
func itemsOf(list client.ObjectList) []runtime.Object {
	items, err := meta.ExtractList(list)
	if err != nil {
		panic(err)
	}
	return slices.DeleteFunc(items, func(obj runtime.Object) bool {
		cm, ok := obj.(*corev1.ConfigMap)
		return ok && cm.Name == "kube-root-ca.crt"
	})
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}
