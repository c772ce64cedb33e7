package controllers

import (
	"context"
	"time"

	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
)

// Options are the operator-wide settings, as cmd/manager's flags set them.
type Options struct {
	// Build are the builders' inputs: the default image, the operator's
	// namespace.
	Build BuildOptions
	// Poller tunes the polls of the pods' admin status.
	Poller PollerOptions
	// MaxConcurrentReconciles is how many VoiceGateways are reconciled at
	// once.
	MaxConcurrentReconciles int
	// KeyActivationDelay is how long a new client-token signing key only
	// verifies before the pods sign with it.
	KeyActivationDelay time.Duration
	// DeletionCostInterval is the least time between two writes of one
	// pod's deletion cost (DefaultDeletionCostInterval).
	DeletionCostInterval time.Duration
	// WakeupResolution is how often the operator looks for VoiceGateways
	// due for a pass at a moment of Clock: an autoscaler's window ending, a
	// deferred deletion cost (DefaultWakeupResolution).
	WakeupResolution time.Duration
	// Clock is the real one when nil; tests may step their own.
	Clock clock.WithTicker
}

// DefaultOptions are the operator's defaults: the flags' defaults, and what
// Setup uses for a field left zero.
func DefaultOptions() Options {
	return Options{
		Poller: DefaultPollerOptions(),
		// A pass mostly waits on the API server. At 1,000 VoiceGateways
		// on one 2-core control plane, 8 workers reconciled the burst no
		// faster than 4 (34.7 s against 33.5 s: each pass took twice as
		// long, 214 ms against 111 ms, as the API server queued them), so
		// more would only deepen its queue (docs/benchmarks.md, "Operator
		// at 1000 VoiceGateways"); a larger control plane may take
		// --max-concurrent-reconciles higher.
		MaxConcurrentReconciles: 4,
		KeyActivationDelay:      DefaultKeyActivationDelay,
		DeletionCostInterval:    DefaultDeletionCostInterval,
		WakeupResolution:        DefaultWakeupResolution,
	}
}

// Setup registers everything the operator runs on mgr: the session poller
// and the wake-up scheduler (manager.Runnables), and the VoiceGateway
// controller with its watches, its field indexes and their channels.
// cmd/manager, the envtest suites and hack/scale-test all call it, so that
// the wiring exists once. The manager itself comes from the caller, built
// with CacheOptions and ClientOptions.
func Setup(ctx context.Context, mgr ctrl.Manager, opts Options) error {
	defaults := DefaultOptions()
	if opts.MaxConcurrentReconciles <= 0 {
		opts.MaxConcurrentReconciles = defaults.MaxConcurrentReconciles
	}
	if opts.KeyActivationDelay <= 0 {
		opts.KeyActivationDelay = defaults.KeyActivationDelay
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	reconciler := &VoiceGatewayReconciler{
		Client:                  mgr.GetClient(),
		APIReader:               mgr.GetAPIReader(),
		Recorder:                mgr.GetEventRecorder(ManagedBy),
		Poller:                  NewSessionPoller(mgr.GetCache(), opts.Poller, opts.Clock, mgr.GetLogger().WithName("poller")),
		Options:                 opts.Build,
		Clock:                   opts.Clock,
		MaxConcurrentReconciles: opts.MaxConcurrentReconciles,
		KeyActivationDelay:      opts.KeyActivationDelay,
		costs:                   newDeletionCosts(opts.DeletionCostInterval),
		autoscalers:             newAutoscalers(),
		surges:                  newSurges(),
		wakeups:                 newWakeups(opts.Clock, opts.WakeupResolution),
	}
	return reconciler.setupWithManager(ctx, mgr)
}
