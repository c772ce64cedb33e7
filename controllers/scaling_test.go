package controllers

import (
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
)

func TestDeletionCostBuckets(t *testing.T) {
	tests := map[int]int32{
		-1: 0, 0: 0, 1: 1, 2: 2, 3: 2, 4: 4, 7: 4, 8: 8, 15: 8, 16: 16,
		999: 512, 1000: 512, 1024: 1024, 100000: 65536,
	}
	for sessions, want := range tests {
		if got := deletionCost(sessions); got != want {
			t.Errorf("deletionCost(%d) = %d, want %d", sessions, got, want)
		}
	}
	// More sessions never cost less: a scale-in never prefers a busier pod.
	for n := range 5000 {
		if deletionCost(n+1) < deletionCost(n) {
			t.Fatalf("deletionCost(%d) < deletionCost(%d)", n+1, n)
		}
	}
}

func costPod(name, uid, cost string, terminating bool) corev1.Pod {
	pod := corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, UID: types.UID(uid)}}
	if cost != "" {
		pod.Annotations = map[string]string{corev1.PodDeletionCost: cost}
	}
	if terminating {
		pod.DeletionTimestamp = &metav1.Time{Time: time.Unix(1, 0)}
	}
	return pod
}

func TestPlanDeletionCosts(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const interval = 30 * time.Second
	reported := func(name string, sessions int) PodReport {
		return PodReport{Name: name, Reported: true, Sessions: sessions}
	}
	tests := map[string]struct {
		pod    corev1.Pod
		report PodReport
		// last is the operator's last write on the pod, if any.
		last      *costWrite
		want      []string // "name=value"
		wantRetry time.Duration
	}{
		"an empty pod that was never written: no write, absent means 0": {
			pod: costPod("a", "u", "", false), report: reported("a", 0),
		},
		"first sessions: written at once": {
			pod: costPod("a", "u", "", false), report: reported("a", 3), want: []string{"a=2"},
		},
		"the same bucket: no write": {
			pod: costPod("a", "u", "2", false), report: reported("a", 3),
		},
		"a new bucket, last write long ago: written": {
			pod: costPod("a", "u", "2", false), report: reported("a", 5),
			last: &costWrite{uid: "u", value: "2", at: now.Add(-time.Minute)}, want: []string{"a=4"},
		},
		"a new bucket within the interval: deferred to its end": {
			pod: costPod("a", "u", "2", false), report: reported("a", 5),
			last: &costWrite{uid: "u", value: "2", at: now.Add(-10 * time.Second)}, wantRetry: 20 * time.Second,
		},
		"just written, the cache behind: nothing": {
			pod: costPod("a", "u", "2", false), report: reported("a", 5),
			last: &costWrite{uid: "u", value: "4", at: now.Add(-time.Second)},
		},
		"hovering just under a boundary it reached: kept (hysteresis)": {
			pod: costPod("a", "u", "8", false), report: reported("a", 6),
			last: &costWrite{uid: "u", value: "8", at: now.Add(-time.Hour)},
		},
		"below three quarters of the bucket: down": {
			pod: costPod("a", "u", "8", false), report: reported("a", 5),
			last: &costWrite{uid: "u", value: "8", at: now.Add(-time.Hour)}, want: []string{"a=4"},
		},
		"down two buckets at once": {
			pod: costPod("a", "u", "16", false), report: reported("a", 3), want: []string{"a=2"},
		},
		"back to empty: written 0": {
			pod: costPod("a", "u", "4", false), report: reported("a", 0), want: []string{"a=0"},
		},
		"someone else's value is set back": {
			pod: costPod("a", "u", "-100", false), report: reported("a", 0), want: []string{"a=0"},
		},
		"a pod replaced under the same name is not rate-limited by the old one": {
			pod: costPod("a", "new", "", false), report: reported("a", 9),
			last: &costWrite{uid: "old", value: "1", at: now.Add(-time.Second)}, want: []string{"a=8"},
		},
		"a terminating pod is left alone": {
			pod: costPod("a", "u", "", true), report: PodReport{Name: "a", Reported: true, Sessions: 9, Terminating: true},
		},
		"unknown sessions: left alone": {
			pod: costPod("a", "u", "8", false), report: PodReport{Name: "a"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			last := map[string]costWrite{}
			if tc.last != nil {
				last[tc.pod.Name] = *tc.last
			}
			writes, retry := planDeletionCosts([]corev1.Pod{tc.pod}, []PodReport{tc.report}, last, now, interval)
			var got []string
			for _, w := range writes {
				got = append(got, w.name+"="+w.value)
				if w.uid != tc.pod.UID {
					t.Errorf("write for uid %s, pod has %s", w.uid, tc.pod.UID)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("writes %v, want %v", got, tc.want)
			}
			wantRetry := time.Time{}
			if tc.wantRetry > 0 {
				wantRetry = now.Add(tc.wantRetry)
			}
			if !retry.Equal(wantRetry) {
				t.Errorf("retry at %v, want %v", retry, wantRetry)
			}
		})
	}
}

func autoscaled(replicas int32, modify func(*vgv1.AutoscalingSpec)) vgv1.VoiceGatewaySpec {
	vg := withCRDDefaults(&vgv1.VoiceGateway{Spec: vgv1.VoiceGatewaySpec{Replicas: ptr.To(replicas)}})
	vg.Spec.Autoscaling.Enabled = true
	if modify != nil {
		modify(&vg.Spec.Autoscaling)
	}
	return vg.Spec
}

func TestTargetSessionsPerPod(t *testing.T) {
	spec := autoscaled(1, nil)
	if got := targetSessionsPerPod(spec); got != 700 {
		t.Errorf("default target %d, want 70%% of 1000", got)
	}
	spec.Sessions.MaxPerPod = 1
	if got := targetSessionsPerPod(spec); got != 1 {
		t.Errorf("target of maxPerPod 1: %d, want at least 1", got)
	}
	spec.Autoscaling.TargetSessionsPerPod = ptr.To(int32(25))
	if got := targetSessionsPerPod(spec); got != 25 {
		t.Errorf("target %d, want the spec's 25", got)
	}
}

// TestDecideScaleFollowsACurve plays a session curve through the policy on
// a scripted clock: up at once, held for the window after the last high
// recommendation, down to what the window allows, within the bounds, and
// never down while sessions are unknown or a deletion cost is stale.
func TestDecideScaleFollowsACurve(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	window := 2 * time.Minute
	spec := autoscaled(2, func(a *vgv1.AutoscalingSpec) {
		a.MinReplicas, a.MaxReplicas = 1, 5
		a.TargetSessionsPerPod = ptr.To(int32(10))
		a.ScaleDownStabilizationWindow = &metav1.Duration{Duration: window}
	})
	w := &scaleWindow{}
	steps := []struct {
		at       time.Duration
		sessions int
		// unknown: a running pod has not reported.
		unknown bool
		// costsPending: a deletion cost waits this long for its write.
		costsPending time.Duration
		want         int32
		wantRec      int32
		wantWake     time.Duration // 0: none
	}{
		// First sight: the current 2 count as recommended now.
		{at: 0, sessions: 0, want: 2, wantRec: 1, wantWake: window},
		{at: 10 * time.Second, sessions: 35, want: 4, wantRec: 4},
		{at: 20 * time.Second, sessions: 12, want: 4, wantRec: 2, wantWake: 20*time.Second + window},
		{at: time.Minute, sessions: 55, want: 5, wantRec: 5},                                        // maxReplicas
		{at: 70 * time.Second, sessions: 5, want: 5, wantRec: 1, wantWake: 70*time.Second + window}, // 5 was in force until 70 s
		{at: 70*time.Second + window - time.Second, sessions: 6, want: 5, wantRec: 1, wantWake: 70*time.Second + window},
		{at: 70*time.Second + window, sessions: 6, unknown: true, want: 5, wantRec: 1}, // held: a pod unknown
		{at: 70*time.Second + window + time.Second, sessions: 6, costsPending: 4 * time.Second, want: 5, wantRec: 1, wantWake: 70*time.Second + window + 5*time.Second},
		{at: 70*time.Second + window + 5*time.Second, sessions: 6, want: 1, wantRec: 1},
		{at: 5 * time.Minute, sessions: 0, want: 1, wantRec: 1},
	}
	current := *spec.Replicas
	for _, step := range steps {
		now := t0.Add(step.at)
		spec.Replicas = ptr.To(current)
		in := scaleInputs{now: now, spec: spec, sessions: step.sessions, complete: !step.unknown}
		if step.costsPending > 0 {
			in.costsPendingUntil = now.Add(step.costsPending)
		}
		d := decideScale(in, w)
		if d.desired != step.want || d.recommended != step.wantRec {
			t.Fatalf("at %s with %d sessions: desired %d recommended %d, want %d and %d", step.at, step.sessions, d.desired, d.recommended, step.want, step.wantRec)
		}
		wantWake := time.Time{}
		if step.wantWake > 0 {
			wantWake = t0.Add(step.wantWake)
		}
		if !d.wakeAt.Equal(wantWake) {
			t.Errorf("at %s: wake at %v, want %v", step.at, d.wakeAt, wantWake)
		}
		if len(w.entries) > int(spec.Autoscaling.MaxReplicas) {
			t.Errorf("at %s: the window holds %d entries", step.at, len(w.entries))
		}
		current = d.desired
	}
}

// TestDecideScaleBounds: the bounds apply at once, the window
// notwithstanding.
func TestDecideScaleBounds(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	spec := autoscaled(8, func(a *vgv1.AutoscalingSpec) { a.MinReplicas, a.MaxReplicas = 2, 4 })
	if d := decideScale(scaleInputs{now: now, spec: spec, complete: true}, &scaleWindow{}); d.desired != 4 {
		t.Errorf("8 replicas over maxReplicas 4: desired %d", d.desired)
	}
	spec.Replicas = ptr.To(int32(1))
	if d := decideScale(scaleInputs{now: now, spec: spec, complete: true}, &scaleWindow{}); d.desired != 2 {
		t.Errorf("1 replica under minReplicas 2: desired %d", d.desired)
	}
	spec.Replicas = ptr.To(int32(3))
	spec.Autoscaling.ScaleDownStabilizationWindow = &metav1.Duration{}
	if d := decideScale(scaleInputs{now: now, spec: spec, complete: true}, &scaleWindow{}); d.desired != 2 {
		t.Errorf("no window: desired %d, want minReplicas at once", d.desired)
	}
}

func TestRolloutSurge(t *testing.T) {
	tests := map[string]struct {
		replicas int32
		sessions int
		want     int32
	}{
		"idle, 2 pods: one at a time":             {2, 0, 1},
		"idle, 8 pods: a quarter":                 {8, 0, 2},
		"idle, 9 pods: a quarter, rounded up":     {9, 0, 3},
		"0 pods":                                  {0, 0, 1},
		"sessions that fit a quarter":             {8, 100, 2},
		"sessions for 5 pods at the target":       {8, 5*700 - 1, 5},
		"sessions for more than all: all of them": {4, 10000, 4},
	}
	for name, tc := range tests {
		if got := rolloutSurge(tc.replicas, tc.sessions, 700); got.IntValue() != int(tc.want) {
			t.Errorf("%s: surge %s, want %d", name, got.String(), tc.want)
		}
	}
}

// TestDecideScaleClampsAWindowFromOlderBounds: a window that remembers a
// count above a maxReplicas lowered since (or below a minReplicas raised
// since) does not hold the fleet outside the bounds.
func TestDecideScaleClampsAWindowFromOlderBounds(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 0, 0, 0, time.UTC)
	spec := autoscaled(2, func(a *vgv1.AutoscalingSpec) {
		a.MinReplicas, a.MaxReplicas = 1, 10
		a.TargetSessionsPerPod = ptr.To(int32(10))
	})
	w := &scaleWindow{}
	if d := decideScale(scaleInputs{now: t0, spec: spec, sessions: 80, complete: true}, w); d.desired != 8 {
		t.Fatalf("80 sessions at 10 a pod: desired %d, want 8", d.desired)
	}
	// maxReplicas lowered to 4 while the window still holds 8.
	spec.Replicas = ptr.To(int32(8))
	spec.Autoscaling.MaxReplicas = 4
	for _, sessions := range []int{80, 10} {
		d := decideScale(scaleInputs{now: t0.Add(10 * time.Second), spec: spec, sessions: sessions, complete: true}, w)
		if d.desired != 4 {
			t.Errorf("%d sessions, 8 replicas, maxReplicas lowered to 4: desired %d, want 4", sessions, d.desired)
		}
	}
	// Inside the bounds, a pod unknown holds the fleet; outside, not.
	spec.Replicas = ptr.To(int32(6))
	if d := decideScale(scaleInputs{now: t0.Add(20 * time.Second), spec: spec, sessions: 10}, w); d.desired != 4 {
		t.Errorf("6 replicas over maxReplicas 4, a pod unknown: desired %d, want 4", d.desired)
	}
	// minReplicas raised above what is running.
	spec.Replicas = ptr.To(int32(2))
	spec.Autoscaling.MinReplicas, spec.Autoscaling.MaxReplicas = 3, 4
	if d := decideScale(scaleInputs{now: t0.Add(30 * time.Second), spec: spec, complete: true}, &scaleWindow{}); d.desired != 3 {
		t.Errorf("2 replicas under minReplicas 3: desired %d, want 3", d.desired)
	}
}

// TestDeletionCostDoesNotFlapAtABoundary: a pod whose sessions hover around
// a bucket boundary (7, 8, 7, 8 …) is written once, when it first reaches
// the bucket, however long it hovers, and once more only when its load
// really falls.
func TestDeletionCostDoesNotFlapAtABoundary(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	const interval = 30 * time.Second
	pod := costPod("a", "u", "4", false)
	last := map[string]costWrite{}
	var writes []string
	for i, sessions := range []int{7, 8, 7, 8, 7, 6, 8, 7, 6, 7, 8, 5, 4, 5} {
		now = now.Add(time.Minute) // never held back by the interval
		planned, _ := planDeletionCosts([]corev1.Pod{pod}, []PodReport{{Name: "a", Reported: true, Sessions: sessions}}, last, now, interval)
		for _, w := range planned {
			writes = append(writes, fmt.Sprintf("%d:%s", i, w.value))
			pod.Annotations[corev1.PodDeletionCost] = w.value
			last["a"] = costWrite{uid: w.uid, value: w.value, at: now}
		}
	}
	if want := []string{"1:8", "11:4"}; !slices.Equal(writes, want) {
		t.Errorf("writes (step:cost) %v, want %v", writes, want)
	}
}
