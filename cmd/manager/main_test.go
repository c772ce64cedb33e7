package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
	"github.com/voicegateway/voicegateway/internal/testenv"
	"github.com/voicegateway/voicegateway/internal/testkit"
)

var (
	testConfig *rest.Config
	// testKubeconfig is a kubeconfig file for kubectl, as a cluster admin.
	testKubeconfig string
	k8s            client.Client
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, func(s *testenv.Suite) error {
		testConfig, testKubeconfig, k8s = s.Config, s.Kubeconfig, s.Client
		return nil
	}))
}

func TestParseFlags(t *testing.T) {
	tests := map[string]struct {
		args []string
		// env is the process environment; nil means empty.
		env     map[string]string
		check   func(t *testing.T, o options)
		wantErr string
	}{
		"defaults": {
			args: nil,
			check: func(t *testing.T, o options) {
				if o.metricsAddr != ":8080" || o.probeAddr != ":8081" || o.leaderElect || o.namespaces != "" ||
					o.poller.AdminPort != 9090 || o.poller.Interval != 5*time.Second || o.poller.DrainingInterval != time.Second ||
					o.maxConcurrentReconciles != 4 || !strings.HasPrefix(o.defaultImage, "ghcr.io/voicegateway/voicegateway:") ||
					o.operatorNamespace != "" || o.keyActivationDelay != 3*time.Minute || o.logFormat != "json" || o.logLevel != "info" || o.version {
					t.Errorf("options = %+v", o)
				}
			},
		},
		"operator namespace from the downward API": {
			env: map[string]string{"POD_NAMESPACE": "voicegateway-system"},
			check: func(t *testing.T, o options) {
				if o.operatorNamespace != "voicegateway-system" {
					t.Errorf("operator namespace %q, want $POD_NAMESPACE", o.operatorNamespace)
				}
			},
		},
		"everything set": {
			args: []string{"--leader-elect", "--namespace=a,b", "--default-image=x/y:z", "--pod-admin-port=9999",
				"--status-poll-interval=2s", "--status-poll-interval-draining=250ms", "--status-poll-timeout=300ms",
				"--max-concurrent-reconciles=8", "--log-level=debug", "--log-format=console", "--operator-namespace=ops", "--key-activation-delay=90s"},
			env: map[string]string{"POD_NAMESPACE": "ignored"},
			check: func(t *testing.T, o options) {
				if !o.leaderElect || o.namespaces != "a,b" || o.defaultImage != "x/y:z" || o.poller.AdminPort != 9999 ||
					o.poller.Interval != 2*time.Second || o.poller.DrainingInterval != 250*time.Millisecond ||
					o.poller.Timeout != 300*time.Millisecond || o.maxConcurrentReconciles != 8 ||
					o.operatorNamespace != "ops" || o.keyActivationDelay != 90*time.Second || o.logLevel != "debug" || o.logFormat != "console" {
					t.Errorf("options = %+v", o)
				}
				if got := splitList(o.namespaces); len(got) != 2 || got[0] != "a" || got[1] != "b" {
					t.Errorf("namespaces = %v", got)
				}
			},
		},
		"unknown flag":            {args: []string{"--nope"}, wantErr: "flag provided but not defined: -nope"},
		"zap's flags are gone":    {args: []string{"--zap-log-level=debug"}, wantErr: "flag provided but not defined: -zap-log-level"},
		"no key activation delay": {args: []string{"--key-activation-delay=0s"}, wantErr: "--key-activation-delay must be positive"},
		"deletion cost interval": {
			args: []string{"--deletion-cost-interval=1m"},
			check: func(t *testing.T, o options) {
				if o.deletionCostInterval != time.Minute {
					t.Errorf("deletion cost interval %s, want 1m", o.deletionCostInterval)
				}
				if d, _ := parseFlags(nil, io.Discard, func(string) string { return "" }); d.deletionCostInterval != 30*time.Second {
					t.Errorf("default deletion cost interval %s, want 30s", d.deletionCostInterval)
				}
			},
		},
		"no deletion cost interval": {args: []string{"--deletion-cost-interval=0s"}, wantErr: "--deletion-cost-interval must be positive"},
		"argument":                  {args: []string{"extra"}, wantErr: `unexpected argument "extra"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			o, err := parseFlags(tc.args, io.Discard, func(name string) string { return tc.env[name] })
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, o)
		})
	}

	var out bytes.Buffer
	if _, err := parseFlags([]string{"--help"}, &out, func(string) string { return "" }); !errors.Is(err, flag.ErrHelp) || !strings.Contains(out.String(), "-status-poll-interval") {
		t.Errorf("--help: %v\n%s", err, out.String())
	}
}

// installManifests renders config/default with kubectl's kustomize and
// applies every object to the API server, as `kubectl apply -k
// config/default` would: the CRD, the namespace, the RBAC and the
// manager's Deployment (which nothing runs here).
func installManifests(t *testing.T) {
	t.Helper()
	root, err := testenv.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := testenv.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "kubectl"), "kustomize", filepath.Join(root, "config", "default"))
	rendered, err := cmd.Output()
	if err != nil {
		t.Fatalf("kubectl kustomize config/default (make envtest-binaries builds kubectl): %v", err)
	}
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(rendered), 4096)
	kinds := map[string]bool{}
	for {
		var u unstructured.Unstructured
		if err := decoder.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				break
			}
			t.Fatal(err)
		}
		if len(u.Object) == 0 {
			continue
		}
		kinds[u.GetKind()] = true
		if err := k8s.Apply(context.Background(), client.ApplyConfigurationFromUnstructured(&u),
			client.FieldOwner("install-test"), client.ForceOwnership); err != nil {
			t.Fatalf("applying %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	for _, kind := range []string{"Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole",
		"ClusterRoleBinding", "Role", "RoleBinding", "Deployment"} {
		if !kinds[kind] {
			t.Errorf("config/default holds no %s", kind)
		}
	}
}

// TestRunServesAndReconciles installs config/default and runs the manager
// as main does, with the permissions of the installed ServiceAccount (by
// impersonation, so the generated ClusterRole is shown to be enough) and
// leader election in the installed namespace: it elects itself, reconciles
// a VoiceGateway in the namespace it watches with the default image,
// serves health and metrics, and stops cleanly when its context ends.
func TestRunServesAndReconciles(t *testing.T) {
	ctx := context.Background()
	installManifests(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "manager-test"}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	asOperator := rest.CopyConfig(testConfig)
	asOperator.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:voicegateway-system:voicegateway-controller-manager",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:voicegateway-system", "system:authenticated"},
	}
	metricsAddr, probeAddr := testkit.FreeAddr(t), testkit.FreeAddr(t)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	logs := &lockedWriter{w: &bytes.Buffer{}}
	go func() {
		done <- run(runCtx, []string{
			"--metrics-bind-address=" + metricsAddr, "--health-probe-bind-address=" + probeAddr,
			"--leader-elect", "--leader-election-namespace=voicegateway-system", "--namespace=manager-test",
			"--default-image=registry.test/voicegateway:run", "--log-level=error",
		}, logs, asOperator)
	}()

	gw := &vgv1.VoiceGateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: "manager-test", Name: "main"},
		Spec:       vgv1.VoiceGatewaySpec{Auth: vgv1.AuthSpec{InsecureNoAuth: true}},
	}
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, func() error {
		var d appsv1.Deployment
		if err := k8s.Get(ctx, types.NamespacedName{Namespace: "manager-test", Name: "main"}, &d); err != nil {
			return err
		}
		if img := d.Spec.Template.Spec.Containers[0].Image; img != "registry.test/voicegateway:run" {
			return fmt.Errorf("image %q", img)
		}
		var got vgv1.VoiceGateway
		if err := k8s.Get(ctx, client.ObjectKeyFromObject(gw), &got); err != nil {
			return err
		}
		if got.Status.ObservedGeneration != got.Generation {
			return fmt.Errorf("status not written (observedGeneration %d); logs:\n%s", got.Status.ObservedGeneration, logs.String())
		}
		return nil
	})
	// What a user sees: the printer columns.
	bin, err := testenv.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(filepath.Join(bin, "kubectl"), "--kubeconfig", testKubeconfig,
		"get", "vgw", "-n", "manager-test").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl get vgw: %v\n%s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || !slices.Equal(strings.Fields(lines[0]), []string{"NAME", "READY", "UP-TO-DATE", "SESSIONS", "DRAINING", "AGE"}) ||
		!slices.Equal(strings.Fields(lines[1])[:5], []string{"main", "0/2", "0", "0", "0"}) {
		t.Errorf("kubectl get vgw:\n%s", out)
	}
	// The wide view: DEGRADED reads True or False, not a reason.
	out, err = exec.Command(filepath.Join(bin, "kubectl"), "--kubeconfig", testKubeconfig,
		"get", "vgw", "-n", "manager-test", "-o", "wide").CombinedOutput()
	if err != nil {
		t.Fatalf("kubectl get vgw -o wide: %v\n%s", err, out)
	}
	lines = strings.Split(strings.TrimSpace(string(out)), "\n")
	// (MEMBERS and FLEET-AGREES are empty until a pod reports.)
	if len(lines) != 2 || !slices.Equal(strings.Fields(lines[0])[6:], []string{"MEMBERS", "FLEET-AGREES", "AVAILABLE", "DEGRADED"}) ||
		!strings.HasSuffix(strings.TrimSpace(lines[1]), " False") {
		t.Errorf("kubectl get vgw -o wide:\n%s", out)
	}

	var lease coordinationv1.Lease
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: "voicegateway-system", Name: "voicegateway-operator.voicegateway.dev"}, &lease); err != nil {
		t.Errorf("leader election lease: %v", err)
	}
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, _ := testkit.HTTPGet(t, "http://"+probeAddr+path); code != http.StatusOK {
			t.Errorf("%s = %d", path, code)
		}
	}
	if code, body := testkit.HTTPGet(t, "http://"+metricsAddr+"/metrics"); code != http.StatusOK ||
		!strings.Contains(body, `controller_runtime_reconcile_total{controller="voicegateway"`) {
		t.Errorf("/metrics = %d without the controller's reconcile counter", code)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run: %v\n%s", err, logs.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("run did not return after its context ended")
	}
}

// lockedWriter serializes the manager's log writes into a buffer.
type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (w *lockedWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.Write(p)
}

func (w *lockedWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.w.String()
}

// TestKubeconfigHasNoClientRateLimit: with --kubeconfig, as in the
// cluster, the client sends as fast as the API server's priority and
// fairness lets it, not at client-go's default 5 requests a second.
func TestKubeconfigHasNoClientRateLimit(t *testing.T) {
	cfg, err := loadConfig(testKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.QPS >= 0 || cfg.RateLimiter != nil {
		t.Errorf("QPS %v, rate limiter %v: want no client-side limit (QPS < 0)", cfg.QPS, cfg.RateLimiter)
	}
}
