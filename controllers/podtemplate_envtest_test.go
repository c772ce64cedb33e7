package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/voicegateway/voicegateway/controllers"
	"github.com/voicegateway/voicegateway/internal/testkit"
)

// TestPodTemplateIsMergedStrategically: spec.podTemplate, written as a user
// writes it (YAML through the API server, unknown to the CRD's schema), is
// merged into the pods the operator builds: labels, annotations and env
// added, a sidecar and a volume with its mount added, node selector,
// tolerations, affinity, priority class and topology spread taken from it;
// what the operator owns (the selector labels, the config hash, the server's
// image, command, probes, preStop, its own env-free mounts and volumes) is
// kept. Without a podTemplate the pods spread over zones, then nodes.
func TestPodTemplateIsMergedStrategically(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	startOperator(t, namespace, managerOptions{})

	plain := newGateway(namespace, "plain")
	if err := k8s.Create(ctx, plain); err != nil {
		t.Fatal(err)
	}
	base := waitForObjects(t, client.ObjectKeyFromObject(plain)).deployment.Spec.Template
	if sp := base.Spec.TopologySpreadConstraints; len(sp) != 2 || sp[0].TopologyKey != corev1.LabelTopologyZone ||
		sp[1].TopologyKey != corev1.LabelHostname || sp[0].WhenUnsatisfiable != corev1.ScheduleAnyway {
		t.Errorf("default spread %+v, want zones then nodes, ScheduleAnyway", sp)
	}

	u := &unstructured.Unstructured{}
	if err := yaml.Unmarshal([]byte(`
apiVersion: voicegateway.dev/v1alpha1
kind: VoiceGateway
metadata:
  name: custom
spec:
  auth: {insecureNoAuth: true}
  tolerations: [{key: replaced, operator: Exists}]
  podTemplate:
    metadata:
      labels: {team: voice, app.kubernetes.io/name: hijacked}
      annotations: {sidecar.example.com/inject: "false", voicegateway.dev/config-hash: forged}
    spec:
      priorityClassName: voice-critical
      nodeSelector: {pool: voice}
      tolerations: [{key: dedicated, operator: Equal, value: voice, effect: NoSchedule}]
      affinity:
        nodeAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            nodeSelectorTerms: [{matchExpressions: [{key: pool, operator: In, values: [voice]}]}]
      topologySpreadConstraints:
        - {maxSkew: 2, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule, labelSelector: {matchLabels: {app.kubernetes.io/instance: custom}}}
      containers:
        - name: voice-server
          image: evil/image:latest
          command: [/bin/sh]
          env: [{name: GOMEMLIMIT, value: 400MiB}]
          volumeMounts: [{name: extra, mountPath: /etc/extra, readOnly: true}]
          resources: {limits: {cpu: "2"}}
        - name: log-shipper
          image: registry.test/shipper:v1
          volumeMounts: [{name: extra, mountPath: /extra}]
      volumes:
        - name: extra
          configMap: {name: extra-config}
`), &u.Object); err != nil {
		t.Fatal(err)
	}
	u.SetNamespace(namespace)
	if err := k8s.Create(ctx, u); err != nil {
		t.Fatal(err)
	}
	objs := waitForObjects(t, client.ObjectKeyFromObject(u))
	tpl := objs.deployment.Spec.Template
	pod := tpl.Spec

	for key, value := range controllers.SelectorLabels("custom") {
		if tpl.Labels[key] != value {
			t.Errorf("label %s=%q, want the operator's %q (the selector)", key, tpl.Labels[key], value)
		}
	}
	if tpl.Labels["team"] != "voice" || tpl.Annotations["sidecar.example.com/inject"] != "false" {
		t.Errorf("labels %v annotations %v lack the podTemplate's", tpl.Labels, tpl.Annotations)
	}
	if tpl.Annotations[controllers.AnnotationConfigHash] == "forged" || tpl.Annotations[controllers.AnnotationConfigHash] == "" {
		t.Errorf("config hash %q: the operator's must stay", tpl.Annotations[controllers.AnnotationConfigHash])
	}
	if pod.PriorityClassName != "voice-critical" || pod.NodeSelector["pool"] != "voice" ||
		len(pod.Tolerations) != 1 || pod.Tolerations[0].Key != "dedicated" ||
		pod.Affinity == nil || pod.Affinity.NodeAffinity == nil {
		t.Errorf("scheduling: priority %q nodeSelector %v tolerations %+v affinity %+v", pod.PriorityClassName, pod.NodeSelector, pod.Tolerations, pod.Affinity)
	}
	// Merged by topology key: the zone constraint is the user's, the node
	// one the operator's default.
	if sp := pod.TopologySpreadConstraints; len(sp) != 2 || sp[0].TopologyKey != corev1.LabelTopologyZone || sp[0].MaxSkew != 2 ||
		sp[0].WhenUnsatisfiable != corev1.DoNotSchedule || sp[1].TopologyKey != corev1.LabelHostname {
		t.Errorf("spread %+v, want the user's zone constraint and the default node one", sp)
	}

	if len(pod.Containers) != 2 || pod.Containers[0].Name != "voice-server" || pod.Containers[1].Name != "log-shipper" ||
		pod.Containers[1].Image != "registry.test/shipper:v1" {
		t.Fatalf("containers %v, want voice-server then the log-shipper sidecar", containerNames(pod.Containers))
	}
	server, baseServer := pod.Containers[0], base.Spec.Containers[0]
	if server.Image != testImage || !slices.Equal(server.Command, baseServer.Command) || !slices.Equal(server.Args, baseServer.Args) ||
		server.ReadinessProbe == nil || server.Lifecycle == nil || server.Lifecycle.PreStop == nil {
		t.Errorf("server container: image %q command %v args %v; the operator's must stay", server.Image, server.Command, server.Args)
	}
	if !slices.ContainsFunc(server.Env, func(e corev1.EnvVar) bool { return e.Name == "GOMEMLIMIT" && e.Value == "400MiB" }) {
		t.Errorf("env %+v lacks GOMEMLIMIT", server.Env)
	}
	if server.Resources.Limits.Cpu().Cmp(resource.MustParse("2")) != 0 || server.Resources.Limits.Memory().IsZero() {
		t.Errorf("resources %+v: want the podTemplate's cpu limit merged with the default memory limit", server.Resources)
	}
	mounts := map[string]string{}
	for _, m := range server.VolumeMounts {
		mounts[m.Name] = m.MountPath
	}
	for _, m := range baseServer.VolumeMounts {
		if mounts[m.Name] != m.MountPath {
			t.Errorf("the operator's mount %s at %s is gone: %v", m.Name, m.MountPath, mounts)
		}
	}
	if mounts["extra"] != "/etc/extra" {
		t.Errorf("mounts %v lack the podTemplate's extra", mounts)
	}
	var volumes []string
	for _, v := range pod.Volumes {
		volumes = append(volumes, v.Name)
	}
	for _, v := range base.Spec.Volumes {
		if !slices.Contains(volumes, v.Name) {
			t.Errorf("the operator's volume %s is gone: %v", v.Name, volumes)
		}
	}
	if !slices.Contains(volumes, "extra") {
		t.Errorf("volumes %v lack the podTemplate's extra", volumes)
	}

	// Changing the podTemplate rolls the pods like any spec change.
	patch := client.MergeFrom(u.DeepCopy())
	if err := unstructured.SetNestedField(u.Object, "silver", "spec", "podTemplate", "spec", "nodeSelector", "pool"); err != nil {
		t.Fatal(err)
	}
	if err := k8s.Patch(ctx, u, patch); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, func() error {
		objs := &ownedObjects{}
		if err := getObjects(client.ObjectKeyFromObject(u), objs); err != nil {
			return err
		}
		if got := objs.deployment.Spec.Template.Spec.NodeSelector["pool"]; got != "silver" {
			return fmt.Errorf("node selector pool=%q, want silver", got)
		}
		return nil
	})
	gw := getGateway(t, client.ObjectKeyFromObject(u))
	var stored corev1.PodTemplateSpec
	if gw.Spec.PodTemplate == nil {
		t.Fatal("no stored podTemplate")
	}
	if err := json.Unmarshal(gw.Spec.PodTemplate.Raw, &stored); err != nil || stored.Spec.NodeSelector["pool"] != "silver" {
		t.Errorf("the stored podTemplate %s: %v", gw.Spec.PodTemplate.Raw, err)
	}
}

// TestPodTemplateCannotBreakThePods: a podTemplate that gives no containers
// (only labels), or nulls the server's container list, still gets the
// voice-server container with what the operator owns; one whose values
// have the wrong type is Degraded/InvalidPodTemplate, and the other
// VoiceGateways of the namespace are reconciled all the same (the operator
// still reads them all).
func TestPodTemplateCannotBreakThePods(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	startOperator(t, namespace, managerOptions{})

	plain := newGateway(namespace, "plain")
	if err := k8s.Create(ctx, plain); err != nil {
		t.Fatal(err)
	}
	base := waitForObjects(t, client.ObjectKeyFromObject(plain)).deployment.Spec.Template.Spec

	create := func(name, podTemplate string) *unstructured.Unstructured {
		t.Helper()
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal([]byte(`
apiVersion: voicegateway.dev/v1alpha1
kind: VoiceGateway
metadata:
  name: `+name+`
spec:
  auth: {insecureNoAuth: true}
  podTemplate: `+podTemplate), &u.Object); err != nil {
			t.Fatal(err)
		}
		u.SetNamespace(namespace)
		if err := k8s.Create(ctx, u); err != nil {
			t.Fatal(err)
		}
		return u
	}
	labelsOnly := create("labels-only", `{metadata: {labels: {team: voice}}}`)
	nulled := create("nulled", `{spec: {containers: null, volumes: null, serviceAccountName: other, terminationGracePeriodSeconds: 1}}`)
	wrongType := create("wrong-type", `{spec: {containers: "voice-server"}}`)

	for _, u := range []*unstructured.Unstructured{labelsOnly, nulled} {
		pod := waitForObjects(t, client.ObjectKeyFromObject(u)).deployment.Spec.Template.Spec
		if len(pod.Containers) != 1 || pod.Containers[0].Name != "voice-server" || pod.Containers[0].Image != testImage {
			t.Errorf("%s: containers %v, want the voice-server", u.GetName(), containerNames(pod.Containers))
			continue
		}
		if pod.ServiceAccountName != u.GetName() || *pod.TerminationGracePeriodSeconds != *base.TerminationGracePeriodSeconds ||
			len(pod.Volumes) != len(base.Volumes) || len(pod.Containers[0].VolumeMounts) != len(base.Containers[0].VolumeMounts) ||
			pod.Containers[0].SecurityContext == nil {
			t.Errorf("%s: service account %q, grace %d, %d volumes, %d mounts, security context %v: want the operator's",
				u.GetName(), pod.ServiceAccountName, *pod.TerminationGracePeriodSeconds, len(pod.Volumes),
				len(pod.Containers[0].VolumeMounts), pod.Containers[0].SecurityContext)
		}
	}

	testkit.Eventually(t, 30*time.Second, func() error {
		gw := getGateway(t, client.ObjectKeyFromObject(wrongType))
		for _, c := range gw.Status.Conditions {
			if c.Type == "Degraded" && c.Status == "True" && c.Reason == controllers.ReasonInvalidPodTemplate &&
				strings.Contains(c.Message, "spec.podTemplate") {
				return nil
			}
		}
		return fmt.Errorf("conditions %+v, want Degraded %s", gw.Status.Conditions, controllers.ReasonInvalidPodTemplate)
	})
	// The operator still reads and reconciles the namespace.
	later := newGateway(namespace, "later")
	if err := k8s.Create(ctx, later); err != nil {
		t.Fatal(err)
	}
	waitForObjects(t, client.ObjectKeyFromObject(later))
}

func containerNames(cs []corev1.Container) []string {
	var names []string
	for _, c := range cs {
		names = append(names, c.Name)
	}
	return names
}
