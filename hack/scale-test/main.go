// Command scale-test measures the operator against a real kube-apiserver
// and etcd (envtest, binaries from hack/build-k8s-binaries.sh): it creates
// -n VoiceGateways and reports the time until every one is reconciled
// (status.observedGeneration caught up); then gives each of them
// -pods-per-gateway pods (created by hand: no kubelet runs) whose admin
// /status is answered on loopback addresses by one fake endpoint, the
// first pod of each with sessions, and waits until the operator's poller
// has read them all and its annotation writer has written each busy pod's
// deletion cost; then, while they all exist, creates -samples more one at
// a time and reports the distribution of the time from create to
// reconciled. It counts the operator's write requests during the burst,
// while the pods report, and in a quiet period afterwards, in which the
// poller keeps polling every pod and nothing may be written. Then two
// phases of moving load, each with its writes counted by kind: bucket
// churn, in which every busy pod's sessions cross a deletion-cost bucket
// boundary back and forth at each poll (7, 8, 7, 8 …: the hysteresis writes
// 8 once and keeps it), and autoscaling, in which -autoscaled
// VoiceGateways with spec.autoscaling on see their sessions rise and fall
// (one scale write up, one down after the stabilization window, each).
//
//	go run ./hack/scale-test            # or: make scale-test
//	go run ./hack/scale-test -n 1000 -samples 200 -concurrency 4
//	go run ./hack/scale-test -n 50 -samples 5 -churn 20s -autoscaled 10
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
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
	"github.com/voicegateway/voicegateway/server/admin/adminapi"
)

const namespace = "scale"

func main() {
	n := flag.Int("n", 1000, "VoiceGateways created in the burst")
	samples := flag.Int("samples", 200, "VoiceGateways then created one at a time for the latency distribution")
	workers := flag.Int("workers", 16, "concurrent creates in the burst")
	concurrency := flag.Int("concurrency", 4, "the operator's --max-concurrent-reconciles")
	quiet := flag.Duration("quiet", 10*time.Second, "quiet period after the burst in which writes are counted")
	podsPerGateway := flag.Int("pods-per-gateway", 2, "pods given to each VoiceGateway of the burst (0: none)")
	sessions := flag.Int("sessions", 3, "sessions the first pod of each VoiceGateway reports")
	churn := flag.Duration("churn", 30*time.Second, "bucket churn phase: busy pods' sessions cross a bucket boundary at each poll for this long (0: skip)")
	autoscaled := flag.Int("autoscaled", 100, "VoiceGateways with spec.autoscaling on, whose sessions rise and fall (0: skip)")
	costInterval := flag.Duration("deletion-cost-interval", controllers.DefaultDeletionCostInterval, "the operator's --deletion-cost-interval")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the process (operator, API clients, fake admin) during the single creates to this file")
	heapProfile := flag.String("heapprofile", "", "write a heap profile at the end of the run to this file")
	flag.Parse()
	if (*n+*autoscaled)*(*podsPerGateway) > 250*250 {
		fmt.Fprintln(os.Stderr, "scale-test: at most 62,500 pods (loopback addresses 127.1.0.1–127.250.250.250)")
		os.Exit(2)
	}
	if err := run(config{n: *n, samples: *samples, workers: *workers, concurrency: *concurrency, quiet: *quiet, podsPerGateway: *podsPerGateway,
		sessions: *sessions, churn: *churn, autoscaled: *autoscaled, costInterval: *costInterval,
		cpuProfile: *cpuProfile, heapProfile: *heapProfile}); err != nil {
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

// follow lists the VoiceGateways and watches them from there until ctx
// ends, listing and watching again whenever the API server ends the watch
// (a watch does not last forever, and a tracker that stopped seeing would
// wait out its timeout).
func (tr *tracker) follow(ctx context.Context, c client.WithWatch) {
	for ctx.Err() == nil {
		var list vgv1.VoiceGatewayList
		if err := c.List(ctx, &list, client.InNamespace(namespace)); err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		for i := range list.Items {
			tr.see(&list.Items[i])
		}
		w, err := c.Watch(ctx, &vgv1.VoiceGatewayList{}, client.InNamespace(namespace),
			&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: list.ResourceVersion}})
		if err != nil {
			time.Sleep(100 * time.Millisecond)
			continue
		}
		tr.run(ctx, w)
	}
}

// run records what w shows until it ends.
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
			if gw, isGateway := ev.Object.(*vgv1.VoiceGateway); isGateway {
				tr.see(gw)
			}
		}
	}
}

// see records a VoiceGateway the first time it is seen reconciled.
func (tr *tracker) see(gw *vgv1.VoiceGateway) {
	if gw.Status.ObservedGeneration != gw.Generation {
		return
	}
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if _, seen := tr.reconciled[gw.Name]; !seen {
		tr.reconciled[gw.Name] = time.Now()
		select {
		case tr.changed <- struct{}{}:
		default:
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

// config is the run's flags.
type config struct {
	n, samples, workers, concurrency int
	quiet                            time.Duration
	podsPerGateway, sessions         int
	churn                            time.Duration
	autoscaled                       int
	costInterval                     time.Duration
	cpuProfile, heapProfile          string
}

func run(c config) error {
	n, samples, workers, concurrency, quiet, podsPerGateway, sessions := c.n, c.samples, c.workers, c.concurrency, c.quiet, c.podsPerGateway, c.sessions
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
	requests := newTraffic()
	mgrConfig := rest.CopyConfig(cfg)
	mgrConfig.WrapTransport = func(rt http.RoundTripper) http.RoundTripper { return requests.Wrap(writes.Wrap(rt)) }
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
	admin, err := startFakeAdmin(sessions, podsPerGateway)
	if err != nil {
		return err
	}
	defer admin.stop()
	operator := controllers.DefaultOptions()
	operator.Build.DefaultImage = "registry.test/voicegateway:scale"
	operator.MaxConcurrentReconciles = concurrency
	operator.Poller.AdminPort = admin.port
	operator.DeletionCostInterval = c.costInterval
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

	tr := &tracker{reconciled: map[string]time.Time{}, changed: make(chan struct{}, 1)}
	group.Go(func() error { tr.follow(groupCtx, direct); return nil })

	// Phase 1: the burst.
	fmt.Printf("creating %d VoiceGateways with %d workers; the operator reconciles %d at once...\n", n, workers, concurrency)
	writes.Reset()
	requests.take()
	burstStats := readReconcileStats()
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
	burstRequests := requests.take()
	burstStats = readReconcileStats().since(burstStats)

	// Phase 1b: the pods report their sessions; the busy ones get their
	// deletion cost.
	writes.Reset()
	podsStart := time.Now()
	var podsTook time.Duration
	if podsPerGateway > 0 {
		fmt.Printf("creating %d pods (%d per VoiceGateway), the first of each with %d sessions...\n", n*podsPerGateway, podsPerGateway, sessions)
		if err := createPods(ctx, direct, "burst-", 0, n, podsPerGateway, workers); err != nil {
			return err
		}
		want := 0
		if sessions > 0 {
			want = n
		}
		deadline := time.Now().Add(5 * time.Minute)
		for podPatches(writes) < want || admin.polled() < n*podsPerGateway {
			if time.Now().After(deadline) {
				return fmt.Errorf("after 5 min: %d of %d pods polled, %d of %d deletion costs written", admin.polled(), n*podsPerGateway, podPatches(writes), want)
			}
			time.Sleep(100 * time.Millisecond)
		}
		podsTook = time.Since(podsStart)
		// The status passes that follow the first reports, then quiet.
		time.Sleep(2 * time.Second)
	}
	podsWrites := writes.Writes()
	costWrites := podPatches(writes)
	podsRequests := requests.take()

	// Phase 2: a quiet period with nothing changing.
	writes.Reset()
	quietStats := readReconcileStats()
	time.Sleep(quiet)
	quietWrites := len(writes.Writes())
	quietRequests := requests.take()
	quietStats = readReconcileStats().since(quietStats)
	if quietWrites > 0 {
		recent := writes.Writes()
		fmt.Printf("writes in the quiet period (last 20): %q\n", recent[max(0, len(recent)-20):])
	}

	// Phase 2b: bucket churn. Each busy pod goes to 7 sessions (a new
	// bucket: one write each, once the interval since its last write has
	// passed), then hovers 8, 7, 8 … at each poll, across the boundary of
	// the bucket 8: the hysteresis writes 8 once and keeps it.
	var churnWrites writeCounts
	churnSteps, busyPods := 0, 0
	if c.churn > 0 && podsPerGateway > 0 && sessions > 0 {
		busyPods = n
		fmt.Printf("bucket churn for %s: %d busy pods at 7, then 8, 7, 8 … sessions, a step every poll (%s)...\n", c.churn, busyPods, operator.Poller.Interval)
		writes.Reset()
		admin.setLoad(func(index int) int {
			if index >= n*podsPerGateway || index%podsPerGateway != 0 {
				return 0
			}
			return 7
		})
		// The move to 7 is written once the last write's interval is over.
		time.Sleep(max(c.costInterval, operator.Poller.Interval) + 2*operator.Poller.Interval)
		end := time.Now().Add(c.churn)
		for time.Now().Before(end) {
			churnSteps++
			hover := 7 + churnSteps%2
			admin.setLoad(func(index int) int {
				if index >= n*podsPerGateway || index%podsPerGateway != 0 {
					return 0
				}
				return hover
			})
			time.Sleep(operator.Poller.Interval)
		}
		churnWrites = countWrites(writes)
	}

	// Phase 2c: autoscaling on sessions. Each autoscaled VoiceGateway has
	// one pod per -pods-per-gateway, at 2 sessions a pod targeted: the
	// sessions rise (up at once, one scale write), then end (down after
	// the window, one more).
	var upWrites, downWrites writeCounts
	var upTook, downTook time.Duration
	if c.autoscaled > 0 && podsPerGateway > 0 {
		const window = 10 * time.Second
		fmt.Printf("autoscaling: %d VoiceGateways (min 1, max 4, 2 sessions a pod, window %s), each with %d pods...\n", c.autoscaled, window, podsPerGateway)
		for i := range c.autoscaled {
			gw := gateway("auto-" + strconv.Itoa(i))
			one := int32(1)
			gw.Spec.Replicas = &one
			gw.Spec.Autoscaling = vgv1.AutoscalingSpec{Enabled: true, MinReplicas: 1, MaxReplicas: 4, TargetSessionsPerPod: ptrTo(int32(2)),
				ScaleDownStabilizationWindow: &metav1.Duration{Duration: window}}
			if err := direct.Create(ctx, gw); err != nil {
				return err
			}
		}
		first := n * podsPerGateway
		load := func(perPod int) {
			admin.setLoad(func(index int) int {
				if index >= first {
					return perPod
				}
				if index%podsPerGateway == 0 && c.churn == 0 {
					return sessions
				}
				if index%podsPerGateway == 0 {
					return 7 // where the churn left them
				}
				return 0
			})
		}
		load(0)
		if err := createPods(ctx, direct, "auto-", first, c.autoscaled, podsPerGateway, workers); err != nil {
			return err
		}
		// First sight: the window starts from the replicas there are.
		if err := waitForReplicas(ctx, direct, c.autoscaled, 1, 5*time.Minute); err != nil {
			return err
		}
		time.Sleep(2 * operator.Poller.Interval)
		writes.Reset()
		t0 := time.Now()
		load(3) // 3 sessions on each pod: 3·pods/2 pods wanted
		want := int32(min(4, (3*podsPerGateway+1)/2))
		if err := waitForReplicas(ctx, direct, c.autoscaled, want, 5*time.Minute); err != nil {
			return err
		}
		upTook = time.Since(t0)
		time.Sleep(2 * time.Second)
		upWrites = countWrites(writes)
		writes.Reset()
		t0 = time.Now()
		load(0)
		if err := waitForReplicas(ctx, direct, c.autoscaled, 1, 5*time.Minute); err != nil {
			return err
		}
		downTook = time.Since(t0)
		time.Sleep(2 * time.Second)
		downWrites = countWrites(writes)
	}

	// Phase 3: one new VoiceGateway at a time while n exist.
	fmt.Printf("creating %d more, one at a time, while %d exist...\n", samples, n)
	if c.cpuProfile != "" {
		stop, err := startCPUProfile(c.cpuProfile)
		if err != nil {
			return err
		}
		defer stop()
	}
	requests.take()
	singleStats := readReconcileStats()
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
	// The last one's follow-up passes (its owned objects' events).
	time.Sleep(time.Second)
	singleRequests := requests.take()
	singleStats = readReconcileStats().since(singleStats)
	slices.Sort(latencies)
	if c.heapProfile != "" {
		if err := writeHeapProfile(c.heapProfile); err != nil {
			return err
		}
	}

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
	fmt.Printf("| operator writes during the burst | %d (%.1f per VoiceGateway: its fleet Secret, 8 applies, its status, an event) |\n", burstWrites, float64(burstWrites)/float64(n))
	if podsPerGateway > 0 {
		fmt.Printf("| %d pods created and first polled → every busy pod's deletion cost written | %s |\n", n*podsPerGateway, podsTook.Round(time.Millisecond))
		fmt.Printf("| operator writes while the pods first report | %d (%d deletion costs: one per pod with sessions; %d status) |\n",
			len(podsWrites), costWrites, len(podsWrites)-costWrites)
	}
	fmt.Printf("| operator writes in %s of quiet (%d pods polled every %s, %d polls) | %d |\n",
		quiet, n*podsPerGateway, operator.Poller.Interval, admin.pollsIn(quiet), quietWrites)
	if churnSteps > 0 {
		fmt.Printf("| bucket churn: %d busy pods to 7 sessions, then %d steps of 8, 7, 8 … (deletion-cost interval %s; 2 cost writes a pod expected: 7, then 8 once; the status follows the sessions) | %s |\n",
			busyPods, churnSteps, c.costInterval, churnWrites)
	}
	if c.autoscaled > 0 && podsPerGateway > 0 {
		fmt.Printf("| autoscaling up: %d VoiceGateways, sessions 0 → 3 a pod, all scaled in %s | %s |\n", c.autoscaled, upTook.Round(time.Millisecond), upWrites)
		fmt.Printf("| autoscaling down: sessions → 0, all back to 1 replica (window 10s) in %s | %s |\n", downTook.Round(time.Millisecond), downWrites)
	}
	fmt.Printf("| one new VoiceGateway while %d exist, create → reconciled (%d samples) | p50 %s, p90 %s, p99 %s, max %s |\n",
		n, samples, pct(latencies, 50), pct(latencies, 90), pct(latencies, 99), latencies[len(latencies)-1].Round(time.Millisecond))
	fmt.Printf("| Go heap in use after GC (operator + test client in one process) | %.1f MiB |\n", float64(mem.HeapInuse)/(1<<20))

	fmt.Printf("\n### The operator's requests and reconciles by phase\n\n")
	fmt.Printf("- burst (%d VoiceGateways): %s\n  - %s\n", n, burstRequests.describe(n), burstStats)
	fmt.Printf("- pods first report (%d pods): %s\n", n*podsPerGateway, podsRequests.describe(n))
	fmt.Printf("- quiet (%s): %s\n  - %s\n", quiet, quietRequests.describe(0), quietStats)
	fmt.Printf("- single creates (%d, one at a time): %s\n  - %s\n", samples, singleRequests.describe(samples), singleStats)
	return nil
}

// podIP is the loopback address of the i-th pod.
func podIP(i int) string {
	return fmt.Sprintf("127.%d.%d.%d", 1+i/(250*250), 1+(i/250)%250, 1+i%250)
}

// createPods gives each of n VoiceGateways named prefix+number its pods,
// running at their loopback addresses (numbered from first), as the
// Deployment controller and the kubelet would.
func createPods(ctx context.Context, c client.Client, prefix string, first, n, perGateway, workers int) error {
	indexes := make(chan int)
	group, groupCtx := errgroup.WithContext(ctx)
	for range workers {
		group.Go(func() error {
			for i := range indexes {
				gw := prefix + strconv.Itoa(i/perGateway)
				labels := controllers.SelectorLabels(gw)
				labels[controllers.LabelManagedBy] = controllers.ManagedBy
				pod := &corev1.Pod{
					ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: fmt.Sprintf("%s-%d", gw, i%perGateway), Labels: labels},
					Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "voice-server", Image: "registry.test/voicegateway:scale"}}},
				}
				if err := c.Create(groupCtx, pod); err != nil {
					return err
				}
				ip := podIP(first + i)
				pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}},
					Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
				if err := c.Status().Update(groupCtx, pod); err != nil {
					return err
				}
			}
			return nil
		})
	}
	for i := range n * perGateway {
		select {
		case indexes <- i:
		case <-groupCtx.Done():
		}
	}
	close(indexes)
	return group.Wait()
}

// writeCounts are the operator's writes by what they wrote.
type writeCounts struct {
	costs, scales, deployments, statuses, events, other int
}

func (w writeCounts) String() string {
	return fmt.Sprintf("%d writes: %d deletion costs, %d scale, %d Deployment, %d status, %d events, %d other",
		w.costs+w.scales+w.deployments+w.statuses+w.events+w.other, w.costs, w.scales, w.deployments, w.statuses, w.events, w.other)
}

func countWrites(log *testenv.RequestLog) writeCounts {
	var w writeCounts
	for _, line := range log.Writes() {
		switch {
		case strings.Contains(line, "/pods/"):
			w.costs++
		case strings.HasSuffix(line, "/scale"):
			w.scales++
		case strings.HasSuffix(line, "/status"):
			w.statuses++
		case strings.Contains(line, "/deployments/"):
			w.deployments++
		case strings.Contains(line, "/events"):
			w.events++
		default:
			w.other++
		}
	}
	return w
}

// waitForReplicas waits until every autoscaled VoiceGateway's spec.replicas
// is want.
func waitForReplicas(ctx context.Context, c client.Client, count int, want int32, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var list vgv1.VoiceGatewayList
		if err := c.List(ctx, &list, client.InNamespace(namespace)); err != nil {
			return err
		}
		at := 0
		for _, gw := range list.Items {
			if strings.HasPrefix(gw.Name, "auto-") && gw.Spec.Replicas != nil && *gw.Spec.Replicas == want {
				at++
			}
		}
		if at == count {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s: %d of %d autoscaled VoiceGateways at %d replicas", timeout, at, count, want)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func ptrTo[T any](v T) *T { return &v }

// podPatches counts the operator's writes to pods (deletion costs).
func podPatches(log *testenv.RequestLog) int {
	count := 0
	for _, w := range log.Writes() {
		if strings.HasPrefix(w, "PATCH ") && strings.Contains(w, "/pods/") {
			count++
		}
	}
	return count
}

// fakeAdmin answers every pod's admin /status on one port of all the
// loopback addresses: the pod is the address dialled. The first pod of
// each VoiceGateway ("-0") holds sessions, the others none.
type fakeAdmin struct {
	port   int
	server *http.Server
	done   chan struct{}
	// perGateway is the pods per VoiceGateway.
	perGateway int

	mu sync.Mutex
	// load is each pod's sessions, by its index.
	load  func(index int) int
	seen  map[string]bool
	polls []time.Time
}

// setLoad changes the sessions each pod reports from now on.
func (a *fakeAdmin) setLoad(load func(index int) int) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.load = load
}

func startFakeAdmin(sessions, perGateway int) (*fakeAdmin, error) {
	// All of 127.0.0.0/8 is this host's; a listener on the wildcard
	// address takes each pod's connections. Others are refused below.
	l, err := net.Listen("tcp", "0.0.0.0:0")
	if err != nil {
		return nil, err
	}
	a := &fakeAdmin{port: l.Addr().(*net.TCPAddr).Port, done: make(chan struct{}), perGateway: max(1, perGateway), seen: map[string]bool{}}
	// Pods are numbered gateway by gateway; the first of each is busy.
	a.load = func(index int) int {
		if index%a.perGateway == 0 {
			return sessions
		}
		return 0
	}
	a.server = &http.Server{Handler: http.HandlerFunc(a.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(a.done)
		_ = a.server.Serve(l)
	}()
	return a, nil
}

func (a *fakeAdmin) serve(w http.ResponseWriter, r *http.Request) {
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	remote, _, _ := net.SplitHostPort(r.RemoteAddr)
	tcp, ok := local.(*net.TCPAddr)
	if !ok || !tcp.IP.IsLoopback() || !net.ParseIP(remote).IsLoopback() || r.URL.Path != "/status" {
		http.NotFound(w, r)
		return
	}
	ip := tcp.IP.To4()
	index := (int(ip[1])-1)*250*250 + (int(ip[2])-1)*250 + int(ip[3]) - 1
	a.mu.Lock()
	sessions := a.load(index)
	a.seen[tcp.IP.String()] = true
	a.polls = append(a.polls, time.Now())
	a.mu.Unlock()
	_ = json.NewEncoder(w).Encode(adminapi.Status{Version: "scale", Sessions: sessions, Ready: true, Phase: "serving"})
}

// polled is how many pods have been polled at least once.
func (a *fakeAdmin) polled() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.seen)
}

// pollsIn counts the polls in the last d.
func (a *fakeAdmin) pollsIn(d time.Duration) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	since := time.Now().Add(-d)
	count := 0
	for _, t := range a.polls {
		if t.After(since) {
			count++
		}
	}
	return count
}

func (a *fakeAdmin) stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = a.server.Shutdown(ctx)
	<-a.done
}

// pct is the nearest-rank percentile of sorted durations.
func pct(sorted []time.Duration, p int) time.Duration {
	idx := (p*len(sorted)+99)/100 - 1
	idx = max(0, min(idx, len(sorted)-1))
	return sorted[idx].Round(time.Millisecond)
}
