package controllers

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
)

// FieldOwnerAutoscaler is the field manager of the autoscaler's writes of
// spec.replicas (through the scale subresource), so that
// `kubectl get vgw -o yaml --show-managed-fields` says who set it, and a
// server-side apply of spec.replicas by hand conflicts with it, as it would
// with a HorizontalPodAutoscaler's.
const FieldOwnerAutoscaler = "voicegateway-autoscaler"

// defaultTargetPercent is spec.autoscaling.targetSessionsPerPod's default,
// a share of sessions.maxPerPod: a pod sized for 70% of its limit has room
// for the calls a drain moves to it, and the autoscaler adds a pod well
// before the pods refuse sessions.
const defaultTargetPercent = 70

// hpaTargetIndex indexes HorizontalPodAutoscalers by the VoiceGateway they
// scale: directly (kind VoiceGateway), or through its Deployment, which has
// the VoiceGateway's name.
const hpaTargetIndex = ".spec.scaleTargetRef.voiceGateway"

// hpaTarget is the name of the VoiceGateway a HorizontalPodAutoscaler
// scales, if any, and the kind it names.
func hpaTarget(hpa *autoscalingv2.HorizontalPodAutoscaler) (gateway, kind string) {
	ref := hpa.Spec.ScaleTargetRef
	gv, err := schema.ParseGroupVersion(ref.APIVersion)
	if err != nil {
		return "", ""
	}
	switch {
	case ref.Kind == "VoiceGateway" && gv.Group == vgv1.GroupVersion.Group,
		ref.Kind == "Deployment" && gv.Group == "apps":
		return ref.Name, ref.Kind
	}
	return "", ""
}

// targetSessionsPerPod is spec.autoscaling.targetSessionsPerPod, or its
// default: a share of sessions.maxPerPod, which a CRD marker cannot express.
func targetSessionsPerPod(spec vgv1.VoiceGatewaySpec) int32 {
	if t := spec.Autoscaling.TargetSessionsPerPod; t != nil && *t > 0 {
		return *t
	}
	return max(1, spec.Sessions.MaxPerPod*defaultTargetPercent/100)
}

// recommendReplicas is what the sessions call for: every session at most
// target per pod, within the bounds.
func recommendReplicas(sessions int, target, minReplicas, maxReplicas int32) int32 {
	need := int32(0)
	if sessions > 0 {
		need = int32((int64(sessions) + int64(target) - 1) / int64(target))
	}
	return min(max(need, minReplicas), maxReplicas)
}

// scaleWindow is the recommendations of one VoiceGateway over the
// scale-down window, as HorizontalPodAutoscaler's stabilization keeps them:
// the fleet is held at the most any recommendation within the window asked
// for. It is a monotonic queue (times rising, replicas falling), so its
// length is bounded by the distinct replica counts, not by the passes; the
// last entry is the recommendation in force now.
type scaleWindow struct {
	entries []scaleEntry
	// lastScale is when the autoscaler last changed spec.replicas, for
	// status.autoscaling.lastScaleTime: kept here, not read back from the
	// status, which the cache may hand over a pass late.
	lastScale time.Time
}

// scaleEntry is a recommendation and the last moment it was in force.
type scaleEntry struct {
	replicas int32
	until    time.Time
}

// observe records the recommendation in force from now on and returns the
// stabilized count, the most any recommendation asked for within length
// before now, and, when that is more than rec, the moment it drops.
func (w *scaleWindow) observe(now time.Time, rec int32, length time.Duration) (stabilized int32, dropsAt time.Time) {
	if n := len(w.entries); n > 0 {
		// The recommendation in force until now.
		w.entries[n-1].until = now
	}
	for len(w.entries) > 0 && w.entries[len(w.entries)-1].replicas <= rec {
		w.entries = w.entries[:len(w.entries)-1]
	}
	w.entries = append(w.entries, scaleEntry{replicas: rec, until: now})
	for len(w.entries) > 1 && !now.Before(w.entries[0].until.Add(length)) {
		w.entries = w.entries[1:]
	}
	if len(w.entries) > 1 {
		dropsAt = w.entries[0].until.Add(length)
	}
	return w.entries[0].replicas, dropsAt
}

// scaleInputs is what one autoscaling decision is made from.
type scaleInputs struct {
	now time.Time
	// spec is the defaulted spec.
	spec vgv1.VoiceGatewaySpec
	// sessions are the live sessions over all pods, draining ones too:
	// the calls a drain moves need a pod as much as the others.
	sessions int
	// complete: every running pod's sessions are known. A pod that has
	// not answered may be busy, so the fleet is not shrunk meanwhile.
	complete bool
	// costsPendingUntil, when not zero, is when a deferred deletion-cost
	// write is allowed: a scale-down waits for it, so that the ReplicaSet
	// controller removes the pods that are really the emptiest.
	costsPendingUntil time.Time
}

// scaleDecision is the autoscaler's answer for one pass.
type scaleDecision struct {
	current, desired, recommended, target int32
	// wakeAt, when not zero, is when the decision may change with no new
	// session count: the end of the window, or of a deletion-cost wait.
	wakeAt time.Time
}

// decideScale is the autoscaling policy, without I/O: up at once to what
// the sessions call for, down only to the most the window's
// recommendations called for, never below minReplicas nor above
// maxReplicas, and never down while a pod's sessions are unknown or its
// deletion cost is stale.
func decideScale(in scaleInputs, w *scaleWindow) scaleDecision {
	a := in.spec.Autoscaling
	d := scaleDecision{current: *in.spec.Replicas, target: targetSessionsPerPod(in.spec)}
	d.recommended = recommendReplicas(in.sessions, d.target, a.MinReplicas, a.MaxReplicas)
	if len(w.entries) == 0 {
		// First sight (autoscaling just switched on, or the operator just
		// started): the current count counts as recommended now, so the
		// fleet shrinks only after a whole window, whatever came before.
		w.entries = []scaleEntry{{replicas: min(max(d.current, a.MinReplicas), a.MaxReplicas), until: in.now}}
	}
	d.desired, d.wakeAt = w.observe(in.now, d.recommended, a.ScaleDownStabilizationWindow.Duration)
	// The window may remember counts from before the bounds changed (a
	// lower maxReplicas, a higher minReplicas): the bounds win over it.
	if clamped := min(max(d.desired, a.MinReplicas), a.MaxReplicas); clamped != d.desired {
		d.desired, d.wakeAt = clamped, time.Time{}
	}
	// Outside the bounds they apply at once.
	if d.desired < d.current && d.current <= a.MaxReplicas {
		switch {
		case !in.complete:
			d.desired = d.current
		case !in.costsPendingUntil.IsZero() && in.now.Before(in.costsPendingUntil):
			d.desired = d.current
			if d.wakeAt.IsZero() || in.costsPendingUntil.Before(d.wakeAt) {
				d.wakeAt = in.costsPendingUntil
			}
		}
	}
	return d
}

// autoscalers keeps the scale-down window of each autoscaled VoiceGateway.
type autoscalers struct {
	mu sync.Mutex
	// windows is dropped per VoiceGateway when it is gone or its
	// autoscaling is off, so it holds the autoscaled ones only.
	windows map[types.NamespacedName]*scaleWindow
}

func newAutoscalers() *autoscalers {
	return &autoscalers{windows: map[types.NamespacedName]*scaleWindow{}}
}

// window returns the VoiceGateway's window, new on first sight. One
// VoiceGateway is never reconciled twice at once, so its window has one
// user at a time.
func (a *autoscalers) window(gateway types.NamespacedName) *scaleWindow {
	a.mu.Lock()
	defer a.mu.Unlock()
	w := a.windows[gateway]
	if w == nil {
		w = &scaleWindow{}
		a.windows[gateway] = w
	}
	return w
}

func (a *autoscalers) forget(gateway types.NamespacedName) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.windows, gateway)
}

// checkAutoscalerConflict finds a HorizontalPodAutoscaler that would fight
// the operator over the pod count: one that scales the VoiceGateway while
// spec.autoscaling is on too, or one that scales the Deployment, whose
// replicas the operator sets back to spec.replicas. Either is reported as
// Degraded/AutoscalingConflict, and the operator does not autoscale while
// it stands. A HorizontalPodAutoscaler on the VoiceGateway alone is fine:
// that is what the scale subresource is for.
func (r *VoiceGatewayReconciler) checkAutoscalerConflict(ctx context.Context, s *scope) error {
	var hpas autoscalingv2.HorizontalPodAutoscalerList
	if err := r.Client.List(ctx, &hpas, client.InNamespace(s.gateway.Namespace),
		client.MatchingFields{hpaTargetIndex: s.gateway.Name}); err != nil {
		return fmt.Errorf("listing HorizontalPodAutoscalers: %w", err)
	}
	slices.SortFunc(hpas.Items, func(a, b autoscalingv2.HorizontalPodAutoscaler) int { return strings.Compare(a.Name, b.Name) })
	for i := range hpas.Items {
		hpa := &hpas.Items[i]
		switch _, kind := hpaTarget(hpa); {
		case kind == "Deployment":
			s.conflict = &failure{reason: ReasonAutoscalingConflict, message: fmt.Sprintf(
				"HorizontalPodAutoscaler %q scales the Deployment, whose replicas the operator sets back to spec.replicas: "+
					"point its scaleTargetRef at the VoiceGateway (kind VoiceGateway), or delete it and use spec.autoscaling", hpa.Name)}
			return nil
		case kind == "VoiceGateway" && s.gateway.Spec.Autoscaling.Enabled:
			s.conflict = &failure{reason: ReasonAutoscalingConflict, message: fmt.Sprintf(
				"HorizontalPodAutoscaler %q and spec.autoscaling both scale this VoiceGateway; the operator does not autoscale "+
					"until one goes: delete the HorizontalPodAutoscaler or set spec.autoscaling.enabled to false", hpa.Name)}
			return nil
		}
	}
	return nil
}

// autoscale decides the pod count from the sessions when
// spec.autoscaling is on, and writes it to spec.replicas through the
// scale subresource when it changed, before the Deployment is applied in
// the same pass. Decisions are events (ScaledUp, ScaledDown) and
// status.autoscaling.
func (r *VoiceGatewayReconciler) autoscale(ctx context.Context, s *scope) error {
	spec := s.gateway.Spec
	if !spec.Autoscaling.Enabled || s.conflict != nil {
		r.autoscalers.forget(s.key)
		return nil
	}
	if s.failure != nil || checkDefaulted(spec) != nil {
		// The pass cannot apply anything; the window is kept and the last
		// decision stays in the status.
		s.autoscaling = s.gateway.Status.Autoscaling.DeepCopy()
		return nil
	}
	now := r.Clock.Now()
	sessions, complete := fleetSessions(s.pods, s.reports)
	w := r.autoscalers.window(s.key)
	if prev := s.gateway.Status.Autoscaling; len(w.entries) == 0 && prev != nil && prev.LastScaleTime != nil {
		w.lastScale = prev.LastScaleTime.Time // first sight after a restart
	}
	d := decideScale(scaleInputs{
		now: now, spec: spec, sessions: sessions, complete: complete, costsPendingUntil: s.costsPendingUntil,
	}, w)
	if !d.wakeAt.IsZero() {
		r.wakeups.at(s.key, d.wakeAt)
	}
	s.autoscaling = &vgv1.AutoscalingStatus{
		DesiredReplicas:      d.desired,
		RecommendedReplicas:  d.recommended,
		TargetSessionsPerPod: d.target,
		SessionsPerPod:       int32((int64(sessions) + int64(max(d.current, 1)) - 1) / int64(max(d.current, 1))),
	}
	if !w.lastScale.IsZero() {
		s.autoscaling.LastScaleTime = metaTime(w.lastScale)
	}
	if d.desired == d.current {
		return nil
	}
	// The resourceVersion makes the write conditional on the spec this
	// decision read: a change meanwhile (autoscaling switched off) wins.
	body := fmt.Sprintf(`{"metadata":{"resourceVersion":%q},"spec":{"replicas":%d}}`, s.gateway.ResourceVersion, d.desired)
	if err := r.Client.SubResource("scale").Patch(ctx, s.gateway, client.RawPatch(types.MergePatchType, []byte(body)),
		client.WithSubResourceBody(&autoscalingv1.Scale{}), client.FieldOwner(FieldOwnerAutoscaler)); err != nil {
		if apierrors.IsConflict(err) {
			// A conflict only means this pass read an older VoiceGateway
			// than the API server has (a user's edit, the last status
			// write): no error, no event, the next pass decides again on
			// the newer one.
			s.requeueAt(0)
			return nil
		}
		s.fail(ReasonApplyFailed, "writing spec.replicas through the scale subresource failed; retrying")
		return fmt.Errorf("scaling to %d replicas: %w", d.desired, err)
	}
	s.gateway.Spec.Replicas = ptr.To(d.desired)
	w.lastScale = now
	s.autoscaling.LastScaleTime = metaTime(now)
	reason, verb := EventScaledUp, "up"
	if d.desired < d.current {
		reason, verb = EventScaledDown, "down"
	}
	note := fmt.Sprintf("Scaled %s from %d to %d pods: %d sessions, %d per pod targeted", verb, d.current, d.desired, sessions, d.target)
	if d.desired < d.current {
		note += fmt.Sprintf(", for %s no more than %d pods needed", spec.Autoscaling.ScaleDownStabilizationWindow.Duration, d.desired)
	}
	r.Recorder.Eventf(s.gateway, nil, corev1.EventTypeNormal, reason, "Scale", "%s", note)
	return nil
}

// fleetSessions sums the sessions the pods last reported, and says whether
// every running pod has reported: a pod still without an IP holds none.
func fleetSessions(pods []corev1.Pod, reports []PodReport) (sessions int, complete bool) {
	reported := map[string]bool{}
	for _, r := range reports {
		if r.Reported {
			sessions += r.Sessions
			reported[r.Name] = true
		}
	}
	complete = true
	for i := range pods {
		pod := &pods[i]
		if pod.DeletionTimestamp == nil && pod.Status.PodIP != "" && pod.Status.Phase == corev1.PodRunning && !reported[pod.Name] {
			complete = false
		}
	}
	return sessions, complete
}

// hpaRequests maps a HorizontalPodAutoscaler to the VoiceGateway it scales.
func hpaRequests(_ context.Context, obj client.Object) []reconcile.Request {
	hpa, ok := obj.(*autoscalingv2.HorizontalPodAutoscaler)
	if !ok {
		return nil
	}
	if name, _ := hpaTarget(hpa); name != "" {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Namespace: hpa.Namespace, Name: name}}}
	}
	return nil
}
