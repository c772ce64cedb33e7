package controllers_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/voicegateway/voicegateway/controllers"
	"github.com/voicegateway/voicegateway/internal/testenv"
)

// The API server every test in this package talks to: a real
// kube-apiserver and etcd started once.
var (
	testEnv    *envtest.Environment
	testConfig *rest.Config
	// k8s is a direct client (no cache), as a user's kubectl would be.
	k8s client.Client
	// scratchDir holds files shared by the tests (the voice server binary).
	scratchDir string
)

// testImage is the manager's default voice server image in these tests.
const testImage = "registry.test/voicegateway:test"

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, func(s *testenv.Suite) error {
		testEnv, testConfig, k8s, scratchDir = s.Env, s.Config, s.Client, s.Dir
		return nil
	}))
}

// newNamespace creates a namespace for one test.
func newNamespace(t *testing.T) string {
	t.Helper()
	name := strings.ToLower(regexp.MustCompile(`[^a-zA-Z0-9]+`).ReplaceAllString(t.Name(), "-"))
	if len(name) > 40 {
		name = name[:40]
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: strings.Trim(name, "-") + "-"}}
	if err := k8s.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	return ns.Name
}

// managerOptions vary the operator between tests.
type managerOptions struct {
	syncPeriod time.Duration
	poller     controllers.PollerOptions
	// operatorNamespace is BuildOptions.OperatorNamespace.
	operatorNamespace string
	// clock, when set, is the operator's clock (a fake one the test steps).
	clock clock.WithTicker
	// deletionCostInterval is Options.DeletionCostInterval.
	deletionCostInterval time.Duration
	// wrap, when set, wraps the operator's transport to the API server
	// (inside the request log), to answer some requests itself.
	wrap func(http.RoundTripper) http.RoundTripper
}

// operator is a running manager with the VoiceGateway controller, scoped to
// one namespace, as cmd/manager wires it.
type operator struct {
	writes *testenv.RequestLog
	cancel context.CancelFunc
	done   chan error
}

func startOperator(t *testing.T, namespace string, opts managerOptions) *operator {
	t.Helper()
	writes := &testenv.RequestLog{}
	cfg := rest.CopyConfig(testConfig)
	cfg.WrapTransport = writes.Wrap
	if opts.wrap != nil {
		cfg.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return writes.Wrap(opts.wrap(rt)) }
	}

	cacheOpts := controllers.CacheOptions(namespace)
	if opts.syncPeriod > 0 {
		cacheOpts.SyncPeriod = &opts.syncPeriod
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 testenv.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  cacheOpts,
		Client:                 controllers.ClientOptions(),
		// Each test starts its own manager with the same controller name.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	operatorOpts := controllers.DefaultOptions()
	operatorOpts.Build = controllers.BuildOptions{DefaultImage: testImage, OperatorNamespace: opts.operatorNamespace}
	operatorOpts.Poller = opts.poller
	operatorOpts.Clock = opts.clock
	if opts.deletionCostInterval > 0 {
		operatorOpts.DeletionCostInterval = opts.deletionCostInterval
	}
	if operatorOpts.Poller.Interval == 0 {
		operatorOpts.Poller = controllers.PollerOptions{Interval: 200 * time.Millisecond, DrainingInterval: 100 * time.Millisecond, Timeout: 500 * time.Millisecond}
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := controllers.Setup(ctx, mgr, operatorOpts); err != nil {
		cancel()
		t.Fatal(err)
	}
	op := &operator{writes: writes, cancel: cancel, done: make(chan error, 1)}
	go func() { op.done <- mgr.Start(ctx) }()
	t.Cleanup(op.stop)
	return op
}

func (op *operator) stop() {
	op.cancel()
	if err := <-op.done; err != nil {
		panic(fmt.Sprintf("manager: %v", err))
	}
}
