package packaging_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
	"github.com/voicegateway/voicegateway/internal/testenv"
	"github.com/voicegateway/voicegateway/internal/testkit"
)

// createNamespace creates a namespace (it may exist from an earlier step).
func createNamespace(t *testing.T, name string) {
	t.Helper()
	err := k8s.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// deleteCRD removes the VoiceGateway CRD and waits until it is gone.
func deleteCRD(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	crd, err := getCRD(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := k8s.Delete(ctx, crd); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, func() error {
		if _, err := getCRD(ctx); !apierrors.IsNotFound(err) {
			return fmt.Errorf("the CRD is still there (%v)", err)
		}
		return nil
	})
}

// waitGone waits until the object no longer exists.
func waitGone(t *testing.T, obj client.Object) {
	t.Helper()
	testkit.Eventually(t, 30*time.Second, func() error {
		err := k8s.Get(context.Background(), client.ObjectKeyFromObject(obj), obj)
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("%T %s still exists (%v)", obj, obj.GetName(), err)
	})
}

// getDeployment reads a Deployment through the admin client.
func getDeployment(t *testing.T, namespace, name string) *appsv1.Deployment {
	t.Helper()
	var d appsv1.Deployment
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: namespace, Name: name}, &d); err != nil {
		t.Fatal(err)
	}
	return &d
}

// TestHelmInstallUpgradeUninstall follows a user's Helm day on a real API
// server: helm install (the CRD from crds/ included, and the NOTES), helm
// upgrade with changed values reaching the operator's Deployment and
// switching its RBAC to a watched namespace, and helm uninstall removing
// everything but the CRD (Helm never deletes CRDs, so VoiceGateways
// survive an uninstall).
func TestHelmInstallUpgradeUninstall(t *testing.T) {
	ctx := context.Background()
	const (
		release   = "voicegateway"
		namespace = "vgw-helm"
		watched   = "vgw-helm-team"
	)
	meta := readChartMeta(t)
	deleteCRD(t)
	t.Cleanup(func() { ensureCRD(t) })

	out := mustTool(t, "helm", "install", release, chartDir, "--namespace", namespace, "--create-namespace")
	for _, want := range []string{"STATUS: deployed", "kubectl -n default apply -f config/samples/", "kubectl -n default get vgw -w",
		"kubectl -n " + namespace + " rollout status deployment/voicegateway-operator"} {
		if !strings.Contains(out, want) {
			t.Errorf("helm install's output lacks %q:\n%s", want, out)
		}
	}
	crd, err := getCRD(ctx)
	if err != nil {
		t.Fatalf("helm install did not install the CRD: %v", err)
	}
	if !slices.ContainsFunc(crd.GetManagedFields(), func(f metav1.ManagedFieldsEntry) bool { return f.Manager == "helm" }) {
		t.Errorf("the CRD was not written by helm: managed fields %+v", crd.GetManagedFields())
	}

	d := getDeployment(t, namespace, "voicegateway-operator")
	c := d.Spec.Template.Spec.Containers[0]
	defaultImage := "ghcr.io/voicegateway/voicegateway:" + meta.AppVersion
	if c.Image != defaultImage || !slices.Contains(c.Args, "--default-image="+defaultImage) ||
		!slices.Contains(c.Args, "--log-level=info") || slices.ContainsFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--namespace=") }) {
		t.Errorf("installed Deployment: image %q args %q", c.Image, c.Args)
	}
	installed := []client.Object{
		&corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "voicegateway-operator"}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "voicegateway-operator-metrics"}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "voicegateway-operator-manager"}},
		&rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "voicegateway-operator-manager"}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "voicegateway-operator-viewer"}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "voicegateway-operator-editor"}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "voicegateway-operator-leader-election"}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "voicegateway-operator-leader-election"}},
		&networkingv1.NetworkPolicy{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "voicegateway-operator"}},
	}
	for _, obj := range installed {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			t.Errorf("after helm install: %T %s: %v", obj, obj.GetName(), err)
		}
	}

	// helm upgrade with other values: they reach the Deployment, and the
	// operator's rights move from the cluster to the watched namespace.
	createNamespace(t, watched)
	out = mustTool(t, "helm", "upgrade", release, chartDir, "--namespace", namespace,
		"--set", "image.tag=v0.1.1", "--set", "logLevel=debug", "--set", "replicaCount=2", "--set", "watchNamespaces={"+watched+"}",
		"--set", "extraEnv[0].name=GOMEMLIMIT", "--set", "extraEnv[0].value=200MiB")
	if !strings.Contains(out, "STATUS: deployed") || !strings.Contains(out, "REVISION: 2") {
		t.Errorf("helm upgrade:\n%s", out)
	}
	upgraded := getDeployment(t, namespace, "voicegateway-operator")
	c = upgraded.Spec.Template.Spec.Containers[0]
	if upgraded.Generation <= d.Generation || *upgraded.Spec.Replicas != 2 || c.Image != "ghcr.io/voicegateway/voicegateway:v0.1.1" ||
		!slices.Contains(c.Args, "--default-image=ghcr.io/voicegateway/voicegateway:v0.1.1") ||
		!slices.Contains(c.Args, "--log-level=debug") || !slices.Contains(c.Args, "--namespace="+watched) ||
		!slices.EqualFunc(c.Env, []corev1.EnvVar{podNamespaceEnv, {Name: "GOMEMLIMIT", Value: "200MiB"}}, envEqual) {
		t.Errorf("upgraded Deployment: generation %d (was %d) replicas %d image %q args %q env %+v",
			upgraded.Generation, d.Generation, *upgraded.Spec.Replicas, c.Image, c.Args, c.Env)
	}
	waitGone(t, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "voicegateway-operator-manager"}})
	waitGone(t, &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "voicegateway-operator-manager"}})
	for _, obj := range []client.Object{
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: watched, Name: "voicegateway-operator-manager"}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: watched, Name: "voicegateway-operator-manager"}},
	} {
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			t.Errorf("after helm upgrade: %T %s/%s: %v", obj, watched, obj.GetName(), err)
		}
	}
	var releases []struct {
		Name       string `json:"name"`
		Revision   string `json:"revision"`
		Status     string `json:"status"`
		AppVersion string `json:"app_version"`
	}
	if err := json.Unmarshal([]byte(mustTool(t, "helm", "list", "--namespace", namespace, "--output", "json")), &releases); err != nil {
		t.Fatal(err)
	}
	if len(releases) != 1 || releases[0].Name != release || releases[0].Revision != "2" || releases[0].Status != "deployed" ||
		releases[0].AppVersion != meta.AppVersion {
		t.Errorf("helm list: %+v", releases)
	}

	out = mustTool(t, "helm", "uninstall", release, "--namespace", namespace)
	if !strings.Contains(out, "uninstalled") {
		t.Errorf("helm uninstall:\n%s", out)
	}
	for _, obj := range append(installed[:2:2],
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "voicegateway-operator"}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "voicegateway-operator-viewer"}},
		&rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "voicegateway-operator-editor"}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "voicegateway-operator-leader-election"}},
		&rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: watched, Name: "voicegateway-operator-manager"}},
		&rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: watched, Name: "voicegateway-operator-manager"}},
	) {
		waitGone(t, obj)
	}
	if _, err := getCRD(ctx); err != nil {
		t.Errorf("helm uninstall removed the CRD (and with it every VoiceGateway): %v", err)
	}
	if out := mustTool(t, "helm", "list", "--namespace", namespace, "--short"); strings.TrimSpace(out) != "" {
		t.Errorf("helm list after uninstall: %s", out)
	}
}

// TestKustomizeServerSideApply installs config/default as the README says,
// `kubectl apply --server-side -k config/default`, over a CRD that another
// field manager created (no conflict: the content is the same), checks
// what it created, and applies again without changing anything.
func TestKustomizeServerSideApply(t *testing.T) {
	ctx := context.Background()
	ensureCRD(t)
	meta := readChartMeta(t)
	out := mustTool(t, "kubectl", "apply", "--server-side", "-k", "config/default")
	for _, want := range []string{
		"namespace/voicegateway-system serverside-applied",
		"customresourcedefinition.apiextensions.k8s.io/voicegateways.voicegateway.dev serverside-applied",
		"serviceaccount/voicegateway-controller-manager serverside-applied",
		"clusterrole.rbac.authorization.k8s.io/voicegateway-manager-role serverside-applied",
		"clusterrolebinding.rbac.authorization.k8s.io/voicegateway-manager-rolebinding serverside-applied",
		"role.rbac.authorization.k8s.io/voicegateway-leader-election-role serverside-applied",
		"deployment.apps/voicegateway-controller-manager serverside-applied",
		"validatingadmissionpolicy.admissionregistration.k8s.io/voicegateway-pod-patch-policy serverside-applied",
		"validatingadmissionpolicybinding.admissionregistration.k8s.io/voicegateway-pod-patch-policy serverside-applied",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("kubectl apply output lacks %q:\n%s", want, out)
		}
	}
	var ns corev1.Namespace
	if err := k8s.Get(ctx, client.ObjectKey{Name: "voicegateway-system"}, &ns); err != nil {
		t.Fatal(err)
	}
	if ns.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("namespace labels %v", ns.Labels)
	}
	d := getDeployment(t, "voicegateway-system", "voicegateway-controller-manager")
	if got, want := d.Spec.Template.Spec.Containers[0].Image, "ghcr.io/voicegateway/voicegateway:"+meta.AppVersion; got != want {
		t.Errorf("config/default runs %s, the chart %s", got, want)
	}
	var role rbacv1.ClusterRole
	if err := k8s.Get(ctx, client.ObjectKey{Name: "voicegateway-manager-role"}, &role); err != nil {
		t.Fatal(err)
	}
	if missing, extra := diffPermissions(permissions(t, role.Rules), permissions(t, rulesOfFile(t, "config/rbac/role.yaml"))); len(missing)+len(extra) > 0 {
		t.Errorf("installed ClusterRole: missing %v, extra %v", missing, extra)
	}
	// The operator's pod patches: the deletion cost only.
	createNamespace(t, "vgw-kustomize-pods")
	checkPodPatchesLimited(t, impersonating(t, "voicegateway-system", "voicegateway-controller-manager"), "vgw-kustomize-pods")

	crd, err := getCRD(ctx)
	if err != nil {
		t.Fatal(err)
	}
	crdVersion := crd.GetResourceVersion()

	// Applying the same again changes nothing.
	mustTool(t, "kubectl", "apply", "--server-side", "-k", "config/default")
	if again := getDeployment(t, "voicegateway-system", "voicegateway-controller-manager"); again.ResourceVersion != d.ResourceVersion {
		t.Errorf("a second apply changed the Deployment (resourceVersion %s -> %s)", d.ResourceVersion, again.ResourceVersion)
	}
	if crd, err := getCRD(ctx); err != nil || crd.GetResourceVersion() != crdVersion {
		t.Errorf("a second apply changed the CRD (%v)", err)
	}
}

// notesOf renders the chart's NOTES as helm install prints them, with the
// API server's APIs as they are now (a fresh discovery cache).
func notesOf(t *testing.T, args ...string) string {
	t.Helper()
	bin, err := testenv.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "helm"), append([]string{"install", "notes", chartDir, "--namespace", "vgw-notes", "--dry-run=client"}, args...)...)
	cmd.Dir = repoRoot
	home := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+filepath.Join(home, "cache"), "HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"), "KUBECONFIG="+adminKubeconfig)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helm install --dry-run: %v\n%s", err, out)
	}
	_, notes, ok := strings.Cut(string(out), "NOTES:\n")
	if !ok {
		t.Fatalf("helm install printed no NOTES:\n%s", out)
	}
	return notes
}

// TestNotesCommandsWork: the chart's NOTES say what was installed (the
// monitoring objects by what the cluster has and the values ask for), and
// their commands work as printed: each kubectl line that needs no running
// operator or kubelet is run by a shell against the API server.
func TestNotesCommandsWork(t *testing.T) {
	ensureCRD(t)
	const gateways = "vgw-notes-gateways"
	createNamespace(t, gateways)
	watch := []string{"--set", "watchNamespaces={" + gateways + "}"}
	if n := notesOf(t, watch...); !strings.Contains(n, "CRDs are not installed") {
		t.Errorf("NOTES without the Prometheus Operator's CRDs:\n%s", n)
	}

	// The Prometheus Operator's CRDs, for this test only.
	crds := filepath.Join(repoRoot, "bin", "tools", "prometheus-operator-crds")
	if _, err := os.Stat(crds); err != nil {
		t.Fatalf("%s is missing: run hack/build-tools.sh (make tools)", crds)
	}
	mustTool(t, "kubectl", "apply", "--server-side", "-f", crds)
	t.Cleanup(func() { mustTool(t, "kubectl", "delete", "-f", crds) })
	var notes string
	testkit.Eventually(t, 30*time.Second, func() error {
		notes = notesOf(t, watch...)
		for _, want := range []string{"PodMonitor notes-voicegateway-operator-voice-servers", "ServiceMonitor notes-voicegateway-operator scrapes",
			"PrometheusRule notes-voicegateway-operator holds", "spec.networkPolicy.adminFrom"} {
			if !strings.Contains(notes, want) {
				return fmt.Errorf("NOTES lack %q:\n%s", want, notes)
			}
		}
		return nil
	})
	if strings.Contains(notes, "not installed") || strings.Contains(notes, "switched off") {
		t.Errorf("NOTES say the monitoring objects are missing:\n%s", notes)
	}
	off := notesOf(t, append(watch, "--set", "monitoring.podMonitor.enabled=false", "--set", "monitoring.prometheusRule.enabled=false",
		"--set", "metrics.serviceMonitor.enabled=false")...)
	if !strings.Contains(off, "switched off in the values") || strings.Contains(off, "not installed") {
		t.Errorf("NOTES with the CRDs and monitoring switched off:\n%s", off)
	}

	bin, err := testenv.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	var commands []string
	for _, line := range strings.Split(notes, "\n") {
		if strings.HasPrefix(line, "  kubectl ") {
			commands = append(commands, strings.TrimSpace(line))
		}
	}
	// What needs the operator running (the fleet Secret, the rollout) or
	// never ends (a watch) is only checked to be there.
	needsMore := []string{"rollout status deployment/notes-voicegateway-operator", "get secret demo-fleet", "get vgw -w", "get vgw demo -w"}
	ran := 0
	for _, command := range commands {
		if slices.ContainsFunc(needsMore, func(s string) bool { return strings.Contains(command, s) }) {
			continue
		}
		cmd := exec.Command("bash", "-euo", "pipefail", "-c", command)
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "KUBECONFIG="+adminKubeconfig)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("%s: %v\n%s", command, err, out)
		}
		ran++
	}
	if ran < 4 || len(commands) < 8 {
		t.Errorf("ran %d of the NOTES' %d commands: %q", ran, len(commands), commands)
	}
	var gw vgv1.VoiceGateway
	if err := k8s.Get(context.Background(), client.ObjectKey{Namespace: gateways, Name: "demo"}, &gw); err != nil {
		t.Fatal(err)
	}
	if gw.Spec.NetworkPolicy.AdminFrom == nil || gw.Spec.Sessions.IdleTimeout == nil || gw.Spec.Sessions.IdleTimeout.Duration != 90*time.Second {
		t.Errorf("after the NOTES' commands: adminFrom %+v idleTimeout %v", gw.Spec.NetworkPolicy.AdminFrom, gw.Spec.Sessions.IdleTimeout)
	}
}
