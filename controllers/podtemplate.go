package controllers

import (
	"encoding/json"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

// applyPodTemplate merges spec.podTemplate into the pod template the
// operator built, as `kubectl patch --type strategic` would (and as ECK
// merges its podTemplate): maps (labels, annotations, node selector) are
// added to, lists with a merge key are merged by it (containers, env,
// volumes, volume mounts and ports by name; topology spread constraints by
// topology key), other lists and values replace. A container named
// voice-server changes the server's own container; others are sidecars.
//
// What the drain and the rollout depend on stays the operator's: the
// selector labels, the config hash, and the server container's image,
// command, arguments, ports, probes and preStop hook.
func applyPodTemplate(d *appsv1.Deployment, user *corev1.PodTemplateSpec) error {
	if user == nil {
		return nil
	}
	built := d.Spec.Template
	original, err := json.Marshal(built)
	if err != nil {
		return err
	}
	patch, err := json.Marshal(user)
	if err != nil {
		return err
	}
	merged, err := strategicpatch.StrategicMergePatch(original, patch, corev1.PodTemplateSpec{})
	if err != nil {
		return fmt.Errorf("spec.podTemplate cannot be merged into the pod template: %w", err)
	}
	var out corev1.PodTemplateSpec
	if err := json.Unmarshal(merged, &out); err != nil {
		return fmt.Errorf("spec.podTemplate cannot be merged into the pod template: %w", err)
	}

	if out.Labels == nil {
		out.Labels = map[string]string{}
	}
	for k, v := range built.Labels {
		out.Labels[k] = v
	}
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[AnnotationConfigHash] = built.Annotations[AnnotationConfigHash]
	var server *corev1.Container
	for i := range built.Spec.Containers {
		if built.Spec.Containers[i].Name == containerName {
			server = &built.Spec.Containers[i]
		}
	}
	for i := range out.Spec.Containers {
		c := &out.Spec.Containers[i]
		if server == nil || c.Name != containerName {
			continue
		}
		c.Image, c.Command, c.Args, c.Ports = server.Image, server.Command, server.Args, server.Ports
		c.ReadinessProbe, c.LivenessProbe, c.StartupProbe, c.Lifecycle = server.ReadinessProbe, server.LivenessProbe, server.StartupProbe, server.Lifecycle
	}
	d.Spec.Template = out
	return nil
}
