package controllers

import (
	"errors"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"
)

// TestPodTemplateKeepsWhatTheOperatorOwns: nulls, $patch directives and
// replacements in spec.podTemplate cannot take away the voice-server
// container or what the operator owns in the pods; what else they say
// applies.
func TestPodTemplateKeepsWhatTheOperatorOwns(t *testing.T) {
	tests := map[string]string{
		"labels only":           `metadata: {labels: {team: voice}}`,
		"containers null":       `spec: {containers: null}`,
		"containers replaced":   `spec: {containers: [{name: sidecar, image: s}, {$patch: replace}]}`,
		"server deleted":        `spec: {containers: [{name: voice-server, $patch: delete}]}`,
		"nulls in the server":   `spec: {containers: [{name: voice-server, securityContext: null, env: null, volumeMounts: null, image: evil}]}`,
		"volumes null":          `spec: {volumes: null}`,
		"volumes replaced":      `spec: {volumes: [{name: fleet, emptyDir: {}}, {name: extra, emptyDir: {}}]}`,
		"owned pod fields":      `spec: {serviceAccountName: other, serviceAccount: other, terminationGracePeriodSeconds: 1}`,
		"memory env overridden": `spec: {containers: [{name: voice-server, env: [{name: VOICEGATEWAY_MEMORY_LIMIT, value: "1"}]}]}`,
		"metadata null":         `metadata: null`,
	}
	for name, podTemplate := range tests {
		t.Run(name, func(t *testing.T) {
			d := desiredDeployment(testGateway(nil), BuildOptions{DefaultImage: "img"}, "hash")
			built := d.Spec.Template.DeepCopy()
			raw, err := yaml.YAMLToJSON([]byte(podTemplate))
			if err != nil {
				t.Fatal(err)
			}
			if err := applyPodTemplate(d, &runtime.RawExtension{Raw: raw}); err != nil {
				t.Fatal(err)
			}
			got := d.Spec.Template
			for k, v := range built.Labels {
				if got.Labels[k] != v {
					t.Errorf("label %s=%q, want %q", k, got.Labels[k], v)
				}
			}
			if got.Annotations[AnnotationConfigHash] != "hash" {
				t.Errorf("config hash %q", got.Annotations[AnnotationConfigHash])
			}
			if got.Spec.ServiceAccountName != built.Spec.ServiceAccountName || got.Spec.DeprecatedServiceAccount != "" ||
				*got.Spec.TerminationGracePeriodSeconds != *built.Spec.TerminationGracePeriodSeconds {
				t.Errorf("service account %q/%q, grace %d: want the operator's", got.Spec.ServiceAccountName,
					got.Spec.DeprecatedServiceAccount, *got.Spec.TerminationGracePeriodSeconds)
			}
			for _, v := range built.Spec.Volumes {
				i := slices.IndexFunc(got.Spec.Volumes, func(g corev1.Volume) bool { return g.Name == v.Name })
				if i < 0 || !equality.Semantic.DeepEqual(got.Spec.Volumes[i], v) {
					t.Errorf("volume %s missing or changed: %+v", v.Name, got.Spec.Volumes)
				}
			}
			i := slices.IndexFunc(got.Spec.Containers, func(c corev1.Container) bool { return c.Name == containerName })
			if i < 0 {
				t.Fatalf("no voice-server container: %+v", got.Spec.Containers)
			}
			server, want := got.Spec.Containers[i], built.Spec.Containers[0]
			if server.Image != want.Image || !slices.Equal(server.Command, want.Command) ||
				!equality.Semantic.DeepEqual(server.SecurityContext, want.SecurityContext) ||
				server.Lifecycle == nil || server.ReadinessProbe == nil {
				t.Errorf("server container %+v: the operator's image, command, security context, probes and preStop must stay", server)
			}
			for _, m := range want.VolumeMounts {
				if !slices.ContainsFunc(server.VolumeMounts, func(g corev1.VolumeMount) bool { return equality.Semantic.DeepEqual(g, m) }) {
					t.Errorf("mount %s missing or changed: %+v", m.Name, server.VolumeMounts)
				}
			}
			if !slices.ContainsFunc(server.Env, func(e corev1.EnvVar) bool {
				return e.Name == memoryLimitEnv && e.ValueFrom != nil && e.ValueFrom.ResourceFieldRef != nil && e.Value == ""
			}) {
				t.Errorf("env %+v lacks the memory limit from the downward API", server.Env)
			}
		})
	}
}

// TestPodTemplateThatIsNoPodTemplate: a podTemplate that is no JSON
// object, or has values of the wrong type, is an errInvalidPodTemplate,
// never a panic; an empty or null one changes nothing.
func TestPodTemplateThatIsNoPodTemplate(t *testing.T) {
	for _, raw := range []string{`"text"`, `[1, 2]`, `{"spec": {"containers": "voice-server"}}`, `{"spec": {"containers": [{"name": 3}]}}`,
		`{"spec": {"volumes": {"name": "x"}}}`, `{"spec":`, `{"metadata": {"labels": ["a"]}}`} {
		d := desiredDeployment(testGateway(nil), BuildOptions{DefaultImage: "img"}, "hash")
		err := applyPodTemplate(d, &runtime.RawExtension{Raw: []byte(raw)})
		if !errors.As(err, new(errInvalidPodTemplate)) || !strings.Contains(err.Error(), "spec.podTemplate") {
			t.Errorf("%s: error %v, want an errInvalidPodTemplate naming spec.podTemplate", raw, err)
		}
	}
	for _, raw := range []string{``, `null`, ` `} {
		d := desiredDeployment(testGateway(nil), BuildOptions{DefaultImage: "img"}, "hash")
		before := d.Spec.Template.DeepCopy()
		if err := applyPodTemplate(d, &runtime.RawExtension{Raw: []byte(raw)}); err != nil || !equality.Semantic.DeepEqual(before, &d.Spec.Template) {
			t.Errorf("%q: error %v or a changed template", raw, err)
		}
	}
}
