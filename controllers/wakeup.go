package controllers

import (
	"context"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/event"
)

// DefaultWakeupResolution is how often the wake-up scheduler looks for a
// VoiceGateway whose moment came.
const DefaultWakeupResolution = time.Second

// wakeups brings a VoiceGateway back for another pass at a moment on the
// operator's clock: the end of an autoscaler's scale-down window, the end of
// a pod's deletion-cost write interval. It is a manager.Runnable that looks
// at its (small) table on a ticker of the injected clock and hands the due
// VoiceGateways to the controller through a channel source, so that tests
// move time with a fake clock instead of sleeping, where a RequeueAfter
// would wait on the wall clock.
type wakeups struct {
	clock      clock.WithTicker
	resolution time.Duration
	events     chan event.TypedGenericEvent[types.NamespacedName]

	mu sync.Mutex
	// due holds the earliest wake-up asked for per VoiceGateway; one entry
	// per VoiceGateway at most, dropped when it fires or the VoiceGateway
	// is gone.
	due map[types.NamespacedName]time.Time
}

func newWakeups(clk clock.WithTicker, resolution time.Duration) *wakeups {
	if resolution <= 0 {
		resolution = DefaultWakeupResolution
	}
	return &wakeups{
		clock:      clk,
		resolution: resolution,
		events:     make(chan event.TypedGenericEvent[types.NamespacedName], 1024),
		due:        map[types.NamespacedName]time.Time{},
	}
}

// at asks for a pass of gateway at or soon after when; an earlier request
// that is still pending wins.
func (w *wakeups) at(gateway types.NamespacedName, when time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if current, ok := w.due[gateway]; ok && !when.Before(current) {
		return
	}
	w.due[gateway] = when
}

// forget drops the wake-up of a VoiceGateway that is gone.
func (w *wakeups) forget(gateway types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.due, gateway)
}

// Changes is the channel the controller watches.
func (w *wakeups) Changes() <-chan event.TypedGenericEvent[types.NamespacedName] {
	return w.events
}

// NeedLeaderElection: only the leader reconciles.
func (w *wakeups) NeedLeaderElection() bool { return true }

// Start hands out due wake-ups until ctx ends.
func (w *wakeups) Start(ctx context.Context) error {
	ticker := w.clock.NewTicker(w.resolution)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C():
		}
		for _, gateway := range w.takeDue(w.clock.Now()) {
			select {
			case w.events <- event.TypedGenericEvent[types.NamespacedName]{Object: gateway}:
			case <-ctx.Done():
				return nil
			}
		}
	}
}

// takeDue removes and returns the VoiceGateways whose moment has come.
func (w *wakeups) takeDue(now time.Time) []types.NamespacedName {
	w.mu.Lock()
	defer w.mu.Unlock()
	var due []types.NamespacedName
	for gateway, when := range w.due {
		if !now.Before(when) {
			due = append(due, gateway)
			delete(w.due, gateway)
		}
	}
	return due
}
