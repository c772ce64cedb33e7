package controllers_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/voicegateway/voicegateway/controllers"
	"github.com/voicegateway/voicegateway/internal/testenv"
)

// The API server every test in this package talks to: a real
// kube-apiserver and etcd started once.
var (
	testEnv    *envtest.Environment
	testConfig *rest.Config
	testScheme *runtime.Scheme
	// k8s is a direct client (no cache), as a user's kubectl would be.
	k8s client.Client
	// scratchDir holds files shared by the tests (the voice server binary).
	scratchDir string
)

// testImage is the manager's default voice server image in these tests.
const testImage = "registry.test/voicegateway:test"

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	var err error
	scratchDir, err = os.MkdirTemp("", "vgw-controllers-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(scratchDir)
	env, cfg, err := testenv.Start()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	testEnv, testConfig, testScheme = env, cfg, testenv.Scheme()
	k8s, err = client.New(cfg, client.Options{Scheme: testScheme})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		_ = env.Stop()
		return 1
	}
	// Errors only, unless VGW_TEST_VERBOSE is set.
	level := zapcore.ErrorLevel
	if os.Getenv("VGW_TEST_VERBOSE") != "" {
		level = zapcore.DebugLevel
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(level)))

	code := m.Run()
	if err := env.Stop(); err != nil {
		fmt.Fprintln(os.Stderr, "stopping the API server:", err)
		code = 1
	}
	if code == 0 {
		if err := goleak.Find(testenv.LeakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			code = 1
		}
	}
	return code
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

// writeCounter counts the requests that change something (every verb but
// GET), made by the manager under test, and the reads of one Secret by
// name (a GET of its data, which the manager does not cache).
type writeCounter struct {
	mu          sync.Mutex
	writes      []string
	secretReads []string
}

// secretPath matches the path of a GET of one Secret.
var secretPath = regexp.MustCompile(`^/api/v1/namespaces/[^/]+/secrets/[^/]+$`)

func (w *writeCounter) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		switch {
		case req.Method != http.MethodGet && req.Method != http.MethodHead:
			w.mu.Lock()
			w.writes = append(w.writes, req.Method+" "+req.URL.Path)
			w.mu.Unlock()
		case secretPath.MatchString(req.URL.Path):
			w.mu.Lock()
			w.secretReads = append(w.secretReads, req.URL.Path)
			w.mu.Unlock()
		}
		return rt.RoundTrip(req)
	})
}

func (w *writeCounter) reset() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes = nil
	w.secretReads = nil
}

func (w *writeCounter) list() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.writes...)
}

func (w *writeCounter) secretGets() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.secretReads...)
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// managerOptions vary the operator between tests.
type managerOptions struct {
	syncPeriod time.Duration
	poller     controllers.PollerOptions
	// operatorNamespace is BuildOptions.OperatorNamespace.
	operatorNamespace string
}

// operator is a running manager with the VoiceGateway controller, scoped to
// one namespace, as cmd/manager wires it.
type operator struct {
	writes *writeCounter
	cancel context.CancelFunc
	done   chan error
}

func startOperator(t *testing.T, namespace string, opts managerOptions) *operator {
	t.Helper()
	writes := &writeCounter{}
	cfg := rest.CopyConfig(testConfig)
	cfg.WrapTransport = writes.wrap

	cacheOpts := controllers.CacheOptions(namespace)
	if opts.syncPeriod > 0 {
		cacheOpts.SyncPeriod = &opts.syncPeriod
	}
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 testScheme,
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
	pollerOpts := opts.poller
	if pollerOpts.Interval == 0 {
		pollerOpts = controllers.PollerOptions{Interval: 200 * time.Millisecond, DrainingInterval: 100 * time.Millisecond, Timeout: 500 * time.Millisecond}
	}
	poller := controllers.NewSessionPoller(mgr.GetCache(), pollerOpts, clock.RealClock{}, mgr.GetLogger().WithName("poller"))
	reconciler := &controllers.VoiceGatewayReconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder(controllers.ManagedBy),
		Poller:    poller,
		Options:   controllers.BuildOptions{DefaultImage: testImage, OperatorNamespace: opts.operatorNamespace},
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := reconciler.SetupWithManager(ctx, mgr); err != nil {
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

// eventually retries check every 100ms until it returns nil or timeout
// passes, then fails the test with the last error.
func eventually(t *testing.T, timeout time.Duration, check func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
