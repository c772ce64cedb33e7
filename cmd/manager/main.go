// Command manager runs the voicegateway operator: the VoiceGateway
// controller and the poller that reads each voice server pod's sessions,
// under controller-runtime's manager with metrics, health endpoints and
// optional leader election.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrl "sigs.k8s.io/controller-runtime"
	kubeconfig "sigs.k8s.io/controller-runtime/pkg/client/config"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
	"github.com/voicegateway/voicegateway/controllers"
	"github.com/voicegateway/voicegateway/server/logging"
	"github.com/voicegateway/voicegateway/server/version"
)

// imageRepository holds the release images; one image carries both the
// manager and the voice server, so the default voice server image is the
// operator's own.
const imageRepository = "ghcr.io/voicegateway/voicegateway"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stderr, nil)
	stop()
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "manager:", err)
		os.Exit(1)
	}
}

// options are the manager's command-line settings.
type options struct {
	kubeconfig              string
	metricsAddr             string
	probeAddr               string
	leaderElect             bool
	leaderElectionNamespace string
	namespaces              string
	defaultImage            string
	operatorNamespace       string
	keyActivationDelay      time.Duration
	maxConcurrentReconciles int
	deletionCostInterval    time.Duration
	poller                  controllers.PollerOptions
	logFormat, logLevel     string
	version                 bool
}

// parseFlags reads the command line; getenv supplies the defaults that come
// from the pod (POD_NAMESPACE, from the downward API).
func parseFlags(args []string, output io.Writer, getenv func(string) string) (options, error) {
	defaults := controllers.DefaultOptions()
	o := options{poller: defaults.Poller}
	fs := flag.NewFlagSet("manager", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; empty means in-cluster, then $KUBECONFIG, then ~/.kube/config")
	fs.StringVar(&o.metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus metrics endpoint; 0 turns it off")
	fs.StringVar(&o.probeAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	fs.BoolVar(&o.leaderElect, "leader-elect", false, "elect a leader so that only one replica of the operator reconciles")
	fs.StringVar(&o.leaderElectionNamespace, "leader-election-namespace", "", "namespace of the leader election Lease; empty means the operator's own")
	fs.StringVar(&o.namespaces, "namespace", "", "comma-separated namespaces to watch; empty means all")
	fs.StringVar(&o.defaultImage, "default-image", imageRepository+":"+version.Version, "voice server image of VoiceGateways that name none")
	fs.StringVar(&o.operatorNamespace, "operator-namespace", getenv("POD_NAMESPACE"),
		"namespace the operator runs in, whose pods the VoiceGateways' NetworkPolicies admit to the admin port; defaults to $POD_NAMESPACE")
	fs.DurationVar(&o.keyActivationDelay, "key-activation-delay", defaults.KeyActivationDelay,
		"how long a new client-token signing key only verifies before the pods sign with it; longer than the kubelet takes to refresh a mounted Secret")
	fs.IntVar(&o.maxConcurrentReconciles, "max-concurrent-reconciles", defaults.MaxConcurrentReconciles, "VoiceGateways reconciled at once")
	fs.IntVar(&o.poller.AdminPort, "pod-admin-port", o.poller.AdminPort, "admin port of the voice server pods, polled for /status")
	fs.DurationVar(&o.poller.Interval, "status-poll-interval", o.poller.Interval, "how often each serving pod's /status is polled")
	fs.DurationVar(&o.poller.DrainingInterval, "status-poll-interval-draining", o.poller.DrainingInterval, "how often a terminating pod's /status is polled")
	fs.DurationVar(&o.poller.Timeout, "status-poll-timeout", o.poller.Timeout, "timeout of one /status poll")
	fs.IntVar(&o.poller.Concurrency, "status-poll-concurrency", o.poller.Concurrency, "polls in flight at once")
	fs.DurationVar(&o.deletionCostInterval, "deletion-cost-interval", defaults.DeletionCostInterval,
		"least time between two writes of one pod's controller.kubernetes.io/pod-deletion-cost (from its sessions)")
	// The voice server's logging flags, with the same values and the same
	// lines (server/logging).
	fs.StringVar(&o.logFormat, "log-format", logging.FormatJSON, "log lines: "+strings.Join(logging.Formats, " or "))
	fs.StringVar(&o.logLevel, "log-level", "info", "least severe level logged: "+strings.Join(logging.Levels, ", "))
	fs.BoolVar(&o.version, "version", false, "print the version, commit and Go version, and exit")
	if err := fs.Parse(args); err != nil {
		return options{}, err
	}
	if fs.NArg() > 0 {
		return options{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.keyActivationDelay <= 0 {
		return options{}, fmt.Errorf("--key-activation-delay must be positive, got %s", o.keyActivationDelay)
	}
	if o.deletionCostInterval <= 0 {
		return options{}, fmt.Errorf("--deletion-cost-interval must be positive, got %s", o.deletionCostInterval)
	}
	return o, nil
}

// run parses args and runs the manager until ctx ends. restConfig, when
// not nil, replaces the kubeconfig lookup (tests).
func run(ctx context.Context, args []string, output io.Writer, restConfig *rest.Config) error {
	o, err := parseFlags(args, output, os.Getenv)
	if err != nil {
		return err
	}
	if o.version {
		fmt.Fprintln(os.Stdout, version.String("manager"))
		return flag.ErrHelp
	}
	log, flush, err := logging.NewTo(o.logFormat, o.logLevel, output)
	if err != nil {
		return err
	}
	defer flush()
	ctrl.SetLogger(log)

	if restConfig == nil {
		restConfig, err = loadConfig(o.kubeconfig)
		if err != nil {
			return err
		}
	}

	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(vgv1.AddToScheme(scheme))

	mgr, err := ctrl.NewManager(restConfig, ctrl.Options{
		Scheme:                        scheme,
		Logger:                        log,
		Metrics:                       metricsserver.Options{BindAddress: o.metricsAddr},
		HealthProbeBindAddress:        o.probeAddr,
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              "voicegateway-operator.voicegateway.dev",
		LeaderElectionNamespace:       o.leaderElectionNamespace,
		LeaderElectionReleaseOnCancel: true,
		Cache:                         controllers.CacheOptions(splitList(o.namespaces)...),
		Client:                        controllers.ClientOptions(),
		GracefulShutdownTimeout:       ptrDuration(10 * time.Second),
	})
	if err != nil {
		return fmt.Errorf("creating the manager: %w", err)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		return err
	}
	if err := mgr.AddReadyzCheck("readyz", healthz.Ping); err != nil {
		return err
	}

	if o.operatorNamespace == "" {
		log.Info("The operator's namespace is unknown (no --operator-namespace, no $POD_NAMESPACE): the VoiceGateways' NetworkPolicies will not admit the operator to the pods' admin port, so their sessions are not reported")
	}
	if err := controllers.Setup(ctx, mgr, controllers.Options{
		Build:                   controllers.BuildOptions{DefaultImage: o.defaultImage, OperatorNamespace: o.operatorNamespace},
		Poller:                  o.poller,
		MaxConcurrentReconciles: o.maxConcurrentReconciles,
		KeyActivationDelay:      o.keyActivationDelay,
		DeletionCostInterval:    o.deletionCostInterval,
	}); err != nil {
		return fmt.Errorf("setting up the controller: %w", err)
	}
	log.Info("Starting the manager", "version", version.Version, "commit", version.Commit, "namespaces", o.namespaces, "defaultImage", o.defaultImage,
		"operatorNamespace", o.operatorNamespace)
	return mgr.Start(ctx)
}

// loadConfig reads --kubeconfig, or finds the cluster as controller-runtime
// does. Both ways the client has no rate limiter of its own: the API
// server's priority and fairness bounds the operator, as controller-runtime
// chooses for the in-cluster case. client-go's limiter when none is set
// (5 requests a second, bursts of 10) would make the first pass over 1,000
// VoiceGateways, about 11 requests each (a fleet Secret, eight applies, a
// status, an event; docs/benchmarks.md, "Operator at 1000 VoiceGateways"),
// take over half an hour instead of about a minute.
func loadConfig(path string) (*rest.Config, error) {
	if path == "" {
		return kubeconfig.GetConfig()
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", path)
	if err != nil {
		return nil, err
	}
	if cfg.QPS == 0 {
		cfg.QPS = -1
	}
	return cfg, nil
}

func splitList(s string) []string {
	var items []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			items = append(items, item)
		}
	}
	return items
}

func ptrDuration(d time.Duration) *time.Duration { return &d }
