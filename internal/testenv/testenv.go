// Package testenv runs the operator's tests and benchmarks against a real
// kube-apiserver and etcd (envtest), built from source by
// hack/build-k8s-binaries.sh into bin/k8s, with the VoiceGateway CRD from
// config/crd installed. It can also start a real kube-controller-manager
// against that API server, for the garbage collector and the Deployment and
// ReplicaSet controllers.
package testenv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/goleak"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

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
