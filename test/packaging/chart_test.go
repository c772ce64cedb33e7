package packaging_test

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// chartMeta is the part of Chart.yaml the tests read.
type chartMeta struct {
	Name       string `json:"name"`
	Version    string `json:"version"`
	AppVersion string `json:"appVersion"`
}

func readChartMeta(t *testing.T) chartMeta {
	t.Helper()
	var meta chartMeta
	if err := yaml.Unmarshal(readRepoFile(t, filepath.Join(chartDir, "Chart.yaml")), &meta); err != nil {
		t.Fatal(err)
	}
	if meta.AppVersion == "" || meta.Version == "" {
		t.Fatalf("Chart.yaml: %+v", meta)
	}
	return meta
}

// renderChart runs helm template with the release name and namespace and
// returns the objects.
func renderChart(t *testing.T, release, namespace string, args ...string) manifest {
	t.Helper()
	out := mustTool(t, "helm", append([]string{"template", release, chartDir, "--namespace", namespace}, args...)...)
	return decodeObjects(t, []byte(out))
}

// TestChartCRDsAreTheGeneratedCRDs: the chart's crds/ holds exactly the
// CRDs controller-gen writes to config/crd/bases (make manifests copies
// them), byte for byte.
func TestChartCRDsAreTheGeneratedCRDs(t *testing.T) {
	generated, err := filepath.Glob(filepath.Join(repoRoot, "config", "crd", "bases", "*.yaml"))
	if err != nil || len(generated) == 0 {
		t.Fatalf("no CRDs in config/crd/bases: %v", err)
	}
	inChart, err := filepath.Glob(filepath.Join(repoRoot, chartDir, "crds", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	base := func(paths []string) []string {
		names := make([]string, 0, len(paths))
		for _, p := range paths {
			names = append(names, filepath.Base(p))
		}
		slices.Sort(names)
		return names
	}
	if !slices.Equal(base(generated), base(inChart)) {
		t.Fatalf("%s/crds holds %v, config/crd/bases %v: run `make manifests`", chartDir, base(inChart), base(generated))
	}
	for _, path := range generated {
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		got := readRepoFile(t, filepath.Join(chartDir, "crds", filepath.Base(path)))
		if !bytes.Equal(got, want) {
			t.Errorf("%s/crds/%s differs from config/crd/bases: run `make manifests`", chartDir, filepath.Base(path))
		}
	}
}

// permission is one verb on one resource of one API group.
type permission struct{ group, resource, verb string }

func (p permission) String() string {
	return p.verb + " " + p.group + "/" + p.resource
}

// permissions expands rules into single permissions. Wildcards, resource
// names and non-resource URLs are refused: the operator's rules use none.
func permissions(t *testing.T, rules []rbacv1.PolicyRule) map[permission]bool {
	t.Helper()
	set := map[permission]bool{}
	for _, rule := range rules {
		if len(rule.ResourceNames) > 0 || len(rule.NonResourceURLs) > 0 {
			t.Errorf("rule %+v names resources or URLs", rule)
		}
		for _, group := range rule.APIGroups {
			for _, res := range rule.Resources {
				for _, verb := range rule.Verbs {
					if group == "*" || res == "*" || verb == "*" {
						t.Errorf("rule %+v holds a wildcard", rule)
					}
					set[permission{group, res, verb}] = true
				}
			}
		}
	}
	return set
}

// diffPermissions lists what got lacks and what it has too much of.
func diffPermissions(got, want map[permission]bool) (missing, extra []string) {
	for p := range want {
		if !got[p] {
			missing = append(missing, p.String())
		}
	}
	for p := range got {
		if !want[p] {
			extra = append(extra, p.String())
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	return missing, extra
}

// rulesOfFile reads the rules of a (Cluster)Role file of the repository.
func rulesOfFile(t *testing.T, path string) []rbacv1.PolicyRule {
	t.Helper()
	objects := decodeObjects(t, readRepoFile(t, path))
	if len(objects) != 1 {
		t.Fatalf("%s holds %d objects", path, len(objects))
	}
	var role rbacv1.ClusterRole
	manifest(objects).find(t, objects[0].GetKind(), "", objects[0].GetName(), &role)
	return role.Rules
}

// TestChartRBACIsTheGeneratedRBAC compares the chart's roles with
// config/rbac: the operator's (Cluster)Role holds exactly the permissions
// controller-gen generates from the controller's markers (role.yaml), in
// every watched namespace or cluster-wide; the leader-election Role and the
// user-facing viewer and editor roles are those of config/rbac; and the
// operator's ServiceAccount is the only subject bound.
func TestChartRBACIsTheGeneratedRBAC(t *testing.T) {
	if got, want := readRepoFile(t, filepath.Join(chartDir, "files", "manager-role.yaml")), readRepoFile(t, "config/rbac/role.yaml"); !bytes.Equal(got, want) {
		t.Errorf("%s/files/manager-role.yaml differs from config/rbac/role.yaml: run `make manifests`", chartDir)
	}
	generated := permissions(t, rulesOfFile(t, "config/rbac/role.yaml"))
	leaderElection := permissions(t, rulesOfFile(t, "config/rbac/leader_election_role.yaml"))
	viewer := permissions(t, rulesOfFile(t, "config/rbac/voicegateway_viewer_role.yaml"))
	editor := permissions(t, rulesOfFile(t, "config/rbac/voicegateway_editor_role.yaml"))

	compare := func(t *testing.T, what string, rules []rbacv1.PolicyRule, want map[permission]bool) {
		t.Helper()
		missing, extra := diffPermissions(permissions(t, rules), want)
		if len(missing) > 0 || len(extra) > 0 {
			t.Errorf("%s: missing %v, not needed %v", what, missing, extra)
		}
	}
	checkSubjects := func(t *testing.T, m manifest, namespace, serviceAccount string) {
		t.Helper()
		for _, u := range m {
			if u.GetKind() != "ClusterRoleBinding" && u.GetKind() != "RoleBinding" {
				continue
			}
			var binding rbacv1.RoleBinding
			m.find(t, u.GetKind(), u.GetNamespace(), u.GetName(), &binding)
			want := []rbacv1.Subject{{Kind: "ServiceAccount", Name: serviceAccount, Namespace: namespace}}
			if !slices.Equal(binding.Subjects, want) {
				t.Errorf("%s %s binds %+v, want only the operator's ServiceAccount", u.GetKind(), u.GetName(), binding.Subjects)
			}
		}
	}

	t.Run("cluster-wide", func(t *testing.T) {
		m := renderChart(t, "voicegateway", "voicegateway-system")
		var role rbacv1.ClusterRole
		m.find(t, "ClusterRole", "", "voicegateway-operator-manager", &role)
		compare(t, "the operator's ClusterRole", role.Rules, generated)
		var binding rbacv1.ClusterRoleBinding
		m.find(t, "ClusterRoleBinding", "", "voicegateway-operator-manager", &binding)
		if binding.RoleRef.Kind != "ClusterRole" || binding.RoleRef.Name != role.Name {
			t.Errorf("ClusterRoleBinding refers to %+v", binding.RoleRef)
		}
		var leader rbacv1.Role
		m.find(t, "Role", "voicegateway-system", "voicegateway-operator-leader-election", &leader)
		compare(t, "the leader-election Role", leader.Rules, leaderElection)
		var view, edit rbacv1.ClusterRole
		m.find(t, "ClusterRole", "", "voicegateway-operator-viewer", &view)
		m.find(t, "ClusterRole", "", "voicegateway-operator-editor", &edit)
		compare(t, "the viewer ClusterRole", view.Rules, viewer)
		compare(t, "the editor ClusterRole", edit.Rules, editor)
		if view.Labels["rbac.authorization.k8s.io/aggregate-to-view"] != "true" ||
			edit.Labels["rbac.authorization.k8s.io/aggregate-to-edit"] != "true" || edit.Labels["rbac.authorization.k8s.io/aggregate-to-admin"] != "true" {
			t.Errorf("viewer labels %v, editor labels %v: not aggregated into view, edit and admin", view.Labels, edit.Labels)
		}
		if got := m.kinds(); got["ClusterRoleBinding"] != 1 || got["RoleBinding"] != 1 || got["Role"] != 1 || got["ClusterRole"] != 3 {
			t.Errorf("RBAC objects: %v", m.names())
		}
		checkSubjects(t, m, "voicegateway-system", "voicegateway-operator")
	})

	t.Run("watched namespaces", func(t *testing.T) {
		m := renderChart(t, "voicegateway", "voicegateway-system", "--set", "watchNamespaces={team-a,team-b}")
		for _, ns := range []string{"team-a", "team-b"} {
			var role rbacv1.Role
			m.find(t, "Role", ns, "voicegateway-operator-manager", &role)
			compare(t, "the operator's Role in "+ns, role.Rules, generated)
			var binding rbacv1.RoleBinding
			m.find(t, "RoleBinding", ns, "voicegateway-operator-manager", &binding)
			if binding.RoleRef.Kind != "Role" || binding.RoleRef.Name != role.Name {
				t.Errorf("RoleBinding in %s refers to %+v", ns, binding.RoleRef)
			}
		}
		if m.has("ClusterRole", "voicegateway-operator-manager") || m.kinds()["ClusterRoleBinding"] != 0 {
			t.Errorf("watching namespaces, the operator still gets cluster-wide rights: %v", m.names())
		}
		checkSubjects(t, m, "voicegateway-system", "voicegateway-operator")
	})

	t.Run("leader election off, no aggregated roles", func(t *testing.T) {
		m := renderChart(t, "voicegateway", "voicegateway-system", "--set", "leaderElection.enabled=false", "--set", "rbac.aggregateToDefaultRoles=false")
		if got := m.kinds(); got["Role"] != 0 || got["RoleBinding"] != 0 || got["ClusterRole"] != 1 {
			t.Errorf("RBAC objects: %v", m.names())
		}
	})
}

// TestHelmLint runs helm lint --strict (warnings fail) with the default
// values and with every value changed.
func TestHelmLint(t *testing.T) {
	for name, args := range map[string][]string{
		"default values": nil,
		"custom values":  {"--values", "test/packaging/testdata/values-custom.yaml"},
	} {
		t.Run(name, func(t *testing.T) {
			out := mustTool(t, "helm", append([]string{"lint", "--strict", chartDir}, args...)...)
			if !strings.Contains(out, "1 chart(s) linted, 0 chart(s) failed") {
				t.Errorf("helm lint:\n%s", out)
			}
		})
	}
}

// operatorContainer returns the Deployment's only container.
func operatorContainer(t *testing.T, d *appsv1.Deployment) corev1.Container {
	t.Helper()
	if n := len(d.Spec.Template.Spec.Containers); n != 1 {
		t.Fatalf("Deployment %s has %d containers", d.Name, n)
	}
	return d.Spec.Template.Spec.Containers[0]
}

// checkLabels: every object carries the conventional labels of the release.
func checkLabels(t *testing.T, m manifest, release, name, chart string) {
	t.Helper()
	for _, u := range m {
		labels := u.GetLabels()
		for key, want := range map[string]string{
			"app.kubernetes.io/name":       name,
			"app.kubernetes.io/instance":   release,
			"app.kubernetes.io/managed-by": "Helm",
			"app.kubernetes.io/part-of":    "voicegateway",
			"helm.sh/chart":                chart,
		} {
			if labels[key] != want {
				t.Errorf("%s %s: label %s = %q, want %q", u.GetKind(), u.GetName(), key, labels[key], want)
			}
		}
		if labels["app.kubernetes.io/version"] == "" {
			t.Errorf("%s %s has no app.kubernetes.io/version label", u.GetKind(), u.GetName())
		}
	}
}

// TestHelmTemplate renders the chart with default and non-default values
// and checks what each value does to the objects.
func TestHelmTemplate(t *testing.T) {
	meta := readChartMeta(t)
	defaultImage := "ghcr.io/voicegateway/voicegateway:" + meta.AppVersion
	chartLabel := meta.Name + "-" + meta.Version

	tests := map[string]struct {
		release string
		args    []string
		check   func(t *testing.T, m manifest)
	}{
		"defaults": {
			release: "voicegateway",
			check: func(t *testing.T, m manifest) {
				// No monitoring CRDs here: no ServiceMonitor, PodMonitor or
				// PrometheusRule; the dashboard's ConfigMap needs none.
				want := map[string]int{"ServiceAccount": 1, "ClusterRole": 3, "ClusterRoleBinding": 1, "Role": 1,
					"RoleBinding": 1, "Service": 1, "Deployment": 1, "NetworkPolicy": 1, "ConfigMap": 1,
					"ValidatingAdmissionPolicy": 1, "ValidatingAdmissionPolicyBinding": 1}
				if got := m.kinds(); !maps.Equal(got, want) {
					t.Errorf("kinds = %v, want %v", got, want)
				}
				checkPodPatchPolicy(t, m, "voicegateway-operator-pod-patch", "system:serviceaccount:ns:voicegateway-operator")
				checkLabels(t, m, "voicegateway", "voicegateway-operator", chartLabel)
				var d appsv1.Deployment
				m.find(t, "Deployment", "ns", "voicegateway-operator", &d)
				c := operatorContainer(t, &d)
				if *d.Spec.Replicas != 1 || c.Image != defaultImage || c.ImagePullPolicy != corev1.PullIfNotPresent ||
					!slices.Equal(c.Command, []string{"/manager"}) || d.Spec.Template.Spec.ServiceAccountName != "voicegateway-operator" {
					t.Errorf("deployment: replicas %d image %q pull %q command %v serviceAccount %q",
						*d.Spec.Replicas, c.Image, c.ImagePullPolicy, c.Command, d.Spec.Template.Spec.ServiceAccountName)
				}
				wantArgs := []string{"--leader-elect", "--leader-election-namespace=ns", "--health-probe-bind-address=:8081",
					"--metrics-bind-address=:8080", "--default-image=" + defaultImage, "--max-concurrent-reconciles=4", "--log-format=json", "--log-level=info"}
				if !slices.Equal(c.Args, wantArgs) || !slices.EqualFunc(c.Env, []corev1.EnvVar{podNamespaceEnv}, envEqual) {
					t.Errorf("args = %q, want %q; env %+v, want only POD_NAMESPACE from the pod", c.Args, wantArgs, c.Env)
				}
				// The security context of the voice server pods.
				pod := d.Spec.Template.Spec.SecurityContext
				if pod == nil || pod.RunAsNonRoot == nil || !*pod.RunAsNonRoot || pod.RunAsUser == nil || *pod.RunAsUser != 65532 ||
					pod.SeccompProfile == nil || pod.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("pod security context %+v", pod)
				}
				sc := c.SecurityContext
				if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil ||
					*sc.AllowPrivilegeEscalation || sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) {
					t.Errorf("container security context %+v", sc)
				}
				if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" || c.LivenessProbe.HTTPGet.Port.String() != "probes" ||
					c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
					t.Errorf("probes: liveness %+v readiness %+v", c.LivenessProbe, c.ReadinessProbe)
				}
				if c.Resources.Requests.Cpu().Cmp(resource.MustParse("50m")) != 0 || c.Resources.Limits.Memory().Cmp(resource.MustParse("256Mi")) != 0 {
					t.Errorf("resources %+v", c.Resources)
				}
				for key, value := range d.Spec.Selector.MatchLabels {
					if d.Spec.Template.Labels[key] != value {
						t.Errorf("the pods lack the selector label %s=%s", key, value)
					}
				}
				var svc corev1.Service
				m.find(t, "Service", "ns", "voicegateway-operator-metrics", &svc)
				if !maps.Equal(svc.Spec.Selector, d.Spec.Selector.MatchLabels) || len(svc.Spec.Ports) != 1 ||
					svc.Spec.Ports[0].Port != 8080 || svc.Spec.Ports[0].TargetPort.String() != "metrics" {
					t.Errorf("metrics Service %+v", svc.Spec)
				}
			},
		},
		"every value changed": {
			release: "voicegateway",
			args:    []string{"--values", "test/packaging/testdata/values-custom.yaml"},
			check: func(t *testing.T, m manifest) {
				want := map[string]int{"ServiceAccount": 1, "Role": 3, "RoleBinding": 3, "Service": 1, "Deployment": 1, "NetworkPolicy": 1, "ConfigMap": 1}
				if got := m.kinds(); !maps.Equal(got, want) {
					t.Errorf("kinds = %v, want %v (%v)", got, want, m.names())
				}
				checkLabels(t, m, "voicegateway", "voicegateway-operator", chartLabel)
				var d appsv1.Deployment
				m.find(t, "Deployment", "ns", "vgw-op", &d)
				c := operatorContainer(t, &d)
				spec := d.Spec.Template.Spec
				if *d.Spec.Replicas != 2 || c.Image != "registry.test/vg/voicegateway:v9.9.9" || c.ImagePullPolicy != corev1.PullAlways ||
					!slices.Equal(spec.ImagePullSecrets, []corev1.LocalObjectReference{{Name: "regcred"}}) ||
					spec.ServiceAccountName != "vgw-operator" || spec.PriorityClassName != "voice-critical" ||
					*spec.TerminationGracePeriodSeconds != 30 || spec.NodeSelector["kubernetes.io/os"] != "linux" ||
					len(spec.Tolerations) != 1 || spec.Tolerations[0].Key != "dedicated" || spec.Affinity == nil || spec.Affinity.NodeAffinity == nil ||
					*spec.SecurityContext.RunAsUser != 1001 {
					t.Errorf("deployment does not reflect the values: %+v", d.Spec)
				}
				wantArgs := []string{"--leader-elect", "--leader-election-namespace=ns", "--health-probe-bind-address=:9444",
					"--metrics-bind-address=:9443", "--default-image=registry.test/vg/voice-server:v9.9.9", "--namespace=team-a,team-b",
					"--max-concurrent-reconciles=8", "--log-format=console", "--log-level=debug", "--status-poll-interval=10s"}
				if !slices.Equal(c.Args, wantArgs) {
					t.Errorf("args = %q, want %q", c.Args, wantArgs)
				}
				if c.Ports[0].ContainerPort != 9443 || c.Ports[1].ContainerPort != 9444 {
					t.Errorf("ports %+v", c.Ports)
				}
				if !slices.EqualFunc(c.Env, []corev1.EnvVar{podNamespaceEnv, {Name: "GOMEMLIMIT", Value: "450MiB"}}, envEqual) {
					t.Errorf("env %+v", c.Env)
				}
				var np networkingv1.NetworkPolicy
				m.find(t, "NetworkPolicy", "ns", "vgw-op", &np)
				if len(np.Spec.Ingress) != 2 || len(np.Spec.Ingress[0].From) != 1 || np.Spec.Ingress[0].From[0].NamespaceSelector == nil ||
					np.Spec.Ingress[0].From[0].NamespaceSelector.MatchLabels["kubernetes.io/metadata.name"] != "monitoring" ||
					np.Spec.Ingress[0].Ports[0].Port.IntValue() != 9443 || np.Spec.Ingress[1].Ports[0].Port.IntValue() != 9444 {
					t.Errorf("NetworkPolicy %+v, want metrics (9443) from the monitoring namespace, probes (9444)", np.Spec)
				}
				if d.Spec.Template.Annotations["example.com/scrape"] != "true" || d.Spec.Template.Labels["team"] != "voice" {
					t.Errorf("pod annotations %v labels %v", d.Spec.Template.Annotations, d.Spec.Template.Labels)
				}
				if c.Resources.Limits.Memory().Cmp(resource.MustParse("512Mi")) != 0 {
					t.Errorf("resources %+v", c.Resources)
				}
				var sa corev1.ServiceAccount
				m.find(t, "ServiceAccount", "ns", "vgw-operator", &sa)
				if sa.Annotations["iam.example.com/role"] != "voicegateway" {
					t.Errorf("ServiceAccount annotations %v", sa.Annotations)
				}
				var svc corev1.Service
				m.find(t, "Service", "ns", "vgw-op-metrics", &svc)
				if svc.Annotations["prometheus.io/scrape"] != "true" || svc.Spec.Ports[0].Port != 9443 {
					t.Errorf("metrics Service %+v", svc)
				}
				var dashboard corev1.ConfigMap
				m.find(t, "ConfigMap", "monitoring", "vgw-op-dashboard", &dashboard)
				if dashboard.Labels["team"] != "voice" || dashboard.Labels["grafana_dashboard"] != "1" ||
					dashboard.Annotations["grafana_folder"] != "Voice" || dashboard.Data["voicegateway.json"] == "" {
					t.Errorf("dashboard ConfigMap labels %v annotations %v", dashboard.Labels, dashboard.Annotations)
				}
			},
		},
		"NetworkPolicy of the operator's pods": {
			release: "voicegateway",
			check: func(t *testing.T, m manifest) {
				var np networkingv1.NetworkPolicy
				m.find(t, "NetworkPolicy", "ns", "voicegateway-operator", &np)
				var d appsv1.Deployment
				m.find(t, "Deployment", "ns", "voicegateway-operator", &d)
				if !maps.Equal(np.Spec.PodSelector.MatchLabels, d.Spec.Selector.MatchLabels) ||
					!slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
					t.Errorf("NetworkPolicy selects %v (%v), want the operator's pods, ingress only", np.Spec.PodSelector, np.Spec.PolicyTypes)
				}
				// The metrics port from anywhere by default, the probes port
				// for the kubelet; nothing else.
				ports := map[int]int{}
				for _, rule := range np.Spec.Ingress {
					if len(rule.From) != 0 || len(rule.Ports) != 1 || *rule.Ports[0].Protocol != corev1.ProtocolTCP {
						t.Errorf("rule %+v", rule)
						continue
					}
					ports[rule.Ports[0].Port.IntValue()]++
				}
				if !maps.Equal(ports, map[int]int{8080: 1, 8081: 1}) {
					t.Errorf("NetworkPolicy ports %v, want metrics 8080 and probes 8081", ports)
				}
			},
		},
		"nameOverride": {
			release: "prod",
			args:    []string{"--set", "nameOverride=vgw"},
			check: func(t *testing.T, m manifest) {
				checkLabels(t, m, "prod", "vgw", chartLabel)
				for _, name := range []string{"prod-vgw", "prod-vgw-manager", "prod-vgw-metrics", "prod-vgw-leader-election"} {
					found := false
					for _, u := range m {
						found = found || u.GetName() == name
					}
					if !found {
						t.Errorf("no object named %s: %v", name, m.names())
					}
				}
			},
		},
		"image tag and default gateway image": {
			release: "voicegateway",
			args:    []string{"--set", "image.tag=v1.2.3", "--set", "image.repository=mirror.test/voicegateway"},
			check: func(t *testing.T, m manifest) {
				var d appsv1.Deployment
				m.find(t, "Deployment", "ns", "voicegateway-operator", &d)
				c := operatorContainer(t, &d)
				// The voice server defaults to the operator's own image,
				// wherever it was mirrored.
				if c.Image != "mirror.test/voicegateway:v1.2.3" || !slices.Contains(c.Args, "--default-image=mirror.test/voicegateway:v1.2.3") {
					t.Errorf("image %q args %q", c.Image, c.Args)
				}
			},
		},
		"existing ServiceAccount, no leader election": {
			release: "voicegateway",
			args:    []string{"--set", "serviceAccount.create=false", "--set", "serviceAccount.name=ops", "--set", "leaderElection.enabled=false"},
			check: func(t *testing.T, m manifest) {
				if m.kinds()["ServiceAccount"] != 0 || m.kinds()["Role"] != 0 {
					t.Errorf("objects: %v", m.names())
				}
				var d appsv1.Deployment
				m.find(t, "Deployment", "ns", "voicegateway-operator", &d)
				if d.Spec.Template.Spec.ServiceAccountName != "ops" || slices.Contains(operatorContainer(t, &d).Args, "--leader-elect") {
					t.Errorf("serviceAccount %q args %q", d.Spec.Template.Spec.ServiceAccountName, operatorContainer(t, &d).Args)
				}
				var binding rbacv1.ClusterRoleBinding
				m.find(t, "ClusterRoleBinding", "", "voicegateway-operator-manager", &binding)
				if binding.Subjects[0].Name != "ops" {
					t.Errorf("bound %+v", binding.Subjects)
				}
			},
		},
		"no RBAC, no metrics Service, no NetworkPolicy": {
			release: "voicegateway",
			args: []string{"--set", "rbac.create=false", "--set", "rbac.aggregateToDefaultRoles=false", "--set", "metrics.service.enabled=false",
				"--set", "networkPolicy.enabled=false", "--set", "monitoring.grafanaDashboard.enabled=false"},
			check: func(t *testing.T, m manifest) {
				want := map[string]int{"ServiceAccount": 1, "Deployment": 1}
				if got := m.kinds(); !maps.Equal(got, want) {
					t.Errorf("kinds = %v, want %v", got, want)
				}
			},
		},
		"monitoring without the Prometheus Operator's CRDs": {
			release: "voicegateway",
			args:    []string{"--set", "metrics.serviceMonitor.enabled=true"},
			check: func(t *testing.T, m manifest) {
				for _, kind := range []string{"ServiceMonitor", "PodMonitor", "PrometheusRule"} {
					if m.kinds()[kind] != 0 {
						t.Errorf("a %s without its CRD: %v", kind, m.names())
					}
				}
			},
		},
		"PodMonitor in the watched namespaces": {
			release: "voicegateway",
			args:    []string{"--set", "watchNamespaces={team-a,team-b}", "--api-versions", "monitoring.coreos.com/v1/PodMonitor"},
			check: func(t *testing.T, m manifest) {
				var monitor unstructured.Unstructured
				m.find(t, "PodMonitor", "ns", "voicegateway-operator-voice-servers", &monitor.Object)
				names, _, _ := unstructured.NestedStringSlice(monitor.Object, "spec", "namespaceSelector", "matchNames")
				if !slices.Equal(names, []string{"team-a", "team-b"}) {
					t.Errorf("PodMonitor namespaces %v, want the watched ones", names)
				}
			},
		},
		"ServiceMonitor": {
			release: "voicegateway",
			args: []string{"--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.serviceMonitor.labels.release=prometheus",
				"--set", "metrics.serviceMonitor.scrapeTimeout=10s", "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"},
			check: func(t *testing.T, m manifest) {
				var monitor unstructured.Unstructured
				m.find(t, "ServiceMonitor", "ns", "voicegateway-operator", &monitor.Object)
				var svc corev1.Service
				m.find(t, "Service", "ns", "voicegateway-operator-metrics", &svc)
				selector, _, _ := unstructured.NestedStringMap(monitor.Object, "spec", "selector", "matchLabels")
				for key, value := range selector {
					if svc.Labels[key] != value {
						t.Errorf("the ServiceMonitor selects %s=%s, which the metrics Service lacks", key, value)
					}
				}
				endpoints, _, _ := unstructured.NestedSlice(monitor.Object, "spec", "endpoints")
				if len(endpoints) != 1 || endpoints[0].(map[string]any)["port"] != "metrics" || endpoints[0].(map[string]any)["scrapeTimeout"] != "10s" ||
					monitor.GetLabels()["release"] != "prometheus" {
					t.Errorf("ServiceMonitor %v", monitor.Object)
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tc.check(t, renderChart(t, tc.release, "ns", tc.args...))
		})
	}
}

// TestHelmTemplateRejectsInvalidValues: values.schema.json and the
// templates' own checks refuse a wrong value with a message that names it.
func TestHelmTemplateRejectsInvalidValues(t *testing.T) {
	const schemaFailure = "values don't meet the specifications of the schema"
	tests := map[string]struct {
		args []string
		// want are substrings of helm's error output.
		want []string
	}{
		"negative replicas":       {[]string{"--set", "replicaCount=-1"}, []string{schemaFailure, "at '/replicaCount'", "minimum"}},
		"misspelled key":          {[]string{"--set", "replicas=2"}, []string{schemaFailure, "additional properties 'replicas' not allowed"}},
		"unknown pull policy":     {[]string{"--set", "image.pullPolicy=Sometimes"}, []string{schemaFailure, "at '/image/pullPolicy'", "'IfNotPresent', 'Always', 'Never'"}},
		"namespaces as a string":  {[]string{"--set", "watchNamespaces=team-a"}, []string{schemaFailure, "at '/watchNamespaces'", "want array"}},
		"invalid namespace name":  {[]string{"--set", "watchNamespaces={Team_A}"}, []string{schemaFailure, "at '/watchNamespaces/0'"}},
		"unknown log level":       {[]string{"--set", "logLevel=verbose"}, []string{schemaFailure, "at '/logLevel'", "'debug', 'info', 'warn', 'error'"}},
		"unknown log format":      {[]string{"--set", "logFormat=xml"}, []string{schemaFailure, "at '/logFormat'", "'json', 'console'"}},
		"cpu that is no quantity": {[]string{"--set", "resources.limits.cpu=abc"}, []string{schemaFailure, "at '/resources/limits/cpu'"}},
		"negative memory":         {[]string{"--set", "resources.requests.memory=-64Mi"}, []string{schemaFailure, "at '/resources/requests/memory'"}},
		"port out of range":       {[]string{"--set", "metrics.port=70000"}, []string{schemaFailure, "at '/metrics/port'", "maximum"}},
		"misspelled resource key": {[]string{"--set", "resources.limit.memory=1Gi"}, []string{schemaFailure, "at '/resources'", "'limit' not allowed"}},
		"metrics peer not a peer": {[]string{"--set", "networkPolicy.metricsFrom[0].namespace=monitoring"},
			[]string{schemaFailure, "at '/networkPolicy/metricsFrom/0'", "'namespace' not allowed"}},
		"replicas without leader election": {[]string{"--set", "replicaCount=2", "--set", "leaderElection.enabled=false"},
			[]string{"replicaCount above 1 needs leaderElection.enabled: true"}},
		"ServiceMonitor without the Service": {[]string{"--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.service.enabled=false",
			"--api-versions", "monitoring.coreos.com/v1/ServiceMonitor"}, []string{"metrics.serviceMonitor.enabled needs metrics.service.enabled"}},
		"no ServiceAccount named": {[]string{"--set", "serviceAccount.create=false"},
			[]string{"serviceAccount.name is required when serviceAccount.create is false"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			res, err := tool(t, "helm", append([]string{"template", "voicegateway", chartDir}, tc.args...)...)
			if err == nil {
				t.Fatalf("helm template accepted %v", tc.args)
			}
			for _, want := range tc.want {
				if !strings.Contains(res.stderr, want) {
					t.Errorf("helm template %v: the error lacks %q:\n%s", tc.args, want, res.stderr)
				}
			}
		})
	}
}

// podNamespaceEnv is the operator's own namespace from the downward API,
// which it admits to the voice servers' admin port.
var podNamespaceEnv = corev1.EnvVar{Name: "POD_NAMESPACE", ValueFrom: &corev1.EnvVarSource{
	FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}

// envEqual compares environment variables by name, value and the field
// they come from (the API server fills in the field's apiVersion).
func envEqual(a, b corev1.EnvVar) bool {
	fieldOf := func(e corev1.EnvVar) string {
		if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil {
			return ""
		}
		return e.ValueFrom.FieldRef.FieldPath
	}
	return a.Name == b.Name && a.Value == b.Value && fieldOf(a) == fieldOf(b) &&
		(a.ValueFrom == nil) == (b.ValueFrom == nil)
}

// TestVersionsAgree: the chart's appVersion is the image tag that
// config/default deploys, and both name the same repository.
func TestVersionsAgree(t *testing.T) {
	meta := readChartMeta(t)
	var kustomization struct {
		Images []struct {
			Name    string `json:"name"`
			NewName string `json:"newName"`
			NewTag  string `json:"newTag"`
		} `json:"images"`
	}
	if err := yaml.Unmarshal(readRepoFile(t, "config/manager/kustomization.yaml"), &kustomization); err != nil {
		t.Fatal(err)
	}
	var values struct {
		Image struct {
			Repository string `json:"repository"`
			Tag        string `json:"tag"`
		} `json:"image"`
	}
	if err := yaml.Unmarshal(readRepoFile(t, filepath.Join(chartDir, "values.yaml")), &values); err != nil {
		t.Fatal(err)
	}
	if len(kustomization.Images) != 1 {
		t.Fatalf("config/manager/kustomization.yaml images: %+v", kustomization.Images)
	}
	image := kustomization.Images[0]
	if image.NewTag != meta.AppVersion || image.NewName != values.Image.Repository || values.Image.Tag != "" {
		t.Errorf("config/manager deploys %s:%s, the chart %s:%s (appVersion %s): keep them equal",
			image.NewName, image.NewTag, values.Image.Repository, values.Image.Tag, meta.AppVersion)
	}
}

// checkPodPatchPolicy: the chart's pod patch policy is config/'s, for the
// chart's ServiceAccount, bound by name.
func checkPodPatchPolicy(t *testing.T, m manifest, name, user string) {
	t.Helper()
	var policy, binding map[string]any
	for _, u := range m {
		switch {
		case u.GetName() != name:
		case u.GetKind() == "ValidatingAdmissionPolicy":
			policy = u.Object
		case u.GetKind() == "ValidatingAdmissionPolicyBinding":
			binding = u.Object
		}
	}
	if policy == nil || binding == nil {
		t.Fatalf("no pod patch policy %s and its binding among %v", name, m.names())
	}
	var config map[string]any
	for _, obj := range decodeObjects(t, readRepoFile(t, "config/rbac/pod_patch_policy.yaml")) {
		if obj.GetKind() == "ValidatingAdmissionPolicy" {
			config = obj.Object
		}
	}
	spec, configSpec := policy["spec"].(map[string]any), config["spec"].(map[string]any)
	want := fmt.Sprintf("request.userInfo.username == '%s'", user)
	if got := spec["matchConditions"].([]any)[0].(map[string]any)["expression"]; got != want {
		t.Errorf("the policy matches %v, want %s", got, want)
	}
	for _, field := range []string{"matchConstraints", "variables", "validations", "failurePolicy"} {
		if !reflect.DeepEqual(spec[field], configSpec[field]) {
			t.Errorf("the chart's pod patch policy %s differs from config/rbac/pod_patch_policy.yaml's:\n%v\n%v", field, spec[field], configSpec[field])
		}
	}
	if b := binding["spec"].(map[string]any); b["policyName"] != name || !reflect.DeepEqual(b["validationActions"], []any{"Deny"}) {
		t.Errorf("binding %v", b)
	}
}
