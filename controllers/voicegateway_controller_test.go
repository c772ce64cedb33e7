package controllers_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
	"github.com/voicegateway/voicegateway/controllers"
	"github.com/voicegateway/voicegateway/internal/testenv"
	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/config"
)

// applySampleFile creates every object of a sample file in namespace, as
// `kubectl apply -f` would, and returns the VoiceGateway's name.
func applySampleFile(t *testing.T, namespace, path string) string {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, path))
	if err != nil {
		t.Fatal(err)
	}
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	gateway := ""
	for {
		var u unstructured.Unstructured
		if err := decoder.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatalf("%s: %v", path, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		u.SetNamespace(namespace)
		if err := k8s.Create(context.Background(), &u); err != nil {
			t.Fatalf("%s: creating %s %s: %v", path, u.GetKind(), u.GetName(), err)
		}
		if u.GetKind() == "VoiceGateway" {
			gateway = u.GetName()
		}
	}
	if gateway == "" {
		t.Fatalf("%s holds no VoiceGateway", path)
	}
	return gateway
}

func createSecret(t *testing.T, namespace, name string, data map[string]string) {
	t.Helper()
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace}, StringData: data}
	if err := k8s.Create(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
}

func getGateway(t *testing.T, key types.NamespacedName) *vgv1.VoiceGateway {
	t.Helper()
	var gw vgv1.VoiceGateway
	if err := k8s.Get(context.Background(), key, &gw); err != nil {
		t.Fatal(err)
	}
	return &gw
}

// waitForObjects waits until all six applied objects exist and returns
// them.
type ownedObjects struct {
	deployment     appsv1.Deployment
	service        corev1.Service
	configMap      corev1.ConfigMap
	serviceAccount corev1.ServiceAccount
	pdb            policyv1.PodDisruptionBudget
	networkPolicy  networkingv1.NetworkPolicy
}

// waitReconciled waits until the VoiceGateway's status reports its
// generation and names its fleet Secret: a first pass is done.
func waitReconciled(t *testing.T, key types.NamespacedName) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, func() error {
		gw := getGateway(t, key)
		if gw.Status.ObservedGeneration != gw.Generation || gw.Status.FleetSecretName == "" {
			return fmt.Errorf("%s not yet reconciled", key)
		}
		return nil
	})
}

func waitForObjects(t *testing.T, key types.NamespacedName) *ownedObjects {
	t.Helper()
	var objs ownedObjects
	testkit.Eventually(t, 30*time.Second, func() error { return getObjects(key, &objs) })
	return &objs
}

func getObjects(key types.NamespacedName, objs *ownedObjects) error {
	ctx := context.Background()
	for _, get := range []struct {
		name string
		obj  client.Object
	}{
		{key.Name, &objs.deployment},
		{key.Name, &objs.service},
		{key.Name + "-config", &objs.configMap},
		{key.Name, &objs.serviceAccount},
		{key.Name, &objs.pdb},
		{key.Name, &objs.networkPolicy},
	} {
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: key.Namespace, Name: get.name}, get.obj); err != nil {
			return err
		}
	}
	return nil
}

// loadServerConfig reads a ConfigMap's settings the way the voice server
// does (--config), so the test sees exactly what a pod would run with.
func loadServerConfig(t *testing.T, cm *corev1.ConfigMap) config.Config {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(cm.Data["config.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load([]string{"--config", path}, func(string) string { return "" })
	if err != nil {
		t.Fatalf("the voice server refuses the ConfigMap: %v\n%s", err, cm.Data["config.yaml"])
	}
	return cfg
}

func TestSamplesProduceObjects(t *testing.T) {
	namespace := newNamespace(t)
	startOperator(t, namespace, managerOptions{})

	t.Run("echo demo", func(t *testing.T) {
		name := applySampleFile(t, namespace, "config/samples/voicegateway_v1alpha1_demo.yaml")
		key := types.NamespacedName{Namespace: namespace, Name: name}
		objs := waitForObjects(t, key)
		gw := getGateway(t, key)

		checkCommon(t, gw, objs)
		d := objs.deployment
		if got := *d.Spec.Replicas; got != 2 {
			t.Errorf("replicas = %d, want 2", got)
		}
		pod := d.Spec.Template.Spec
		// preStopDelay 5s + timeout 55s + 5s exit margin.
		if got := *pod.TerminationGracePeriodSeconds; got != 65 {
			t.Errorf("terminationGracePeriodSeconds = %d, want 65", got)
		}
		c := pod.Containers[0]
		if c.Image != testImage {
			t.Errorf("image = %q, want the operator's default %q", c.Image, testImage)
		}
		// The fleet Secret: made and owned by the operator, with a
		// generated API key, since the sample names no API key Secret.
		fleetSecret := getSecret(t, types.NamespacedName{Namespace: namespace, Name: "demo-fleet"})
		if !metav1.IsControlledBy(fleetSecret, gw) || len(fleetSecret.Data["api-keys"]) == 0 {
			t.Errorf("demo-fleet: owners %+v, keys %v", fleetSecret.OwnerReferences, slices.Collect(maps.Keys(fleetSecret.Data)))
		}
		testkit.Eventually(t, 30*time.Second, func() error {
			if ref := getGateway(t, key).Status.GeneratedAPIKey; ref == nil || ref.Name != "demo-fleet" || ref.Key != "api-keys" {
				return fmt.Errorf("status.generatedAPIKey = %+v, want demo-fleet api-keys", ref)
			}
			return nil
		})

		cfg := loadServerConfig(t, &objs.configMap)
		if cfg.Backend != config.BackendEcho {
			t.Errorf("backend = %q, want echo", cfg.Backend)
		}
		if cfg.APIKeysFile != "/etc/voicegateway/fleet/api-keys" || cfg.InsecureNoAuth || cfg.FleetSecretDir != "/etc/voicegateway/fleet" {
			t.Errorf("auth: api_keys_file %q insecure %v fleet %q, want the mounted Secrets", cfg.APIKeysFile, cfg.InsecureNoAuth, cfg.FleetSecretDir)
		}
		if cfg.Sessions.Limit != 500 || cfg.Sessions.IdleTimeout != 2*time.Minute || cfg.Sessions.MaxDuration != 30*time.Minute {
			t.Errorf("sessions = %+v, want limit 500, idle 2m, max 30m", cfg.Sessions)
		}
		if cfg.GracePeriod() != 65*time.Second || cfg.Drain.PropagationDelay != 5*time.Second ||
			cfg.Drain.Timeout != 60*time.Second {
			t.Errorf("drain = %+v: the server's grace period must equal the pod's 65s and its deadline come 60s after preStop", cfg.Drain)
		}
		if objs.service.Spec.Type != corev1.ServiceTypeClusterIP || objs.service.Spec.Ports[0].Port != 80 {
			t.Errorf("service = %s port %d, want ClusterIP 80", objs.service.Spec.Type, objs.service.Spec.Ports[0].Port)
		}

		// Defaults the API server filled in from the CRD's markers.
		if gw.Spec.ImagePullPolicy != corev1.PullIfNotPresent || gw.Spec.LogLevel != "info" ||
			gw.Spec.Service.Type != corev1.ServiceTypeClusterIP || gw.Spec.Disruption.MaxUnavailable.IntValue() != 1 ||
			gw.Spec.RateLimit.BlockAfter != 10 {
			t.Errorf("defaults not applied: %+v", gw.Spec)
		}

		// The status, written once the objects were applied.
		testkit.Eventually(t, 10*time.Second, func() error {
			gw := getGateway(t, key)
			if gw.Status.ObservedGeneration != gw.Generation {
				return fmt.Errorf("observedGeneration %d, generation %d", gw.Status.ObservedGeneration, gw.Generation)
			}
			return checkConditions(gw, map[string]string{
				vgv1.ConditionAvailable:   "False/" + controllers.ReasonNoPodReady,
				vgv1.ConditionProgressing: "True/" + controllers.ReasonRollingOut,
				vgv1.ConditionDegraded:    "False/" + controllers.ReasonAsExpected,
			})
		})
		gw = getGateway(t, key)
		if gw.Status.Ready != "0/2" || gw.Status.Selector != "app.kubernetes.io/instance=demo,app.kubernetes.io/name=voicegateway" ||
			gw.Status.FleetSecretName != "demo-fleet" || gw.Status.GeneratedAPIKey == nil {
			t.Errorf("status ready %q selector %q fleet %q generated key %+v", gw.Status.Ready, gw.Status.Selector,
				gw.Status.FleetSecretName, gw.Status.GeneratedAPIKey)
		}
	})

	t.Run("openai example", func(t *testing.T) {
		createSecret(t, namespace, "openai-api-key", map[string]string{"api-key": "sk-test"})
		createSecret(t, namespace, "assistant-api-keys", map[string]string{"keys": "assistant-key-0123456789abcdef\n"})
		name := applySampleFile(t, namespace, "config/samples/openai/voicegateway_v1alpha1_openai.yaml")
		key := types.NamespacedName{Namespace: namespace, Name: name}
		objs := waitForObjects(t, key)
		gw := getGateway(t, key)

		checkCommon(t, gw, objs)
		pod := objs.deployment.Spec.Template.Spec
		// preStopDelay 10s + timeout 5m + 5s.
		if got := *pod.TerminationGracePeriodSeconds; got != 315 {
			t.Errorf("terminationGracePeriodSeconds = %d, want 315", got)
		}
		checkSecretVolume(t, pod, "openai-api-key", "api-key")
		checkSecretVolume(t, pod, "assistant-api-keys", "keys")
		if got := pod.Containers[0].Resources.Limits.Memory().String(); got != "1Gi" {
			t.Errorf("memory limit = %s, want 1Gi", got)
		}

		cfg := loadServerConfig(t, &objs.configMap)
		if cfg.Backend != config.BackendOpenAI || cfg.OpenAI.Model != "gpt-realtime" || cfg.AllowAPIKeyInBrowser ||
			!slices.Equal(cfg.OpenAI.Models, []string{"gpt-realtime", "gpt-realtime-mini"}) ||
			cfg.OpenAI.APIKeyFile != "/etc/voicegateway/openai/api-key" || cfg.OpenAI.URL != config.DefaultOpenAIURL {
			t.Errorf("openai settings = %+v (backend %q)", cfg.OpenAI, cfg.Backend)
		}
		if cfg.ClientTokenTTL != 2*time.Minute || cfg.Sessions.Limit != 200 ||
			!slices.Equal(cfg.RateLimit.TrustedProxies, []string{"10.0.0.0/8"}) {
			t.Errorf("settings: token ttl %s, limit %d, trusted proxies %v", cfg.ClientTokenTTL, cfg.Sessions.Limit, cfg.RateLimit.TrustedProxies)
		}
		if cfg.GracePeriod() != 315*time.Second || cfg.Drain.Timeout != 310*time.Second {
			t.Errorf("drain = %+v", cfg.Drain)
		}
		if objs.service.Spec.Type != corev1.ServiceTypeLoadBalancer {
			t.Errorf("service type = %s, want LoadBalancer", objs.service.Spec.Type)
		}
	})
}

// checkCommon asserts what every VoiceGateway's objects have.
func checkCommon(t *testing.T, gw *vgv1.VoiceGateway, objs *ownedObjects) {
	t.Helper()
	for _, obj := range []client.Object{&objs.deployment, &objs.service, &objs.configMap, &objs.serviceAccount, &objs.pdb, &objs.networkPolicy} {
		kind := fmt.Sprintf("%T", obj)
		refs := obj.GetOwnerReferences()
		if len(refs) != 1 || refs[0].Kind != "VoiceGateway" || refs[0].Name != gw.Name || refs[0].UID != gw.UID ||
			!ptr.Deref(refs[0].Controller, false) || !ptr.Deref(refs[0].BlockOwnerDeletion, false) {
			t.Errorf("%s owner references = %+v, want the VoiceGateway as controller", kind, refs)
		}
		if obj.GetLabels()[controllers.LabelManagedBy] != controllers.ManagedBy {
			t.Errorf("%s labels = %v", kind, obj.GetLabels())
		}
		for _, mf := range obj.GetManagedFields() {
			if mf.Operation == metav1.ManagedFieldsOperationApply && mf.Manager != controllers.ManagedBy {
				t.Errorf("%s applied by %q, want the single field owner %q", kind, mf.Manager, controllers.ManagedBy)
			}
		}
		if !slices.ContainsFunc(obj.GetManagedFields(), func(mf metav1.ManagedFieldsEntry) bool {
			return mf.Manager == controllers.ManagedBy && mf.Operation == metav1.ManagedFieldsOperationApply
		}) {
			t.Errorf("%s has no fields applied by %q", kind, controllers.ManagedBy)
		}
	}

	selector := map[string]string{"app.kubernetes.io/name": "voicegateway", "app.kubernetes.io/instance": gw.Name}
	d := objs.deployment
	if !mapsEqual(d.Spec.Selector.MatchLabels, selector) {
		t.Errorf("deployment selector = %v", d.Spec.Selector.MatchLabels)
	}
	ru := d.Spec.Strategy.RollingUpdate
	// No sessions: a quarter of the pods at once, at least one.
	quarter := fmt.Sprint(max(1, (*gw.Spec.Replicas+3)/4))
	if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil ||
		ru.MaxUnavailable.String() != "0" || ru.MaxSurge.String() != quarter {
		t.Errorf("strategy = %+v, want a rolling update that surges %s before it removes (maxUnavailable 0)", d.Spec.Strategy, quarter)
	}
	tmpl := d.Spec.Template
	if tmpl.Annotations[controllers.AnnotationConfigHash] == "" {
		t.Errorf("pod template has no %s annotation", controllers.AnnotationConfigHash)
	}
	pod := tmpl.Spec
	if pod.ServiceAccountName != gw.Name || ptr.Deref(pod.AutomountServiceAccountToken, true) {
		t.Errorf("service account %q, automount %v: want the gateway's own, without a token", pod.ServiceAccountName, pod.AutomountServiceAccountToken)
	}
	if ptr.Deref(objs.serviceAccount.AutomountServiceAccountToken, true) {
		t.Error("the ServiceAccount mounts a token")
	}
	psc := pod.SecurityContext
	if psc == nil || !ptr.Deref(psc.RunAsNonRoot, false) || psc.SeccompProfile == nil ||
		psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("pod security context = %+v, want non-root with RuntimeDefault seccomp", psc)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("%d containers, want 1", len(pod.Containers))
	}
	c := pod.Containers[0]
	if !slices.Equal(c.Args, []string{"--config", "/etc/voicegateway/config/config.yaml"}) {
		t.Errorf("args = %v", c.Args)
	}
	sc := c.SecurityContext
	if sc == nil || !ptr.Deref(sc.ReadOnlyRootFilesystem, false) || ptr.Deref(sc.AllowPrivilegeEscalation, true) ||
		!ptr.Deref(sc.RunAsNonRoot, false) || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("container security context = %+v, want read-only root, no privilege escalation, all capabilities dropped", sc)
	}
	checkHTTPGet(t, "readiness probe", c.ReadinessProbe, "/readyz")
	checkHTTPGet(t, "liveness probe", c.LivenessProbe, "/healthz")
	checkHTTPGet(t, "startup probe", c.StartupProbe, "/healthz")
	// The drain runs the server binary, which reads the admin token from
	// the mounted fleet Secret: the image has no shell, /drain needs the
	// token.
	wantPreStop := []string{"/voice-server", "drain", "--config", "/etc/voicegateway/config/config.yaml"}
	if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Exec == nil || c.Lifecycle.PreStop.HTTPGet != nil ||
		!slices.Equal(c.Lifecycle.PreStop.Exec.Command, wantPreStop) {
		t.Errorf("preStop = %+v, want exec %q", c.Lifecycle, wantPreStop)
	}
	checkFleetVolume(t, pod, fleetSecretNameOf(gw))
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["http"] != 8080 || ports["admin"] != 9090 {
		t.Errorf("container ports = %v", ports)
	}
	if !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool {
		return v.ConfigMap != nil && v.ConfigMap.Name == gw.Name+"-config"
	}) {
		t.Errorf("no volume mounts the ConfigMap %s-config", gw.Name)
	}

	svc := objs.service
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].TargetPort != intstr.FromString("http") {
		t.Errorf("service ports = %+v, want only the sessions port (never admin)", svc.Spec.Ports)
	}
	if !mapsEqual(svc.Spec.Selector, selector) {
		t.Errorf("service selector = %v", svc.Spec.Selector)
	}

	pdb := objs.pdb
	if pdb.Spec.MaxUnavailable == nil || pdb.Spec.MaxUnavailable.String() != "1" || pdb.Spec.MinAvailable != nil ||
		!mapsEqual(pdb.Spec.Selector.MatchLabels, selector) ||
		ptr.Deref(pdb.Spec.UnhealthyPodEvictionPolicy, "") != policyv1.AlwaysAllow {
		t.Errorf("pdb spec = %+v, want maxUnavailable 1 over the gateway's pods", pdb.Spec)
	}
}

// fleetSecretNameOf is the Secret a VoiceGateway's pods mount as the fleet
// Secret.
func fleetSecretNameOf(gw *vgv1.VoiceGateway) string {
	if ref := gw.Spec.Auth.FleetSecretRef; ref != nil {
		return ref.Name
	}
	return gw.Name + "-fleet"
}

// checkFleetVolume: the whole Secret is mounted read-only (no items, no
// subPath, so the kubelet updates the files in place on a rotation).
func checkFleetVolume(t *testing.T, pod corev1.PodSpec, secret string) {
	t.Helper()
	i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Secret != nil && v.Secret.SecretName == secret })
	if i < 0 {
		t.Errorf("no volume mounts the fleet Secret %s: %+v", secret, pod.Volumes)
		return
	}
	v := pod.Volumes[i]
	if len(v.Secret.Items) != 0 || ptr.Deref(v.Secret.DefaultMode, 0) != 0o440 {
		t.Errorf("fleet volume %+v, want the whole Secret, mode 0440", v.Secret)
	}
	if !slices.ContainsFunc(pod.Containers[0].VolumeMounts, func(m corev1.VolumeMount) bool {
		return m.Name == v.Name && m.MountPath == "/etc/voicegateway/fleet" && m.ReadOnly && m.SubPath == ""
	}) {
		t.Errorf("the fleet volume is not mounted read-only at /etc/voicegateway/fleet: %+v", pod.Containers[0].VolumeMounts)
	}
}

func checkHTTPGet(t *testing.T, what string, probe *corev1.Probe, path string) {
	t.Helper()
	if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Path != path || probe.HTTPGet.Port != intstr.FromString("admin") {
		t.Errorf("%s = %+v, want httpGet %s on the admin port", what, probe, path)
	}
}

func checkSecretVolume(t *testing.T, pod corev1.PodSpec, secret, key string) {
	t.Helper()
	if !slices.ContainsFunc(pod.Volumes, func(v corev1.Volume) bool {
		return v.Secret != nil && v.Secret.SecretName == secret && len(v.Secret.Items) == 1 && v.Secret.Items[0].Key == key
	}) {
		t.Errorf("no volume mounts key %q of Secret %q", key, secret)
	}
}

func checkConditions(gw *vgv1.VoiceGateway, want map[string]string) error {
	for condType, statusReason := range want {
		c := meta.FindStatusCondition(gw.Status.Conditions, condType)
		if c == nil {
			return fmt.Errorf("no %s condition in %+v", condType, gw.Status.Conditions)
		}
		if got := string(c.Status) + "/" + c.Reason; got != statusReason {
			return fmt.Errorf("%s = %s (%s), want %s", condType, got, c.Message, statusReason)
		}
		if c.ObservedGeneration != gw.Generation {
			return fmt.Errorf("%s observedGeneration %d, want %d", condType, c.ObservedGeneration, gw.Generation)
		}
	}
	return nil
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

// newGateway is a small valid VoiceGateway with authentication off.
func newGateway(namespace, name string) *vgv1.VoiceGateway {
	return &vgv1.VoiceGateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec: vgv1.VoiceGatewaySpec{
			Replicas: ptr.To(int32(2)),
			Auth:     vgv1.AuthSpec{InsecureNoAuth: true},
		},
	}
}

func TestSpecChangeUpdatesObjects(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	startOperator(t, namespace, managerOptions{})

	createSecret(t, namespace, "keys", map[string]string{"keys": "first-key-0123456789abcdef\n"})
	gw := newGateway(namespace, "change")
	gw.Spec.Auth = vgv1.AuthSpec{APIKeysSecretRef: &vgv1.SecretKeyRef{Name: "keys", Key: "keys"}}
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(gw)
	objs := waitForObjects(t, key)
	firstHash := objs.deployment.Spec.Template.Annotations[controllers.AnnotationConfigHash]

	// A spec change: replicas, image, sessions and the drain budget.
	patch := client.MergeFrom(gw.DeepCopy())
	gw.Spec.Replicas = ptr.To(int32(3))
	gw.Spec.Image = "registry.test/voicegateway:v2"
	gw.Spec.Sessions.MaxPerPod = 50
	gw.Spec.Drain.Timeout = &metav1.Duration{Duration: 30 * time.Second}
	if err := k8s.Patch(ctx, gw, patch); err != nil {
		t.Fatal(err)
	}
	var secondHash string
	testkit.Eventually(t, 10*time.Second, func() error {
		if err := getObjects(key, objs); err != nil {
			return err
		}
		d := objs.deployment
		pod := d.Spec.Template.Spec
		switch {
		case *d.Spec.Replicas != 3:
			return fmt.Errorf("replicas %d", *d.Spec.Replicas)
		case pod.Containers[0].Image != "registry.test/voicegateway:v2":
			return fmt.Errorf("image %s", pod.Containers[0].Image)
		case *pod.TerminationGracePeriodSeconds != 40:
			return fmt.Errorf("grace period %d, want 5s+30s+5s", *pod.TerminationGracePeriodSeconds)
		}
		secondHash = d.Spec.Template.Annotations[controllers.AnnotationConfigHash]
		return nil
	})
	cfg := loadServerConfig(t, &objs.configMap)
	if cfg.Sessions.Limit != 50 || cfg.GracePeriod() != 40*time.Second {
		t.Errorf("server settings: limit %d grace %s, want 50 and 40s", cfg.Sessions.Limit, cfg.GracePeriod())
	}
	if secondHash == firstHash {
		t.Error("the config hash did not change with the settings: the pods would not roll")
	}

	// A changed Secret rolls the pods too.
	var secret corev1.Secret
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: namespace, Name: "keys"}, &secret); err != nil {
		t.Fatal(err)
	}
	secret.StringData = map[string]string{"keys": "second-key-0123456789abcdef\n"}
	if err := k8s.Update(ctx, &secret); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		if err := getObjects(key, objs); err != nil {
			return err
		}
		if objs.deployment.Spec.Template.Annotations[controllers.AnnotationConfigHash] == secondHash {
			return errors.New("config hash unchanged after the Secret changed")
		}
		return nil
	})

	// A field the operator owns, changed by someone else, is set back.
	deployment := objs.deployment.DeepCopy()
	deployment.Spec.Replicas = ptr.To(int32(7))
	deployment.ManagedFields = nil
	if err := k8s.Update(ctx, deployment, client.FieldOwner("someone-else")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		if err := getObjects(key, objs); err != nil {
			return err
		}
		if got := *objs.deployment.Spec.Replicas; got != 3 {
			return fmt.Errorf("replicas %d, want the spec's 3 back", got)
		}
		return nil
	})

	// A reference to a Secret that does not exist: Degraded, nothing
	// rolled out; creating the Secret heals it.
	patch = client.MergeFrom(gw.DeepCopy())
	gw.Spec.Auth.APIKeysSecretRef.Name = "later"
	if err := k8s.Patch(ctx, gw, patch); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		return checkConditions(getGateway(t, key), map[string]string{vgv1.ConditionDegraded: "True/" + controllers.ReasonSecretNotFound})
	})
	if got := getGateway(t, key); got.Status.ObservedGeneration == got.Generation {
		t.Error("observedGeneration was raised for a spec that could not be applied")
	}
	if err := getObjects(key, objs); err != nil {
		t.Fatal(err)
	}
	checkSecretVolume(t, objs.deployment.Spec.Template.Spec, "keys", "keys")
	createSecret(t, namespace, "later", map[string]string{"keys": "later-key-0123456789abcdef\n"})
	testkit.Eventually(t, 10*time.Second, func() error {
		gw := getGateway(t, key)
		if gw.Status.ObservedGeneration != gw.Generation {
			return fmt.Errorf("observedGeneration %d, generation %d", gw.Status.ObservedGeneration, gw.Generation)
		}
		return checkConditions(gw, map[string]string{vgv1.ConditionDegraded: "False/" + controllers.ReasonAsExpected})
	})
	if err := getObjects(key, objs); err != nil {
		t.Fatal(err)
	}
	checkSecretVolume(t, objs.deployment.Spec.Template.Spec, "later", "keys")
}

// TestUnchangedGatewayCausesNoWrites lets the informers resync several
// times (each resync reconciles every VoiceGateway) and touches the
// VoiceGateways' labels, and counts the operator's requests that write:
// there must be none, for an API key Secret with a rotation request
// already answered, for a generated fleet Secret with its API key, and for
// a user's fleet Secret with the NetworkPolicy switched off. Nor does a
// pass read a Secret's data again while it has not changed.
func TestUnchangedGatewayCausesNoWrites(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	op := startOperator(t, namespace, managerOptions{syncPeriod: time.Second})

	createSecret(t, namespace, "keys", map[string]string{"keys": "steady-key-0123456789abcdef\n"})
	createFleetSecret(t, namespace, "own-fleet", true)
	withKeys := newGateway(namespace, "steady")
	withKeys.Spec.Auth = vgv1.AuthSpec{APIKeysSecretRef: &vgv1.SecretKeyRef{Name: "keys", Key: "keys"}}
	withKeys.Annotations = map[string]string{vgv1.AnnotationRotateKeys: "once"}
	generated := newGateway(namespace, "steady-generated")
	generated.Spec.Auth = vgv1.AuthSpec{}
	ownFleet := newGateway(namespace, "steady-own")
	ownFleet.Spec.Auth = vgv1.AuthSpec{FleetSecretRef: &vgv1.LocalSecretRef{Name: "own-fleet"}}
	ownFleet.Spec.NetworkPolicy.Enabled = ptr.To(false)
	gateways := []*vgv1.VoiceGateway{withKeys, generated, ownFleet}
	for _, gw := range gateways {
		if err := k8s.Create(ctx, gw); err != nil {
			t.Fatal(err)
		}
	}
	for _, gw := range gateways {
		waitReconciled(t, client.ObjectKeyFromObject(gw))
	}
	// Let the first passes settle (the cache catching up with the applies).
	time.Sleep(2 * time.Second)
	op.writes.Reset()
	before := reconcileCount(t)

	// Several resyncs, and a change that is not to the spec.
	time.Sleep(3 * time.Second)
	for _, gw := range gateways {
		patch := client.MergeFrom(gw.DeepCopy())
		gw.Labels = map[string]string{"touched": "yes"}
		if err := k8s.Patch(ctx, gw, patch); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(3 * time.Second)

	reconciles := reconcileCount(t) - before
	if reconciles < 3*float64(len(gateways)) {
		t.Fatalf("only %v reconciles of %d VoiceGateways in 6s with a 1s resync period: the test proves nothing", reconciles, len(gateways))
	}
	if writes := op.writes.Writes(); len(writes) != 0 {
		t.Errorf("%v reconciles of unchanged VoiceGateways made %d writes: %v", reconciles, len(writes), writes)
	}
	if reads := op.writes.SecretReads(); len(reads) != 0 {
		t.Errorf("%v reconciles of unchanged VoiceGateways read unchanged Secrets %d times: %v", reconciles, len(reads), reads)
	}
	// The rotation asked for before the Secret existed was answered by its
	// new keys, not by a rotation.
	secret := getSecret(t, types.NamespacedName{Namespace: namespace, Name: "steady-fleet"})
	if secret.Annotations[controllers.AnnotationRotatedFor] != "once" || len(tokenKeysOf(t, secret).Keys) != 1 {
		t.Errorf("steady-fleet: annotations %v, %d keys; want the request recorded and one key", secret.Annotations, len(tokenKeysOf(t, secret).Keys))
	}
}

// reconcileCount reads controller-runtime's reconcile counter for the
// controller from the process's metrics registry.
func reconcileCount(t *testing.T) float64 {
	t.Helper()
	return controllerCounter(t, "controller_runtime_reconcile_total")
}

// controllerCounter sums the counter family name over the voicegateway
// controller's series in the process's metrics registry.
func controllerCounter(t *testing.T, name string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	total := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "controller" && l.GetValue() == "voicegateway" {
					total += m.GetCounter().GetValue()
				}
			}
		}
	}
	return total
}

func TestInvalidSpecsAreRejected(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	d := func(s string) *metav1.Duration {
		v, err := time.ParseDuration(s)
		if err != nil {
			t.Fatal(err)
		}
		return &metav1.Duration{Duration: v}
	}
	keys := &vgv1.SecretKeyRef{Name: "keys", Key: "keys"}
	tests := map[string]struct {
		modify func(*vgv1.VoiceGateway)
		// want is part of the message the user sees.
		want string
	}{
		"openai without its key": {
			modify: func(gw *vgv1.VoiceGateway) { gw.Spec.Backend = vgv1.BackendSpec{Type: vgv1.BackendOpenAI} },
			want:   "backend.type openai needs backend.openai.apiKeySecretRef",
		},
		"openai settings with echo": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.Backend = vgv1.BackendSpec{Type: vgv1.BackendEcho, OpenAI: &vgv1.OpenAIBackendSpec{Model: "x"}}
			},
			want: "backend.openai is only used with backend.type openai",
		},
		"openai url not a websocket": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.Backend = vgv1.BackendSpec{Type: vgv1.BackendOpenAI, OpenAI: &vgv1.OpenAIBackendSpec{URL: "https://api.openai.com", APIKeySecretRef: keys}}
			},
			want: "backend.openai.url must be a ws:// or wss:// URL",
		},
		"unknown backend": {
			modify: func(gw *vgv1.VoiceGateway) { gw.Spec.Backend.Type = "gemini" },
			want:   `Unsupported value: "gemini"`,
		},
		"key rotation period too short": {
			modify: func(gw *vgv1.VoiceGateway) { gw.Spec.Auth.KeyRotationPeriod = d("30m") },
			want:   "auth.keyRotationPeriod must be between 1h and 8760h",
		},
		"key rotation period of the user's fleet secret": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.Auth.FleetSecretRef = &vgv1.LocalSecretRef{Name: "mine"}
				gw.Spec.Auth.KeyRotationPeriod = d("24h")
			},
			want: "auth.keyRotationPeriod rotates the fleet Secret the operator owns",
		},
		"too many network policy peers": {
			modify: func(gw *vgv1.VoiceGateway) {
				for range 33 {
					gw.Spec.NetworkPolicy.AdminFrom = append(gw.Spec.NetworkPolicy.AdminFrom, networkingv1.NetworkPolicyPeer{
						IPBlock: &networkingv1.IPBlock{CIDR: "10.0.0.0/8"}})
				}
			},
			want: "spec.networkPolicy.adminFrom: Too many",
		},
		"both authentications": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.Auth = vgv1.AuthSpec{APIKeysSecretRef: keys, InsecureNoAuth: true}
			},
			want: "auth.apiKeysSecretRef and auth.insecureNoAuth cannot both be set",
		},
		"openai model that is no name": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.Backend.OpenAI = &vgv1.OpenAIBackendSpec{Models: []string{"gpt realtime"}}
			},
			want: "spec.backend.openai.models[0]",
		},
		"client token ttl too long": {
			modify: func(gw *vgv1.VoiceGateway) { gw.Spec.Auth.ClientTokenTTL = d("1h") },
			want:   "auth.clientTokenTTL must be between 1s and 10m",
		},
		"drain timeout too short": {
			modify: func(gw *vgv1.VoiceGateway) { gw.Spec.Drain.Timeout = d("1s") },
			want:   "drain.timeout must be between 5s and 2h",
		},
		"drain timeout too long": {
			modify: func(gw *vgv1.VoiceGateway) { gw.Spec.Drain.Timeout = d("3h") },
			want:   "drain.timeout must be between 5s and 2h",
		},
		"preStop delay too long": {
			modify: func(gw *vgv1.VoiceGateway) { gw.Spec.Drain.PreStopDelay = d("2m") },
			want:   "drain.preStopDelay must be at most 60s",
		},
		"notify window not inside the timeout": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.Drain.Timeout = d("20s")
				gw.Spec.Drain.NotifyWindow = d("20s")
			},
			want: "drain.notifyWindow must be shorter than drain.timeout",
		},
		"duration without a unit": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.Sessions.IdleTimeout = &metav1.Duration{}
			},
			want: "sessions.idleTimeout must be at least 1s",
		},
		"idle timeout longer than max duration": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.Sessions.IdleTimeout = d("2h")
				gw.Spec.Sessions.MaxDuration = d("1h")
			},
			want: "sessions.idleTimeout must not be longer than sessions.maxDuration",
		},
		"block before suspicion": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.RateLimit.SuspiciousAfter = 5
				gw.Spec.RateLimit.BlockAfter = 5
			},
			want: "rateLimit.blockAfter must be more than rateLimit.suspiciousAfter",
		},
		"trusted proxy not an address": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.RateLimit.TrustedProxies = []string{"10.0.0.0/8", "load-balancer"}
			},
			want: "rateLimit.trustedProxies entries must be IP addresses or CIDR prefixes",
		},
		"max unavailable not a count or percentage": {
			modify: func(gw *vgv1.VoiceGateway) { gw.Spec.Disruption.MaxUnavailable = ptr.To(intstr.FromString("half")) },
			want:   "disruption.maxUnavailable must be a number of pods (0 or more) or a percentage",
		},
		"negative replicas": {
			modify: func(gw *vgv1.VoiceGateway) { gw.Spec.Replicas = ptr.To(int32(-1)) },
			want:   "spec.replicas: Invalid value: -1",
		},
		"name too long": {
			modify: func(gw *vgv1.VoiceGateway) { gw.Name = strings.Repeat("a", 51) },
			want:   "metadata.name must be at most 50 characters",
		},
		"buffered audio over a minute": {
			modify: func(gw *vgv1.VoiceGateway) { gw.Spec.Sessions.MaxBufferedAudio = d("61s") },
			want:   "sessions.maxBufferedAudio must be between 1s and 60s",
		},
		"a token may open no session": {
			modify: func(gw *vgv1.VoiceGateway) { gw.Spec.Auth.MaxSessionsPerToken = -1 },
			want:   "spec.auth.maxSessionsPerToken: Invalid value: -1",
		},
		"negative cap per client address": {
			modify: func(gw *vgv1.VoiceGateway) { gw.Spec.Sessions.MaxPerClientIP = -1 },
			want:   "spec.sessions.maxPerClientIP: Invalid value: -1",
		},
		"credentials in the upstream URL": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.Backend = vgv1.BackendSpec{Type: vgv1.BackendOpenAI, OpenAI: &vgv1.OpenAIBackendSpec{
					URL: "wss://user:sk-secret@api.openai.com/v1/realtime", APIKeySecretRef: keys,
				}}
			},
			want: "backend.openai.url must not hold credentials",
		},
		"autoscaling bounds crossed": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.Autoscaling = vgv1.AutoscalingSpec{Enabled: true, MinReplicas: 5, MaxReplicas: 3}
			},
			want: "autoscaling.minReplicas must not be more than autoscaling.maxReplicas",
		},
		"autoscaling target over the session limit": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.Sessions.MaxPerPod = 100
				gw.Spec.Autoscaling = vgv1.AutoscalingSpec{Enabled: true, TargetSessionsPerPod: ptr.To(int32(101))}
			},
			want: "autoscaling.targetSessionsPerPod must not be more than sessions.maxPerPod",
		},
		"autoscaling to zero": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.Autoscaling = vgv1.AutoscalingSpec{Enabled: true, MinReplicas: -1}
			},
			want: "spec.autoscaling.minReplicas: Invalid value: -1",
		},
		"autoscaling window over an hour": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.Autoscaling = vgv1.AutoscalingSpec{ScaleDownStabilizationWindow: d("61m")}
			},
			want: "autoscaling.scaleDownStabilizationWindow must be at most 1h",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			gw := newGateway(namespace, "invalid")
			tc.modify(gw)
			err := k8s.Create(ctx, gw)
			if err == nil {
				_ = k8s.Delete(ctx, gw)
				t.Fatalf("accepted; want rejected with %q", tc.want)
			}
			if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error = %v\nwant an Invalid error containing %q", err, tc.want)
			}
		})
	}

	t.Run("minimal spec gets its defaults", func(t *testing.T) {
		// Exactly what a newcomer writes: no auth at all.
		u := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "voicegateway.dev/v1alpha1",
			"kind":       "VoiceGateway",
			"metadata":   map[string]any{"namespace": namespace, "name": "minimal"},
			"spec":       map[string]any{"backend": map[string]any{"type": "echo"}},
		}}
		if err := k8s.Create(ctx, u); err != nil {
			t.Fatalf("the minimal spec {backend: {type: echo}} is refused: %v", err)
		}
		gw := getGateway(t, client.ObjectKeyFromObject(u))
		s := gw.Spec
		if *s.Replicas != 2 || s.Backend.Type != vgv1.BackendEcho || s.Sessions.MaxPerPod != 1000 ||
			s.Sessions.IdleTimeout.Duration != 2*time.Minute || s.Sessions.MaxDuration.Duration != time.Hour ||
			s.Drain.PreStopDelay.Duration != 5*time.Second || s.Drain.Timeout.Duration != 55*time.Second ||
			s.Service.Port != 80 || s.Auth.ClientTokenTTL == nil || s.Auth.ClientTokenTTL.Duration != time.Minute ||
			s.Resources.Requests.Cpu().String() != "100m" {
			t.Errorf("defaults = %+v", s)
		}
		// Secure by default: authentication on (with a generated key), the
		// NetworkPolicy on, the debug endpoints off.
		if s.Auth.InsecureNoAuth || s.Auth.APIKeysSecretRef != nil || s.Auth.FleetSecretRef != nil ||
			!ptr.Deref(s.NetworkPolicy.Enabled, false) || s.DebugEndpoints {
			t.Errorf("auth %+v networkPolicy %+v debugEndpoints %v", s.Auth, s.NetworkPolicy, s.DebugEndpoints)
		}
	})
}
