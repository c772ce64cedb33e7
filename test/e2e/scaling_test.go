//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/voicegateway/voicegateway/internal/testkit"
)

// The scaling tests run after TestRollout on the same VoiceGateway (its
// pods on the rollout's image): hack/e2e.sh runs them as their own phase.

// deletionCostAnnotation is Kubernetes' controller.kubernetes.io/pod-deletion-cost.
const deletionCostAnnotation = "controller.kubernetes.io/pod-deletion-cost"

// vgwState is what the timeline follows of the VoiceGateway.
type vgwState struct {
	Spec struct {
		Replicas int `json:"replicas"`
	} `json:"spec"`
	Status struct {
		Ready            string `json:"ready"`
		Sessions         int    `json:"sessions"`
		DrainingSessions int    `json:"drainingSessions"`
		Autoscaling      *struct {
			DesiredReplicas     int `json:"desiredReplicas"`
			RecommendedReplicas int `json:"recommendedReplicas"`
		} `json:"autoscaling"`
	} `json:"status"`
}

func (s vgwState) line(pods int) string {
	line := fmt.Sprintf("spec.replicas %d, pods %d, ready %s, sessions %d, draining %d",
		s.Spec.Replicas, pods, s.Status.Ready, s.Status.Sessions, s.Status.DrainingSessions)
	if a := s.Status.Autoscaling; a != nil {
		line += fmt.Sprintf(", autoscaler desired %d recommended %d", a.DesiredReplicas, a.RecommendedReplicas)
	}
	return line
}

// timeline samples the VoiceGateway and its pods every 500 ms and keeps
// each change, with the test's own marks between them.
type timeline struct {
	start time.Time
	mu    sync.Mutex
	lines []timelineLine
	state vgwState
}

type timelineLine struct {
	at   time.Time
	text string
}

func (tl *timeline) mark(text string) {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	tl.lines = append(tl.lines, timelineLine{time.Now(), "** " + text})
}

// current is the last state sampled.
func (tl *timeline) current() vgwState {
	tl.mu.Lock()
	defer tl.mu.Unlock()
	return tl.state
}

func startTimeline(ctx context.Context, t *testing.T) (*timeline, func()) {
	tl := &timeline{start: time.Now()}
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		last := ""
		for sctx.Err() == nil {
			var st vgwState
			out, err := kubectl(sctx, "get", "vgw", vgwName, "-o", "json")
			if err == nil && json.Unmarshal(out, &st) == nil {
				pods, _ := livePods(sctx)
				line := st.line(len(pods))
				tl.mu.Lock()
				tl.state = st
				if line != last {
					tl.lines = append(tl.lines, timelineLine{time.Now(), line})
					last = line
				}
				tl.mu.Unlock()
			}
			sleepCtx(sctx, 500*time.Millisecond)
		}
	}()
	return tl, func() {
		stop()
		<-done
	}
}

// render prints the timeline with the VoiceGateway's scaling and drain
// events merged in, seconds from its start.
func (tl *timeline) render(ctx context.Context) string {
	tl.mu.Lock()
	lines := append([]timelineLine(nil), tl.lines...)
	tl.mu.Unlock()
	for _, e := range vgwEvents(ctx, tl.start) {
		lines = append(lines, timelineLine{e.EventTime, "event " + e.Reason + ": " + e.Message})
	}
	sort.SliceStable(lines, func(i, j int) bool { return lines[i].at.Before(lines[j].at) })
	var b strings.Builder
	for _, l := range lines {
		fmt.Fprintf(&b, "t+%6.1fs  %s\n", l.at.Sub(tl.start).Seconds(), l.text)
	}
	return b.String()
}

// vgwEvent is an event about the VoiceGateway.
type vgwEvent struct {
	Reason    string    `json:"reason"`
	Message   string    `json:"message"`
	EventTime time.Time `json:"eventTime"`
}

// vgwEvents lists the scaling and drain events about the VoiceGateway
// since a moment, oldest first.
func vgwEvents(ctx context.Context, since time.Time) []vgwEvent {
	out, err := kubectl(ctx, "get", "events", "--field-selector", "involvedObject.kind=VoiceGateway", "-o", "json")
	if err != nil {
		return nil
	}
	var events struct {
		Items []vgwEvent `json:"items"`
	}
	if json.Unmarshal(out, &events) != nil {
		return nil
	}
	var kept []vgwEvent
	for _, e := range events.Items {
		switch e.Reason {
		case "ScaledUp", "ScaledDown", "DrainStarted", "DrainFinished":
			if !e.EventTime.Before(since) {
				kept = append(kept, e)
			}
		}
	}
	sort.SliceStable(kept, func(i, j int) bool { return kept[i].EventTime.Before(kept[j].EventTime) })
	return kept
}

// livePods lists the VoiceGateway's pods that are not terminating.
func livePods(ctx context.Context) ([]podInfo, error) {
	pods, err := listPods(ctx)
	if err != nil {
		return nil, err
	}
	var live []podInfo
	for _, p := range pods {
		if p.Metadata.DeletionTimestamp == nil {
			live = append(live, p)
		}
	}
	sort.Slice(live, func(i, j int) bool { return live[i].Metadata.Name < live[j].Metadata.Name })
	return live, nil
}

// deletionCosts reads each pod's deletion cost ("" for none).
func deletionCosts(ctx context.Context) (map[string]string, error) {
	out, err := kubectl(ctx, "get", "pods", "-l", "app.kubernetes.io/instance="+vgwName, "-o", "json")
	if err != nil {
		return nil, err
	}
	var list struct {
		Items []struct {
			Metadata struct {
				Name        string            `json:"name"`
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
		} `json:"items"`
	}
	if err := json.Unmarshal(out, &list); err != nil {
		return nil, err
	}
	costs := map[string]string{}
	for _, p := range list.Items {
		costs[p.Metadata.Name] = p.Metadata.Annotations[deletionCostAnnotation]
	}
	return costs, nil
}

// callers holds sessions, each stoppable on its own.
type callers struct {
	t     *testing.T
	stats *counters
	// url and mintURL are the Service's.
	url, mintURL, apiKey string
	rolling              atomic.Bool
	ready                chan struct{}
	wg                   sync.WaitGroup
	stops                []context.CancelFunc
}

func newCallers(t *testing.T, ctx context.Context, apiKey string) *callers {
	svc, err := kubectl(ctx, "get", "service", vgwName, "-o", "jsonpath={.spec.clusterIP}:{.spec.ports[0].port}")
	if err != nil {
		t.Fatal(err)
	}
	return &callers{
		t: t, apiKey: apiKey,
		url: "ws://" + string(svc) + "/v1/realtime?audio=binary", mintURL: "http://" + string(svc) + "/v1/client_tokens",
		stats: &counters{ends: map[string]int{}, errorsByCode: map[string]int{}, tokenKeys: map[string]int{}},
		ready: make(chan struct{}, 100),
	}
}

// add starts n callers, their first session on podIP when it is not
// empty, else through the Service, and waits until they are connected.
func (cs *callers) add(ctx context.Context, n int, podIP string) {
	cs.t.Helper()
	for range n {
		c := &caller{url: cs.url, mintURL: cs.mintURL, apiKey: cs.apiKey, stats: cs.stats, rolling: &cs.rolling}
		if podIP != "" {
			host := net.JoinHostPort(podIP, "8080")
			c.podURL, c.podMintURL = "ws://"+host+"/v1/realtime?audio=binary", "http://"+host+"/v1/client_tokens"
		}
		cctx, stop := context.WithCancel(ctx)
		cs.stops = append(cs.stops, stop)
		cs.wg.Add(1)
		go func() {
			defer cs.wg.Done()
			c.run(cctx, cs.ready)
		}()
		select {
		case <-cs.ready:
		case <-time.After(30 * time.Second):
			cs.t.Fatalf("a caller did not connect within 30 s")
		}
	}
}

// hangUp ends the n callers started first (each closes with 1000).
func (cs *callers) hangUp(n int) {
	n = min(n, len(cs.stops))
	for _, stop := range cs.stops[:n] {
		stop()
	}
	cs.stops = cs.stops[n:]
}

// stop ends every caller and waits for them.
func (cs *callers) stop() {
	cs.hangUp(len(cs.stops))
	cs.wg.Wait()
}

// checkNoCut fails the test unless every session ended with the client's
// own close: none cut by the gateway (1012 at a deadline), none lost.
func (cs *callers) checkNoCut(t *testing.T) {
	t.Helper()
	cs.stats.mu.Lock()
	defer cs.stats.mu.Unlock()
	for kind, n := range cs.stats.ends {
		if kind != "client close" {
			t.Errorf("%d sessions ended with %s; want only client closes", n, kind)
		}
	}
	if len(cs.stats.abnormal) > 0 {
		t.Errorf("abnormal ends: %q", cs.stats.abnormal)
	}
	t.Logf("clients: %d gateway.draining notices, %d moves (through the Service), %d failed dials; ends %v; errors %v",
		cs.stats.notices, cs.stats.moves, cs.stats.dialFailures, cs.stats.ends, cs.stats.errorsByCode)
}

func writeReport(t *testing.T, name string, report map[string]any) {
	t.Helper()
	b, _ := json.MarshalIndent(report, "", "  ")
	if err := os.WriteFile(filepath.Join(env("E2E_OUT", t.TempDir()), name), b, 0o644); err != nil {
		t.Error(err)
	}
}

// TestScaleIn: 3 pods, sessions on 2 of them only (6 and 2, opened to the
// pods' IPs), the third empty; the operator writes their deletion costs;
// `kubectl scale vgw --replicas=1` then removes the empty pod and the
// lighter one: the pod left is the busiest, and no session is cut (the 2
// on the removed pod move through the Service after their drain notice).
func TestScaleIn(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()
	apiKey := os.Getenv("E2E_API_KEY")
	if apiKey == "" {
		t.Fatal("E2E_API_KEY must be set (hack/e2e.sh sets it)")
	}
	out := env("E2E_OUT", t.TempDir())

	if _, err := kubectl(ctx, "scale", "vgw", vgwName, "--replicas=3"); err != nil {
		t.Fatal(err)
	}
	var pods []podInfo
	testkit.Eventually(t, 3*time.Minute, until("3 pods Ready, READY 3/3, no other pod", func() (bool, string) {
		all, err := listPods(ctx)
		if err != nil {
			return false, err.Error()
		}
		ready := 0
		for _, p := range all {
			if p.Metadata.DeletionTimestamp == nil && len(p.Status.ContainerStatuses) == 1 && p.Status.ContainerStatuses[0].Ready {
				ready++
			}
		}
		st, err := getVGW(ctx)
		pods, _ = livePods(ctx)
		return err == nil && ready == 3 && len(all) == 3 && st.Ready == "3/3", fmt.Sprintf("%d pods, %d ready, %+v", len(all), ready, st)
	}))
	busiest, lighter, empty := pods[0], pods[1], pods[2]
	t.Logf("pods: %s gets 6 sessions, %s 2, %s none", busiest.Metadata.Name, lighter.Metadata.Name, empty.Metadata.Name)

	tl, stopTimeline := startTimeline(ctx, t)
	cs := newCallers(t, ctx, apiKey)
	defer cs.stop()
	tl.mark("6 sessions opened to " + busiest.Metadata.Name + ", 2 to " + lighter.Metadata.Name + " (pod IPs)")
	cs.add(ctx, 6, busiest.Status.PodIP)
	cs.add(ctx, 2, lighter.Status.PodIP)
	for _, p := range []struct {
		pod  podInfo
		want int
	}{{busiest, 6}, {lighter, 2}, {empty, 0}} {
		st, err := podStatus(ctx, p.pod.Status.PodIP)
		if err != nil || st.Sessions != p.want {
			t.Fatalf("pod %s holds %d sessions (%v), want %d", p.pod.Metadata.Name, st.Sessions, err, p.want)
		}
	}
	var costs map[string]string
	// The empty pod has no cost, or 0 if it held calls of the test before.
	// The busiest pod's 6 sessions are the bucket 4, or 8 if it held 8 or
	// more before: a cost moves down a bucket only below three quarters of
	// its floor (hysteresis), and the earlier phases may have left it there.
	testkit.Eventually(t, time.Minute, until("the deletion costs 4 (or 8), 2 and 0 or none", func() (bool, string) {
		var err error
		costs, err = deletionCosts(ctx)
		busiestCost, emptyCost := costs[busiest.Metadata.Name], costs[empty.Metadata.Name]
		return err == nil && (busiestCost == "4" || busiestCost == "8") && costs[lighter.Metadata.Name] == "2" && (emptyCost == "" || emptyCost == "0"),
			fmt.Sprintf("%v %v", costs, err)
	}))
	tl.mark(fmt.Sprintf("deletion costs %v", costs))
	testkit.Eventually(t, time.Minute, until("8 sessions in the status", func() (bool, string) {
		st, err := getVGW(ctx)
		return err == nil && st.Sessions == 8, fmt.Sprintf("%+v %v", st, err)
	}))

	wctx, stopWatch := context.WithCancel(ctx)
	watchFile := filepath.Join(out, "kubectl-get-vgw-w-scale-in.txt")
	watchDone := startCapture(wctx, t, watchFile, "get", "vgw", vgwName, "-w")
	time.Sleep(time.Second)
	tl.mark("kubectl scale vgw " + vgwName + " --replicas=1")
	scaleStart := time.Now()
	if _, err := kubectl(ctx, "scale", "vgw", vgwName, "--replicas=1"); err != nil {
		t.Fatal(err)
	}
	cs.rolling.Store(true)
	testkit.Eventually(t, 3*time.Minute, until("one pod left, with all 8 sessions", func() (bool, string) {
		all, err := listPods(ctx)
		if err != nil {
			return false, err.Error()
		}
		st, err := getVGW(ctx)
		return err == nil && len(all) == 1 && st.Ready == "1/1" && st.Sessions == 8 && st.DrainingSessions == 0,
			fmt.Sprintf("%d pods, %+v %v", len(all), st, err)
	}))
	scaleTook := time.Since(scaleStart)
	tl.mark("one pod left with every session")
	time.Sleep(2 * time.Second)
	stopWatch()
	<-watchDone
	stopTimeline()

	left, err := livePods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 1 || left[0].Metadata.UID != busiest.Metadata.UID {
		t.Errorf("the pod left is %v, want the busiest, %s", left, busiest.Metadata.Name)
	}
	if st, err := podStatus(ctx, busiest.Status.PodIP); err != nil || st.Sessions != 8 {
		t.Errorf("the busiest pod holds %d sessions (%v), want all 8", st.Sessions, err)
	}
	cs.stop()
	cs.checkNoCut(t)
	cs.stats.mu.Lock()
	moves, notices := cs.stats.moves, cs.stats.notices
	cs.stats.mu.Unlock()
	if notices != 2 || moves != 2 {
		t.Errorf("%d notices and %d moves, want the 2 sessions of %s told and moved", notices, moves, lighter.Metadata.Name)
	}
	watch, _ := os.ReadFile(watchFile)
	t.Logf("kubectl get vgw %s -w during the scale-in:\n%s", vgwName, watch)
	rendered := tl.render(ctx)
	t.Logf("scale-in timeline:\n%s", rendered)
	writeReport(t, "scale-in-report.json", map[string]any{
		"busiest": busiest.Metadata.Name, "lighter": lighter.Metadata.Name, "empty": empty.Metadata.Name,
		"deletion_costs": costs, "left": left[0].Metadata.Name, "moves": moves, "notices": notices,
		"ends": cs.stats.ends, "scale_in_seconds": scaleTook.Seconds(), "timeline": strings.Split(strings.TrimSpace(rendered), "\n"),
	})
}

// TestAutoscaling: spec.autoscaling on (1–4 pods, 4 sessions per pod, a
// 30 s window). A ramp of 14 sessions through the Service raises the
// replicas to 4; the 11 oldest hang up and the replicas stay for the
// window, then fall to 1, the emptiest pods going first and the sessions
// on them moving after their drain notice, none cut; the last ones hang
// up and minReplicas stays.
func TestAutoscaling(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	apiKey := os.Getenv("E2E_API_KEY")
	if apiKey == "" {
		t.Fatal("E2E_API_KEY must be set (hack/e2e.sh sets it)")
	}
	const window = 30 * time.Second
	// The sessions of the test before have ended, as the status says.
	testkit.Eventually(t, time.Minute, until("no session", func() (bool, string) {
		st, err := getVGW(ctx)
		return err == nil && st.Sessions == 0, fmt.Sprintf("%+v %v", st, err)
	}))
	tl, stopTimeline := startTimeline(ctx, t)
	defer stopTimeline()
	tl.mark("autoscaling on: minReplicas 1, maxReplicas 4, targetSessionsPerPod 4, window 30s")
	patch := `{"spec":{"autoscaling":{"enabled":true,"minReplicas":1,"maxReplicas":4,"targetSessionsPerPod":4,"scaleDownStabilizationWindow":"30s"}}}`
	if _, err := kubectl(ctx, "patch", "vgw", vgwName, "--type", "merge", "-p", patch); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 2*time.Minute, until("the autoscaler at 1 replica, 1 pod ready", func() (bool, string) {
		st := tl.current()
		pods, err := livePods(ctx)
		return err == nil && st.Status.Autoscaling != nil && st.Spec.Replicas == 1 && st.Status.Ready == "1/1" && len(pods) == 1 &&
			st.Status.Sessions == 0, fmt.Sprintf("%s %v", st.line(len(pods)), err)
	}))

	cs := newCallers(t, ctx, apiKey)
	defer cs.stop()
	tl.mark("ramp: 14 sessions through the Service, one a second")
	rampStart := time.Now()
	for range 14 {
		cs.add(ctx, 1, "")
		time.Sleep(time.Second)
	}
	testkit.Eventually(t, 3*time.Minute, until("4 replicas ready with the 14 sessions", func() (bool, string) {
		st := tl.current()
		return st.Spec.Replicas == 4 && st.Status.Ready == "4/4" && st.Status.Sessions == 14, st.line(-1)
	}))
	upTook := time.Since(rampStart)
	tl.mark("4/4 with 14 sessions")
	time.Sleep(5 * time.Second)

	// The first callers went to the first pod; the last ones, which stay,
	// were spread over the new pods by the Service.
	tl.mark("the 11 first callers hang up; 3 stay")
	cs.hangUp(11)
	// fell is when the recommendation was first seen below 4 pods: the
	// window runs from a moment before.
	var fell time.Time
	testkit.Eventually(t, time.Minute, until("3 sessions, 1 replica recommended", func() (bool, string) {
		st := tl.current()
		a := st.Status.Autoscaling
		if fell.IsZero() && a != nil && a.RecommendedReplicas < 4 {
			fell = time.Now()
		}
		return st.Status.Sessions == 3 && a != nil && a.RecommendedReplicas == 1, st.line(-1)
	}))
	// Where the 3 calls are: the busiest pod is the one to stay.
	busiest, most, tied := "", -1, false
	if pods, err := livePods(ctx); err == nil {
		costs, _ := deletionCosts(ctx)
		var where []string
		for _, p := range pods {
			st, _ := podStatus(ctx, p.Status.PodIP)
			where = append(where, fmt.Sprintf("%s %d (cost %q)", p.Metadata.Name, st.Sessions, costs[p.Metadata.Name]))
			switch {
			case st.Sessions > most:
				busiest, most, tied = p.Metadata.Name, st.Sessions, false
			case st.Sessions == most:
				tied = true
			}
		}
		tl.mark("sessions by pod: " + strings.Join(where, ", "))
	}
	cs.rolling.Store(true)
	testkit.Eventually(t, window+2*time.Minute, until("1 pod left with the 3 sessions", func() (bool, string) {
		st := tl.current()
		pods, err := listPods(ctx)
		return err == nil && st.Spec.Replicas == 1 && len(pods) == 1 && st.Status.Ready == "1/1" && st.Status.Sessions == 3 &&
			st.Status.DrainingSessions == 0, fmt.Sprintf("%s, %d pods %v", st.line(-1), len(pods), err)
	}))
	downAfter := time.Since(fell)
	tl.mark("1 pod with the 3 sessions")
	if left, err := livePods(ctx); err == nil && len(left) == 1 && !tied && left[0].Metadata.Name != busiest {
		t.Errorf("the pod left is %s, want the busiest, %s with %d of the 3 calls", left[0].Metadata.Name, busiest, most)
	}
	cs.rolling.Store(false)
	tl.mark("the last 3 callers hang up")
	cs.hangUp(3)
	testkit.Eventually(t, time.Minute, until("no session, still 1 replica", func() (bool, string) {
		st := tl.current()
		return st.Status.Sessions == 0 && st.Spec.Replicas == 1 && st.Status.Ready == "1/1", st.line(-1)
	}))
	time.Sleep(2 * time.Second)
	stopTimeline()
	cs.stop()
	cs.checkNoCut(t)

	rendered := tl.render(ctx)
	t.Logf("autoscaling timeline:\n%s", rendered)
	var scaledUp, scaledDown int
	var firstDown time.Time
	for _, e := range vgwEvents(ctx, rampStart) {
		switch e.Reason {
		case "ScaledUp":
			scaledUp++
		case "ScaledDown":
			if scaledDown == 0 {
				firstDown = e.EventTime
			}
			scaledDown++
		}
	}
	if scaledUp == 0 || scaledDown == 0 {
		t.Fatalf("%d ScaledUp and %d ScaledDown events after the ramp began, want some of each", scaledUp, scaledDown)
	}
	// The window counts from the moment the recommendation fell, which the
	// test sees up to a sample (0.5 s) and a kubectl call late.
	heldFor := firstDown.Sub(fell)
	if heldFor < window-2*time.Second {
		t.Errorf("the first ScaledDown came %s after the recommendation was seen to fall, inside the %s window", heldFor.Round(100*time.Millisecond), window)
	}
	t.Logf("up to 4 replicas %s after the ramp began; the first scale-down %s after the recommendation fell (window %s), one pod left %s after",
		upTook.Round(100*time.Millisecond), heldFor.Round(100*time.Millisecond), window, downAfter.Round(100*time.Millisecond))
	cs.stats.mu.Lock()
	moves := cs.stats.moves
	cs.stats.mu.Unlock()
	writeReport(t, "autoscaling-report.json", map[string]any{
		"up_seconds": upTook.Seconds(), "first_scale_down_after_fall_seconds": heldFor.Seconds(),
		"one_pod_after_fall_seconds": downAfter.Seconds(), "window_seconds": window.Seconds(),
		"scaled_up_events": scaledUp, "scaled_down_events": scaledDown, "moves": moves, "ends": cs.stats.ends,
		"timeline": strings.Split(strings.TrimSpace(rendered), "\n"),
	})
}
