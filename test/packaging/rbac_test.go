package packaging_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
	"github.com/voicegateway/voicegateway/controllers"
	"github.com/voicegateway/voicegateway/internal/testenv"
	"github.com/voicegateway/voicegateway/internal/testkit"
)

// serviceAccountToken asks the API server for a token of the ServiceAccount,
// as the kubelet does for a pod, and returns a rest.Config that
// authenticates with it and a kubeconfig file holding it.
func serviceAccountToken(t *testing.T, namespace, name string) (*rest.Config, string) {
	t.Helper()
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	request := &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)}}
	if err := k8s.SubResource("token").Create(context.Background(), sa, request); err != nil {
		t.Fatalf("token for ServiceAccount %s/%s: %v", namespace, name, err)
	}
	cfg := &rest.Config{
		Host:            testConfig.Host,
		BearerToken:     request.Status.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: testConfig.CAData},
	}
	kubeconfig := clientcmdapi.NewConfig()
	kubeconfig.Clusters["envtest"] = &clientcmdapi.Cluster{Server: testConfig.Host, CertificateAuthorityData: testConfig.CAData}
	kubeconfig.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: request.Status.Token}
	kubeconfig.Contexts["operator"] = &clientcmdapi.Context{Cluster: "envtest", AuthInfo: name}
	kubeconfig.CurrentContext = "operator"
	path := filepath.Join(t.TempDir(), "kubeconfig-"+name)
	if err := clientcmd.WriteToFile(*kubeconfig, path); err != nil {
		t.Fatal(err)
	}
	return cfg, path
}

// grantedIn lists every permission a token's holder has in a namespace, as
// the API server's authorizer answers a SelfSubjectRulesReview.
func grantedIn(t *testing.T, cfg *rest.Config, namespace string) map[permission]bool {
	t.Helper()
	c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	review := &authorizationv1.SelfSubjectRulesReview{Spec: authorizationv1.SelfSubjectRulesReviewSpec{Namespace: namespace}}
	if err := c.Create(context.Background(), review); err != nil {
		t.Fatal(err)
	}
	if review.Status.Incomplete {
		t.Fatalf("rules review in %s is incomplete: %s", namespace, review.Status.EvaluationError)
	}
	set := map[permission]bool{}
	for _, rule := range review.Status.ResourceRules {
		for _, group := range rule.APIGroups {
			for _, res := range rule.Resources {
				for _, verb := range rule.Verbs {
					if len(rule.ResourceNames) > 0 {
						res += "/" + strings.Join(rule.ResourceNames, ",")
					}
					set[permission{group, res, verb}] = true
				}
			}
		}
	}
	return set
}

// beyond returns what granted holds that baseline does not.
func beyond(granted, baseline map[permission]bool) map[permission]bool {
	extra := map[permission]bool{}
	for p := range granted {
		if !baseline[p] {
			extra[p] = true
		}
	}
	return extra
}

func union(sets ...map[permission]bool) map[permission]bool {
	all := map[permission]bool{}
	for _, s := range sets {
		for p := range s {
			all[p] = true
		}
	}
	return all
}

// managerProcess is the operator binary running on this machine.
type managerProcess struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan error
	// probeAddr and metricsAddr are where it serves its probes and
	// metrics.
	probeAddr, metricsAddr string
}

// startManager runs the manager built by the Dockerfile's command with the
// arguments of the installed Deployment, only the listen addresses moved
// to free loopback ports and the kubeconfig added.
func startManager(t *testing.T, deploymentArgs []string, kubeconfig string) *managerProcess {
	t.Helper()
	bin := filepath.Join(imageBinaries(t), "manager")
	p := &managerProcess{logPath: filepath.Join(t.TempDir(), "manager.log"), exited: make(chan error, 1),
		probeAddr: testkit.FreeAddr(t), metricsAddr: testkit.FreeAddr(t)}
	var args []string
	for _, arg := range deploymentArgs {
		switch {
		case strings.HasPrefix(arg, "--metrics-bind-address="):
			arg = "--metrics-bind-address=" + p.metricsAddr
		case strings.HasPrefix(arg, "--health-probe-bind-address="):
			arg = "--health-probe-bind-address=" + p.probeAddr
		}
		args = append(args, arg)
	}
	args = append(args, "--kubeconfig="+kubeconfig)
	logFile, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		_ = logFile.Close()
		t.Fatal(err)
	}
	// stop waits for this goroutine through exited.
	go func() {
		err := p.cmd.Wait()
		_ = logFile.Close()
		p.exited <- err
	}()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.stop()
		}
		if t.Failed() {
			t.Logf("manager %q log:\n%s", args, p.logs())
		}
	})
	return p
}

// stop sends SIGTERM, as the kubelet would, and waits for the exit (SIGKILL
// after 30 s).
func (p *managerProcess) stop() error {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		return err
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.exited
		return fmt.Errorf("the manager did not exit within 30s of SIGTERM")
	}
}

func (p *managerProcess) logs() string {
	data, _ := os.ReadFile(p.logPath)
	return string(data)
}

// applySample creates the objects of the echo sample (the VoiceGateway
// named demo) in a namespace, as `kubectl apply -f config/samples/` would,
// and returns the VoiceGateway's key.
func applySample(t *testing.T, namespace string) client.ObjectKey {
	t.Helper()
	var key client.ObjectKey
	for _, obj := range decodeObjects(t, readRepoFile(t, "config/samples/voicegateway_v1alpha1_demo.yaml")) {
		obj.SetNamespace(namespace)
		if err := k8s.Create(context.Background(), obj); err != nil {
			t.Fatalf("creating the sample's %s: %v", obj.GetKind(), err)
		}
		if obj.GetKind() == "VoiceGateway" {
			key = client.ObjectKeyFromObject(obj)
		}
	}
	if key.Name == "" {
		t.Fatal("the sample holds no VoiceGateway")
	}
	return key
}

func conditionOf(gw *vgv1.VoiceGateway, conditionType string) string {
	c := meta.FindStatusCondition(gw.Status.Conditions, conditionType)
	if c == nil {
		return "missing"
	}
	return string(c.Status) + "/" + c.Reason
}

// TestChartRBACRunsTheOperatorAndGrantsNothingMore installs the chart, then
// runs the operator binary on this machine as the chart's ServiceAccount
// (with a token the API server issued for it, so every request goes through
// the real RBAC authorizer) and the arguments of the chart's Deployment. The
// operator elects itself, reconciles the echo sample to completion (every
// object applied, the status written, Available once the Deployment is
// ready) without a single forbidden request, and stops cleanly. Then the
// API server's own answer to "what may this account do here?" is compared
// with the rules controller-gen generates: nothing is missing and nothing is
// granted beyond them and the leader election's Lease, neither cluster-wide
// nor, with watchNamespaces, outside the watched namespace.
func TestChartRBACRunsTheOperatorAndGrantsNothingMore(t *testing.T) {
	generated := permissions(t, rulesOfFile(t, "config/rbac/role.yaml"))
	leaderElection := permissions(t, rulesOfFile(t, "config/rbac/leader_election_role.yaml"))
	none := map[permission]bool{}

	tests := map[string]struct {
		release, namespace, gateways string
		helmArgs                     []string
		// unwatched, when set, is a namespace the operator must not touch.
		unwatched string
		// want is what the operator's account may do beyond what every
		// authenticated account may, per namespace.
		want func(operatorNamespace, gateways, unwatched string) map[string]map[permission]bool
	}{
		"cluster-wide": {
			release: "vgw-all", namespace: "vgw-rbac-all", gateways: "vgw-rbac-all-gateways",
			want: func(operatorNamespace, gateways, _ string) map[string]map[permission]bool {
				return map[string]map[permission]bool{
					operatorNamespace: union(generated, leaderElection),
					gateways:          generated,
				}
			},
		},
		"watched namespace": {
			release: "vgw-scoped", namespace: "vgw-rbac-scoped", gateways: "vgw-rbac-scoped-gateways", unwatched: "vgw-rbac-unwatched",
			helmArgs: []string{"--set", "watchNamespaces={vgw-rbac-scoped-gateways}"},
			want: func(operatorNamespace, gateways, unwatched string) map[string]map[permission]bool {
				return map[string]map[permission]bool{
					operatorNamespace: leaderElection,
					gateways:          generated,
					unwatched:         none,
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			ensureCRD(t)
			createNamespace(t, tc.gateways)
			if tc.unwatched != "" {
				createNamespace(t, tc.unwatched)
			}
			mustTool(t, "helm", append([]string{"install", tc.release, chartDir, "--namespace", tc.namespace, "--create-namespace"}, tc.helmArgs...)...)
			t.Cleanup(func() { mustTool(t, "helm", "uninstall", tc.release, "--namespace", tc.namespace) })

			deployment := getDeployment(t, tc.namespace, tc.release+"-voicegateway-operator")
			podSpec := deployment.Spec.Template.Spec
			operatorConfig, kubeconfig := serviceAccountToken(t, tc.namespace, podSpec.ServiceAccountName)
			defaultImage := strings.TrimPrefix(podSpec.Containers[0].Args[slices.IndexFunc(podSpec.Containers[0].Args,
				func(a string) bool { return strings.HasPrefix(a, "--default-image=") })], "--default-image=")
			manager := startManager(t, podSpec.Containers[0].Args, kubeconfig)

			key := applySample(t, tc.gateways)
			var outside client.ObjectKey
			if tc.unwatched != "" {
				outside = applySample(t, tc.unwatched)
			}
			var gw vgv1.VoiceGateway
			testkit.Eventually(t, 60*time.Second, func() error {
				if err := k8s.Get(ctx, key, &gw); err != nil {
					return err
				}
				if gw.Status.ObservedGeneration != gw.Generation {
					return fmt.Errorf("status not written (observedGeneration %d of %d)", gw.Status.ObservedGeneration, gw.Generation)
				}
				if got := conditionOf(&gw, vgv1.ConditionDegraded); got != "False/"+controllers.ReasonAsExpected {
					return fmt.Errorf("Degraded %s", got)
				}
				return nil
			})
			// Every object the operator owns exists, owned by the sample.
			owned := []client.Object{&corev1.ServiceAccount{}, &corev1.ConfigMap{}, &appsv1.Deployment{}, &corev1.Service{},
				&policyv1.PodDisruptionBudget{}, &networkingv1.NetworkPolicy{}, &corev1.Secret{}}
			for _, obj := range owned {
				var list unstructured.UnstructuredList
				gvk, err := k8s.GroupVersionKindFor(obj)
				if err != nil {
					t.Fatal(err)
				}
				list.SetGroupVersionKind(gvk.GroupVersion().WithKind(gvk.Kind + "List"))
				if err := k8s.List(ctx, &list, client.InNamespace(tc.gateways), client.MatchingLabels{controllers.LabelManagedBy: controllers.ManagedBy}); err != nil {
					t.Fatal(err)
				}
				// Two Services, the sessions' and the headless one of the
				// fleet's gossip; two ConfigMaps, the settings and the
				// gossip peers.
				want := 1
				if gvk.Kind == "Service" || gvk.Kind == "ConfigMap" {
					want = 2
				}
				if len(list.Items) != want {
					t.Errorf("%s objects of the sample: %d, want %d", gvk.Kind, len(list.Items), want)
				}
				for i := range list.Items {
					if !metav1.IsControlledBy(&list.Items[i], &gw) {
						t.Errorf("%s %s is not owned by the sample", gvk.Kind, list.Items[i].GetName())
					}
				}
			}
			gatewayDeployment := getDeployment(t, tc.gateways, key.Name)
			if got := gatewayDeployment.Spec.Template.Spec.Containers[0].Image; got != defaultImage {
				t.Errorf("the voice server runs %s, want the chart's default %s", got, defaultImage)
			}

			// The Deployment controller's part (no kubelet runs pods here):
			// every pod updated and ready. The operator completes.
			gatewayDeployment.Status = appsv1.DeploymentStatus{ObservedGeneration: gatewayDeployment.Generation,
				Replicas: 2, ReadyReplicas: 2, AvailableReplicas: 2, UpdatedReplicas: 2}
			if err := k8s.Status().Update(ctx, gatewayDeployment); err != nil {
				t.Fatal(err)
			}
			testkit.Eventually(t, 30*time.Second, func() error {
				if err := k8s.Get(ctx, key, &gw); err != nil {
					return err
				}
				available, progressing := conditionOf(&gw, vgv1.ConditionAvailable), conditionOf(&gw, vgv1.ConditionProgressing)
				if gw.Status.Ready != "2/2" || available != "True/"+controllers.ReasonAllPodsReady || progressing != "False/"+controllers.ReasonComplete {
					return fmt.Errorf("ready %q Available %s Progressing %s", gw.Status.Ready, available, progressing)
				}
				return nil
			})
			var lease coordinationv1.Lease
			if err := k8s.Get(ctx, client.ObjectKey{Namespace: tc.namespace, Name: "voicegateway-operator.voicegateway.dev"}, &lease); err != nil {
				t.Errorf("leader election Lease: %v", err)
			}
			// The probes the Deployment declares, and the metrics the
			// Service exposes, answer.
			container := podSpec.Containers[0]
			for _, check := range []struct{ addr, path, want string }{
				{manager.probeAddr, container.LivenessProbe.HTTPGet.Path, "ok"},
				{manager.probeAddr, container.ReadinessProbe.HTTPGet.Path, "ok"},
				{manager.metricsAddr, "/metrics", `controller_runtime_reconcile_total{controller="voicegateway"`},
			} {
				if code, body := testkit.HTTPGet(t, "http://"+check.addr+check.path); code != http.StatusOK || !strings.Contains(body, check.want) {
					t.Errorf("GET %s = %d, without %q", check.path, code, check.want)
				}
			}
			if outside.Name != "" {
				var ignored vgv1.VoiceGateway
				if err := k8s.Get(ctx, outside, &ignored); err != nil {
					t.Fatal(err)
				}
				if ignored.Status.ObservedGeneration != 0 {
					t.Errorf("the operator reconciled %s outside its watched namespaces", outside)
				}
			}
			if err := manager.stop(); err != nil {
				t.Errorf("manager exit: %v", err)
			}
			if logs := manager.logs(); strings.Contains(strings.ToLower(logs), "forbidden") {
				t.Errorf("the operator was refused a request:\n%s", logs)
			}

			// Nothing more: the account's rights beyond those of an account
			// with no bindings at all, as the authorizer computes them.
			baselineName := "rbac-baseline"
			if err := k8s.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: tc.namespace, Name: baselineName}}); err != nil {
				t.Fatal(err)
			}
			baselineConfig, _ := serviceAccountToken(t, tc.namespace, baselineName)
			for namespace, want := range tc.want(tc.namespace, tc.gateways, tc.unwatched) {
				got := beyond(grantedIn(t, operatorConfig, namespace), grantedIn(t, baselineConfig, namespace))
				if missing, extra := diffPermissions(got, want); len(missing)+len(extra) > 0 {
					t.Errorf("in namespace %s the operator lacks %v and may also %v", namespace, missing, extra)
				}
			}
			// Its patch on pods writes the deletion cost, nothing else
			// (the chart's ValidatingAdmissionPolicy), with its own token.
			checkPodPatchesLimited(t, operatorConfig, tc.gateways)
		})
	}
}
