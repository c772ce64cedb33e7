package controllers_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

// applyBarrier holds the operator's first applies (PATCH requests) in a
// namespace until want of them are in flight at once, and records the most
// it saw; once released, or after its patience ran out, it lets every
// request through. An operator that sends its applies one after the other
// never has more than one in flight: the barrier then waits out its
// patience once and reports 1.
type applyBarrier struct {
	namespace string
	want      int
	patience  time.Duration

	mu       sync.Mutex
	inFlight int
	peak     int
	done     bool
	release  chan struct{}
}

func newApplyBarrier(namespace string, want int) *applyBarrier {
	return &applyBarrier{namespace: namespace, want: want, patience: 5 * time.Second, release: make(chan struct{})}
}

func (b *applyBarrier) wrap(rt http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		if req.Method != http.MethodPatch || !strings.Contains(req.URL.Path, "/namespaces/"+b.namespace+"/") ||
			strings.HasSuffix(req.URL.Path, "/status") {
			return rt.RoundTrip(req)
		}
		b.mu.Lock()
		if b.done {
			b.mu.Unlock()
			return rt.RoundTrip(req)
		}
		b.inFlight++
		b.peak = max(b.peak, b.inFlight)
		if b.inFlight >= b.want {
			b.done = true
			close(b.release)
		}
		b.mu.Unlock()
		select {
		case <-b.release:
		case <-time.After(b.patience):
			b.mu.Lock()
			if !b.done {
				b.done = true
				close(b.release)
			}
			b.mu.Unlock()
		}
		resp, err := rt.RoundTrip(req)
		b.mu.Lock()
		b.inFlight--
		b.mu.Unlock()
		return resp, err
	})
}

func (b *applyBarrier) peakInFlight() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.peak
}

// TestNewGatewayFirstPassRoundTrips counts what a new VoiceGateway's first
// pass sends one after the other, which is what its time from create to
// reconciled is made of on a busy API server: the objects the pods use are
// applied together (all of them in flight at once), and its fleet Secret,
// which the cache does not know, is created without a GET first.
func TestNewGatewayFirstPassRoundTrips(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	// ServiceAccount, ConfigMap, Service, peers Service, peers ConfigMap,
	// PodDisruptionBudget (and the NetworkPolicy when it is on): every
	// object but the Deployment.
	const firstWave = 6
	barrier := newApplyBarrier(namespace, firstWave)
	op := startOperator(t, namespace, managerOptions{wrap: barrier.wrap})

	gw := newGateway(namespace, "first-pass")
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	waitReconciled(t, client.ObjectKeyFromObject(gw))

	if peak := barrier.peakInFlight(); peak < firstWave {
		t.Errorf("at most %d applies of the first pass were in flight at once; want the %d objects before the Deployment applied together", peak, firstWave)
	}
	if reads := op.writes.SecretReads(); len(reads) != 0 {
		t.Errorf("the first pass read %d Secrets that the cache knew did not exist: %v", len(reads), reads)
	}
	created := 0
	for _, w := range op.writes.Writes() {
		if strings.HasPrefix(w, "POST ") && strings.HasSuffix(w, "/secrets") {
			created++
		}
	}
	if created != 1 {
		t.Errorf("%d fleet Secret creates, want 1: %v", created, op.writes.Writes())
	}
}

// TestStaleCacheDoesNotWriteTheStatusAgain delays what the operator's
// cache learns of VoiceGateways, so that the pass the first pass's own
// objects queue runs before the cache has seen the status it wrote: that
// pass must not send the same status again. It counts the status writes of
// one new VoiceGateway: one.
func TestStaleCacheDoesNotWriteTheStatusAgain(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	lag := func(rt http.RoundTripper) http.RoundTripper {
		return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
			resp, err := rt.RoundTrip(req)
			if err == nil && req.URL.Query().Get("watch") == "true" && strings.HasSuffix(req.URL.Path, "/voicegateways") {
				resp.Body = laggingBody{ReadCloser: resp.Body, lag: 500 * time.Millisecond}
			}
			return resp, err
		})
	}
	op := startOperator(t, namespace, managerOptions{wrap: lag})

	before := reconcileCount(t)
	gw := newGateway(namespace, "stale-status")
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	waitReconciled(t, client.ObjectKeyFromObject(gw))
	// The pass the owned objects' events queue follows the first at once;
	// let it and the lagging events pass.
	time.Sleep(2 * time.Second)
	if passes := reconcileCount(t) - before; passes < 2 {
		t.Fatalf("%v passes: no second pass ran on the stale cache, the test proves nothing", passes)
	}
	statusWrites := 0
	for _, w := range op.writes.Writes() {
		if strings.HasSuffix(w, "/voicegateways/stale-status/status") {
			statusWrites++
		}
	}
	if statusWrites != 1 {
		t.Errorf("%d status writes for one new VoiceGateway, want 1: %v", statusWrites, op.writes.Writes())
	}
}

// laggingBody holds each read of a watch stream back by lag: the cache
// learns of every change that much later.
type laggingBody struct {
	io.ReadCloser
	lag time.Duration
}

func (b laggingBody) Read(p []byte) (int, error) {
	time.Sleep(b.lag)
	return b.ReadCloser.Read(p)
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }
