package controllers

import (
	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// rolloutSurge is the Deployment's maxSurge, from the sessions the fleet
// holds: as many new pods at once as the sessions need at the target load
// (targetSessionsPerPod), at least a quarter of the replicas (one pod), at
// most all of them. maxUnavailable stays 0 (desiredDeployment), so an old
// pod drains only once a new one is ready and the pods accepting sessions
// never fall below spec.replicas: whatever the surge, the capacity the
// fleet had is there for the calls a drain moves. The surge decides where
// they land: with enough new, empty pods up first, the moved calls find
// room on them rather than on old pods that drain next (each move is a
// reconnect for a caller), and a loaded fleet rolls in fewer waves. An
// idle fleet rolls a quarter at a time, as before. The count changes only
// when the sessions cross a multiple of the target, so it is rarely
// written.
func rolloutSurge(replicas int32, sessions int, target int32) intstr.IntOrString {
	quarter := max(1, (replicas+3)/4)
	need := int32(0)
	if sessions > 0 && target > 0 {
		need = int32((int64(sessions) + int64(target) - 1) / int64(target))
	}
	return intstr.FromInt32(min(max(need, quarter), max(replicas, 1)))
}

// setRolloutSurge sets a desired Deployment's maxSurge.
func setRolloutSurge(d *appsv1.Deployment, surge intstr.IntOrString) {
	if ru := d.Spec.Strategy.RollingUpdate; ru != nil {
		ru.MaxSurge = &surge
	}
}
