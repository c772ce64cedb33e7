package controllers

import (
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
)

func duration(d time.Duration) *metav1.Duration { return &metav1.Duration{Duration: d} }

// testGateway is a VoiceGateway as the controller reads it: modified, then
// defaulted as the API server would.
func testGateway(modify func(*vgv1.VoiceGateway)) *vgv1.VoiceGateway {
	gw := &vgv1.VoiceGateway{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "gw", UID: "uid-1", Generation: 3},
		Spec: vgv1.VoiceGatewaySpec{
			Auth: vgv1.AuthSpec{APIKeysSecretRef: &vgv1.SecretKeyRef{Name: "keys", Key: "k"}},
		},
	}
	if modify != nil {
		modify(gw)
	}
	return withCRDDefaults(gw)
}

// drainSpec is spec.drain as the API server defaults it.
func drainSpec(d vgv1.DrainSpec) vgv1.DrainSpec {
	return withCRDDefaults(&vgv1.VoiceGateway{Spec: vgv1.VoiceGatewaySpec{Drain: d}}).Spec.Drain
}

func TestDrainTiming(t *testing.T) {
	tests := map[string]struct {
		spec vgv1.DrainSpec
		// grace is terminationGracePeriodSeconds and the server's --grace-period.
		grace int64
		// exitMargin is what is left after the drain deadline.
		exitMargin time.Duration
		notify     time.Duration
	}{
		"defaults": {
			spec:  vgv1.DrainSpec{},
			grace: 65, exitMargin: 5 * time.Second, notify: 10 * time.Second,
		},
		"short timeout notifies over a quarter of it": {
			spec:  vgv1.DrainSpec{PreStopDelay: duration(0), Timeout: duration(8 * time.Second)},
			grace: 13, exitMargin: 5 * time.Second, notify: 2 * time.Second,
		},
		"fractions round up into the margin": {
			spec:  vgv1.DrainSpec{PreStopDelay: duration(2500 * time.Millisecond), Timeout: duration(30 * time.Second)},
			grace: 38, exitMargin: 5500 * time.Millisecond, notify: 7500 * time.Millisecond,
		},
		"explicit notify window": {
			spec:  vgv1.DrainSpec{PreStopDelay: duration(10 * time.Second), Timeout: duration(5 * time.Minute), NotifyWindow: duration(time.Minute)},
			grace: 315, exitMargin: 5 * time.Second, notify: time.Minute,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := drainTimingOf(drainSpec(tc.spec))
			if got.gracePeriodSeconds != tc.grace || got.exitMargin != tc.exitMargin || got.notifyWindow != tc.notify {
				t.Errorf("timing = %+v, want grace %d, margin %s, notify %s", got, tc.grace, tc.exitMargin, tc.notify)
			}
			// The server's deadline is exactly preStopDelay + timeout after
			// termination begins.
			if deadline := time.Duration(got.gracePeriodSeconds)*time.Second - got.exitMargin; deadline != got.preStopDelay+got.timeout {
				t.Errorf("drain deadline %s after termination, want preStopDelay + timeout = %s", deadline, got.preStopDelay+got.timeout)
			}
		})
	}
}

func TestServerConfig(t *testing.T) {
	tests := map[string]struct {
		modify func(*vgv1.VoiceGateway)
		check  func(t *testing.T, yaml string)
		// wantErr is part of the error when the server would refuse the
		// settings.
		wantErr string
	}{
		"api keys from the mounted secret": {
			check: func(t *testing.T, yaml string) {
				mustContain(t, yaml, "api_keys_file: /etc/voicegateway/api-keys/keys", "insecure_no_auth: false",
					"backend: echo", "timeout: 1m", "exit_margin: 5s", "admin_listen: :9090",
					"fleet_secret_dir: /etc/voicegateway/fleet", "debug_endpoints: false")
			},
		},
		"api key generated into the fleet secret": {
			modify: func(gw *vgv1.VoiceGateway) { gw.Spec.Auth = vgv1.AuthSpec{} },
			check: func(t *testing.T, yaml string) {
				mustContain(t, yaml, "api_keys_file: /etc/voicegateway/fleet/api-keys", "insecure_no_auth: false",
					"fleet_secret_dir: /etc/voicegateway/fleet")
			},
		},
		"api keys from the user's fleet secret": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.Auth = vgv1.AuthSpec{FleetSecretRef: &vgv1.LocalSecretRef{Name: "mine"}}
			},
			check: func(t *testing.T, yaml string) {
				mustContain(t, yaml, "api_keys_file: /etc/voicegateway/fleet/api-keys", "fleet_secret_dir: /etc/voicegateway/fleet")
			},
		},
		"insecure": {
			modify: func(gw *vgv1.VoiceGateway) { gw.Spec.Auth = vgv1.AuthSpec{InsecureNoAuth: true} },
			check: func(t *testing.T, yaml string) {
				// The fleet Secret still signs tokens and guards the admin
				// endpoints.
				mustContain(t, yaml, `api_keys_file: ""`, "insecure_no_auth: true", "fleet_secret_dir: /etc/voicegateway/fleet")
			},
		},
		"debug endpoints": {
			modify: func(gw *vgv1.VoiceGateway) { gw.Spec.DebugEndpoints = true },
			check: func(t *testing.T, yaml string) {
				mustContain(t, yaml, "debug_endpoints: true")
			},
		},
		"openai": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.Backend = vgv1.BackendSpec{Type: vgv1.BackendOpenAI, OpenAI: &vgv1.OpenAIBackendSpec{
					Model: "gpt-test", URL: "ws://127.0.0.1:9/v1/realtime",
					APIKeySecretRef: &vgv1.SecretKeyRef{Name: "openai", Key: "api-key"},
				}}
			},
			check: func(t *testing.T, yaml string) {
				mustContain(t, yaml, "backend: openai", "model: gpt-test", "api_key_file: /etc/voicegateway/openai/api-key",
					"url: ws://127.0.0.1:9/v1/realtime")
			},
		},
		"sessions and rate limit": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.Sessions = vgv1.SessionsSpec{MaxPerPod: 7, IdleTimeout: duration(time.Minute), MaxDuration: duration(time.Hour)}
				gw.Spec.RateLimit = vgv1.RateLimitSpec{SuspiciousAfter: 2, BlockAfter: 3, TrustedProxies: []string{"10.0.0.0/8"}}
			},
			check: func(t *testing.T, yaml string) {
				mustContain(t, yaml, "limit: 7", "idle_timeout: 1m\n", "suspicious_after: 2", "block_after: 3", "- 10.0.0.0/8")
			},
		},
		"admission limits": {
			check: func(t *testing.T, yaml string) {
				// The defaults: tokens single-use, 10 s of audio, no caps
				// per key or address; the memory limit comes from the
				// downward API, not the file.
				mustContain(t, yaml, "max_per_token: 1\n", "max_buffered_audio: 10s", "max_per_api_key: 0", "max_per_client_ip: 0", "memory_limit: \"0\"")
			},
		},
		"admission limits set": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.Sessions.MaxBufferedAudio = duration(30 * time.Second)
				gw.Spec.Sessions.MaxPerAPIKey, gw.Spec.Sessions.MaxPerClientIP = 200, 20
				gw.Spec.Auth.MaxSessionsPerToken = 3
			},
			check: func(t *testing.T, yaml string) {
				mustContain(t, yaml, "max_per_token: 3", "max_buffered_audio: 30s", "max_per_api_key: 200", "max_per_client_ip: 20")
			},
		},
		"settings the server refuses": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.RateLimit = vgv1.RateLimitSpec{SuspiciousAfter: 5, BlockAfter: 4}
			},
			wantErr: "--auth-block-after",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			cfg, err := serverConfig(testGateway(tc.modify))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error = %v, want one about %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			cm, err := desiredConfigMap(testGateway(tc.modify), cfg)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, cm.Data[configFileKey])
		})
	}
}

func mustContain(t *testing.T, text string, parts ...string) {
	t.Helper()
	for _, part := range parts {
		if !strings.Contains(text, part) {
			t.Errorf("missing %q in:\n%s", part, text)
		}
	}
}

func TestDesiredDeployment(t *testing.T) {
	tests := map[string]struct {
		modify func(*vgv1.VoiceGateway)
		check  func(t *testing.T, pod corev1.PodSpec, gw *vgv1.VoiceGateway)
	}{
		"default image and a soft spread over nodes": {
			check: func(t *testing.T, pod corev1.PodSpec, _ *vgv1.VoiceGateway) {
				if got := pod.Containers[0].Image; got != "registry.test/default:v1" {
					t.Errorf("image = %q", got)
				}
				if sp := pod.TopologySpreadConstraints; len(sp) != 2 || sp[0].TopologyKey != corev1.LabelTopologyZone || sp[1].TopologyKey != corev1.LabelHostname ||
					sp[0].WhenUnsatisfiable != corev1.ScheduleAnyway || sp[1].WhenUnsatisfiable != corev1.ScheduleAnyway {
					t.Errorf("spread = %+v, want zones then nodes, ScheduleAnyway", pod.TopologySpreadConstraints)
				}
			},
		},
		"own image and scheduling": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.Image = "registry.test/own:v2"
				gw.Spec.NodeSelector = map[string]string{"pool": "voice"}
				gw.Spec.Tolerations = []corev1.Toleration{{Key: "voice", Operator: corev1.TolerationOpExists}}
				gw.Spec.PriorityClassName = "high"
				gw.Spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{MaxSkew: 2, TopologyKey: "zone", WhenUnsatisfiable: corev1.DoNotSchedule}}
			},
			check: func(t *testing.T, pod corev1.PodSpec, _ *vgv1.VoiceGateway) {
				if pod.Containers[0].Image != "registry.test/own:v2" || pod.NodeSelector["pool"] != "voice" ||
					len(pod.Tolerations) != 1 || pod.PriorityClassName != "high" ||
					len(pod.TopologySpreadConstraints) != 1 || pod.TopologySpreadConstraints[0].TopologyKey != "zone" {
					t.Errorf("pod = %+v", pod)
				}
			},
		},
		"only the fleet secret without other secrets": {
			modify: func(gw *vgv1.VoiceGateway) { gw.Spec.Auth = vgv1.AuthSpec{InsecureNoAuth: true} },
			check: func(t *testing.T, pod corev1.PodSpec, _ *vgv1.VoiceGateway) {
				for _, v := range pod.Volumes {
					if v.Secret != nil && v.Name != "fleet" {
						t.Errorf("secret volume %+v", v)
					}
				}
			},
		},
		"the whole fleet secret mounted read-only, updatable in place": {
			check: func(t *testing.T, pod corev1.PodSpec, gw *vgv1.VoiceGateway) {
				checkFleetMount(t, pod, gw.Name+"-fleet")
			},
		},
		"the user's fleet secret": {
			modify: func(gw *vgv1.VoiceGateway) { gw.Spec.Auth.FleetSecretRef = &vgv1.LocalSecretRef{Name: "mine"} },
			check: func(t *testing.T, pod corev1.PodSpec, _ *vgv1.VoiceGateway) {
				checkFleetMount(t, pod, "mine")
			},
		},
		"the memory limit reaches the server through the downward API": {
			check: func(t *testing.T, pod corev1.PodSpec, _ *vgv1.VoiceGateway) {
				var env *corev1.EnvVar
				for i, e := range pod.Containers[0].Env {
					if e.Name == "VOICEGATEWAY_MEMORY_LIMIT" {
						env = &pod.Containers[0].Env[i]
					}
				}
				if env == nil || env.ValueFrom == nil || env.ValueFrom.ResourceFieldRef == nil ||
					env.ValueFrom.ResourceFieldRef.Resource != "limits.memory" || env.ValueFrom.ResourceFieldRef.ContainerName != pod.Containers[0].Name {
					t.Errorf("env = %+v, want VOICEGATEWAY_MEMORY_LIMIT from the container's limits.memory", pod.Containers[0].Env)
				}
			},
		},
		"preStop runs the server's drain command": {
			check: func(t *testing.T, pod corev1.PodSpec, _ *vgv1.VoiceGateway) {
				preStop := pod.Containers[0].Lifecycle.PreStop
				want := []string{"/voice-server", "drain", "--config", "/etc/voicegateway/config/config.yaml"}
				if preStop.HTTPGet != nil || preStop.Exec == nil || !slices.Equal(preStop.Exec.Command, want) {
					t.Errorf("preStop = %+v, want exec %q", preStop, want)
				}
			},
		},
		"probes differ and the grace period follows the drain": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.Drain = vgv1.DrainSpec{PreStopDelay: duration(3 * time.Second), Timeout: duration(20 * time.Second)}
			},
			check: func(t *testing.T, pod corev1.PodSpec, _ *vgv1.VoiceGateway) {
				c := pod.Containers[0]
				if c.ReadinessProbe.HTTPGet.Path == c.LivenessProbe.HTTPGet.Path {
					t.Error("readiness and liveness probe the same path: a draining pod would be restarted")
				}
				if *pod.TerminationGracePeriodSeconds != 28 {
					t.Errorf("grace = %d, want 3+20+5", *pod.TerminationGracePeriodSeconds)
				}
				if c.ReadinessProbe.HTTPGet.Port != intstr.FromString("admin") || c.LivenessProbe.HTTPGet.Port != intstr.FromString("admin") {
					t.Errorf("probes = %+v %+v, want the admin port", c.ReadinessProbe, c.LivenessProbe)
				}
			},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			gw := testGateway(tc.modify)
			d := desiredDeployment(gw, BuildOptions{DefaultImage: "registry.test/default:v1"}, "hash")
			if d.OwnerReferences[0].UID != gw.UID || !*d.OwnerReferences[0].Controller {
				t.Errorf("owner = %+v", d.OwnerReferences)
			}
			if d.Spec.Template.Annotations[AnnotationConfigHash] != "hash" {
				t.Errorf("annotations = %v", d.Spec.Template.Annotations)
			}
			tc.check(t, d.Spec.Template.Spec, gw)
		})
	}
}

// checkFleetMount: the pod mounts the whole Secret (no items, no subPath,
// which the kubelet would never update) read-only at the fleet directory.
func checkFleetMount(t *testing.T, pod corev1.PodSpec, secret string) {
	t.Helper()
	i := slices.IndexFunc(pod.Volumes, func(v corev1.Volume) bool { return v.Name == "fleet" })
	if i < 0 {
		t.Fatalf("no fleet volume in %+v", pod.Volumes)
	}
	v := pod.Volumes[i].Secret
	if v == nil || v.SecretName != secret || len(v.Items) != 0 || ptr.Deref(v.DefaultMode, 0) != 0o440 || v.Optional != nil {
		t.Errorf("fleet volume = %+v, want all of Secret %s, mode 0440", v, secret)
	}
	mounts := pod.Containers[0].VolumeMounts
	j := slices.IndexFunc(mounts, func(m corev1.VolumeMount) bool { return m.Name == "fleet" })
	if j < 0 || mounts[j].MountPath != "/etc/voicegateway/fleet" || !mounts[j].ReadOnly || mounts[j].SubPath != "" {
		t.Errorf("fleet mount = %+v, want read-only /etc/voicegateway/fleet without subPath", mounts)
	}
}

func TestDesiredNetworkPolicy(t *testing.T) {
	monitoring := networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{
		MatchLabels: map[string]string{"kubernetes.io/metadata.name": "monitoring"}}}
	office := networkingv1.NetworkPolicyPeer{IPBlock: &networkingv1.IPBlock{CIDR: "192.0.2.0/24"}}
	operatorPeer := networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{
		MatchLabels: map[string]string{"kubernetes.io/metadata.name": "voicegateway-system"}}}
	fleetPeer := networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{
		MatchLabels: map[string]string{"app.kubernetes.io/name": "voicegateway", "app.kubernetes.io/instance": "gw"}}}

	tests := map[string]struct {
		modify            func(*vgv1.VoiceGateway)
		operatorNamespace string
		// wantPublic and wantAdmin are the peers of the sessions and admin
		// port rules; nil: anyone.
		wantPublic, wantAdmin []networkingv1.NetworkPolicyPeer
	}{
		"defaults: sessions from anywhere, admin from the operator and the fleet": {
			operatorNamespace: "voicegateway-system",
			wantAdmin:         []networkingv1.NetworkPolicyPeer{operatorPeer, fleetPeer},
		},
		"from and adminFrom": {
			modify: func(gw *vgv1.VoiceGateway) {
				gw.Spec.NetworkPolicy.From = []networkingv1.NetworkPolicyPeer{office}
				gw.Spec.NetworkPolicy.AdminFrom = []networkingv1.NetworkPolicyPeer{monitoring}
			},
			operatorNamespace: "voicegateway-system",
			wantPublic:        []networkingv1.NetworkPolicyPeer{office},
			wantAdmin:         []networkingv1.NetworkPolicyPeer{operatorPeer, fleetPeer, monitoring},
		},
		"operator namespace unknown": {
			wantAdmin: []networkingv1.NetworkPolicyPeer{fleetPeer},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			gw := testGateway(tc.modify)
			np := desiredNetworkPolicy(gw, BuildOptions{OperatorNamespace: tc.operatorNamespace})
			if np.Name != "gw" || np.Namespace != "ns" || np.OwnerReferences[0].UID != gw.UID || !*np.OwnerReferences[0].Controller ||
				np.Labels[LabelManagedBy] != ManagedBy {
				t.Errorf("metadata = %+v", np.ObjectMeta)
			}
			if !equality.Semantic.DeepEqual(np.Spec.PodSelector.MatchLabels, SelectorLabels("gw")) ||
				!slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
				t.Errorf("selector %v policy types %v", np.Spec.PodSelector, np.Spec.PolicyTypes)
			}
			if len(np.Spec.Ingress) != 3 {
				t.Fatalf("ingress = %+v, want a rule per port", np.Spec.Ingress)
			}
			gossip := np.Spec.Ingress[2]
			if len(gossip.Ports) != 2 || gossip.Ports[0].Port.IntValue() != 7946 || *gossip.Ports[0].Protocol != corev1.ProtocolTCP ||
				gossip.Ports[1].Port.IntValue() != 7946 || *gossip.Ports[1].Protocol != corev1.ProtocolUDP {
				t.Errorf("gossip rule ports = %+v, want TCP and UDP 7946", gossip.Ports)
			}
			if !equality.Semantic.DeepEqual(gossip.From, []networkingv1.NetworkPolicyPeer{fleetPeer}) {
				t.Errorf("gossip rule from = %+v, want the fleet's own pods only", gossip.From)
			}
			for i, want := range []struct {
				port  int
				peers []networkingv1.NetworkPolicyPeer
			}{{8080, tc.wantPublic}, {9090, tc.wantAdmin}} {
				rule := np.Spec.Ingress[i]
				if len(rule.Ports) != 1 || rule.Ports[0].Port.IntValue() != want.port || *rule.Ports[0].Protocol != corev1.ProtocolTCP {
					t.Errorf("rule %d ports = %+v, want TCP %d", i, rule.Ports, want.port)
				}
				if !equality.Semantic.DeepEqual(rule.From, want.peers) {
					t.Errorf("rule %d (port %d) from = %+v, want %+v", i, want.port, rule.From, want.peers)
				}
			}
		})
	}
	if !networkPolicyEnabled(testGateway(nil)) {
		t.Error("the NetworkPolicy is off when spec.networkPolicy.enabled is unset")
	}
	if networkPolicyEnabled(testGateway(func(gw *vgv1.VoiceGateway) { gw.Spec.NetworkPolicy.Enabled = ptr.To(false) })) {
		t.Error("the NetworkPolicy is on with spec.networkPolicy.enabled false")
	}
}

func TestConfigHash(t *testing.T) {
	refs := []vgv1.SecretKeyRef{{Name: "keys", Key: "k"}}
	data := func(v string) inputs {
		return inputs{secretData: map[string]map[string][]byte{"keys": {"k": []byte(v), "other": []byte("x")}}}
	}
	base := configHash("a: 1\n", refs, data("key-1"))
	if base != configHash("a: 1\n", refs, data("key-1")) {
		t.Error("the hash is not stable")
	}
	for name, other := range map[string]string{
		"settings":   configHash("a: 2\n", refs, data("key-1")),
		"secret key": configHash("a: 1\n", refs, data("key-2")),
		"reference":  configHash("a: 1\n", []vgv1.SecretKeyRef{{Name: "keys", Key: "other"}}, data("key-1")),
	} {
		if other == base {
			t.Errorf("a change of the %s does not change the hash", name)
		}
	}
	unrelated := data("key-1")
	unrelated.secretData["keys"]["other"] = []byte("y")
	if configHash("a: 1\n", refs, unrelated) != base {
		t.Error("a key the pods do not mount changed the hash")
	}
}

func TestToApplyUnstructuredDropsNullsAndStatus(t *testing.T) {
	d := desiredDeployment(testGateway(nil), BuildOptions{DefaultImage: "img"}, "h")
	u, err := toApplyUnstructured(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := u.Object["status"]; ok {
		t.Error("status is part of the apply")
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case nil:
			t.Errorf("null at %s", path)
		case map[string]any:
			for k, item := range v {
				walk(path+"."+k, item)
			}
		case []any:
			for _, item := range v {
				walk(path+"[]", item)
			}
		}
	}
	walk("", u.Object)
	if u.GetKind() != "Deployment" || u.GetAPIVersion() != "apps/v1" {
		t.Errorf("kind %s %s", u.GetAPIVersion(), u.GetKind())
	}
}

func TestDesiredPeersService(t *testing.T) {
	gw := testGateway(nil)
	svc := desiredPeersService(gw)
	if svc.Name != "gw-peers" || svc.Namespace != "ns" || svc.OwnerReferences[0].UID != gw.UID || svc.Labels[LabelManagedBy] != ManagedBy {
		t.Errorf("metadata = %+v", svc.ObjectMeta)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone || !svc.Spec.PublishNotReadyAddresses ||
		!equality.Semantic.DeepEqual(svc.Spec.Selector, SelectorLabels("gw")) {
		t.Errorf("spec = %+v, want headless, publishing not-ready addresses, selecting the fleet's pods", svc.Spec)
	}
	if len(svc.Spec.Ports) != 2 || svc.Spec.Ports[0].Port != GossipPort || svc.Spec.Ports[0].Protocol != corev1.ProtocolTCP ||
		svc.Spec.Ports[1].Port != GossipPort || svc.Spec.Ports[1].Protocol != corev1.ProtocolUDP {
		t.Errorf("ports = %+v, want gossip on TCP and UDP %d", svc.Spec.Ports, GossipPort)
	}

	pods := []corev1.Pod{{Status: corev1.PodStatus{PodIP: "10.0.0.9"}}, {Status: corev1.PodStatus{PodIP: "10.0.0.2"}}, {}, {Status: corev1.PodStatus{PodIP: "fd00::1"}}}
	cm := desiredPeersConfigMap(gw, pods)
	if cm.Name != "gw-peers" || !strings.HasSuffix(cm.Data["peers"], "\n10.0.0.2:7946\n10.0.0.9:7946\n[fd00::1]:7946\n") {
		t.Errorf("peers ConfigMap %s = %q, want the pods' gossip addresses, sorted", cm.Name, cm.Data["peers"])
	}

	cfg, err := serverConfig(gw)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster.PeersFile != "/etc/voicegateway/peers/peers" {
		t.Errorf("peers file %q", cfg.Cluster.PeersFile)
	}
	if cfg.Cluster.Listen != ":7946" || !slices.Equal(cfg.Cluster.Peers, []string{"gw-peers.ns.svc:7946"}) {
		t.Errorf("cluster settings = %+v, want gossip on :7946 joining gw-peers.ns.svc:7946", cfg.Cluster)
	}
	c := desiredDeployment(gw, BuildOptions{}, "hash").Spec.Template.Spec.Containers[0]
	var advertise, podIP bool
	for _, e := range c.Env {
		advertise = advertise || e.Name == "VOICEGATEWAY_CLUSTER_ADVERTISE" && e.Value == "$(POD_IP):7946"
		podIP = podIP || e.Name == "POD_IP" && e.ValueFrom != nil && e.ValueFrom.FieldRef.FieldPath == "status.podIP"
	}
	if !advertise || !podIP {
		t.Errorf("env = %+v, want POD_IP from the downward API and the advertise address built on it", c.Env)
	}
	var gossipPorts int
	for _, p := range c.Ports {
		if p.ContainerPort == GossipPort {
			gossipPorts++
		}
	}
	if gossipPorts != 2 {
		t.Errorf("ports = %+v, want the gossip port on TCP and UDP", c.Ports)
	}
}
