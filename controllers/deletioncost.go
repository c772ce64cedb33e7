package controllers

import (
	"context"
	"encoding/json"
	"fmt"
	"math/bits"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// DefaultDeletionCostInterval is the least time between two writes of one
// pod's deletion cost. The KEP of controller.kubernetes.io/pod-deletion-cost
// (KEP-2255) warns against frequent updates; with the cost bucketed by
// powers of two, a pod whose load is steady is not written at all, and one
// whose load swings is written at most twice a minute.
const DefaultDeletionCostInterval = 30 * time.Second

// deletionCost is the controller.kubernetes.io/pod-deletion-cost of a pod
// that holds sessions: the count rounded down to a power of two (0 for
// none; 1, 2, 4, 8 … 65536 for 1, 2–3, 4–7, 8–15 … sessions). The
// ReplicaSet controller removes the pods of lowest cost first (among pods
// equally ready), so a scale-in takes the emptiest pods, an empty one first
// of all; the buckets make the cost change only when the load doubles or
// halves, so that it is rarely written.
func deletionCost(sessions int) int32 {
	if sessions <= 0 {
		return 0
	}
	return int32(1) << (bits.Len(uint(sessions)) - 1)
}

// stickyDeletionCost is the deletion cost a pod whose cost is now current
// should have for its sessions, with hysteresis: a cost goes up as soon as
// the sessions reach the next bucket, but comes down only when they fall
// below three quarters of the current bucket's floor, so that a pod whose
// load hovers at a boundary (7, 8, 7, 8 sessions) keeps its cost instead
// of being written each interval. An empty pod always goes to 0, the first
// to be removed; a current value that is no bucket (set by someone else) is
// replaced by the plain bucket.
func stickyDeletionCost(current string, sessions int) int32 {
	want := deletionCost(sessions)
	cur, err := strconv.ParseInt(current, 10, 32)
	if err != nil || sessions <= 0 || cur <= 0 || cur&(cur-1) != 0 || int32(cur) <= want {
		return want
	}
	// Above the plain bucket: keep it while sessions >= 3/4 of it.
	if 4*int64(sessions) >= 3*cur {
		return int32(cur)
	}
	return want
}

// costWrite is one deletion cost the operator wrote on a pod.
type costWrite struct {
	uid   types.UID
	value string
	at    time.Time
}

// podCostWrite is a write the plan calls for.
type podCostWrite struct {
	name  string
	uid   types.UID
	value string
}

// planDeletionCosts compares each serving pod's deletion cost with the one
// its last reported sessions call for, without I/O: it returns the writes
// due now, and, when a pod's cost is stale but was written less than
// interval ago, the moment the next write is allowed (zero when none
// waits). A pod that is terminating, or whose sessions are unknown, is left
// as it is; a missing annotation counts as 0, the ReplicaSet controller's
// default, so a pod that never held a session is never written.
func planDeletionCosts(pods []corev1.Pod, reports []PodReport, last map[string]costWrite, now time.Time, interval time.Duration) (writes []podCostWrite, retryAt time.Time) {
	byName := make(map[string]PodReport, len(reports))
	for _, r := range reports {
		byName[r.Name] = r
	}
	for i := range pods {
		pod := &pods[i]
		report, ok := byName[pod.Name]
		if pod.DeletionTimestamp != nil || !ok || !report.Reported || report.Terminating {
			continue
		}
		current, set := pod.Annotations[corev1.PodDeletionCost]
		if !set {
			current = "0"
		}
		want := strconv.Itoa(int(stickyDeletionCost(current, report.Sessions)))
		if current == want {
			continue
		}
		if prev, wrote := last[pod.Name]; wrote && prev.uid == pod.UID && now.Before(prev.at.Add(interval)) {
			if prev.value == want {
				continue // written; the cache has not caught up yet
			}
			if next := prev.at.Add(interval); retryAt.IsZero() || next.Before(retryAt) {
				retryAt = next
			}
			continue
		}
		writes = append(writes, podCostWrite{name: pod.Name, uid: pod.UID, value: want})
	}
	return writes, retryAt
}

// deletionCosts remembers the last deletion cost written on each pod, for
// the rate limit.
type deletionCosts struct {
	interval time.Duration

	mu sync.Mutex
	// written maps a VoiceGateway to its pods' last writes; each pass keeps
	// only the pods it listed and forget drops a VoiceGateway that is gone,
	// so the map holds live pods only.
	written map[types.NamespacedName]map[string]costWrite
}

func newDeletionCosts(interval time.Duration) *deletionCosts {
	if interval <= 0 {
		interval = DefaultDeletionCostInterval
	}
	return &deletionCosts{interval: interval, written: map[types.NamespacedName]map[string]costWrite{}}
}

// snapshot returns a copy of a VoiceGateway's writes, pruned to the pods
// listed.
func (c *deletionCosts) snapshot(gateway types.NamespacedName, pods []corev1.Pod) map[string]costWrite {
	c.mu.Lock()
	defer c.mu.Unlock()
	listed := make(map[string]bool, len(pods))
	for i := range pods {
		listed[pods[i].Name] = true
	}
	out := map[string]costWrite{}
	for name, w := range c.written[gateway] {
		if listed[name] {
			out[name] = w
		} else {
			delete(c.written[gateway], name)
		}
	}
	return out
}

func (c *deletionCosts) remember(gateway types.NamespacedName, pod string, w costWrite) {
	c.mu.Lock()
	defer c.mu.Unlock()
	pods := c.written[gateway]
	if pods == nil {
		pods = map[string]costWrite{}
		c.written[gateway] = pods
	}
	pods[pod] = w
}

func (c *deletionCosts) forget(gateway types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.written, gateway)
}

// updateDeletionCosts writes the deletion cost of each pod whose sessions
// moved it to another bucket, at most once per pod per interval, and asks
// for a pass when a deferred write is allowed. A write is a JSON merge
// patch of that one annotation (and the pod's UID, so that a pod replaced
// under the same name is not written), with the operator as field owner:
// the operator's RBAC on pods is get, list, watch and patch, nothing more.
func (r *VoiceGatewayReconciler) updateDeletionCosts(ctx context.Context, s *scope) error {
	now := r.Clock.Now()
	writes, retryAt := planDeletionCosts(s.pods, s.reports, r.costs.snapshot(s.key, s.pods), now, r.costs.interval)
	if !retryAt.IsZero() {
		s.costsPendingUntil = retryAt
		r.wakeups.at(s.key, retryAt)
	}
	log := logr.FromContextOrDiscard(ctx)
	for _, w := range writes {
		body, err := json.Marshal(map[string]any{"metadata": map[string]any{
			"uid":         w.uid,
			"annotations": map[string]string{corev1.PodDeletionCost: w.value},
		}})
		if err != nil {
			return err
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: s.gateway.Namespace, Name: w.name}}
		err = r.Client.Patch(ctx, pod, client.RawPatch(types.MergePatchType, body), client.FieldOwner(ManagedBy))
		switch {
		case apierrors.IsNotFound(err), apierrors.IsInvalid(err), apierrors.IsConflict(err):
			// Gone, or replaced by a pod of the same name (the UID differs):
			// the next listing has the truth.
			continue
		case err != nil:
			return fmt.Errorf("writing the deletion cost of pod %s: %w", w.name, err)
		}
		r.costs.remember(s.key, w.name, costWrite{uid: w.uid, value: w.value, at: now})
		log.V(1).Info("Wrote a pod's deletion cost", "pod", w.name, "cost", w.value)
	}
	return nil
}
