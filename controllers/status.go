package controllers

import (
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
	"github.com/voicegateway/voicegateway/server/fleet"
)

// Condition reasons. They are constants so that users and alerts can match
// on them; the messages beside them name no timestamps.
const (
	// Available
	ReasonAllPodsReady  = "AllPodsReady"
	ReasonSomePodsReady = "SomePodsReady"
	ReasonNoPodReady    = "NoPodReady"
	ReasonScaledToZero  = "ScaledToZero"

	// Progressing
	ReasonCreating       = "Creating"
	ReasonRollingOut     = "RollingOut"
	ReasonDraining       = "Draining"
	ReasonWaitingForPods = "WaitingForPods"
	ReasonComplete       = "Complete"
	ReasonRolloutStalled = "RolloutStalled"

	// Degraded
	ReasonAsExpected  = "AsExpected"
	ReasonInvalidSpec = "InvalidSpec"
	// ReasonInvalidPodTemplate: spec.podTemplate is not a JSON object, or
	// holds a value of the wrong type for a pod template.
	ReasonInvalidPodTemplate = "InvalidPodTemplate"
	ReasonSecretNotFound     = "SecretNotFound"
	ReasonApplyFailed        = "ApplyFailed"
	ReasonReplicaFailure     = "ReplicaFailure"
	// ReasonFleetSecretNotOwned: a Secret has the fleet Secret's name and
	// is not controlled by the VoiceGateway.
	ReasonFleetSecretNotOwned = "FleetSecretNotOwned"
	// ReasonInvalidFleetSecret: the Secret named in spec.auth.fleetSecretRef
	// lacks a file or holds an invalid one.
	ReasonInvalidFleetSecret = "InvalidFleetSecret"
	// ReasonAutoscalingConflict: a HorizontalPodAutoscaler would fight the
	// operator over the pod count (autoscaler.go).
	ReasonAutoscalingConflict = "AutoscalingConflict"
)

// Event reasons.
const (
	EventDrainStarted  = "DrainStarted"
	EventDrainFinished = "DrainFinished"
	// EventScaledUp and EventScaledDown: the session autoscaler changed
	// spec.replicas; the note has the counts and the sessions.
	EventScaledUp   = "ScaledUp"
	EventScaledDown = "ScaledDown"
)

// failure is why a reconcile pass could not make the cluster match the
// spec; it becomes the Degraded condition.
type failure struct {
	reason  string
	message string
}

// statusInputs is everything the status is computed from.
type statusInputs struct {
	generation      int64
	desiredReplicas int32
	selector        string
	// deployment is nil until it exists in the cache.
	deployment *appsv1.Deployment
	pods       []PodReport
	// failure is nil when every phase succeeded.
	failure *failure
	// fleet is nil when no valid fleet Secret was found; the status then
	// keeps naming the last one.
	fleet *fleetState
	// conflict is a HorizontalPodAutoscaler that would fight the operator.
	conflict *failure
	// autoscaling is this pass's autoscaling decision; nil when
	// spec.autoscaling is off or refused.
	autoscaling *vgv1.AutoscalingStatus
}

// computeStatus derives the whole status from its inputs and the previous
// status, without I/O. A condition keeps its lastTransitionTime while its
// status does not change, so an unchanged world yields an equal status and
// no write.
func computeStatus(prev vgv1.VoiceGatewayStatus, in statusInputs, now metav1.Time) vgv1.VoiceGatewayStatus {
	next := vgv1.VoiceGatewayStatus{
		ObservedGeneration: prev.ObservedGeneration,
		Selector:           in.selector,
		Conditions:         slices.Clone(prev.Conditions),
		FleetSecretName:    prev.FleetSecretName,
		GeneratedAPIKey:    prev.GeneratedAPIKey,
	}
	if f := in.fleet; f != nil {
		next.FleetSecretName = f.secretName
		next.GeneratedAPIKey = nil
		if f.generatedAPIKey {
			next.GeneratedAPIKey = &vgv1.SecretKeyRef{Name: f.secretName, Key: fleet.APIKeysFile}
		}
	}
	if in.failure == nil {
		next.ObservedGeneration = in.generation
	}
	if d := in.deployment; d != nil {
		next.Replicas = d.Status.Replicas
		next.ReadyReplicas = d.Status.ReadyReplicas
		next.UpdatedReplicas = d.Status.UpdatedReplicas
	}
	next.Ready = fmt.Sprintf("%d/%d", next.ReadyReplicas, in.desiredReplicas)
	next.Autoscaling = in.autoscaling.DeepCopy()

	for _, pod := range in.pods {
		if !pod.Reported {
			continue
		}
		next.Sessions += int32(pod.Sessions)
		if (pod.Terminating || pod.Draining) && pod.Sessions > 0 {
			next.DrainingSessions += int32(pod.Sessions)
			next.Draining = append(next.Draining, drainingPod(pod))
		}
	}

	next.Fleet = fleetMembership(in.pods)

	for _, c := range []metav1.Condition{
		availableCondition(in, next),
		progressingCondition(in, next),
		degradedCondition(in),
	} {
		c.ObservedGeneration = in.generation
		c.LastTransitionTime = now
		meta.SetStatusCondition(&next.Conditions, c)
	}
	return next
}

// fleetMembership compares what the pods that answer (draining ones too:
// they gossip until they exit) see of the gossip: they agree when each sees
// the same members (the same digest of their names), as many as there are
// pods reporting.
func fleetMembership(pods []PodReport) *vgv1.FleetMembership {
	var fm *vgv1.FleetMembership
	digest := ""
	for _, pod := range pods {
		if !pod.Reported || pod.Stopped || pod.Cluster == nil {
			continue
		}
		c := pod.Cluster
		if fm == nil {
			fm = &vgv1.FleetMembership{Members: int32(c.Members), Agree: true}
			digest = c.MembersDigest
		}
		fm.Reporting++
		if c.MembersDigest != digest {
			fm.Agree = false
		}
		fm.Members = min(fm.Members, int32(c.Members))
	}
	if fm != nil && fm.Members != fm.Reporting {
		fm.Agree = false
	}
	return fm
}

func drainingPod(pod PodReport) vgv1.DrainingPod {
	entry := vgv1.DrainingPod{Pod: pod.Name, Sessions: int32(pod.Sessions)}
	switch {
	case pod.DrainDeadline != nil:
		entry.Deadline = metaTime(*pod.DrainDeadline)
	case pod.DeletionDeadline != nil:
		// The server has not begun its drain yet (its preStop hook has
		// not run): the kubelet's kill time is the latest it can end.
		entry.Deadline = metaTime(*pod.DeletionDeadline)
	}
	if pod.DrainStarted != nil {
		entry.Since = metaTime(*pod.DrainStarted)
	}
	return entry
}

// metaTime keeps second precision, as the API server stores it, so that a
// status read back compares equal to the one computed.
func metaTime(t time.Time) *metav1.Time {
	mt := metav1.NewTime(t.Truncate(time.Second))
	return &mt
}

func availableCondition(in statusInputs, st vgv1.VoiceGatewayStatus) metav1.Condition {
	c := metav1.Condition{Type: vgv1.ConditionAvailable}
	switch {
	case in.desiredReplicas == 0:
		c.Status, c.Reason = metav1.ConditionFalse, ReasonScaledToZero
		c.Message = "spec.replicas is 0: no pod accepts sessions"
	case st.ReadyReplicas == 0:
		c.Status, c.Reason = metav1.ConditionFalse, ReasonNoPodReady
		c.Message = "no pod is ready to accept sessions"
	case st.ReadyReplicas < in.desiredReplicas:
		c.Status, c.Reason = metav1.ConditionTrue, ReasonSomePodsReady
		c.Message = fmt.Sprintf("%d of %d pods accept sessions", st.ReadyReplicas, in.desiredReplicas)
	default:
		c.Status, c.Reason = metav1.ConditionTrue, ReasonAllPodsReady
		c.Message = fmt.Sprintf("all %d pods accept sessions", in.desiredReplicas)
	}
	return c
}

func progressingCondition(in statusInputs, st vgv1.VoiceGatewayStatus) metav1.Condition {
	c := metav1.Condition{Type: vgv1.ConditionProgressing, Status: metav1.ConditionTrue}
	d := in.deployment
	switch {
	case d == nil:
		c.Reason, c.Message = ReasonCreating, "the Deployment is being created"
	case rolloutStalled(d):
		c.Status, c.Reason = metav1.ConditionFalse, ReasonRolloutStalled
		c.Message = "the rollout made no progress within the Deployment's progress deadline"
	case d.Status.ObservedGeneration < d.Generation:
		c.Reason, c.Message = ReasonRollingOut, "the Deployment controller has not yet acted on the latest spec"
	case st.UpdatedReplicas < in.desiredReplicas || st.Replicas > st.UpdatedReplicas:
		c.Reason = ReasonRollingOut
		c.Message = fmt.Sprintf("%d of %d pods run the current spec", st.UpdatedReplicas, in.desiredReplicas)
	case len(st.Draining) > 0:
		c.Reason = ReasonDraining
		c.Message = fmt.Sprintf("%d terminating pods still hold sessions", len(st.Draining))
	case st.ReadyReplicas < in.desiredReplicas:
		c.Reason = ReasonWaitingForPods
		c.Message = fmt.Sprintf("%d of %d pods are ready", st.ReadyReplicas, in.desiredReplicas)
	default:
		c.Status, c.Reason = metav1.ConditionFalse, ReasonComplete
		c.Message = "every pod runs the current spec and is ready"
	}
	return c
}

func degradedCondition(in statusInputs) metav1.Condition {
	c := metav1.Condition{Type: vgv1.ConditionDegraded, Status: metav1.ConditionTrue}
	switch {
	case in.failure != nil:
		c.Reason, c.Message = in.failure.reason, in.failure.message
	case in.conflict != nil:
		c.Reason, c.Message = in.conflict.reason, in.conflict.message
	case in.deployment != nil && rolloutStalled(in.deployment):
		c.Reason = ReasonRolloutStalled
		c.Message = "the rollout made no progress within the Deployment's progress deadline; see the Deployment's events"
	case in.deployment != nil && replicaFailure(in.deployment) != "":
		c.Reason = ReasonReplicaFailure
		c.Message = "the Deployment cannot create pods: " + replicaFailure(in.deployment)
	default:
		c.Status, c.Reason = metav1.ConditionFalse, ReasonAsExpected
		c.Message = "the pods match the spec"
	}
	return c
}

func rolloutStalled(d *appsv1.Deployment) bool {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentProgressing && c.Status == corev1.ConditionFalse &&
			c.Reason == "ProgressDeadlineExceeded" {
			return true
		}
	}
	return false
}

func replicaFailure(d *appsv1.Deployment) string {
	for _, c := range d.Status.Conditions {
		if c.Type == appsv1.DeploymentReplicaFailure && c.Status == corev1.ConditionTrue {
			return c.Message
		}
	}
	return ""
}

// drainEvent is one event to record about a pod's drain.
type drainEvent struct {
	reason  string
	message string
	// sessionsLeft: a DrainFinished whose pod went with sessions open.
	sessionsLeft bool
}

// drainEvents compares the draining pods of two statuses: a pod that
// appears began to drain; a pod that leaves finished, either because its
// sessions ended (its server still answers, with none) or because its
// server stopped or the pod is gone (then the sessions it last reported
// either ended just before or were closed at the deadline). The events are
// sorted by pod name.
func drainEvents(prev, next []vgv1.DrainingPod, reports []PodReport, now time.Time) []drainEvent {
	type podEvent struct {
		pod string
		drainEvent
	}
	var events []podEvent
	before := map[string]vgv1.DrainingPod{}
	for _, p := range prev {
		before[p.Pod] = p
	}
	after := map[string]bool{}
	for _, p := range next {
		after[p.Pod] = true
		if _, ok := before[p.Pod]; ok {
			continue
		}
		deadline := "unknown"
		if p.Deadline != nil {
			deadline = p.Deadline.UTC().Format(time.RFC3339)
		}
		events = append(events, podEvent{p.Pod, drainEvent{reason: EventDrainStarted,
			message: fmt.Sprintf("Pod %s began draining with %d sessions, deadline %s", p.Pod, p.Sessions, deadline)}})
	}
	answering := map[string]bool{}
	for _, r := range reports {
		answering[r.Name] = !r.Stopped
	}
	for _, p := range prev {
		if after[p.Pod] {
			continue
		}
		took := "an unknown time"
		if p.Since != nil {
			took = now.Sub(p.Since.Time).Round(time.Second).String()
		}
		message := fmt.Sprintf("Pod %s drained in %s: all its sessions ended", p.Pod, took)
		// A server that stopped answering (or a pod gone) before its
		// deadline exited because its last sessions ended between two
		// polls: a draining server leaves early only when it is empty.
		// Sessions are left only when it went at or after the deadline
		// (or with the deadline unknown) still reporting some.
		left := !answering[p.Pod] && p.Sessions > 0 && (p.Deadline == nil || !now.Before(p.Deadline.Time))
		switch {
		case left:
			message = fmt.Sprintf("Pod %s stopped after draining for %s; it last reported %d sessions open", p.Pod, took, p.Sessions)
		case !answering[p.Pod] && p.Sessions > 0:
			message = fmt.Sprintf("Pod %s drained in %s: it stopped before its deadline, its sessions ended", p.Pod, took)
		}
		events = append(events, podEvent{p.Pod, drainEvent{reason: EventDrainFinished, message: message, sessionsLeft: left}})
	}
	slices.SortStableFunc(events, func(a, b podEvent) int { return strings.Compare(a.pod, b.pod) })
	out := make([]drainEvent, len(events))
	for i, e := range events {
		out[i] = e.drainEvent
	}
	return out
}
