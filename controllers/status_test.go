package controllers

import (
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
	"github.com/voicegateway/voicegateway/server/admin/adminapi"
)

func deployment(generation, observed int64, replicas, ready, updated int32, conditions ...appsv1.DeploymentCondition) *appsv1.Deployment {
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Generation: generation},
		Status: appsv1.DeploymentStatus{
			ObservedGeneration: observed, Replicas: replicas, ReadyReplicas: ready, UpdatedReplicas: updated,
			Conditions: conditions,
		},
	}
}

func TestComputeStatusConditions(t *testing.T) {
	deadline := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := map[string]struct {
		in statusInputs
		// want maps each condition type to "Status/Reason".
		want map[string]string
	}{
		"nothing applied yet": {
			in: statusInputs{desiredReplicas: 2},
			want: map[string]string{
				vgv1.ConditionAvailable: "False/NoPodReady", vgv1.ConditionProgressing: "True/Creating", vgv1.ConditionDegraded: "False/AsExpected",
			},
		},
		"deployment not yet observed": {
			in: statusInputs{desiredReplicas: 2, deployment: deployment(2, 1, 2, 2, 2)},
			want: map[string]string{
				vgv1.ConditionAvailable: "True/AllPodsReady", vgv1.ConditionProgressing: "True/RollingOut",
			},
		},
		"rolling out: old pods left": {
			in: statusInputs{desiredReplicas: 2, deployment: deployment(2, 2, 3, 3, 1)},
			want: map[string]string{
				vgv1.ConditionAvailable: "True/AllPodsReady", vgv1.ConditionProgressing: "True/RollingOut",
			},
		},
		"draining after the rollout": {
			in: statusInputs{desiredReplicas: 2, deployment: deployment(2, 2, 2, 2, 2),
				pods: []PodReport{{Name: "old", Terminating: true, Reported: true, Sessions: 4, DrainDeadline: &deadline}}},
			want: map[string]string{vgv1.ConditionProgressing: "True/Draining"},
		},
		"waiting for pods": {
			in: statusInputs{desiredReplicas: 3, deployment: deployment(2, 2, 3, 1, 3)},
			want: map[string]string{
				vgv1.ConditionAvailable: "True/SomePodsReady", vgv1.ConditionProgressing: "True/WaitingForPods",
			},
		},
		"complete": {
			in: statusInputs{desiredReplicas: 2, deployment: deployment(2, 2, 2, 2, 2)},
			want: map[string]string{
				vgv1.ConditionAvailable: "True/AllPodsReady", vgv1.ConditionProgressing: "False/Complete", vgv1.ConditionDegraded: "False/AsExpected",
			},
		},
		"scaled to zero": {
			in:   statusInputs{desiredReplicas: 0, deployment: deployment(2, 2, 0, 0, 0)},
			want: map[string]string{vgv1.ConditionAvailable: "False/ScaledToZero", vgv1.ConditionProgressing: "False/Complete"},
		},
		"stalled rollout": {
			in: statusInputs{desiredReplicas: 2, deployment: deployment(2, 2, 3, 2, 1, appsv1.DeploymentCondition{
				Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded"})},
			want: map[string]string{vgv1.ConditionProgressing: "False/RolloutStalled", vgv1.ConditionDegraded: "True/RolloutStalled"},
		},
		"pods cannot be created": {
			in: statusInputs{desiredReplicas: 2, deployment: deployment(2, 2, 0, 0, 0, appsv1.DeploymentCondition{
				Type: appsv1.DeploymentReplicaFailure, Status: corev1.ConditionTrue, Message: "quota exceeded"})},
			want: map[string]string{vgv1.ConditionDegraded: "True/ReplicaFailure"},
		},
		"a phase failed": {
			in:   statusInputs{desiredReplicas: 2, failure: &failure{reason: ReasonSecretNotFound, message: "m"}},
			want: map[string]string{vgv1.ConditionDegraded: "True/SecretNotFound"},
		},
	}
	now := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tc.in.generation = 2
			st := computeStatus(vgv1.VoiceGatewayStatus{ObservedGeneration: 1}, tc.in, now)
			for condType, want := range tc.want {
				c := meta.FindStatusCondition(st.Conditions, condType)
				if c == nil {
					t.Fatalf("no %s", condType)
				}
				if got := string(c.Status) + "/" + c.Reason; got != want {
					t.Errorf("%s = %s (%s), want %s", condType, got, c.Message, want)
				}
				if c.ObservedGeneration != 2 {
					t.Errorf("%s observedGeneration %d", condType, c.ObservedGeneration)
				}
			}
			wantObserved := int64(2)
			if tc.in.failure != nil {
				wantObserved = 1
			}
			if st.ObservedGeneration != wantObserved {
				t.Errorf("observedGeneration = %d, want %d", st.ObservedGeneration, wantObserved)
			}
		})
	}
}

func TestComputeStatusSessions(t *testing.T) {
	drainDeadline := time.Date(2026, 1, 2, 3, 4, 5, 600_000_000, time.UTC)
	deletion := time.Date(2026, 1, 2, 3, 5, 0, 0, time.UTC)
	started := time.Date(2026, 1, 2, 3, 3, 0, 0, time.UTC)
	in := statusInputs{
		generation: 1, desiredReplicas: 2, deployment: deployment(1, 1, 2, 2, 2),
		pods: []PodReport{
			{Name: "a", Reported: true, Sessions: 10},
			{Name: "b", Reported: true, Sessions: 0, Terminating: true, DeletionDeadline: &deletion},
			{Name: "c", Reported: true, Sessions: 3, Terminating: true, Draining: true, DrainStarted: &started, DrainDeadline: &drainDeadline, DeletionDeadline: &deletion},
			{Name: "d", Reported: true, Sessions: 2, Terminating: true, DeletionDeadline: &deletion},
			{Name: "never-answered", Sessions: 99},
		},
	}
	st := computeStatus(vgv1.VoiceGatewayStatus{}, in, metav1.Now())
	if st.Sessions != 15 || st.DrainingSessions != 5 {
		t.Errorf("sessions %d draining %d, want 15 and 5 (a pod that never answered counts nothing)", st.Sessions, st.DrainingSessions)
	}
	if len(st.Draining) != 2 {
		t.Fatalf("draining = %+v, want c and d (b has no sessions left)", st.Draining)
	}
	c, d := st.Draining[0], st.Draining[1]
	if c.Pod != "c" || c.Sessions != 3 || !c.Deadline.Time.Equal(drainDeadline.Truncate(time.Second)) || !c.Since.Time.Equal(started) {
		t.Errorf("c = %+v: want the server's own deadline", c)
	}
	if d.Pod != "d" || !d.Deadline.Time.Equal(deletion) || d.Since != nil {
		t.Errorf("d = %+v: before its drain begins, the deadline is the pod's deletion time", d)
	}
	if st.Ready != "2/2" {
		t.Errorf("ready = %q", st.Ready)
	}
}

// TestComputeStatusIsStable: computing again from the same inputs, later,
// gives an equal status, so nothing is written.
func TestComputeStatusIsStable(t *testing.T) {
	in := statusInputs{generation: 1, desiredReplicas: 2, deployment: deployment(1, 1, 2, 2, 2),
		pods: []PodReport{{Name: "a", Reported: true, Sessions: 1}}}
	first := computeStatus(vgv1.VoiceGatewayStatus{}, in, metav1.NewTime(time.Unix(1000, 0)))
	second := computeStatus(first, in, metav1.NewTime(time.Unix(2000, 0)))
	if !equality.Semantic.DeepEqual(first, second) {
		t.Errorf("status changed with time alone:\n%+v\n%+v", first, second)
	}
	in.pods[0].Sessions = 2
	third := computeStatus(second, in, metav1.NewTime(time.Unix(3000, 0)))
	for _, c := range third.Conditions {
		if !c.LastTransitionTime.Equal(&metav1.Time{Time: time.Unix(1000, 0)}) {
			t.Errorf("%s lastTransitionTime moved without a status change", c.Type)
		}
	}
}

func TestDrainEvents(t *testing.T) {
	since := metav1.NewTime(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	deadline := metav1.NewTime(time.Date(2026, 1, 1, 0, 1, 0, 0, time.UTC))
	now := since.Add(42 * time.Second)
	prev := []vgv1.DrainingPod{
		{Pod: "ended", Sessions: 1, Since: &since},
		{Pod: "killed", Sessions: 4, Since: &since},
		{Pod: "still", Sessions: 2, Since: &since},
	}
	next := []vgv1.DrainingPod{
		{Pod: "still", Sessions: 1, Since: &since},
		{Pod: "new", Sessions: 7, Deadline: &deadline},
	}
	reports := []PodReport{{Name: "ended"}, {Name: "still"}, {Name: "new"}, {Name: "exited", Stopped: true}}
	prev = append(prev, vgv1.DrainingPod{Pod: "exited", Sessions: 2, Since: &since})
	// Stopped before the deadline: its last calls ended between two polls.
	later := metav1.NewTime(now.Add(time.Second))
	reports = append(reports, PodReport{Name: "early", Stopped: true}, PodReport{Name: "empty", Stopped: true}, PodReport{Name: "late", Stopped: true})
	prev = append(prev, vgv1.DrainingPod{Pod: "early", Sessions: 3, Since: &since, Deadline: &later})
	// Stopped with none reported: nothing was cut.
	prev = append(prev, vgv1.DrainingPod{Pod: "empty", Sessions: 0, Since: &since})
	// Stopped at its deadline with sessions: cut.
	at := metav1.NewTime(now)
	prev = append(prev, vgv1.DrainingPod{Pod: "late", Sessions: 5, Since: &since, Deadline: &at})
	got := drainEvents(prev, next, reports, now)
	want := []drainEvent{
		{EventDrainFinished, "Pod early drained in 42s: it stopped before its deadline, its sessions ended", false},
		{EventDrainFinished, "Pod empty drained in 42s: all its sessions ended", false},
		{EventDrainFinished, "Pod ended drained in 42s: all its sessions ended", false},
		{EventDrainFinished, "Pod exited stopped after draining for 42s; it last reported 2 sessions open", true},
		{EventDrainFinished, "Pod killed stopped after draining for 42s; it last reported 4 sessions open", true},
		{EventDrainFinished, "Pod late stopped after draining for 42s; it last reported 5 sessions open", true},
		{EventDrainStarted, "Pod new began draining with 7 sessions, deadline 2026-01-01T00:01:00Z", false},
	}
	if len(got) != len(want) {
		t.Fatalf("events = %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
	for _, e := range got {
		if strings.Contains(e.message, "%!") {
			t.Errorf("bad format: %s", e.message)
		}
	}
}

func TestFleetMembership(t *testing.T) {
	pod := func(name string, members int, digest string) PodReport {
		return PodReport{Name: name, Reported: true, Cluster: &adminapi.Cluster{Members: members, MembersDigest: digest, Settled: true}}
	}
	tests := map[string]struct {
		pods []PodReport
		want *vgv1.FleetMembership
	}{
		"no pod reports gossip": {pods: []PodReport{{Name: "a", Reported: true}}},
		"all see all":           {pods: []PodReport{pod("a", 3, "x"), pod("b", 3, "x"), pod("c", 3, "x")}, want: &vgv1.FleetMembership{Members: 3, Reporting: 3, Agree: true}},
		"one sees another fleet": {
			pods: []PodReport{pod("a", 3, "x"), pod("b", 3, "x"), pod("c", 1, "y")},
			want: &vgv1.FleetMembership{Members: 1, Reporting: 3},
		},
		"same view, a pod missing from it": {
			pods: []PodReport{pod("a", 2, "x"), pod("b", 2, "x"), pod("c", 2, "x")},
			want: &vgv1.FleetMembership{Members: 2, Reporting: 3},
		},
		"stopped pods do not count": {
			pods: []PodReport{pod("a", 2, "x"), pod("b", 2, "x"), {Name: "c", Reported: true, Stopped: true, Terminating: true}},
			want: &vgv1.FleetMembership{Members: 2, Reporting: 2, Agree: true},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := fleetMembership(tc.pods); !equality.Semantic.DeepEqual(got, tc.want) {
				t.Errorf("fleetMembership = %+v, want %+v", got, tc.want)
			}
		})
	}
}
