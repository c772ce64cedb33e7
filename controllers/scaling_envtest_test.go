package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
	"github.com/voicegateway/voicegateway/controllers"
	"github.com/voicegateway/voicegateway/internal/testkit"
	"github.com/voicegateway/voicegateway/server/admin/adminapi"
)

// fakePods answer GET /status on the admin port of each pod IP (loopback
// addresses) with a session count the test scripts, as voice servers
// would: the operator's poller cannot tell them apart.
type fakePods struct {
	port int

	mu       sync.Mutex
	sessions map[string]int // by IP
	requests map[string]int // by IP
}

func startFakePods(t *testing.T, ips ...string) *fakePods {
	t.Helper()
	f := &fakePods{port: freePort(t, ips[0], ips[1:]...), sessions: map[string]int{}, requests: map[string]int{}}
	for _, ip := range ips {
		l, err := net.Listen("tcp", net.JoinHostPort(ip, strconv.Itoa(f.port)))
		if err != nil {
			t.Fatal(err)
		}
		server := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path != "/status" {
				http.NotFound(w, r)
				return
			}
			f.mu.Lock()
			f.requests[ip]++
			sessions := f.sessions[ip]
			f.mu.Unlock()
			_ = json.NewEncoder(w).Encode(adminapi.Status{Version: "test", Sessions: sessions, Ready: true, Phase: "serving"})
		})}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = server.Serve(l)
		}()
		t.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = server.Shutdown(ctx)
			<-done
		})
	}
	return f
}

// set scripts the sessions of the pods by IP.
func (f *fakePods) set(sessions map[string]int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for ip, n := range sessions {
		f.sessions[ip] = n
	}
}

func (f *fakePods) requestCounts() map[string]int {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make(map[string]int, len(f.requests))
	for ip, n := range f.requests {
		out[ip] = n
	}
	return out
}

// step moves the operator's clock by d and waits until every pod in ips
// was polled again (the poller's ticker runs on that clock).
func (f *fakePods) step(t *testing.T, clk *clocktesting.FakeClock, d time.Duration, ips ...string) {
	t.Helper()
	before := f.requestCounts()
	clk.Step(d)
	testkit.Eventually(t, 10*time.Second, func() error {
		now := f.requestCounts()
		for _, ip := range ips {
			if now[ip] <= before[ip] {
				return fmt.Errorf("pod %s not polled since the clock moved", ip)
			}
		}
		return nil
	})
}

// settle steps the clock by d until every pod in ips was polled: a pod
// just created reaches the poller through the operator's cache, which may
// list it a tick late.
func (f *fakePods) settle(t *testing.T, clk *clocktesting.FakeClock, d time.Duration, ips ...string) {
	t.Helper()
	before := f.requestCounts()
	testkit.Eventually(t, 10*time.Second, func() error {
		now := f.requestCounts()
		for _, ip := range ips {
			if now[ip] <= before[ip] {
				clk.Step(d)
				return fmt.Errorf("pod %s not polled yet", ip)
			}
		}
		return nil
	})
}

// startClockedOperator runs the operator on a fake clock that only the
// test moves, polling the fake pods every pollInterval of that clock.
func startClockedOperator(t *testing.T, namespace string, pods *fakePods, pollInterval time.Duration) (*operator, *clocktesting.FakeClock) {
	t.Helper()
	clk := clocktesting.NewFakeClock(time.Now().Truncate(time.Second))
	op := startOperator(t, namespace, managerOptions{
		clock:                clk,
		deletionCostInterval: 30 * time.Second,
		poller:               controllers.PollerOptions{AdminPort: pods.port, Interval: pollInterval, DrainingInterval: pollInterval, Timeout: time.Second},
	})
	// The poller's and the wake-ups' tickers: a step before they exist
	// would be lost.
	testkit.Eventually(t, 10*time.Second, testkit.That("the operator's tickers on the fake clock", func() bool { return clk.Waiters() >= 2 }))
	return op, clk
}

// podWrites are the operator's writes to pods.
func podWrites(op *operator) []string {
	var out []string
	for _, w := range op.writes.Writes() {
		if strings.Contains(w, "/pods/") {
			out = append(out, w)
		}
	}
	return out
}

// waitForCosts waits until the pods carry these deletion costs ("" for
// none).
func waitForCosts(t *testing.T, namespace string, want map[string]string) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, func() error {
		for name, cost := range want {
			var pod corev1.Pod
			if err := k8s.Get(context.Background(), types.NamespacedName{Namespace: namespace, Name: name}, &pod); err != nil {
				return err
			}
			if got := pod.Annotations[corev1.PodDeletionCost]; got != cost {
				return fmt.Errorf("pod %s: deletion cost %q, want %q", name, got, cost)
			}
		}
		return nil
	})
}

// waitForSessions waits until the status reports the sessions: the pass
// that saw them has ended (the status is its last write).
func waitForSessions(t *testing.T, key types.NamespacedName, sessions int32) *vgv1.VoiceGateway {
	t.Helper()
	var gw *vgv1.VoiceGateway
	testkit.Eventually(t, 10*time.Second, func() error {
		gw = getGateway(t, key)
		if gw.Status.Sessions != sessions {
			return fmt.Errorf("status.sessions %d, want %d", gw.Status.Sessions, sessions)
		}
		return nil
	})
	return gw
}

// TestDeletionCostFollowsSessions: the pods' deletion costs follow the
// sessions the poller reads from their admin endpoints, bucketed by powers
// of two; counts that move within their buckets cost no write; a new
// bucket within 30 s of the last write waits for the interval's end on the
// operator's clock, then is written once; an empty pod is never written
// until it has held a session. Each write is a patch of the one
// annotation, with the operator as its field manager.
func TestDeletionCostFollowsSessions(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	ipA, ipB, ipC := "127.0.0.41", "127.0.0.42", "127.0.0.43"
	pods := startFakePods(t, ipA, ipB, ipC)
	pods.set(map[string]int{ipA: 0, ipB: 3, ipC: 9})
	const poll = 5 * time.Second
	op, clk := startClockedOperator(t, namespace, pods, poll)

	gw := newGateway(namespace, "costs")
	gw.Spec.Replicas = ptr.To(int32(3))
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(gw)
	waitForObjects(t, key)
	createPod(t, namespace, gw.Name, "costs-a", ipA)
	createPod(t, namespace, gw.Name, "costs-b", ipB)
	createPod(t, namespace, gw.Name, "costs-c", ipC)
	pods.settle(t, clk, poll, ipA, ipB, ipC)
	waitForSessions(t, key, 12)
	waitForCosts(t, namespace, map[string]string{"costs-a": "", "costs-b": "2", "costs-c": "8"})
	if writes := podWrites(op); len(writes) != 2 {
		t.Errorf("pod writes %v, want one per pod with sessions", writes)
	}

	// The write is a patch of the annotation alone, by the operator.
	var podB corev1.Pod
	if err := k8s.Get(ctx, types.NamespacedName{Namespace: namespace, Name: "costs-b"}, &podB); err != nil {
		t.Fatal(err)
	}
	owned := ""
	for _, m := range podB.ManagedFields {
		if m.Manager == controllers.ManagedBy {
			owned = string(m.FieldsV1.Raw)
		}
	}
	if owned != `{"f:metadata":{"f:annotations":{".":{},"f:controller.kubernetes.io/pod-deletion-cost":{}}}}` {
		t.Errorf("fields the operator owns on the pod: %s", owned)
	}

	// Counts that stay in their buckets: polled, reported, not written.
	op.writes.Reset()
	pods.set(map[string]int{ipB: 2, ipC: 15})
	pods.step(t, clk, poll, ipA, ipB, ipC)
	waitForSessions(t, key, 17)
	pods.set(map[string]int{ipC: 12})
	pods.step(t, clk, poll, ipA, ipB, ipC)
	waitForSessions(t, key, 14)
	if writes := podWrites(op); len(writes) != 0 {
		t.Errorf("pod writes for counts within their buckets: %v", writes)
	}

	// A new bucket 15 s after the last write: held to the interval's end.
	pods.set(map[string]int{ipC: 16})
	pods.step(t, clk, poll, ipA, ipB, ipC)
	waitForSessions(t, key, 18)
	waitForCosts(t, namespace, map[string]string{"costs-c": "8"})
	if writes := podWrites(op); len(writes) != 0 {
		t.Errorf("pod writes within the interval: %v", writes)
	}
	// A pass a moment before the interval ends (a count within the
	// bucket shows it ran): still held.
	pods.set(map[string]int{ipC: 17})
	pods.step(t, clk, 15*time.Second-time.Millisecond, ipA, ipB, ipC)
	waitForSessions(t, key, 19)
	waitForCosts(t, namespace, map[string]string{"costs-c": "8"})
	if writes := podWrites(op); len(writes) != 0 {
		t.Errorf("pod writes within the interval: %v", writes)
	}
	// 30 s after the first write the wake-up comes, with no new poll
	// result: written once.
	clk.Step(time.Millisecond)
	waitForCosts(t, namespace, map[string]string{"costs-a": "", "costs-b": "2", "costs-c": "16"})
	if writes := podWrites(op); len(writes) != 1 {
		t.Errorf("pod writes %v, want the one deferred", writes)
	}

	// Emptied: its cost falls to 0, so it goes first.
	pods.set(map[string]int{ipB: 0})
	pods.step(t, clk, poll, ipA, ipB, ipC)
	waitForCosts(t, namespace, map[string]string{"costs-a": "", "costs-b": "0", "costs-c": "16"})
}

// scalingState is what the autoscaling test checks after each step.
type scalingState struct {
	replicas, desired, recommended int32
}

func autoscalingState(t *testing.T, key types.NamespacedName) (scalingState, *vgv1.VoiceGateway) {
	gw := getGateway(t, key)
	st := scalingState{replicas: *gw.Spec.Replicas}
	if a := gw.Status.Autoscaling; a != nil {
		st.desired, st.recommended = a.DesiredReplicas, a.RecommendedReplicas
	}
	return st, gw
}

// TestAutoscalerFollowsASessionCurve scripts a session curve on the fake
// pods and steps the operator's clock through it: the replicas rise at the
// first poll that sees the sessions, hold through the scale-down window
// after the last high recommendation (checked a second before its end),
// fall to what the window allows the moment it ends (a wake-up, with no
// new poll result), and never leave minReplicas..maxReplicas; the
// Deployment follows (its surge, chosen when its pod template was, stays:
// no rollout); ScaledUp and
// ScaledDown say so.
func TestAutoscalerFollowsASessionCurve(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	ipA, ipB := "127.0.0.44", "127.0.0.45"
	pods := startFakePods(t, ipA, ipB)
	const poll = 5 * time.Second
	_, clk := startClockedOperator(t, namespace, pods, poll)

	const window = 2 * time.Minute
	gw := newGateway(namespace, "auto")
	gw.Spec.Autoscaling = vgv1.AutoscalingSpec{Enabled: true, MinReplicas: 1, MaxReplicas: 5,
		TargetSessionsPerPod: ptr.To(int32(10)), ScaleDownStabilizationWindow: &metav1.Duration{Duration: window}}
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(gw)
	waitForObjects(t, key)
	// Two pods stand for the fleet: the autoscaler counts sessions, not
	// pods.
	createPod(t, namespace, gw.Name, "auto-a", ipA)
	createPod(t, namespace, gw.Name, "auto-b", ipB)
	pods.settle(t, clk, poll, ipA, ipB)

	// at sets the sessions, moves the clock by d and checks the decision.
	at := func(d time.Duration, a, b int, want scalingState) {
		t.Helper()
		pods.set(map[string]int{ipA: a, ipB: b})
		pods.step(t, clk, d, ipA, ipB)
		testkit.Eventually(t, 10*time.Second, func() error {
			st, gw := autoscalingState(t, key)
			if gw.Status.Sessions != int32(a+b) || st != want {
				return fmt.Errorf("%d sessions: %+v, want %d sessions and %+v", gw.Status.Sessions, st, a+b, want)
			}
			return nil
		})
	}
	deploymentReplicas := func(want int32, surge string) {
		t.Helper()
		testkit.Eventually(t, 10*time.Second, func() error {
			var objs ownedObjects
			if err := getObjects(key, &objs); err != nil {
				return err
			}
			d := objs.deployment
			if *d.Spec.Replicas != want || d.Spec.Strategy.RollingUpdate.MaxSurge.String() != surge {
				return fmt.Errorf("deployment replicas %d surge %s, want %d and %s", *d.Spec.Replicas, d.Spec.Strategy.RollingUpdate.MaxSurge, want, surge)
			}
			return nil
		})
	}

	// First sight: the 2 replicas count as recommended now.
	at(poll, 0, 0, scalingState{replicas: 2, desired: 2, recommended: 1})
	// A rush: up at once, at the first poll.
	at(poll, 20, 15, scalingState{replicas: 4, desired: 4, recommended: 4})
	deploymentReplicas(4, "1")
	waitForEvent(t, namespace, controllers.EventScaledUp, "Scaled up from 2 to 4 pods: 35 sessions, 10 per pod targeted")
	// Fewer: held.
	at(poll, 6, 6, scalingState{replicas: 4, desired: 4, recommended: 2})
	// More than maxReplicas would hold: 5.
	at(poll, 30, 25, scalingState{replicas: 5, desired: 5, recommended: 5})
	deploymentReplicas(5, "1")
	// The calls end: held for the window from now.
	at(poll, 3, 2, scalingState{replicas: 5, desired: 5, recommended: 1})
	lastHigh := clk.Now()
	// A second before the window ends (a new count shows the pass ran; it
	// keeps the pods in their deletion-cost buckets, whose writes held
	// back since the calls ended are due by now, so that none is pending
	// when the window ends).
	at(window-time.Second, 3, 3, scalingState{replicas: 5, desired: 5, recommended: 1})
	if got := clk.Now(); !got.Equal(lastHigh.Add(window - time.Second)) {
		t.Fatalf("clock at %s, want a second before the window ends", got)
	}
	// The window ends: down to the most it allows, with no new poll
	// result (the wake-up on the operator's clock).
	clk.Step(time.Second)
	testkit.Eventually(t, 10*time.Second, func() error {
		if st, _ := autoscalingState(t, key); st != (scalingState{replicas: 1, desired: 1, recommended: 1}) {
			return fmt.Errorf("%+v after the window", st)
		}
		return nil
	})
	deploymentReplicas(1, "1")
	waitForEvent(t, namespace, controllers.EventScaledDown, "Scaled down from 5 to 1 pods: 6 sessions, 10 per pod targeted, for 2m0s no more than 1 pods needed")
	testkit.Eventually(t, 10*time.Second, func() error {
		gw = getGateway(t, key)
		if a := gw.Status.Autoscaling; a == nil || a.LastScaleTime == nil || !a.LastScaleTime.Time.Equal(clk.Now().Truncate(time.Second)) ||
			a.TargetSessionsPerPod != 10 || a.SessionsPerPod != 6 {
			return fmt.Errorf("status.autoscaling = %+v, want the scale-down's time, target 10, 6 sessions per pod", a)
		}
		return nil
	})
	// Who set spec.replicas: the autoscaler's field manager.
	managers := []string{}
	for _, m := range gw.ManagedFields {
		var fields struct {
			Spec map[string]any `json:"f:spec"`
		}
		if err := json.Unmarshal(m.FieldsV1.Raw, &fields); err != nil {
			t.Fatal(err)
		}
		if _, ok := fields.Spec["f:replicas"]; ok {
			managers = append(managers, m.Manager)
		}
	}
	if !slices.Equal(managers, []string{controllers.FieldOwnerAutoscaler}) {
		t.Errorf("spec.replicas managed by %v, want only %s", managers, controllers.FieldOwnerAutoscaler)
	}
	// Idle: minReplicas it stays.
	at(10*time.Minute, 0, 0, scalingState{replicas: 1, desired: 1, recommended: 1})
}

// TestAutoscalingRefusesAnHPA: a HorizontalPodAutoscaler that targets an
// autoscaled VoiceGateway, or the Deployment of any VoiceGateway, would
// fight the operator over the pod count. The operator says so in Degraded
// (AutoscalingConflict, naming it and the fix) and does not autoscale
// while it stands; once it is gone, autoscaling resumes.
func TestAutoscalingRefusesAnHPA(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	ip := "127.0.0.46"
	pods := startFakePods(t, ip)
	const poll = 5 * time.Second
	_, clk := startClockedOperator(t, namespace, pods, poll)

	gw := newGateway(namespace, "hpa")
	gw.Spec.Replicas = ptr.To(int32(1))
	gw.Spec.Autoscaling = vgv1.AutoscalingSpec{Enabled: true, MaxReplicas: 4, TargetSessionsPerPod: ptr.To(int32(10))}
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(gw)
	waitForObjects(t, key)
	createPod(t, namespace, gw.Name, "hpa-a", ip)
	pods.settle(t, clk, poll, ip)

	hpa := &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: "users-hpa"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "voicegateway.dev/v1alpha1", Kind: "VoiceGateway", Name: gw.Name},
			MinReplicas:    ptr.To(int32(1)),
			MaxReplicas:    3,
		},
	}
	if err := k8s.Create(ctx, hpa); err != nil {
		t.Fatal(err)
	}
	conflict := "True/" + controllers.ReasonAutoscalingConflict
	testkit.Eventually(t, 10*time.Second, func() error {
		return checkConditions(getGateway(t, key), map[string]string{vgv1.ConditionDegraded: conflict})
	})
	cond := conditionOf(getGateway(t, key), vgv1.ConditionDegraded)
	if !strings.Contains(cond.Message, `HorizontalPodAutoscaler "users-hpa" and spec.autoscaling both scale this VoiceGateway`) ||
		!strings.Contains(cond.Message, "delete the HorizontalPodAutoscaler or set spec.autoscaling.enabled to false") {
		t.Errorf("Degraded message %q", cond.Message)
	}
	// Sessions that would scale up: refused.
	pods.set(map[string]int{ip: 25})
	pods.step(t, clk, poll, ip)
	gwNow := waitForSessions(t, key, 25)
	if *gwNow.Spec.Replicas != 1 || gwNow.Status.Autoscaling != nil {
		t.Errorf("replicas %d autoscaling %+v beside an HPA, want 1 and none", *gwNow.Spec.Replicas, gwNow.Status.Autoscaling)
	}

	// The HPA retargeted at the Deployment: a conflict whatever the spec.
	hpa.Spec.ScaleTargetRef = autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: gw.Name}
	if err := k8s.Update(ctx, hpa); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		if c := conditionOf(getGateway(t, key), vgv1.ConditionDegraded); !strings.Contains(c.Message, "scales the Deployment") {
			return fmt.Errorf("Degraded %+v", c)
		}
		return nil
	})

	// Gone: the autoscaler takes over at once.
	if err := k8s.Delete(ctx, hpa); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, func() error {
		gw := getGateway(t, key)
		if *gw.Spec.Replicas != 3 {
			return fmt.Errorf("replicas %d, want 3 for 25 sessions at 10 per pod", *gw.Spec.Replicas)
		}
		return checkConditions(gw, map[string]string{vgv1.ConditionDegraded: "False/" + controllers.ReasonAsExpected})
	})
}

func conditionOf(gw *vgv1.VoiceGateway, conditionType string) metav1.Condition {
	for _, c := range gw.Status.Conditions {
		if c.Type == conditionType {
			return c
		}
	}
	return metav1.Condition{}
}

// TestScaleConflictRequeuesQuietly: a 409 on the autoscaler's write of
// spec.replicas (the pass read an older VoiceGateway than the API server
// has), or on the status write, is no error: no reconcile error, no
// Degraded condition, no event; the next pass writes.
func TestScaleConflictRequeuesQuietly(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	var conflicts, statusConflicts atomic.Int32
	startOperator(t, namespace, managerOptions{wrap: func(rt http.RoundTripper) http.RoundTripper {
		return roundTripper(func(req *http.Request) (*http.Response, error) {
			scale := req.Method == http.MethodPatch && strings.HasSuffix(req.URL.Path, "/voicegateways/conflicted/scale") && conflicts.Add(1) <= 3
			status := req.Method == http.MethodPatch && strings.HasSuffix(req.URL.Path, "/voicegateways/conflicted/status") && statusConflicts.Add(1) <= 2
			if scale || status {
				body := `{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"Conflict","code":409,` +
					`"message":"Operation cannot be fulfilled on voicegateways.voicegateway.dev \"conflicted\": the object has been modified"}`
				return &http.Response{StatusCode: http.StatusConflict, Header: http.Header{"Content-Type": []string{"application/json"}},
					Body: io.NopCloser(strings.NewReader(body)), Request: req}, nil
			}
			return rt.RoundTrip(req)
		})
	}})
	errorsBefore := reconcileErrors(t)

	gw := newGateway(namespace, "conflicted")
	gw.Spec.Replicas = ptr.To(int32(1))
	gw.Spec.Autoscaling = vgv1.AutoscalingSpec{Enabled: true, MinReplicas: 3, MaxReplicas: 5}
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(gw)
	testkit.Eventually(t, 20*time.Second, func() error {
		if got := *getGateway(t, key).Spec.Replicas; got != 3 {
			return fmt.Errorf("spec.replicas %d, want minReplicas 3 (scale writes refused so far: %d)", got, conflicts.Load())
		}
		return nil
	})
	if n := conflicts.Load(); n < 4 {
		t.Fatalf("%d scale writes, want 3 refused and the fourth through", n)
	}
	testkit.Eventually(t, 20*time.Second, func() error {
		if a := getGateway(t, key).Status.Autoscaling; a == nil || a.DesiredReplicas != 3 {
			return fmt.Errorf("status.autoscaling %+v, want desired 3 (status writes refused so far: %d)", a, statusConflicts.Load())
		}
		return nil
	})
	if n := statusConflicts.Load(); n < 3 {
		t.Fatalf("%d status writes, want 2 refused and the third through", n)
	}
	if after := reconcileErrors(t); after != errorsBefore {
		t.Errorf("reconcile errors went from %v to %v: a conflict must requeue quietly", errorsBefore, after)
	}
	for _, c := range getGateway(t, key).Status.Conditions {
		if c.Type == "Degraded" && c.Status == metav1.ConditionTrue {
			t.Errorf("Degraded %s: %s", c.Reason, c.Message)
		}
	}
	var events eventsv1.EventList
	if err := k8s.List(ctx, &events, client.InNamespace(namespace)); err != nil {
		t.Fatal(err)
	}
	// The operator's events are about its VoiceGateway; the API server's
	// own (a ClusterIP repair) are not this test's subject.
	for _, e := range events.Items {
		if e.Type == corev1.EventTypeWarning && e.Regarding.Kind == "VoiceGateway" {
			t.Errorf("warning event %s: %s", e.Reason, e.Note)
		}
	}
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// reconcileErrors is controller-runtime's count of the voicegateway
// controller's reconcile errors (the tests of this package run one at a
// time, so the difference is one test's).
func reconcileErrors(t *testing.T) float64 {
	t.Helper()
	return controllerCounter(t, "controller_runtime_reconcile_errors_total")
}

// TestSurgeChangesOnlyWithARollout: the Deployment's maxSurge is chosen
// from the sessions when the pod template changes (a rollout), and kept
// while only the sessions move: a session poll never rewrites the
// Deployment.
func TestSurgeChangesOnlyWithARollout(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	ipA, ipB := "127.0.0.46", "127.0.0.47"
	pods := startFakePods(t, ipA, ipB)
	const poll = 5 * time.Second
	op, clk := startClockedOperator(t, namespace, pods, poll)

	gw := newGateway(namespace, "surge")
	gw.Spec.Replicas = ptr.To(int32(4))
	gw.Spec.Autoscaling.TargetSessionsPerPod = ptr.To(int32(10))
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	key := client.ObjectKeyFromObject(gw)
	waitForObjects(t, key)
	createPod(t, namespace, gw.Name, "surge-a", ipA)
	createPod(t, namespace, gw.Name, "surge-b", ipB)
	pods.settle(t, clk, poll, ipA, ipB)
	waitForSessions(t, key, 0)

	surge := func(want string) int64 {
		t.Helper()
		var generation int64
		testkit.Eventually(t, 10*time.Second, func() error {
			var objs ownedObjects
			if err := getObjects(key, &objs); err != nil {
				return err
			}
			generation = objs.deployment.Generation
			if got := objs.deployment.Spec.Strategy.RollingUpdate.MaxSurge.String(); got != want {
				return fmt.Errorf("maxSurge %s, want %s", got, want)
			}
			return nil
		})
		return generation
	}
	deploymentWrites := func() []string {
		var out []string
		for _, w := range op.writes.Writes() {
			if strings.Contains(w, "/deployments/") {
				out = append(out, w)
			}
		}
		return out
	}
	idle := surge("1") // a quarter of 4

	// The sessions rise, then fall: polled, reported, the Deployment
	// untouched.
	op.writes.Reset()
	for _, n := range []int{20, 15, 3} {
		pods.set(map[string]int{ipA: n, ipB: n})
		pods.step(t, clk, poll, ipA, ipB)
		waitForSessions(t, key, int32(2*n))
	}
	if got := surge("1"); got != idle {
		t.Errorf("the Deployment's generation went from %d to %d with the sessions alone", idle, got)
	}
	if writes := deploymentWrites(); len(writes) != 0 {
		t.Errorf("Deployment writes while only the sessions moved: %v", writes)
	}

	// 35 sessions, then a rollout: the surge is what they need at 10 a pod.
	pods.set(map[string]int{ipA: 20, ipB: 15})
	pods.step(t, clk, poll, ipA, ipB)
	waitForSessions(t, key, 35)
	patch := client.MergeFrom(gw.DeepCopy())
	gw.Spec.PodAnnotations = map[string]string{"rollout": "1"}
	if err := k8s.Patch(ctx, gw, patch); err != nil {
		t.Fatal(err)
	}
	rolled := surge("4")
	// And kept through the rollout while the sessions move.
	pods.set(map[string]int{ipA: 1, ipB: 0})
	pods.step(t, clk, poll, ipA, ipB)
	waitForSessions(t, key, 1)
	if got := surge("4"); got != rolled {
		t.Errorf("the Deployment's generation went from %d to %d with the sessions alone", rolled, got)
	}
}
