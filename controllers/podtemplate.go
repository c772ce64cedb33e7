package controllers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

// errInvalidPodTemplate is a spec.podTemplate the operator cannot use: not a
// JSON object, or a value of the wrong type for a pod template.
type errInvalidPodTemplate struct{ err error }

func (e errInvalidPodTemplate) Error() string { return e.err.Error() }
func (e errInvalidPodTemplate) Unwrap() error { return e.err }

// applyPodTemplate merges spec.podTemplate into the pod template the
// operator built, as `kubectl patch --type strategic` would (and as ECK
// merges its podTemplate): maps (labels, annotations, node selector) are
// added to, lists with a merge key are merged by it (containers, env,
// volumes, volume mounts and ports by name; topology spread constraints by
// topology key), other lists and values replace, and a null removes. A
// container named voice-server changes the server's own container; others
// are sidecars.
//
// The podTemplate is the user's raw JSON, merged as written; then what the
// drain, the rollout and the server's security depend on is set back to
// the operator's, whatever the merge did (a null, a $patch directive, a
// replacement): the selector labels and the config hash; the pods' service
// account and termination grace period; the voice-server container itself,
// with its image, command, arguments, ports, probes, preStop hook and
// security context, the memory-limit env var, and the operator's volumes
// and their mounts.
func applyPodTemplate(d *appsv1.Deployment, user *runtime.RawExtension) (err error) {
	if user == nil {
		return nil
	}
	patch := bytes.TrimSpace(user.Raw)
	if len(patch) == 0 || bytes.Equal(patch, []byte("null")) {
		return nil
	}
	var object map[string]any
	if err := json.Unmarshal(patch, &object); err != nil || object == nil {
		return errInvalidPodTemplate{fmt.Errorf("spec.podTemplate is not a JSON object")}
	}
	built := d.Spec.Template
	original, err := json.Marshal(built)
	if err != nil {
		return err
	}
	defer func() {
		// The merge walks user input; whatever it trips on is the
		// podTemplate's fault, never the operator's end.
		if r := recover(); r != nil {
			err = errInvalidPodTemplate{fmt.Errorf("spec.podTemplate cannot be merged into the pod template: %v", r)}
		}
	}()
	merged, err := strategicpatch.StrategicMergePatch(original, patch, corev1.PodTemplateSpec{})
	if err != nil {
		return errInvalidPodTemplate{fmt.Errorf("spec.podTemplate cannot be merged into the pod template: %w", err)}
	}
	var out corev1.PodTemplateSpec
	if err := json.Unmarshal(merged, &out); err != nil {
		return errInvalidPodTemplate{fmt.Errorf("spec.podTemplate is not a pod template: %w", err)}
	}
	reassertOwned(&out, &built)
	d.Spec.Template = out
	return nil
}

// reassertOwned sets back in out what the operator owns in built.
func reassertOwned(out, built *corev1.PodTemplateSpec) {
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
	out.Spec.ServiceAccountName = built.Spec.ServiceAccountName
	out.Spec.DeprecatedServiceAccount = ""
	out.Spec.TerminationGracePeriodSeconds = built.Spec.TerminationGracePeriodSeconds

	out.Spec.Volumes = mergeByName(out.Spec.Volumes, built.Spec.Volumes, func(v corev1.Volume) string { return v.Name })

	i := slices.IndexFunc(built.Spec.Containers, func(c corev1.Container) bool { return c.Name == containerName })
	if i < 0 {
		return
	}
	server := &built.Spec.Containers[i]
	j := slices.IndexFunc(out.Spec.Containers, func(c corev1.Container) bool { return c.Name == containerName })
	if j < 0 {
		// Removed by the merge: the server comes back, first.
		out.Spec.Containers = slices.Insert(out.Spec.Containers, 0, *server.DeepCopy())
		return
	}
	c := &out.Spec.Containers[j]
	c.Image, c.Command, c.Args, c.Ports = server.Image, server.Command, server.Args, server.Ports
	c.ReadinessProbe, c.LivenessProbe, c.StartupProbe, c.Lifecycle = server.ReadinessProbe, server.LivenessProbe, server.StartupProbe, server.Lifecycle
	c.SecurityContext = server.SecurityContext.DeepCopy()
	c.VolumeMounts = mergeByName(c.VolumeMounts, server.VolumeMounts, func(m corev1.VolumeMount) string { return m.Name })
	for _, e := range server.Env {
		if e.Name == memoryLimitEnv {
			c.Env = mergeByName(c.Env, []corev1.EnvVar{e}, func(e corev1.EnvVar) string { return e.Name })
		}
	}
}

// mergeByName returns have with every item of owned in it: an item of the
// same name is replaced by owned's, a missing one appended.
func mergeByName[T any](have, owned []T, name func(T) string) []T {
	for _, o := range owned {
		if i := slices.IndexFunc(have, func(h T) bool { return name(h) == name(o) }); i >= 0 {
			have[i] = o
		} else {
			have = append(have, o)
		}
	}
	return have
}
