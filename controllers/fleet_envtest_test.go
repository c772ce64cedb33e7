package controllers_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
	"github.com/voicegateway/voicegateway/controllers"
	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/fleet"
)

// createFleetSecret creates a user's fleet Secret with fresh keys, as
// `voice-server fleet-secret init` and kubectl would, and returns its data.
func createFleetSecret(t *testing.T, namespace, name string, withAPIKey bool) map[string][]byte {
	t.Helper()
	data, err := fleet.Generate(rand.Reader, time.Now(), withAPIKey)
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}, Data: data}
	if err := k8s.Create(context.Background(), secret); err != nil {
		t.Fatal(err)
	}
	return data
}

func getSecret(t *testing.T, key types.NamespacedName) *corev1.Secret {
	t.Helper()
	var secret corev1.Secret
	if err := k8s.Get(context.Background(), key, &secret); err != nil {
		t.Fatal(err)
	}
	return &secret
}

func tokenKeysOf(t *testing.T, secret *corev1.Secret) fleet.TokenKeys {
	t.Helper()
	keys, err := fleet.ParseTokenKeys(secret.Data[fleet.TokenKeysFile])
	if err != nil {
		t.Fatalf("Secret %s: %v", secret.Name, err)
	}
	return keys
}

// eventsAbout lists the notes of the events about a VoiceGateway with a
// reason.
func eventsAbout(t *testing.T, namespace, gateway, reason string) []string {
	t.Helper()
	var events eventsv1.EventList
	if err := k8s.List(context.Background(), &events, client.InNamespace(namespace)); err != nil {
		t.Fatal(err)
	}
	var notes []string
	for _, e := range events.Items {
		if e.Regarding.Kind == "VoiceGateway" && e.Regarding.Name == gateway && e.Reason == reason {
			notes = append(notes, e.Note)
		}
	}
	return notes
}

// checkNoSecretLeaks fails when a value of the fleet Secret appears in the
// VoiceGateway's status, its events, or the ConfigMap of its settings.
func checkNoSecretLeaks(t *testing.T, gw *vgv1.VoiceGateway, data map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	status, err := json.Marshal(gw.Status)
	if err != nil {
		t.Fatal(err)
	}
	var events eventsv1.EventList
	if err := k8s.List(ctx, &events, client.InNamespace(gw.Namespace)); err != nil {
		t.Fatal(err)
	}
	var notes strings.Builder
	for _, e := range events.Items {
		notes.WriteString(e.Note + "\n")
	}
	var cm corev1.ConfigMap
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: gw.Namespace, Name: gw.Name + "-config"}, &cm); err != nil {
		t.Fatal(err)
	}
	var secrets []string
	keys, err := fleet.ParseTokenKeys(data[fleet.TokenKeysFile])
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range keys.Keys {
		secrets = append(secrets, key.Secret)
	}
	for _, file := range []string{fleet.AdminTokenFile, fleet.FleetKeyFile, fleet.APIKeysFile} {
		if v := strings.TrimSpace(string(data[file])); v != "" {
			secrets = append(secrets, v)
		}
	}
	for _, secret := range secrets {
		for where, text := range map[string]string{"status": string(status), "events": notes.String(), "ConfigMap": cm.Data["config.yaml"]} {
			if strings.Contains(text, secret) {
				t.Errorf("a secret value of the fleet Secret appears in the %s", where)
			}
		}
	}
}

// TestFleetSecretLifecycle follows a newcomer's minimal VoiceGateway: it is
// accepted without auth, gets a fleet Secret with a generated API key,
// owned by it, whose place the status and an event name; the Secret is
// never rewritten by an unrelated edit; a rotation request adds a key
// without touching the pods; and a deleted Secret comes back with new
// keys and a warning.
func TestFleetSecretLifecycle(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	op := startOperator(t, namespace, managerOptions{})

	u := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "voicegateway.dev/v1alpha1",
		"kind":       "VoiceGateway",
		"metadata":   map[string]any{"namespace": namespace, "name": "fresh"},
		"spec":       map[string]any{"backend": map[string]any{"type": "echo"}},
	}}
	if err := k8s.Create(ctx, u); err != nil {
		t.Fatalf("the minimal spec is refused: %v", err)
	}
	key := client.ObjectKeyFromObject(u)
	secretKey := types.NamespacedName{Namespace: namespace, Name: "fresh-fleet"}
	objs := waitForObjects(t, key)
	var gw *vgv1.VoiceGateway
	testkit.Eventually(t, 10*time.Second, func() error {
		gw = getGateway(t, key)
		if gw.Status.ObservedGeneration != gw.Generation {
			return errors.New("not yet reconciled")
		}
		return checkConditions(gw, map[string]string{vgv1.ConditionDegraded: "False/" + controllers.ReasonAsExpected})
	})
	checkCommon(t, gw, objs)

	// The Secret: owned, complete, with an API key.
	secret := getSecret(t, secretKey)
	if !metav1.IsControlledBy(secret, gw) || !ptr.Deref(secret.OwnerReferences[0].BlockOwnerDeletion, false) ||
		secret.Labels[controllers.LabelManagedBy] != controllers.ManagedBy || secret.Type != corev1.SecretTypeOpaque {
		t.Errorf("fleet Secret metadata %+v type %s, want owned by the VoiceGateway", secret.ObjectMeta, secret.Type)
	}
	if err := fleet.Check(secret.Data, true); err != nil {
		t.Errorf("fleet Secret: %v", err)
	}
	created := secret.DeepCopy()
	if gw.Status.FleetSecretName != "fresh-fleet" || gw.Status.GeneratedAPIKey == nil ||
		*gw.Status.GeneratedAPIKey != (vgv1.SecretKeyRef{Name: "fresh-fleet", Key: "api-keys"}) {
		t.Errorf("status fleet %q generated key %+v", gw.Status.FleetSecretName, gw.Status.GeneratedAPIKey)
	}
	waitForEvent(t, namespace, controllers.EventFleetSecretCreated, "Created the fleet Secret fresh-fleet")
	notes := eventsAbout(t, namespace, "fresh", controllers.EventFleetSecretCreated)
	wantCommand := "kubectl -n " + namespace + " get secret fresh-fleet -o jsonpath='{.data.api-keys}' | base64 -d"
	if len(notes) != 1 || !strings.Contains(notes[0], wantCommand) {
		t.Errorf("creation events %q, want one saying %q", notes, wantCommand)
	}
	cfg := loadServerConfig(t, &objs.configMap)
	if cfg.APIKeysFile != "/etc/voicegateway/fleet/api-keys" || cfg.FleetSecretDir != "/etc/voicegateway/fleet" || cfg.InsecureNoAuth {
		t.Errorf("server settings: api keys %q fleet %q insecure %v", cfg.APIKeysFile, cfg.FleetSecretDir, cfg.InsecureNoAuth)
	}

	// An edit of something unrelated rolls the pods and leaves the keys.
	firstHash := objs.deployment.Spec.Template.Annotations[controllers.AnnotationConfigHash]
	op.writes.Reset()
	patch := client.MergeFrom(gw.DeepCopy())
	gw.Spec.Sessions.MaxPerPod = 77
	if err := k8s.Patch(ctx, gw, patch); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		if err := getObjects(key, objs); err != nil {
			return err
		}
		if objs.deployment.Spec.Template.Annotations[controllers.AnnotationConfigHash] == firstHash {
			return errors.New("the pods have not rolled for the new settings")
		}
		return nil
	})
	if got := getSecret(t, secretKey); got.ResourceVersion != created.ResourceVersion || !sameData(got.Data, created.Data) {
		t.Error("an unrelated edit rewrote the fleet Secret")
	}
	for _, write := range op.writes.Writes() {
		if strings.Contains(write, "/secrets/") {
			t.Errorf("an unrelated edit wrote the fleet Secret: %s", write)
		}
	}

	// A rotation request: a new key that signs after the activation delay,
	// the old one kept for its tokens; the pods are not rolled.
	gw = getGateway(t, key)
	deployment := objs.deployment.DeepCopy()
	hash := deployment.Spec.Template.Annotations[controllers.AnnotationConfigHash]
	oldKey := tokenKeysOf(t, created).Keys[0]
	patch = client.MergeFrom(gw.DeepCopy())
	gw.Annotations = map[string]string{vgv1.AnnotationRotateKeys: "2026-12-07"}
	if err := k8s.Patch(ctx, gw, patch); err != nil {
		t.Fatal(err)
	}
	var rotated *corev1.Secret
	testkit.Eventually(t, 10*time.Second, func() error {
		rotated = getSecret(t, secretKey)
		if n := len(tokenKeysOf(t, rotated).Keys); n != 2 {
			return fmt.Errorf("%d signing keys, want 2 after the rotation", n)
		}
		return nil
	})
	keys := tokenKeysOf(t, rotated).Keys
	fresh, old := keys[0], keys[1]
	if old.ID != oldKey.ID || old.Secret != oldKey.Secret || old.VerifyUntil == nil || fresh.ID == old.ID ||
		fresh.SignFrom == nil || fresh.VerifyUntil != nil || !old.VerifyUntil.After(fresh.SignFrom.Add(10*time.Minute)) ||
		fresh.SignFrom.Before(time.Now().Add(time.Minute)) {
		t.Errorf("keys after rotation: new %+v old %+v; want the new key signing after the activation delay and the old one verifying for 10m more",
			redact(fresh), redact(old))
	}
	if rotated.Annotations[controllers.AnnotationRotatedFor] != "2026-12-07" {
		t.Errorf("rotated-for annotation %q", rotated.Annotations[controllers.AnnotationRotatedFor])
	}
	for _, file := range []string{fleet.AdminTokenFile, fleet.FleetKeyFile, fleet.APIKeysFile} {
		if !bytes.Equal(rotated.Data[file], created.Data[file]) {
			t.Errorf("the rotation changed %s", file)
		}
	}
	waitForEvent(t, namespace, controllers.EventKeysRotated, "Rotated the signing keys of Secret fresh-fleet")
	// Give a pass that would roll the pods time to happen.
	time.Sleep(time.Second)
	var after = getObjects(key, objs)
	if after != nil {
		t.Fatal(after)
	}
	if objs.deployment.Generation != deployment.Generation || objs.deployment.Spec.Template.Annotations[controllers.AnnotationConfigHash] != hash {
		t.Errorf("the rotation changed the Deployment (generation %d -> %d, hash %s -> %s): the pods would restart",
			deployment.Generation, objs.deployment.Generation, hash, objs.deployment.Spec.Template.Annotations[controllers.AnnotationConfigHash])
	}
	if got := getSecret(t, secretKey); got.ResourceVersion != rotated.ResourceVersion {
		t.Error("the same rotation request rotated again")
	}
	checkNoSecretLeaks(t, getGateway(t, key), rotated.Data)

	// A deleted Secret comes back, with new keys (the old ones are gone
	// for good) and a warning.
	if err := k8s.Delete(ctx, rotated); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		var again corev1.Secret
		if err := k8s.Get(ctx, secretKey, &again); err != nil {
			return err
		}
		if again.UID == rotated.UID {
			return errors.New("not yet deleted")
		}
		if !metav1.IsControlledBy(&again, gw) || fleet.Check(again.Data, true) != nil {
			return fmt.Errorf("recreated Secret owners %+v", again.OwnerReferences)
		}
		if bytes.Equal(again.Data[fleet.AdminTokenFile], rotated.Data[fleet.AdminTokenFile]) {
			return errors.New("the recreated Secret has the old admin token")
		}
		return nil
	})
	waitForEvent(t, namespace, controllers.EventFleetSecretRecreated, "The fleet Secret fresh-fleet was deleted")
}

// redact hides a key's secret in a failure message.
func redact(k fleet.TokenKey) fleet.TokenKey {
	k.Secret = "…"
	return k
}

func sameData(a, b map[string][]byte) bool {
	return maps.EqualFunc(a, b, bytes.Equal)
}

// TestUserFleetSecretIsOnlyRead: a VoiceGateway naming its own fleet
// Secret mounts it and takes its API keys from it; the operator reads it
// and never writes it (not for a rotation request either, which it
// declines with a warning), makes no Secret of its own, and reports a
// broken or missing Secret as Degraded with what to fix.
func TestUserFleetSecretIsOnlyRead(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	startOperator(t, namespace, managerOptions{})

	data := createFleetSecret(t, namespace, "mine", true)
	secretKey := types.NamespacedName{Namespace: namespace, Name: "mine"}
	original := getSecret(t, secretKey)
	gw := newGateway(namespace, "bring")
	gw.Spec.Auth = vgv1.AuthSpec{FleetSecretRef: &vgv1.LocalSecretRef{Name: "mine"}}
	gw.Annotations = map[string]string{vgv1.AnnotationRotateKeys: "please"}
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(gw)
	objs := waitForObjects(t, key)
	testkit.Eventually(t, 10*time.Second, func() error {
		gw = getGateway(t, key)
		if gw.Status.ObservedGeneration != gw.Generation || gw.Status.FleetSecretName != "mine" {
			return fmt.Errorf("observedGeneration %d of %d, fleet Secret %q", gw.Status.ObservedGeneration, gw.Generation, gw.Status.FleetSecretName)
		}
		return checkConditions(gw, map[string]string{vgv1.ConditionDegraded: "False/" + controllers.ReasonAsExpected})
	})
	checkCommon(t, gw, objs)
	if gw.Status.GeneratedAPIKey != nil {
		t.Errorf("status.generatedAPIKey = %+v for the user's own Secret", gw.Status.GeneratedAPIKey)
	}
	if cfg := loadServerConfig(t, &objs.configMap); cfg.APIKeysFile != "/etc/voicegateway/fleet/api-keys" {
		t.Errorf("api keys file %q, want the user's fleet Secret's", cfg.APIKeysFile)
	}
	waitForEvent(t, namespace, controllers.EventRotationIgnored, "The operator does not rotate Secret mine")
	var own corev1.Secret
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: namespace, Name: "bring-fleet"}, &own); !apierrors.IsNotFound(err) {
		t.Errorf("the operator made a fleet Secret of its own besides the user's (%v)", err)
	}
	time.Sleep(time.Second)
	if got := getSecret(t, secretKey); got.ResourceVersion != original.ResourceVersion || !sameData(got.Data, data) ||
		len(got.OwnerReferences) != 0 || len(got.Annotations) != 0 {
		t.Errorf("the operator wrote the user's fleet Secret: %+v", got.ObjectMeta)
	}
	checkNoSecretLeaks(t, gw, data)

	// The user breaks their Secret: Degraded, saying which files to fix,
	// and the Secret is left as it is.
	broken := getSecret(t, secretKey)
	delete(broken.Data, fleet.AdminTokenFile)
	broken.Data[fleet.FleetKeyFile] = []byte("not a key")
	if err := k8s.Update(ctx, broken); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		gw := getGateway(t, key)
		if err := checkConditions(gw, map[string]string{vgv1.ConditionDegraded: "True/" + controllers.ReasonInvalidFleetSecret}); err != nil {
			return err
		}
		message := meta.FindStatusCondition(gw.Status.Conditions, vgv1.ConditionDegraded).Message
		for _, want := range []string{`Secret "mine"`, "admin-token: missing", "fleet-key: not standard base64"} {
			if !strings.Contains(message, want) {
				return fmt.Errorf("Degraded message %q lacks %q", message, want)
			}
		}
		return nil
	})
	if got := getSecret(t, secretKey); got.ResourceVersion != broken.ResourceVersion {
		t.Error("the operator repaired the user's Secret")
	}

	// A Secret that does not exist.
	missing := newGateway(namespace, "missing")
	missing.Spec.Auth = vgv1.AuthSpec{InsecureNoAuth: true, FleetSecretRef: &vgv1.LocalSecretRef{Name: "nowhere"}}
	if err := k8s.Create(ctx, missing); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		gw := getGateway(t, client.ObjectKeyFromObject(missing))
		if err := checkConditions(gw, map[string]string{vgv1.ConditionDegraded: "True/" + controllers.ReasonSecretNotFound}); err != nil {
			return err
		}
		if message := meta.FindStatusCondition(gw.Status.Conditions, vgv1.ConditionDegraded).Message; !strings.Contains(message, `"nowhere"`) {
			return fmt.Errorf("message %q does not name the Secret", message)
		}
		return nil
	})
	var d corev1.ServiceAccount
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: namespace, Name: "missing"}, &d); !apierrors.IsNotFound(err) {
		t.Errorf("objects were applied without a fleet Secret (%v)", err)
	}
}

// TestForeignFleetSecretIsRefused: a Secret that already has the fleet
// Secret's name and belongs to someone else is neither used nor touched;
// the VoiceGateway is Degraded until it is renamed or named as the fleet
// Secret.
func TestForeignFleetSecretIsRefused(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	startOperator(t, namespace, managerOptions{})

	createSecret(t, namespace, "taken-fleet", map[string]string{"password": "someone else's"})
	foreign := getSecret(t, types.NamespacedName{Namespace: namespace, Name: "taken-fleet"})
	gw := newGateway(namespace, "taken")
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(gw)
	testkit.Eventually(t, 10*time.Second, func() error {
		gw := getGateway(t, key)
		if err := checkConditions(gw, map[string]string{vgv1.ConditionDegraded: "True/" + controllers.ReasonFleetSecretNotOwned}); err != nil {
			return err
		}
		message := meta.FindStatusCondition(gw.Status.Conditions, vgv1.ConditionDegraded).Message
		if !strings.Contains(message, `Secret "taken-fleet" exists and is not controlled by this VoiceGateway`) ||
			!strings.Contains(message, "spec.auth.fleetSecretRef") {
			return fmt.Errorf("message %q", message)
		}
		return nil
	})
	time.Sleep(time.Second)
	if got := getSecret(t, client.ObjectKeyFromObject(foreign)); got.ResourceVersion != foreign.ResourceVersion {
		t.Errorf("the operator changed a Secret it does not own: %+v", got.ObjectMeta)
	}
	var d corev1.ServiceAccount
	if err := k8s.Get(ctx, key, &d); !apierrors.IsNotFound(err) {
		t.Errorf("objects were applied that would mount a foreign Secret (%v)", err)
	}

	// Renamed out of the way: the operator makes its own.
	if err := k8s.Delete(ctx, foreign); err != nil {
		t.Fatal(err)
	}
	waitForObjects(t, key)
	testkit.Eventually(t, 10*time.Second, func() error {
		return checkConditions(getGateway(t, key), map[string]string{vgv1.ConditionDegraded: "False/" + controllers.ReasonAsExpected})
	})
}

// TestNetworkPolicy: on by default, the sessions port open as spec.from
// says and the admin port only to the operator's namespace, the fleet's
// own pods and spec.adminFrom; removed when switched off, back when on.
func TestNetworkPolicy(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	startOperator(t, namespace, managerOptions{operatorNamespace: "voicegateway-system"})

	monitoring := networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{
		MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}}
	gw := newGateway(namespace, "guarded")
	gw.Spec.NetworkPolicy.AdminFrom = []networkingv1.NetworkPolicyPeer{monitoring}
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(gw)
	objs := waitForObjects(t, key)
	checkCommon(t, getGateway(t, key), objs)

	np := objs.networkPolicy.Spec
	podSelector := map[string]string{"app.kubernetes.io/name": "voicegateway", "app.kubernetes.io/instance": "guarded"}
	if !mapsEqual(np.PodSelector.MatchLabels, podSelector) || len(np.PodSelector.MatchExpressions) != 0 ||
		!slices.Equal(np.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) || len(np.Egress) != 0 {
		t.Errorf("policy selects %+v for %v, want the gateway's pods, ingress only", np.PodSelector, np.PolicyTypes)
	}
	if len(np.Ingress) != 3 {
		t.Fatalf("ingress rules %+v, want one per port", np.Ingress)
	}
	if g := np.Ingress[2]; len(g.Ports) != 2 || g.Ports[0].Port.IntValue() != 7946 || len(g.From) != 1 ||
		!mapsEqual(g.From[0].PodSelector.MatchLabels, podSelector) {
		t.Errorf("gossip rule %+v, want port 7946 from the fleet's pods only", g)
	}
	public, admin := np.Ingress[0], np.Ingress[1]
	if len(public.Ports) != 1 || public.Ports[0].Port.IntValue() != 8080 || len(public.From) != 0 {
		t.Errorf("sessions rule %+v, want port 8080 from anywhere", public)
	}
	wantAdmin := []networkingv1.NetworkPolicyPeer{
		{NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "voicegateway-system"}}},
		{PodSelector: &metav1.LabelSelector{MatchLabels: podSelector}},
		monitoring,
	}
	if len(admin.Ports) != 1 || admin.Ports[0].Port.IntValue() != 9090 || len(admin.From) != len(wantAdmin) {
		t.Fatalf("admin rule %+v, want port 9090 from %+v", admin, wantAdmin)
	}
	for i, want := range wantAdmin {
		got, _ := json.Marshal(admin.From[i])
		wantJSON, _ := json.Marshal(want)
		if !bytes.Equal(got, wantJSON) {
			t.Errorf("admin peer %d = %s, want %s", i, got, wantJSON)
		}
	}

	// Switched off: removed.
	gw = getGateway(t, key)
	patch := client.MergeFrom(gw.DeepCopy())
	gw.Spec.NetworkPolicy.Enabled = ptr.To(false)
	if err := k8s.Patch(ctx, gw, patch); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		var policy networkingv1.NetworkPolicy
		err := k8s.Get(ctx, key, &policy)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("the NetworkPolicy is still there (%v)", err)
	})
	testkit.Eventually(t, 10*time.Second, func() error {
		gw := getGateway(t, key)
		if gw.Status.ObservedGeneration != gw.Generation {
			return errors.New("not yet reconciled")
		}
		return checkConditions(gw, map[string]string{vgv1.ConditionDegraded: "False/" + controllers.ReasonAsExpected})
	})

	// Switched on again: back.
	gw = getGateway(t, key)
	patch = client.MergeFrom(gw.DeepCopy())
	gw.Spec.NetworkPolicy.Enabled = ptr.To(true)
	if err := k8s.Patch(ctx, gw, patch); err != nil {
		t.Fatal(err)
	}
	waitForObjects(t, key)
}
