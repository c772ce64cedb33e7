// Package testenv runs the operator's tests and benchmarks against a real
// kube-apiserver and etcd (envtest), built from source by
// hack/build-k8s-binaries.sh into bin/k8s, with the VoiceGateway CRD from
// config/crd installed. Main is the TestMain of every package whose tests
// talk to that API server. It can also start a real
// kube-controller-manager against it, for the garbage collector and the
// Deployment and ReplicaSet controllers.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zapcore"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
)

// RepoRoot is the module's root folder, found by walking up from the
// working directory to go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// BinDir is where the control-plane binaries are: $KUBEBUILDER_ASSETS when
// set, else bin/k8s.
func BinDir() (string, error) {
	if dir := os.Getenv("KUBEBUILDER_ASSETS"); dir != "" {
		return dir, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "bin", "k8s"), nil
}

// Scheme holds the built-in kinds and VoiceGateway.
func Scheme() *runtime.Scheme {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(vgv1.AddToScheme(scheme))
	return scheme
}

// Start runs etcd and kube-apiserver with the CRD installed. Stop the
// returned environment when done.
func Start() (*envtest.Environment, *rest.Config, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, nil, err
	}
	bin, err := BinDir()
	if err != nil {
		return nil, nil, err
	}
	for _, name := range []string{"etcd", "kube-apiserver"} {
		if _, err := os.Stat(filepath.Join(bin, name)); err != nil {
			return nil, nil, fmt.Errorf("%s is missing from %s: run `make envtest-binaries` (hack/build-k8s-binaries.sh) first", name, bin)
		}
	}
	env := &envtest.Environment{
		BinaryAssetsDirectory: bin,
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		Scheme:                Scheme(),
	}
	// Room for thousands of Services (the scale test); envtest's default
	// /24 runs out at 254.
	env.ControlPlane.GetAPIServer().Configure().Set("service-cluster-ip-range", "10.96.0.0/16")
	cfg, err := env.Start()
	if err != nil {
		// A failure after the processes started (installing the CRD)
		// would leave them running.
		_ = env.Stop()
		return nil, nil, fmt.Errorf("starting kube-apiserver and etcd from %s: %w", bin, err)
	}
	// Tests create many objects quickly; client-go's default limits (5/s)
	// would make them wait on the client rather than on the server.
	cfg.QPS, cfg.Burst = 500, 1000
	return env, cfg, nil
}

// Suite is what Main gives a package's tests: one API server for all of
// them.
type Suite struct {
	Env    *envtest.Environment
	Config *rest.Config
	// Client is a direct client (no cache) with the administrator's
	// identity and Scheme, as a user's kubectl would be.
	Client client.Client
	// Kubeconfig is a kubeconfig file for the administrator, for kubectl,
	// helm and the operator binary.
	Kubeconfig string
	// Dir is a scratch folder for files the tests share; it is removed
	// when the tests end.
	Dir string
}

// Main is the TestMain of a package whose tests talk to a real API server:
//
//	func TestMain(m *testing.M) {
//		os.Exit(testenv.Main(m, func(s *testenv.Suite) error { suite = s; return nil }))
//	}
//
// It starts etcd and kube-apiserver (Start), writes the administrator's
// kubeconfig, makes a direct client and sets controller-runtime's logger
// (errors only, unless VGW_TEST_VERBOSE is set); then setup, when not nil,
// keeps what the package needs; then the tests run. At the end it stops the
// API server, removes the scratch folder and, when the tests passed, fails
// on any goroutine left running besides the client libraries' own
// (LeakOptions). It returns the exit code.
func Main(m *testing.M, setup func(*Suite) error) int {
	level := zapcore.ErrorLevel
	if os.Getenv("VGW_TEST_VERBOSE") != "" {
		level = zapcore.DebugLevel
	}
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(level)))

	code, err := runSuite(m, setup)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	if code == 0 {
		if err := goleak.Find(LeakOptions()...); err != nil {
			fmt.Fprintln(os.Stderr, "leaked goroutines:", err)
			return 1
		}
	}
	return code
}

// runSuite runs the tests between the API server's start and stop; an
// error is one of the suite itself, not of a test.
func runSuite(m *testing.M, setup func(*Suite) error) (code int, err error) {
	dir, err := os.MkdirTemp("", "vgw-envtest-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(dir)
	env, cfg, err := Start()
	if err != nil {
		return 0, err
	}
	defer func() {
		if stopErr := env.Stop(); stopErr != nil && err == nil {
			err = fmt.Errorf("stopping the API server: %w", stopErr)
		}
	}()
	suite := &Suite{Env: env, Config: cfg, Dir: dir, Kubeconfig: filepath.Join(dir, "kubeconfig")}
	if err := os.WriteFile(suite.Kubeconfig, env.KubeConfig, 0o600); err != nil {
		return 0, err
	}
	if suite.Client, err = client.New(cfg, client.Options{Scheme: Scheme()}); err != nil {
		return 0, err
	}
	if setup != nil {
		if err := setup(suite); err != nil {
			return 0, err
		}
	}
	return m.Run(), nil
}

// ControllerManager is a running kube-controller-manager.
type ControllerManager struct {
	cmd *exec.Cmd
	dir string
	// exited is closed when the process has ended; err is then its error.
	exited chan struct{}
	err    error
}

// StartControllerManager runs kube-controller-manager from the binaries
// folder against env's API server with the given controllers (names as in
// its --controllers flag), as a cluster administrator. Its output goes to
// logPath.
func StartControllerManager(env *envtest.Environment, controllers []string, logPath string) (*ControllerManager, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	path := filepath.Join(bin, "kube-controller-manager")
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("kube-controller-manager is missing from %s: run `make envtest-binaries` first", bin)
	}
	user, err := env.AddUser(envtest.User{Name: "kube-controller-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, err
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "vgw-kcm-")
	if err != nil {
		return nil, err
	}
	kubeconfigPath := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	args := []string{
		"--kubeconfig=" + kubeconfigPath,
		"--leader-elect=false",
		// No serving: nothing here scrapes or probes it.
		"--secure-port=0",
		"--controllers=" + strings.Join(controllers, ","),
		// Faster than the defaults so that tests do not wait on resyncs.
		"--concurrent-gc-syncs=5",
		"--v=1",
	}
	cmd := exec.Command(path, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		_ = logFile.Close()
		_ = os.RemoveAll(dir)
		return nil, err
	}
	cm := &ControllerManager{cmd: cmd, dir: dir, exited: make(chan struct{})}
	// Stop waits for this goroutine through exited.
	go func() {
		cm.err = cmd.Wait()
		_ = logFile.Close()
		close(cm.exited)
	}()
	return cm, nil
}

// Exited reports whether the process has ended (it never should while a
// test uses it), with its error.
func (cm *ControllerManager) Exited() (bool, error) {
	select {
	case <-cm.exited:
		return true, cm.err
	default:
		return false, nil
	}
}

// Stop ends the process (SIGTERM, then SIGKILL after a while) and waits for
// it.
func (cm *ControllerManager) Stop(ctx context.Context) error {
	defer os.RemoveAll(cm.dir)
	_ = cm.cmd.Process.Signal(os.Interrupt)
	timer := time.NewTimer(10 * time.Second)
	defer timer.Stop()
	select {
	case <-cm.exited:
		return nil
	case <-timer.C:
	case <-ctx.Done():
	}
	_ = cm.cmd.Process.Kill()
	<-cm.exited
	return nil
}

// LeakOptions ignores the goroutines that client libraries start and never
// stop, for goleak checks in packages that talk to the API server;
// everything the operator itself starts must be gone.
func LeakOptions() []goleak.Option {
	return []goleak.Option{
		// klog's periodic flush, started by its init.
		goleak.IgnoreTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
		// controller-runtime wraps metadata-only watches (the Secret watch)
		// in watch.Filter, whose loop blocks forever on an unbuffered send
		// once the informer stops reading (apimachinery
		// pkg/watch/filter.go): one goroutine per stopped watch, nothing
		// the operator can stop.
		goleak.IgnoreTopFunction("k8s.io/apimachinery/pkg/watch.(*filteredWatch).loop"),
	}
}
