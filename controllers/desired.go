package controllers

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math"
	"net"
	"slices"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
	"github.com/voicegateway/voicegateway/server/config"
	"github.com/voicegateway/voicegateway/server/fleet"
)

// Labels put on every object the operator applies. The selector of the
// Deployment, Service and PodDisruptionBudget is the name and instance pair;
// it never changes for the life of a VoiceGateway.
const (
	LabelName      = "app.kubernetes.io/name"
	LabelInstance  = "app.kubernetes.io/instance"
	LabelComponent = "app.kubernetes.io/component"
	LabelManagedBy = "app.kubernetes.io/managed-by"
	LabelVersion   = "app.kubernetes.io/version"

	appName   = "voicegateway"
	component = "voice-server"
	// ManagedBy is the managed-by label value and the field owner of every
	// server-side apply.
	ManagedBy = "voicegateway-operator"

	// AnnotationConfigHash on the pod template changes whenever the server
	// settings or a referenced Secret change, so that the pods roll.
	AnnotationConfigHash = "voicegateway.dev/config-hash"
)

// Fixed layout of the voice server pod.
const (
	containerName = "voice-server"
	httpPortName  = "http"
	adminPortName = "admin"
	// gossipPortName (TCP) and gossipUDPPortName carry the fleet's gossip.
	gossipPortName    = "gossip"
	gossipUDPPortName = "gossip-udp"
	// HTTPPort and AdminPort are the container ports the server listens on.
	HTTPPort  int32 = 8080
	AdminPort int32 = 9090
	// GossipPort is the port of the fleet's gossip, UDP and TCP: the shared
	// rate limiter (server/cluster).
	GossipPort int32 = 7946
	// podIPEnv holds the pod's IP (downward API), which the server
	// advertises to its peers as its gossip address.
	podIPEnv = "POD_IP"

	configDir     = "/etc/voicegateway/config"
	configFileKey = "config.yaml"
	apiKeysDir    = "/etc/voicegateway/api-keys"
	apiKeysFile   = "keys"
	openAIKeyDir  = "/etc/voicegateway/openai"
	openAIKeyFile = "api-key"
	stateDir      = "/var/lib/voicegateway"
	// peersDir holds the peers ConfigMap's file: the gossip addresses of
	// the VoiceGateway's pods, written by the operator.
	peersDir     = "/etc/voicegateway/peers"
	peersFileKey = "peers"
	// fleetDir is where the whole fleet Secret is mounted: the server finds
	// token-keys.json, admin-token, fleet-key and api-keys there.
	fleetDir = "/etc/voicegateway/fleet"

	// nonRootID is the distroless "nonroot" user and group.
	nonRootID int64 = 65532

	// drainExitMargin is kept after the drain deadline for closing the
	// connections, writing the rate limiter's state file, flushing logs and
	// exiting before the kubelet's SIGKILL.
	drainExitMargin = 5 * time.Second
)

// BuildOptions are the operator-wide inputs of the builders.
type BuildOptions struct {
	// DefaultImage runs when spec.image is empty.
	DefaultImage string
	// OperatorNamespace is where the operator runs; its pods poll the voice
	// servers' admin port, which the NetworkPolicy opens to that namespace.
	// Empty leaves the operator out of the NetworkPolicy.
	OperatorNamespace string
}

// inputs is everything a desired object depends on besides the
// VoiceGateway itself, read by the controller before building.
type inputs struct {
	// secretData holds the data of each referenced Secret by name; only
	// its hash reaches the objects.
	secretData map[string]map[string][]byte
}

// objectMeta is the metadata shared by every applied object: its name,
// namespace, labels and the controller reference that makes the
// VoiceGateway its owner (so deleting it collects them).
func objectMeta(vg *vgv1.VoiceGateway, name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:      name,
		Namespace: vg.Namespace,
		Labels:    commonLabels(vg),
		OwnerReferences: []metav1.OwnerReference{{
			APIVersion:         vgv1.GroupVersion.String(),
			Kind:               "VoiceGateway",
			Name:               vg.Name,
			UID:                vg.UID,
			Controller:         ptr.To(true),
			BlockOwnerDeletion: ptr.To(true),
		}},
	}
}

// SelectorLabels select the pods of one VoiceGateway.
func SelectorLabels(name string) map[string]string {
	return map[string]string{LabelName: appName, LabelInstance: name}
}

func commonLabels(vg *vgv1.VoiceGateway) map[string]string {
	labels := SelectorLabels(vg.Name)
	labels[LabelComponent] = component
	labels[LabelManagedBy] = ManagedBy
	return labels
}

// configMapName is the name of the ConfigMap holding the server settings.
func configMapName(vg *vgv1.VoiceGateway) string { return vg.Name + "-config" }

// PeersServiceName is the headless Service through which the pods of a
// VoiceGateway find each other for gossip.
func PeersServiceName(vg *vgv1.VoiceGateway) string { return vg.Name + "-peers" }

// drainTiming is the drain budget derived from spec.drain
// (docs/operations.md): the server's drain deadline comes drainTimeout
// (preStopDelay + timeout) after termination begins, and the pod's grace
// period adds the exit margin to it. The server is sent the timeout and
// the margin themselves; it subtracts nothing.
type drainTiming struct {
	preStopDelay time.Duration
	timeout      time.Duration
	notifyWindow time.Duration
	// drainTimeout is the server's --drain-timeout.
	drainTimeout time.Duration
	exitMargin   time.Duration
	// gracePeriodSeconds is the pod's terminationGracePeriodSeconds:
	// drainTimeout + exitMargin.
	gracePeriodSeconds int64
}

// drainTimingOf reads a defaulted spec.drain (checkDefaulted). The notify
// window is the one value derived here: its default depends on the
// timeout, which a CRD marker cannot say.
func drainTimingOf(spec vgv1.DrainSpec) drainTiming {
	t := drainTiming{
		preStopDelay: spec.PreStopDelay.Duration,
		timeout:      spec.Timeout.Duration,
	}
	if spec.NotifyWindow != nil {
		t.notifyWindow = spec.NotifyWindow.Duration
	} else {
		t.notifyWindow = min(t.timeout/4, 10*time.Second)
	}
	// The grace period is whole seconds; rounding up goes to the margin, so
	// sessions get exactly preStopDelay + timeout.
	t.drainTimeout = t.preStopDelay + t.timeout
	t.gracePeriodSeconds = int64(math.Ceil((t.drainTimeout + drainExitMargin).Seconds()))
	t.exitMargin = time.Duration(t.gracePeriodSeconds)*time.Second - t.drainTimeout
	return t
}

// memoryLimitEnv carries the container's memory limit to the server
// (--memory-limit).
const memoryLimitEnv = config.EnvPrefix + "MEMORY_LIMIT"

// checkDefaulted refuses a spec that the API server did not default. The
// CRD's markers are the one place the API's defaults live, and the builders
// read every defaulted field as it is. A spec without them comes from a
// CRD older than this operator (Helm installs crds/ once and never
// upgrades it); the fix is to apply this release's CRD, not to guess here.
func checkDefaulted(spec vgv1.VoiceGatewaySpec) error {
	var missing []string
	for _, f := range []struct {
		field string
		set   bool
	}{
		{"replicas", spec.Replicas != nil},
		{"imagePullPolicy", spec.ImagePullPolicy != ""},
		{"backend.type", spec.Backend.Type != ""},
		{"backend.openai.model", spec.Backend.OpenAI == nil || spec.Backend.OpenAI.Model != ""},
		{"auth.clientTokenTTL", spec.Auth.ClientTokenTTL != nil},
		{"sessions.maxPerPod", spec.Sessions.MaxPerPod != 0},
		{"sessions.idleTimeout", spec.Sessions.IdleTimeout != nil},
		{"sessions.maxDuration", spec.Sessions.MaxDuration != nil},
		{"sessions.maxBufferedAudio", spec.Sessions.MaxBufferedAudio != nil},
		{"auth.maxSessionsPerToken", spec.Auth.MaxSessionsPerToken != 0},
		{"rateLimit.window", spec.RateLimit.Window != nil},
		{"rateLimit.suspiciousAfter", spec.RateLimit.SuspiciousAfter != 0},
		{"rateLimit.blockAfter", spec.RateLimit.BlockAfter != 0},
		{"rateLimit.blockDuration", spec.RateLimit.BlockDuration != nil},
		{"rateLimit.maxTracked", spec.RateLimit.MaxTracked != 0},
		{"drain.preStopDelay", spec.Drain.PreStopDelay != nil},
		{"drain.timeout", spec.Drain.Timeout != nil},
		{"service.type", spec.Service.Type != ""},
		{"service.port", spec.Service.Port != 0},
		{"disruption.maxUnavailable", spec.Disruption.MaxUnavailable != nil},
		{"networkPolicy.enabled", spec.NetworkPolicy.Enabled != nil},
		{"logLevel", spec.LogLevel != ""},
		// Read only while autoscaling is on; a CRD without spec.autoscaling
		// prunes it, which leaves it off.
		{"autoscaling.minReplicas", !spec.Autoscaling.Enabled || spec.Autoscaling.MinReplicas != 0},
		{"autoscaling.maxReplicas", !spec.Autoscaling.Enabled || spec.Autoscaling.MaxReplicas != 0},
		{"autoscaling.scaleDownStabilizationWindow", !spec.Autoscaling.Enabled || spec.Autoscaling.ScaleDownStabilizationWindow != nil},
	} {
		if !f.set {
			missing = append(missing, "spec."+f.field)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("the API server did not default %s: the installed VoiceGateway CRD is older than the operator; apply the CRD of this release", strings.Join(missing, ", "))
	}
	return nil
}

// serverConfig turns a defaulted spec into the voice server's settings,
// starting from config.Default(), the server's own defaults, for what the
// spec does not say. The API server's validation already refused specs
// that break the server's rules; config.Validate is the last word, so that
// a VoiceGateway is never rolled out with settings that would crash-loop.
func serverConfig(vg *vgv1.VoiceGateway) (config.Config, error) {
	spec := vg.Spec
	cfg := config.Default()
	cfg.Listen = ":" + strconv.Itoa(int(HTTPPort))
	cfg.AdminListen = ":" + strconv.Itoa(int(AdminPort))
	cfg.Backend = string(spec.Backend.Type)
	cfg.FleetSecretDir = fleetDir
	switch {
	case spec.Auth.APIKeysSecretRef != nil:
		cfg.APIKeysFile = apiKeysDir + "/" + apiKeysFile
	case !spec.Auth.InsecureNoAuth:
		// The operator's generated key, or the api-keys of the user's
		// fleet Secret, in the same mount.
		cfg.APIKeysFile = fleetDir + "/" + fleet.APIKeysFile
	}
	cfg.InsecureNoAuth = spec.Auth.InsecureNoAuth
	cfg.AllowAPIKeyInBrowser = spec.Auth.AllowAPIKeyInBrowser
	cfg.DebugEndpoints = spec.DebugEndpoints
	cfg.ClientTokenTTL = spec.Auth.ClientTokenTTL.Duration
	cfg.LogLevel = spec.LogLevel

	cfg.Sessions.Limit = int(spec.Sessions.MaxPerPod)
	cfg.Sessions.IdleTimeout = spec.Sessions.IdleTimeout.Duration
	cfg.Sessions.MaxDuration = spec.Sessions.MaxDuration.Duration
	cfg.Sessions.MaxBufferedAudio = spec.Sessions.MaxBufferedAudio.Duration
	cfg.Sessions.MaxPerAPIKey = int(spec.Sessions.MaxPerAPIKey)
	cfg.Sessions.MaxPerClientIP = int(spec.Sessions.MaxPerClientIP)
	cfg.Sessions.MaxPerToken = int(spec.Auth.MaxSessionsPerToken)
	// The memory limit is not in the file: it comes from the container's
	// own limits.memory, through the downward API (memoryLimitEnv).

	rl := spec.RateLimit
	cfg.RateLimit.Window = rl.Window.Duration
	cfg.RateLimit.BlockDuration = rl.BlockDuration.Duration
	cfg.RateLimit.SuspiciousAfter = int(rl.SuspiciousAfter)
	cfg.RateLimit.BlockAfter = int(rl.BlockAfter)
	cfg.RateLimit.MaxTracked = int(rl.MaxTracked)
	cfg.RateLimit.TrustedProxies = slices.Clone(rl.TrustedProxies)
	// The fleet shares the limiter by gossip, found through the headless
	// Service and encrypted with the fleet Secret's fleet-key; the pod
	// advertises its own IP (an environment variable, set from the downward
	// API, because the file is the same for every pod).
	cfg.Cluster.Listen = ":" + strconv.Itoa(int(GossipPort))
	cfg.Cluster.Peers = []string{PeersServiceName(vg) + "." + vg.Namespace + ".svc:" + strconv.Itoa(int(GossipPort))}
	// Where Services have no DNS, the pods' addresses from the operator.
	cfg.Cluster.PeersFile = peersDir + "/" + peersFileKey
	// On the pod's emptyDir, the state survives a restart of the container
	// inside the pod: the fallback of a replica that has no peer to hand
	// it to (docs/operations.md, "The fleet's limiter").
	cfg.RateLimit.StateFile = stateDir + "/ratelimit.json"

	timing := drainTimingOf(spec.Drain)
	cfg.Drain.Timeout = timing.drainTimeout
	cfg.Drain.PropagationDelay = timing.preStopDelay
	cfg.Drain.NotifyWindow = timing.notifyWindow
	cfg.Drain.ExitMargin = timing.exitMargin

	if b := spec.Backend; b.Type == vgv1.BackendOpenAI && b.OpenAI != nil {
		// An empty URL means OpenAI's: the server's default.
		if b.OpenAI.URL != "" {
			cfg.OpenAI.URL = b.OpenAI.URL
		}
		cfg.OpenAI.Model = b.OpenAI.Model
		cfg.OpenAI.Models = slices.Clone(b.OpenAI.Models)
		if b.OpenAI.APIKeySecretRef != nil {
			cfg.OpenAI.APIKeyFile = openAIKeyDir + "/" + openAIKeyFile
		}
	}
	if err := cfg.Validate(); err != nil {
		return config.Config{}, err
	}
	return cfg, nil
}

// desiredConfigMap holds the server settings as the YAML file the server
// reads with --config.
func desiredConfigMap(vg *vgv1.VoiceGateway, cfg config.Config) (*corev1.ConfigMap, error) {
	data, err := cfg.YAML()
	if err != nil {
		return nil, fmt.Errorf("rendering the server settings: %w", err)
	}
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: objectMeta(vg, configMapName(vg)),
		Data:       map[string]string{configFileKey: string(data)},
	}, nil
}

// desiredServiceAccount is the pods' own identity, with no token: the voice
// server needs no Kubernetes credentials.
func desiredServiceAccount(vg *vgv1.VoiceGateway) *corev1.ServiceAccount {
	return &corev1.ServiceAccount{
		TypeMeta:                     metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
		ObjectMeta:                   objectMeta(vg, vg.Name),
		AutomountServiceAccountToken: ptr.To(false),
	}
}

// desiredService exposes the sessions port only; the admin port stays
// reachable by pod IP for the kubelet and the operator.
func desiredService(vg *vgv1.VoiceGateway) *corev1.Service {
	svc := vg.Spec.Service
	meta := objectMeta(vg, vg.Name)
	if len(svc.Annotations) > 0 {
		meta.Annotations = maps(svc.Annotations)
	}
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: meta,
		Spec: corev1.ServiceSpec{
			Type:     svc.Type,
			Selector: SelectorLabels(vg.Name),
			Ports: []corev1.ServicePort{{
				Name:       httpPortName,
				Protocol:   corev1.ProtocolTCP,
				Port:       svc.Port,
				TargetPort: intstr.FromString(httpPortName),
			}},
		},
	}
}

// desiredPeersService is the headless Service the pods find each other
// through for gossip. It publishes not-ready addresses: a starting pod must
// find its peers before it is ready (it takes their limiter state first),
// and a draining one must stay reachable while it hands its state on.
func desiredPeersService(vg *vgv1.VoiceGateway) *corev1.Service {
	return &corev1.Service{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: objectMeta(vg, PeersServiceName(vg)),
		Spec: corev1.ServiceSpec{
			Type:                     corev1.ServiceTypeClusterIP,
			ClusterIP:                corev1.ClusterIPNone,
			PublishNotReadyAddresses: true,
			Selector:                 SelectorLabels(vg.Name),
			Ports: []corev1.ServicePort{
				{Name: gossipPortName, Protocol: corev1.ProtocolTCP, Port: GossipPort, TargetPort: intstr.FromString(gossipPortName)},
				{Name: gossipUDPPortName, Protocol: corev1.ProtocolUDP, Port: GossipPort, TargetPort: intstr.FromString(gossipUDPPortName)},
			},
		},
	}
}

// desiredPeersConfigMap lists the gossip addresses of the VoiceGateway's
// pods, for the servers' --cluster-peers-file: the headless Service's DNS
// name finds the peers where the cluster has DNS for Services; this file
// does everywhere. It is outside the config hash, so a pod coming or going
// never rolls the others; the kubelet refreshes the mounted file, and a
// starting pod mounts the list as it is then (the pods already running,
// which it needs to join).
func desiredPeersConfigMap(vg *vgv1.VoiceGateway, pods []corev1.Pod) *corev1.ConfigMap {
	var addrs []string
	for i := range pods {
		if ip := pods[i].Status.PodIP; ip != "" {
			addrs = append(addrs, net.JoinHostPort(ip, strconv.Itoa(int(GossipPort))))
		}
	}
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	data := "# The gossip addresses of " + vg.Name + "'s pods, written by the operator.\n"
	for _, a := range addrs {
		data += a + "\n"
	}
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: objectMeta(vg, PeersServiceName(vg)),
		Data:       map[string]string{peersFileKey: data},
	}
}

// desiredPodDisruptionBudget keeps node drains from taking more pods at
// once than spec.disruption allows. Pods that are not ready may always be
// evicted: they hold no calls, and keeping them would block node drains.
func desiredPodDisruptionBudget(vg *vgv1.VoiceGateway) *policyv1.PodDisruptionBudget {
	maxUnavailable := *vg.Spec.Disruption.MaxUnavailable
	return &policyv1.PodDisruptionBudget{
		TypeMeta:   metav1.TypeMeta{APIVersion: "policy/v1", Kind: "PodDisruptionBudget"},
		ObjectMeta: objectMeta(vg, vg.Name),
		Spec: policyv1.PodDisruptionBudgetSpec{
			MaxUnavailable:             &maxUnavailable,
			Selector:                   &metav1.LabelSelector{MatchLabels: SelectorLabels(vg.Name)},
			UnhealthyPodEvictionPolicy: ptr.To(policyv1.AlwaysAllow),
		},
	}
}

// desiredDeployment runs the voice server pods. configHash covers the
// ConfigMap and the referenced Secrets so that a change of either rolls the
// pods, which then drain their calls as any rollout does. The fleet Secret
// is not in it: its keys rotate under running pods, which read the mounted
// files again.
func desiredDeployment(vg *vgv1.VoiceGateway, opts BuildOptions, configHash string) *appsv1.Deployment {
	spec := vg.Spec
	timing := drainTimingOf(spec.Drain)
	// No CRD default: the operator's own release holds the server.
	image := spec.Image
	if image == "" {
		image = opts.DefaultImage
	}

	podLabels := commonLabels(vg)
	podAnnotations := maps(spec.PodAnnotations)
	if podAnnotations == nil {
		podAnnotations = map[string]string{}
	}
	podAnnotations[AnnotationConfigHash] = configHash

	volumes := []corev1.Volume{
		{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
			LocalObjectReference: corev1.LocalObjectReference{Name: configMapName(vg)},
			Items:                []corev1.KeyToPath{{Key: configFileKey, Path: configFileKey}},
		}}},
		{Name: "state", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("64Mi"))}}},
		{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{SizeLimit: ptr.To(resource.MustParse("64Mi"))}}},
	}
	// The peers list, optional so that a pod may start before it exists.
	volumes = append(volumes, corev1.Volume{Name: "peers", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{
		LocalObjectReference: corev1.LocalObjectReference{Name: PeersServiceName(vg)},
		Items:                []corev1.KeyToPath{{Key: peersFileKey, Path: peersFileKey}},
		Optional:             ptr.To(true),
	}}})
	// The whole fleet Secret, without subPath or items: the kubelet updates
	// such a mount in place when the Secret changes (a subPath mount never
	// changes), which is how a key rotation reaches running pods.
	volumes = append(volumes, corev1.Volume{Name: "fleet", VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName:  fleetSecretName(vg),
		DefaultMode: ptr.To(int32(0o440)),
	}}})
	mounts := []corev1.VolumeMount{
		{Name: "config", MountPath: configDir, ReadOnly: true},
		{Name: "state", MountPath: stateDir},
		{Name: "tmp", MountPath: "/tmp"},
		{Name: "fleet", MountPath: fleetDir, ReadOnly: true},
		{Name: "peers", MountPath: peersDir, ReadOnly: true},
	}
	if ref := spec.Auth.APIKeysSecretRef; ref != nil {
		volumes = append(volumes, secretVolume("api-keys", ref, apiKeysFile))
		mounts = append(mounts, corev1.VolumeMount{Name: "api-keys", MountPath: apiKeysDir, ReadOnly: true})
	}
	if spec.Backend.Type == vgv1.BackendOpenAI && spec.Backend.OpenAI != nil && spec.Backend.OpenAI.APIKeySecretRef != nil {
		volumes = append(volumes, secretVolume("openai-api-key", spec.Backend.OpenAI.APIKeySecretRef, openAIKeyFile))
		mounts = append(mounts, corev1.VolumeMount{Name: "openai-api-key", MountPath: openAIKeyDir, ReadOnly: true})
	}

	adminGet := func(path string) corev1.ProbeHandler {
		return corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromString(adminPortName)}}
	}

	container := corev1.Container{
		Name:            containerName,
		Image:           image,
		ImagePullPolicy: spec.ImagePullPolicy,
		Command:         []string{"/voice-server"},
		Args:            []string{"--config", configDir + "/" + configFileKey},
		Ports: []corev1.ContainerPort{
			{Name: httpPortName, ContainerPort: HTTPPort, Protocol: corev1.ProtocolTCP},
			{Name: adminPortName, ContainerPort: AdminPort, Protocol: corev1.ProtocolTCP},
			{Name: gossipPortName, ContainerPort: GossipPort, Protocol: corev1.ProtocolTCP},
			{Name: gossipUDPPortName, ContainerPort: GossipPort, Protocol: corev1.ProtocolUDP},
		},
		// Readiness fails the moment termination begins; liveness stays
		// healthy through the drain, since restarting a draining pod would
		// cut the calls the drain protects.
		ReadinessProbe: &corev1.Probe{
			ProbeHandler:     adminGet("/readyz"),
			PeriodSeconds:    2,
			TimeoutSeconds:   1,
			SuccessThreshold: 1,
			FailureThreshold: 2,
		},
		LivenessProbe: &corev1.Probe{
			ProbeHandler:     adminGet("/healthz"),
			PeriodSeconds:    10,
			TimeoutSeconds:   2,
			SuccessThreshold: 1,
			FailureThreshold: 3,
		},
		StartupProbe: &corev1.Probe{
			ProbeHandler:     adminGet("/healthz"),
			PeriodSeconds:    1,
			TimeoutSeconds:   1,
			SuccessThreshold: 1,
			FailureThreshold: 30,
		},
		// The hook returns after the propagation delay, so the kubelet's
		// SIGTERM comes once endpoints no longer route to the pod. It runs
		// the server binary itself (the image has no shell), which reads
		// the admin token from the mounted fleet Secret: /drain is closed
		// to callers without it, as the kubelet's httpGet would be.
		Lifecycle: &corev1.Lifecycle{
			PreStop: &corev1.LifecycleHandler{Exec: &corev1.ExecAction{
				Command: []string{"/voice-server", "drain", "--config", configDir + "/" + configFileKey},
			}},
		},
		SecurityContext: &corev1.SecurityContext{
			RunAsNonRoot:             ptr.To(true),
			AllowPrivilegeEscalation: ptr.To(false),
			ReadOnlyRootFilesystem:   ptr.To(true),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		VolumeMounts:             mounts,
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		// The server's memory budget is half of the container's memory
		// limit, and it sets the Go runtime's soft limit to 90 % of it
		// (docs/operations.md, "The memory budget"). Without a limit the
		// kubelet gives the node's allocatable memory.
		Env: []corev1.EnvVar{{
			Name: memoryLimitEnv,
			ValueFrom: &corev1.EnvVarSource{ResourceFieldRef: &corev1.ResourceFieldSelector{
				ContainerName: containerName, Resource: "limits.memory",
			}},
		}, {
			// The gossip address peers reach this pod at: its own IP, which
			// the shared ConfigMap cannot hold.
			Name:      podIPEnv,
			ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}},
		}, {
			Name:  config.EnvPrefix + "CLUSTER_ADVERTISE",
			Value: "$(" + podIPEnv + "):" + strconv.Itoa(int(GossipPort)),
		}},
	}

	if spec.Resources != nil {
		container.Resources = *spec.Resources.DeepCopy()
	}

	// By default the pods spread over zones, then over nodes, as evenly as
	// the scheduler can (ScheduleAnyway: a cluster with one zone or one
	// node still runs them all): losing a zone or a node loses the fewest
	// calls.
	spread := spec.TopologySpreadConstraints
	if len(spread) == 0 {
		for _, key := range []string{corev1.LabelTopologyZone, corev1.LabelHostname} {
			spread = append(spread, corev1.TopologySpreadConstraint{
				MaxSkew:           1,
				TopologyKey:       key,
				WhenUnsatisfiable: corev1.ScheduleAnyway,
				LabelSelector:     &metav1.LabelSelector{MatchLabels: SelectorLabels(vg.Name)},
			})
		}
	}

	replicas := *spec.Replicas
	maxSurge := intstr.FromString("25%")
	maxUnavailable := intstr.FromInt32(0)

	return &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: objectMeta(vg, vg.Name),
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: SelectorLabels(vg.Name)},
			// Surge first: a new pod is ready before an old one starts
			// draining, so capacity never drops during a rollout.
			Strategy: appsv1.DeploymentStrategy{
				Type: appsv1.RollingUpdateDeploymentStrategyType,
				RollingUpdate: &appsv1.RollingUpdateDeployment{
					MaxSurge:       &maxSurge,
					MaxUnavailable: &maxUnavailable,
				},
			},
			RevisionHistoryLimit: ptr.To(int32(5)),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels, Annotations: podAnnotations},
				Spec: corev1.PodSpec{
					ServiceAccountName:            vg.Name,
					AutomountServiceAccountToken:  ptr.To(false),
					EnableServiceLinks:            ptr.To(false),
					TerminationGracePeriodSeconds: ptr.To(timing.gracePeriodSeconds),
					SecurityContext: &corev1.PodSecurityContext{
						RunAsNonRoot:   ptr.To(true),
						RunAsUser:      ptr.To(nonRootID),
						RunAsGroup:     ptr.To(nonRootID),
						FSGroup:        ptr.To(nonRootID),
						SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
					},
					Containers:                []corev1.Container{container},
					Volumes:                   volumes,
					ImagePullSecrets:          slices.Clone(spec.ImagePullSecrets),
					NodeSelector:              maps(spec.NodeSelector),
					Tolerations:               slices.Clone(spec.Tolerations),
					Affinity:                  spec.Affinity.DeepCopy(),
					TopologySpreadConstraints: spread,
					PriorityClassName:         spec.PriorityClassName,
				},
			},
		},
	}
}

// desiredNetworkPolicy admits the public to the sessions port (as
// spec.networkPolicy.from allows) and keeps the admin port to the
// operator's namespace, the VoiceGateway's own pods and
// spec.networkPolicy.adminFrom. The kubelet's probes come from the node,
// which NetworkPolicies never block.
func desiredNetworkPolicy(vg *vgv1.VoiceGateway, opts BuildOptions) *networkingv1.NetworkPolicy {
	np := vg.Spec.NetworkPolicy
	tcp := corev1.ProtocolTCP
	port := func(p int32) []networkingv1.NetworkPolicyPort {
		return []networkingv1.NetworkPolicyPort{{Protocol: &tcp, Port: ptr.To(intstr.FromInt32(p))}}
	}
	var adminFrom []networkingv1.NetworkPolicyPeer
	if opts.OperatorNamespace != "" {
		adminFrom = append(adminFrom, networkingv1.NetworkPolicyPeer{NamespaceSelector: &metav1.LabelSelector{
			MatchLabels: map[string]string{corev1.LabelMetadataName: opts.OperatorNamespace},
		}})
	}
	// The fleet itself: its pods gossip the rate limiter's state on the
	// gossip port (below); nothing calls a peer's admin port, which stays
	// open to them as it was.
	fleetPods := networkingv1.NetworkPolicyPeer{PodSelector: &metav1.LabelSelector{MatchLabels: SelectorLabels(vg.Name)}}
	adminFrom = append(adminFrom, fleetPods)
	udp := corev1.ProtocolUDP
	gossipPorts := []networkingv1.NetworkPolicyPort{
		{Protocol: &tcp, Port: ptr.To(intstr.FromInt32(GossipPort))},
		{Protocol: &udp, Port: ptr.To(intstr.FromInt32(GossipPort))},
	}
	for _, peer := range np.AdminFrom {
		adminFrom = append(adminFrom, *peer.DeepCopy())
	}
	var from []networkingv1.NetworkPolicyPeer
	for _, peer := range np.From {
		from = append(from, *peer.DeepCopy())
	}
	return &networkingv1.NetworkPolicy{
		TypeMeta:   metav1.TypeMeta{APIVersion: "networking.k8s.io/v1", Kind: "NetworkPolicy"},
		ObjectMeta: objectMeta(vg, vg.Name),
		Spec: networkingv1.NetworkPolicySpec{
			PodSelector: metav1.LabelSelector{MatchLabels: SelectorLabels(vg.Name)},
			PolicyTypes: []networkingv1.PolicyType{networkingv1.PolicyTypeIngress},
			Ingress: []networkingv1.NetworkPolicyIngressRule{
				// No peers: from anywhere.
				{Ports: port(HTTPPort), From: from},
				{Ports: port(AdminPort), From: adminFrom},
				// Gossip from the fleet's own pods only.
				{Ports: gossipPorts, From: []networkingv1.NetworkPolicyPeer{*fleetPods.DeepCopy()}},
			},
		},
	}
}

// networkPolicyEnabled: spec.networkPolicy.enabled (true by default).
func networkPolicyEnabled(vg *vgv1.VoiceGateway) bool {
	return *vg.Spec.NetworkPolicy.Enabled
}

func secretVolume(name string, ref *vgv1.SecretKeyRef, path string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{Secret: &corev1.SecretVolumeSource{
		SecretName:  ref.Name,
		Items:       []corev1.KeyToPath{{Key: ref.Key, Path: path}},
		DefaultMode: ptr.To(int32(0o440)),
	}}}
}

// referencedSecrets names each Secret the pods mount, with the keys used.
func referencedSecrets(vg *vgv1.VoiceGateway) []vgv1.SecretKeyRef {
	var refs []vgv1.SecretKeyRef
	if ref := vg.Spec.Auth.APIKeysSecretRef; ref != nil {
		refs = append(refs, *ref)
	}
	if b := vg.Spec.Backend; b.Type == vgv1.BackendOpenAI && b.OpenAI != nil && b.OpenAI.APIKeySecretRef != nil {
		refs = append(refs, *b.OpenAI.APIKeySecretRef)
	}
	return refs
}

// configHash digests the server settings and the data of every referenced
// Secret key, in a fixed order.
func configHash(configYAML string, refs []vgv1.SecretKeyRef, in inputs) string {
	h := sha256.New()
	writeField := func(b []byte) {
		var n [8]byte
		for i := range n {
			n[i] = byte(len(b) >> (8 * i))
		}
		h.Write(n[:])
		h.Write(b)
	}
	writeField([]byte(configYAML))
	for _, ref := range refs {
		writeField([]byte(ref.Name))
		writeField([]byte(ref.Key))
		writeField(in.secretData[ref.Name][ref.Key])
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// maps copies a string map; nil stays nil so the builders do not produce
// empty objects the API server would drop.
func maps(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
