package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"sync"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// AnnotationTemplateHash, on a Deployment, is the hash of the pod template
// the operator last applied, so that the surge chosen for that template is
// kept until the template changes, across operator restarts too.
const AnnotationTemplateHash = "voicegateway.dev/template-hash"

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
// idle fleet rolls a quarter at a time, as before. It is chosen when the
// pod template changes (chooseSurge), so it is written with a rollout,
// never because the sessions moved.
func rolloutSurge(replicas int32, sessions int, target int32) intstr.IntOrString {
	quarter := max(1, (replicas+3)/4)
	need := int32(0)
	if sessions > 0 && target > 0 {
		need = int32((int64(sessions) + int64(target) - 1) / int64(target))
	}
	return intstr.FromInt32(min(max(need, quarter), max(replicas, 1)))
}

// templateHash is the hash of a desired Deployment's pod template.
func templateHash(d *appsv1.Deployment) string {
	b, err := json.Marshal(d.Spec.Template)
	if err != nil {
		return ""
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// surgeChoice is the surge chosen for one pod template.
type surgeChoice struct {
	template string
	surge    intstr.IntOrString
}

// surges remembers the surge chosen for each VoiceGateway's pod template,
// so that the Deployment's maxSurge changes only with a rollout: a
// Deployment spec rewritten at every session poll would be a write per
// pass for nothing (the surge matters only while a rollout runs).
type surges struct {
	mu sync.Mutex
	// chosen is dropped per VoiceGateway when it is gone.
	chosen map[types.NamespacedName]surgeChoice
}

func newSurges() *surges {
	return &surges{chosen: map[types.NamespacedName]surgeChoice{}}
}

func (s *surges) forget(gateway types.NamespacedName) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.chosen, gateway)
}

// choose sets a desired Deployment's template-hash annotation and its
// maxSurge: the one chosen before for the same pod template (remembered
// here, or read from the Deployment in the cluster, current, after a
// restart), or, when the template is new (a rollout begins), the one the
// sessions call for now.
func (s *surges) choose(gateway types.NamespacedName, desired, current *appsv1.Deployment, fresh func() intstr.IntOrString) {
	hash := templateHash(desired)
	if desired.Annotations == nil {
		desired.Annotations = map[string]string{}
	}
	desired.Annotations[AnnotationTemplateHash] = hash
	s.mu.Lock()
	defer s.mu.Unlock()
	choice, ok := s.chosen[gateway]
	if !ok || choice.template != hash {
		choice = surgeChoice{template: hash, surge: fresh()}
		if current != nil && current.Annotations[AnnotationTemplateHash] == hash && current.Spec.Strategy.RollingUpdate != nil &&
			current.Spec.Strategy.RollingUpdate.MaxSurge != nil {
			choice.surge = *current.Spec.Strategy.RollingUpdate.MaxSurge
		}
		s.chosen[gateway] = choice
	}
	if ru := desired.Spec.Strategy.RollingUpdate; ru != nil {
		surge := choice.surge
		ru.MaxSurge = &surge
	}
}
