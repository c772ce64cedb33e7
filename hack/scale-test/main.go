// Command scale-test measures the operator against a real kube-apiserver
// and etcd (envtest, binaries from hack/build-k8s-binaries.sh): it creates
// -n VoiceGateways and reports the time until every one is reconciled
// (status.observedGeneration caught up), then, while they all exist,
// creates -samples more one at a time and reports the distribution of the
// time from create to reconciled. It also counts the operator's write
// requests, during the burst and in a quiet period afterwards.
//
//	go run ./hack/scale-test            # or: make scale-test
//	go run ./hack/scale-test -n 1000 -samples 200 -concurrency 4
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap/zapcore"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
	"github.com/voicegateway/voicegateway/controllers"
	"github.com/voicegateway/voicegateway/internal/testenv"
)

const namespace = "scale"

func main() {
	n := flag.Int("n", 1000, "VoiceGateways created in the burst")
	samples := flag.Int("samples", 200, "VoiceGateways then created one at a time for the latency distribution")
	workers := flag.Int("workers", 16, "concurrent creates in the burst")
	concurrency := flag.Int("concurrency", 4, "the operator's --max-concurrent-reconciles")
	quiet := flag.Duration("quiet", 10*time.Second, "quiet period after the burst in which writes are counted")
	flag.Parse()
	if err := run(*n, *samples, *workers, *concurrency, *quiet); err != nil {
		fmt.Fprintln(os.Stderr, "scale-test:", err)
		os.Exit(1)
	}
}

// tracker records, from a watch, when each VoiceGateway was first seen
// reconciled.
type tracker struct {
	mu         sync.Mutex
	reconciled map[string]time.Time
	changed    chan struct{}
}

func (tr *tracker) run(ctx context.Context, w watch.Interface) {
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.ResultChan():
			if !ok {
				return
			}
			gw, isGateway := ev.Object.(*vgv1.VoiceGateway)
			if !isGateway || gw.Status.ObservedGeneration != gw.Generation {
				continue
			}
			tr.mu.Lock()
			if _, seen := tr.reconciled[gw.Name]; !seen {
				tr.reconciled[gw.Name] = time.Now()
				select {
				case tr.changed <- struct{}{}:
				default:
				}
			}
			tr.mu.Unlock()
		}
	}
}

func (tr *tracker) count() int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return len(tr.reconciled)
}

func (tr *tracker) at(name string) (time.Time, bool) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	t, ok := tr.reconciled[name]
	return t, ok
}

// waitUntil blocks until cond holds or timeout passes.
func (tr *tracker) waitUntil(timeout time.Duration, cond func() bool) error {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for !cond() {
		select {
		case <-tr.changed:
		case <-deadline.C:
			return errors.New("timed out")
		}
	}
	return nil
}

func gateway(name string) *vgv1.VoiceGateway {
	return &vgv1.VoiceGateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name},
		Spec:       vgv1.VoiceGatewaySpec{Auth: vgv1.AuthSpec{InsecureNoAuth: true}},
	}
}

func run(n, samples, workers, concurrency int, quiet time.Duration) error {
	ctrl.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.Level(zapcore.ErrorLevel)))
	fmt.Printf("starting kube-apiserver and etcd...\n")
	env, cfg, err := testenv.Start()
	if err != nil {
		return err
	}
	defer func() { _ = env.Stop() }()
	cfg.QPS, cfg.Burst = 1000, 2000

	direct, err := client.NewWithWatch(cfg, client.Options{Scheme: testenv.Scheme()})
	if err != nil {
		return err
	}
	// Ctrl-C stops the run and, through the deferred Stop, the API server.
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := direct.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		return err
	}

	// The operator, wired as cmd/manager wires it, its writes counted.
	writes := &testenv.RequestLog{}
	mgrConfig := rest.CopyConfig(cfg)
	mgrConfig.WrapTransport = writes.Wrap
	mgr, err := ctrl.NewManager(mgrConfig, ctrl.Options{
		Scheme:                 testenv.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  controllers.CacheOptions(),
		Client:                 controllers.ClientOptions(),
	})
	if err != nil {
		return err
	}
	operator := controllers.DefaultOptions()
	operator.Build.DefaultImage = "registry.test/voicegateway:scale"
	operator.MaxConcurrentReconciles = concurrency
	if err := controllers.Setup(ctx, mgr, operator); err != nil {
		return err
	}
	group, groupCtx := errgroup.WithContext(ctx)
	group.Go(func() error { return mgr.Start(groupCtx) })
	defer func() {
		cancel()
		_ = group.Wait()
	}()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		return errors.New("the operator's caches did not sync")
	}

	var list vgv1.VoiceGatewayList
	w, err := direct.Watch(ctx, &list, client.InNamespace(namespace))
	if err != nil {
		return err
	}
	tr := &tracker{reconciled: map[string]time.Time{}, changed: make(chan struct{}, 1)}
	group.Go(func() error { tr.run(groupCtx, w); return nil })

	// Phase 1: the burst.
	fmt.Printf("creating %d VoiceGateways with %d workers; the operator reconciles %d at once...\n", n, workers, concurrency)
	writes.Reset()
	start := time.Now()
	names := make(chan string)
	creators, createCtx := errgroup.WithContext(ctx)
	for range workers {
		creators.Go(func() error {
			for name := range names {
				if err := direct.Create(createCtx, gateway(name)); err != nil {
					return err
				}
			}
			return nil
		})
	}
	for i := range n {
		select {
		case names <- "burst-" + strconv.Itoa(i):
		case <-createCtx.Done():
		}
	}
	close(names)
	if err := creators.Wait(); err != nil {
		return err
	}
	created := time.Since(start)
	if err := tr.waitUntil(10*time.Minute, func() bool { return tr.count() >= n }); err != nil {
		return fmt.Errorf("waiting for %d reconciled, %d so far: %w", n, tr.count(), err)
	}
	allReconciled := time.Since(start)
	burstWrites := len(writes.Writes())

	// Phase 2: a quiet period with nothing changing.
	writes.Reset()
	time.Sleep(quiet)
	quietWrites := len(writes.Writes())
	if quietWrites > 0 {
		recent := writes.Writes()
		fmt.Printf("writes in the quiet period (last 20): %q\n", recent[max(0, len(recent)-20):])
	}

	// Phase 3: one new VoiceGateway at a time while n exist.
	fmt.Printf("creating %d more, one at a time, while %d exist...\n", samples, n)
	latencies := make([]time.Duration, 0, samples)
	for i := range samples {
		name := "single-" + strconv.Itoa(i)
		t0 := time.Now()
		if err := direct.Create(ctx, gateway(name)); err != nil {
			return err
		}
		if err := tr.waitUntil(time.Minute, func() bool { _, ok := tr.at(name); return ok }); err != nil {
			return fmt.Errorf("waiting for %s: %w", name, err)
		}
		at, _ := tr.at(name)
		latencies = append(latencies, at.Sub(t0))
	}
	slices.Sort(latencies)

	var mem runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&mem)

	fmt.Printf("\n## Operator scale: %d VoiceGateways, one API server\n\n", n)
	fmt.Printf("| measure | value |\n|---|---|\n")
	fmt.Printf("| CPUs (GOMAXPROCS) | %d |\n", runtime.GOMAXPROCS(0))
	fmt.Printf("| max concurrent reconciles | %d |\n", concurrency)
	fmt.Printf("| %d creates sent (%d workers) | %s |\n", n, workers, created.Round(time.Millisecond))
	fmt.Printf("| first create → all %d reconciled | %s |\n", n, allReconciled.Round(time.Millisecond))
	fmt.Printf("| throughput | %.0f VoiceGateways/s |\n", float64(n)/allReconciled.Seconds())
	fmt.Printf("| operator writes during the burst | %d (%.1f per VoiceGateway: 5 applies + status) |\n", burstWrites, float64(burstWrites)/float64(n))
	fmt.Printf("| operator writes in %s of quiet | %d |\n", quiet, quietWrites)
	fmt.Printf("| one new VoiceGateway while %d exist, create → reconciled (%d samples) | p50 %s, p90 %s, p99 %s, max %s |\n",
		n, samples, pct(latencies, 50), pct(latencies, 90), pct(latencies, 99), latencies[len(latencies)-1].Round(time.Millisecond))
	fmt.Printf("| Go heap in use after GC (operator + test client in one process) | %.1f MiB |\n", float64(mem.HeapInuse)/(1<<20))
	return nil
}

// pct is the nearest-rank percentile of sorted durations.
func pct(sorted []time.Duration, p int) time.Duration {
	idx := (p*len(sorted)+99)/100 - 1
	idx = max(0, min(idx, len(sorted)-1))
	return sorted[idx].Round(time.Millisecond)
}
