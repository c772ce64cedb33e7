/*
Copyright The voicegateway Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package v1alpha1

import (
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// BackendType names the speech backend the voice server relays sessions to.
// +kubebuilder:validation:Enum=echo;openai
type BackendType string

const (
	// BackendEcho answers each committed audio buffer with the same audio:
	// no key, no network, the whole path works anywhere.
	BackendEcho BackendType = "echo"
	// BackendOpenAI relays sessions to the OpenAI Realtime API.
	BackendOpenAI BackendType = "openai"
)

// Condition types reported in status.conditions.
const (
	// ConditionAvailable is True while at least one pod accepts sessions.
	ConditionAvailable = "Available"
	// ConditionProgressing is True while the pods are being rolled or
	// scaled: new pods starting, old pods draining.
	ConditionProgressing = "Progressing"
	// ConditionDegraded is True when the operator cannot make the cluster
	// match the spec, or the rollout has stopped making progress.
	ConditionDegraded = "Degraded"
)

// AnnotationRotateKeys on a VoiceGateway asks the operator to rotate the
// client-token signing keys of the fleet Secret it owns: set it to any new
// value (a date, a counter) and each new value rotates once, e.g.
//
//	kubectl annotate vgw demo --overwrite voicegateway.dev/rotate-keys="$(date +%s)"
const AnnotationRotateKeys = "voicegateway.dev/rotate-keys"

// VoiceGatewaySpec is the desired state of a voice gateway: how many voice
// server pods, what they relay to, who may connect, and how a pod drains its
// calls when it is replaced.
//
// +kubebuilder:validation:XValidation:rule="!has(self.autoscaling) || !has(self.autoscaling.targetSessionsPerPod) || !has(self.sessions) || !has(self.sessions.maxPerPod) || self.autoscaling.targetSessionsPerPod <= self.sessions.maxPerPod",message="autoscaling.targetSessionsPerPod must not be more than sessions.maxPerPod: a pod refuses sessions beyond maxPerPod"
type VoiceGatewaySpec struct {
	// Replicas is the number of voice server pods.
	// +kubebuilder:default=2
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=1000
	// +optional
	Replicas *int32 `json:"replicas,omitempty"`

	// Image of the voice server. Empty means the image of the operator's own
	// release, which holds the voice server at the same version.
	// +kubebuilder:validation:MaxLength=512
	// +optional
	Image string `json:"image,omitempty"`

	// ImagePullPolicy of the voice server container.
	// +kubebuilder:default=IfNotPresent
	// +kubebuilder:validation:Enum=Always;IfNotPresent;Never
	// +optional
	ImagePullPolicy corev1.PullPolicy `json:"imagePullPolicy,omitempty"`

	// ImagePullSecrets for a private registry.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	ImagePullSecrets []corev1.LocalObjectReference `json:"imagePullSecrets,omitempty"`

	// Backend is the speech backend sessions are relayed to.
	// +kubebuilder:default={type: echo}
	// +optional
	Backend BackendSpec `json:"backend,omitempty"`

	// Auth decides who may open a session: API keys from a Secret, an API
	// key the operator generates into the fleet Secret (the default), or
	// (on a test cluster) no authentication at all.
	// +kubebuilder:default={}
	// +optional
	Auth AuthSpec `json:"auth,omitempty"`

	// Sessions bounds the sessions of each pod.
	// +kubebuilder:default={}
	// +optional
	Sessions SessionsSpec `json:"sessions,omitempty"`

	// RateLimit tunes the tracking of failed authentication per client IP.
	// +kubebuilder:default={}
	// +optional
	RateLimit RateLimitSpec `json:"rateLimit,omitempty"`

	// Drain times how a terminating pod hands its calls over.
	// +kubebuilder:default={}
	// +optional
	Drain DrainSpec `json:"drain,omitempty"`

	// Service exposes the sessions port (never the admin port).
	// +kubebuilder:default={}
	// +optional
	Service ServiceSpec `json:"service,omitempty"`

	// Disruption bounds voluntary disruptions (node drains) through a
	// PodDisruptionBudget.
	// +kubebuilder:default={}
	// +optional
	Disruption DisruptionSpec `json:"disruption,omitempty"`

	// Resources of the voice server container.
	// +kubebuilder:default={requests: {cpu: "100m", memory: "128Mi"}, limits: {memory: "512Mi"}}
	// +optional
	Resources *corev1.ResourceRequirements `json:"resources,omitempty"`

	// LogLevel of the voice server.
	// +kubebuilder:default=info
	// +kubebuilder:validation:Enum=debug;info;warn;error
	// +optional
	LogLevel string `json:"logLevel,omitempty"`

	// NodeSelector of the pods.
	// +optional
	NodeSelector map[string]string `json:"nodeSelector,omitempty"`

	// Tolerations of the pods.
	// +kubebuilder:validation:MaxItems=64
	// +listType=atomic
	// +optional
	Tolerations []corev1.Toleration `json:"tolerations,omitempty"`

	// Affinity of the pods.
	// +optional
	Affinity *corev1.Affinity `json:"affinity,omitempty"`

	// TopologySpreadConstraints of the pods. Empty means the pods are
	// spread over nodes where the scheduler can.
	// +kubebuilder:validation:MaxItems=16
	// +listType=atomic
	// +optional
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints,omitempty"`

	// PriorityClassName of the pods.
	// +kubebuilder:validation:MaxLength=253
	// +optional
	PriorityClassName string `json:"priorityClassName,omitempty"`

	// PodAnnotations are added to every pod, e.g. for a service mesh or a
	// metrics scraper.
	// +optional
	PodAnnotations map[string]string `json:"podAnnotations,omitempty"`

	// NetworkPolicy limits who reaches the pods: the sessions port as
	// From allows, the admin port only from the operator, the fleet itself
	// and AdminFrom.
	// +kubebuilder:default={}
	// +optional
	NetworkPolicy NetworkPolicySpec `json:"networkPolicy,omitempty"`

	// DebugEndpoints serves /debug/pprof and /debug/memstats on the admin
	// port, to holders of the admin token only.
	// +kubebuilder:default=false
	// +optional
	DebugEndpoints bool `json:"debugEndpoints,omitempty"`

	// PodTemplate is merged into the pod template the operator builds, the
	// way `kubectl patch --type strategic` merges, as ECK's podTemplate is:
	// labels, annotations and the node selector are added to; containers,
	// env, volumes, volume mounts and ports are merged by name (a container
	// named voice-server changes the server's, any other is a sidecar);
	// topology spread constraints by topology key; tolerations, affinity,
	// the priority class and other fields replace. The selector labels, the
	// config hash and the server container's image, command, arguments,
	// ports, probes, preStop hook, security context, memory-limit env and
	// the operator's volumes and mounts stay the operator's, as do the
	// pods' service account and termination grace period: a null or a
	// $patch directive cannot remove them. It is merged after the fields
	// above (nodeSelector, tolerations, affinity, ...), so it wins over
	// them. Not validated here: a value of the wrong type is condition
	// Degraded, reason InvalidPodTemplate; a wrong field fails the
	// Deployment's apply (condition Degraded, reason ApplyFailed). Kept as
	// raw JSON, so that one VoiceGateway's bad podTemplate cannot stop the
	// operator reading the others.
	// +kubebuilder:pruning:PreserveUnknownFields
	// +kubebuilder:validation:Schemaless
	// +kubebuilder:validation:Type=object
	// +optional
	PodTemplate *runtime.RawExtension `json:"podTemplate,omitempty"`

	// Autoscaling scales the pods on their live sessions. Off by default;
	// when on, the operator owns spec.replicas (docs/operations.md,
	// "Autoscaling on sessions").
	// +kubebuilder:default={}
	// +optional
	Autoscaling AutoscalingSpec `json:"autoscaling,omitempty"`
}

// AutoscalingSpec scales the pods on their live sessions, as each pod's
// admin status reports them: up at once to the pods the sessions need at
// TargetSessionsPerPod, down only once fewer pods have been enough for a
// whole ScaleDownStabilizationWindow. While it is enabled the operator
// writes spec.replicas through the scale subresource (field manager
// voicegateway-autoscaler), as a HorizontalPodAutoscaler would; a
// HorizontalPodAutoscaler that targets the same VoiceGateway is refused
// (condition Degraded, reason AutoscalingConflict).
//
// +kubebuilder:validation:XValidation:rule="!has(self.minReplicas) || !has(self.maxReplicas) || self.minReplicas <= self.maxReplicas",message="autoscaling.minReplicas must not be more than autoscaling.maxReplicas"
type AutoscalingSpec struct {
	// Enabled lets the operator set spec.replicas from the sessions.
	// +kubebuilder:default=false
	// +optional
	Enabled bool `json:"enabled"`

	// MinReplicas is the fewest pods kept, however few the sessions: at
	// least one, so that a new session always finds a pod.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	MinReplicas int32 `json:"minReplicas,omitempty"`

	// MaxReplicas is the most pods the sessions may call for.
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	MaxReplicas int32 `json:"maxReplicas,omitempty"`

	// TargetSessionsPerPod is the load each pod is sized for: the pods
	// wanted are the live sessions divided by it, rounded up. Empty means
	// 70% of sessions.maxPerPod, which leaves each pod room for the calls
	// a drain moves to it.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	TargetSessionsPerPod *int32 `json:"targetSessionsPerPod,omitempty"`

	// ScaleDownStabilizationWindow is how long the sessions must have
	// needed fewer pods before the fleet shrinks, so that a burst of short
	// calls does not flap it. Scaling up never waits.
	// +kubebuilder:default="5m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$')",message="autoscaling.scaleDownStabilizationWindow must be a duration: a number and a unit (ms, s, m or h), such as 0, 500ms, 5s or 1m30s"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$') || (duration(self) <= duration('1h'))",message="autoscaling.scaleDownStabilizationWindow must be at most 1h"
	// +optional
	ScaleDownStabilizationWindow *metav1.Duration `json:"scaleDownStabilizationWindow,omitempty"`
}

// NetworkPolicySpec shapes the NetworkPolicy the operator applies to the
// voice server pods. The kubelet's probes come from the node, which a
// NetworkPolicy never blocks.
type NetworkPolicySpec struct {
	// Enabled applies the NetworkPolicy; false removes it and leaves the
	// pods open to the whole pod network (the admin endpoints that change
	// or reveal state still need the admin token).
	// +kubebuilder:default=true
	// +optional
	Enabled *bool `json:"enabled,omitempty"`

	// From are the peers allowed to the sessions port. Empty means
	// anywhere, as a public voice service needs.
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	// +optional
	From []networkingv1.NetworkPolicyPeer `json:"from,omitempty"`

	// AdminFrom are peers allowed to the admin port (health, metrics,
	// status) besides the operator's namespace and the VoiceGateway's own
	// pods, e.g. the namespace of a metrics scraper:
	// [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}].
	// +kubebuilder:validation:MaxItems=32
	// +listType=atomic
	// +optional
	AdminFrom []networkingv1.NetworkPolicyPeer `json:"adminFrom,omitempty"`
}

// BackendSpec chooses the speech backend.
//
// +kubebuilder:validation:XValidation:rule="self.type != 'openai' || (has(self.openai) && has(self.openai.apiKeySecretRef))",message="backend.type openai needs backend.openai.apiKeySecretRef: the name and key of a Secret that holds the OpenAI API key"
// +kubebuilder:validation:XValidation:rule="self.type == 'openai' || !has(self.openai)",message="backend.openai is only used with backend.type openai"
type BackendSpec struct {
	// Type is echo (built in, needs no network) or openai.
	// +kubebuilder:default=echo
	Type BackendType `json:"type,omitempty"`

	// OpenAI configures the openai backend.
	// +optional
	OpenAI *OpenAIBackendSpec `json:"openai,omitempty"`
}

// OpenAIBackendSpec configures the relay to the OpenAI Realtime API.
type OpenAIBackendSpec struct {
	// Model requested upstream.
	// +kubebuilder:default=gpt-realtime
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=128
	// +optional
	Model string `json:"model,omitempty"`

	// Models a client may ask for, with the session URL's model parameter
	// (the OpenAI SDKs send it), a client secret's session.model or a
	// session.update. A model outside the list is refused with
	// model_not_allowed before anything is dialled. Empty allows Model only.
	// +kubebuilder:validation:MaxItems=32
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:items:Pattern=`^[A-Za-z0-9._:-]+$`
	// +listType=set
	// +optional
	Models []string `json:"models,omitempty"`

	// URL of the upstream Realtime endpoint. Empty means OpenAI's.
	// +kubebuilder:validation:MaxLength=2048
	// +kubebuilder:validation:XValidation:rule="self.matches('^wss?://[^/]+')",message="backend.openai.url must be a ws:// or wss:// URL with a host, e.g. wss://api.openai.com/v1/realtime"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^wss?://[^/?#]*@')",message="backend.openai.url must not hold credentials (user:password@): it is logged; put the key in backend.openai.apiKeySecretRef"
	// +optional
	URL string `json:"url,omitempty"`

	// APIKeySecretRef names the Secret and key holding the OpenAI API key.
	// The key is mounted as a file and never appears in the pod spec.
	// +optional
	APIKeySecretRef *SecretKeyRef `json:"apiKeySecretRef,omitempty"`
}

// SecretKeyRef names one key of a Secret in the VoiceGateway's namespace.
type SecretKeyRef struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`

	// Key within the Secret's data.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	// +kubebuilder:validation:Pattern=`^[-._a-zA-Z0-9]+$`
	Key string `json:"key"`
}

// AuthSpec decides who may open a session. With neither APIKeysSecretRef
// nor InsecureNoAuth, the operator generates an API key into the fleet
// Secret (data key api-keys) and names it in status.generatedAPIKey.
//
// +kubebuilder:validation:XValidation:rule="!(has(self.apiKeysSecretRef) && has(self.insecureNoAuth) && self.insecureNoAuth)",message="auth.apiKeysSecretRef and auth.insecureNoAuth cannot both be set: drop one of them"
// +kubebuilder:validation:XValidation:rule="!(has(self.fleetSecretRef) && has(self.keyRotationPeriod))",message="auth.keyRotationPeriod rotates the fleet Secret the operator owns; with auth.fleetSecretRef you rotate your own Secret: drop one of them"
type AuthSpec struct {
	// APIKeysSecretRef names the Secret and key holding the API keys, one
	// per line. The voice server re-reads it when the Secret changes.
	// Empty means an API key the operator generates into the fleet Secret.
	// +optional
	APIKeysSecretRef *SecretKeyRef `json:"apiKeysSecretRef,omitempty"`

	// FleetSecretRef names a Secret of your own that holds the fleet's
	// keys, in the documented format (token-keys.json, admin-token,
	// fleet-key and, without APIKeysSecretRef, api-keys). The operator then
	// only reads it and never rotates it. Empty means the Secret
	// <name>-fleet that the operator generates, owns and rotates.
	// +optional
	FleetSecretRef *LocalSecretRef `json:"fleetSecretRef,omitempty"`

	// KeyRotationPeriod rotates the client-token signing keys of the
	// operator's fleet Secret when the newest key is this old. Empty means
	// only on request (the voicegateway.dev/rotate-keys annotation).
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$')",message="auth.keyRotationPeriod must be a duration: a number and a unit (ms, s, m or h), such as 90s, 2m or 1h30m"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || (duration(self) >= duration('1h') && duration(self) <= duration('8760h'))",message="auth.keyRotationPeriod must be between 1h and 8760h (a year)"
	// +optional
	KeyRotationPeriod *metav1.Duration `json:"keyRotationPeriod,omitempty"`

	// AllowAPIKeyInBrowser accepts a long-lived API key in the
	// openai-insecure-api-key.<key> WebSocket subprotocol, where the OpenAI
	// SDKs put one in a browser and where anyone with the page's devtools
	// can read it. Off, only short-lived client secrets (ek_…, minted with
	// POST /v1/realtime/client_secrets) are accepted there.
	// +kubebuilder:default=false
	// +optional
	AllowAPIKeyInBrowser bool `json:"allowApiKeyInBrowser"`

	// InsecureNoAuth lets anyone open a session. For test clusters only.
	// +kubebuilder:default=false
	// +optional
	InsecureNoAuth bool `json:"insecureNoAuth"`

	// ClientTokenTTL is the lifetime of the short-lived client tokens that
	// browsers use instead of an API key.
	// +kubebuilder:default="60s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$')",message="auth.clientTokenTTL must be a duration: a number and a unit (ms, s, m or h), such as 90s, 2m or 1h30m"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || (duration(self) >= duration('1s') && duration(self) <= duration('10m'))",message="auth.clientTokenTTL must be between 1s and 10m: a leaked token must expire soon"
	// +optional
	ClientTokenTTL *metav1.Duration `json:"clientTokenTTL,omitempty"`

	// MaxSessionsPerToken is how many sessions one client token may open
	// on each pod over its lifetime; one more is refused with 401
	// unauthorized and counts as a failed authentication. 1 makes tokens
	// single-use: a page mints one for each connection.
	// +kubebuilder:default=1
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=1000
	// +optional
	MaxSessionsPerToken int32 `json:"maxSessionsPerToken,omitempty"`
}

// LocalSecretRef names a whole Secret in the VoiceGateway's namespace.
type LocalSecretRef struct {
	// Name of the Secret.
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=253
	Name string `json:"name"`
}

// SessionsSpec bounds the sessions of each pod.
//
// +kubebuilder:validation:XValidation:rule="!has(self.idleTimeout) || !has(self.maxDuration) || !self.idleTimeout.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || !self.maxDuration.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self.idleTimeout) <= duration(self.maxDuration)",message="sessions.idleTimeout must not be longer than sessions.maxDuration"
type SessionsSpec struct {
	// MaxPerPod is the number of concurrent sessions one pod accepts;
	// more are refused with session_limit so the client tries another pod.
	// +kubebuilder:default=1000
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=100000
	// +optional
	MaxPerPod int32 `json:"maxPerPod,omitempty"`

	// IdleTimeout closes a session whose client sent nothing for this long.
	// +kubebuilder:default="2m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$')",message="sessions.idleTimeout must be a duration: a number and a unit (ms, s, m or h), such as 90s, 2m or 1h30m"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || (duration(self) >= duration('1s'))",message="sessions.idleTimeout must be at least 1s"
	// +optional
	IdleTimeout *metav1.Duration `json:"idleTimeout,omitempty"`

	// MaxDuration is the longest a session may live.
	// +kubebuilder:default="1h"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$')",message="sessions.maxDuration must be a duration: a number and a unit (ms, s, m or h), such as 90s, 2m or 1h30m"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || (duration(self) >= duration('1s') && duration(self) <= duration('24h'))",message="sessions.maxDuration must be between 1s and 24h"
	// +optional
	MaxDuration *metav1.Duration `json:"maxDuration,omitempty"`

	// MaxBufferedAudio is the most audio one session may make its pod
	// hold, uncommitted or waiting to be played; more is refused with
	// buffer_full and the session goes on. Besides, each pod keeps what all
	// its sessions hold within half of its memory limit (docs/operations.md,
	// "The memory budget").
	// +kubebuilder:default="10s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$')",message="sessions.maxBufferedAudio must be a duration: a number and a unit (ms, s, m or h), such as 10s or 30s"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || (duration(self) >= duration('1s') && duration(self) <= duration('60s'))",message="sessions.maxBufferedAudio must be between 1s and 60s"
	// +optional
	MaxBufferedAudio *metav1.Duration `json:"maxBufferedAudio,omitempty"`

	// MaxPerAPIKey caps the sessions one API key holds at once on each
	// pod, opened with the key or with the client tokens it minted; more
	// are closed with api_key_session_limit (1008). 0 means no cap.
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000
	// +optional
	MaxPerAPIKey int32 `json:"maxPerAPIKey,omitempty"`

	// MaxPerClientIP caps the sessions one client address (an IPv6
	// client's /64) holds at once on each pod; more are closed with
	// client_ip_session_limit (1008). 0 means no cap. Behind a load
	// balancer, set rateLimit.trustedProxies first: otherwise every client
	// has the balancer's address.
	// +kubebuilder:default=0
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100000
	// +optional
	MaxPerClientIP int32 `json:"maxPerClientIP,omitempty"`
}

// RateLimitSpec tunes the tracking of failed authentication per client IP:
// after SuspiciousAfter failures in Window each attempt is slowed down, after
// BlockAfter the IP is refused for BlockDuration.
//
// +kubebuilder:validation:XValidation:rule="!has(self.blockAfter) || !has(self.suspiciousAfter) || self.blockAfter > self.suspiciousAfter",message="rateLimit.blockAfter must be more than rateLimit.suspiciousAfter: a client is slowed down before it is blocked"
type RateLimitSpec struct {
	// Window over which failures are counted.
	// +kubebuilder:default="1m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$')",message="rateLimit.window must be a duration: a number and a unit (ms, s, m or h), such as 90s, 2m or 1h30m"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || (duration(self) >= duration('1s'))",message="rateLimit.window must be at least 1s"
	// +optional
	Window *metav1.Duration `json:"window,omitempty"`

	// SuspiciousAfter failures in the window slow the client's attempts.
	// +kubebuilder:default=5
	// +kubebuilder:validation:Minimum=1
	// +optional
	SuspiciousAfter int32 `json:"suspiciousAfter,omitempty"`

	// BlockAfter failures in the window block the client.
	// +kubebuilder:default=10
	// +kubebuilder:validation:Minimum=2
	// +optional
	BlockAfter int32 `json:"blockAfter,omitempty"`

	// BlockDuration is how long a blocked client is refused.
	// +kubebuilder:default="15m"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$')",message="rateLimit.blockDuration must be a duration: a number and a unit (ms, s, m or h), such as 90s, 2m or 1h30m"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || (duration(self) >= duration('1s'))",message="rateLimit.blockDuration must be at least 1s"
	// +optional
	BlockDuration *metav1.Duration `json:"blockDuration,omitempty"`

	// MaxTracked bounds the client IPs tracked per pod (about 84 bytes each).
	// +kubebuilder:default=100000
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=10000000
	// +optional
	MaxTracked int32 `json:"maxTracked,omitempty"`

	// TrustedProxies are the addresses or CIDR prefixes of proxies (the
	// cloud load balancer) whose X-Forwarded-For names the client.
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=64
	// +kubebuilder:validation:XValidation:rule="self.all(p, isIP(p) || isCIDR(p))",message="rateLimit.trustedProxies entries must be IP addresses or CIDR prefixes such as 10.0.0.0/8"
	// +listType=atomic
	// +optional
	TrustedProxies []string `json:"trustedProxies,omitempty"`
}

// DrainSpec times how a terminating pod hands its calls over. When a pod is
// terminated it stops being ready at once, keeps accepting sessions for
// PreStopDelay while load balancers catch up, then refuses new sessions and
// tells each live one to reconnect elsewhere. Sessions may run on for
// Timeout; those left then are closed with 1012. The pod's
// terminationGracePeriodSeconds is PreStopDelay + Timeout + a fixed exit
// margin.
//
// +kubebuilder:validation:XValidation:rule="!has(self.notifyWindow) || !has(self.timeout) || !self.notifyWindow.matches('^(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$') || !self.timeout.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || duration(self.notifyWindow) < duration(self.timeout)",message="drain.notifyWindow must be shorter than drain.timeout: every session must be told to reconnect before the deadline"
type DrainSpec struct {
	// PreStopDelay keeps a terminating pod accepting sessions while the
	// endpoints and load balancers drop it.
	// +kubebuilder:default="5s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$')",message="drain.preStopDelay must be a duration: a number and a unit (ms, s, m or h), such as 0, 500ms, 5s or 1m30s"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$') || (duration(self) <= duration('60s'))",message="drain.preStopDelay must be at most 60s"
	// +optional
	PreStopDelay *metav1.Duration `json:"preStopDelay,omitempty"`

	// Timeout is how long sessions may run on after the pod stops accepting
	// new ones.
	// +kubebuilder:default="55s"
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$')",message="drain.timeout must be a duration: a number and a unit (ms, s, m or h), such as 90s, 2m or 1h30m"
	// +kubebuilder:validation:XValidation:rule="!self.matches('^([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+$') || (duration(self) >= duration('5s') && duration(self) <= duration('2h'))",message="drain.timeout must be between 5s and 2h"
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// NotifyWindow spreads the gateway.draining notices over this window so
	// that clients do not all reconnect at once. Empty means a quarter of
	// Timeout, at most 10s.
	// +kubebuilder:validation:Type=string
	// +kubebuilder:validation:MaxLength=32
	// +kubebuilder:validation:XValidation:rule="self.matches('^(0|([0-9]+([.][0-9]+)?(ns|us|µs|ms|s|m|h))+)$')",message="drain.notifyWindow must be a duration: a number and a unit (ms, s, m or h), such as 0, 500ms, 5s or 1m30s"
	// +optional
	NotifyWindow *metav1.Duration `json:"notifyWindow,omitempty"`
}

// ServiceSpec exposes the sessions port.
type ServiceSpec struct {
	// Type of the Service.
	// +kubebuilder:default=ClusterIP
	// +kubebuilder:validation:Enum=ClusterIP;NodePort;LoadBalancer
	// +optional
	Type corev1.ServiceType `json:"type,omitempty"`

	// Port the Service listens on for sessions.
	// +kubebuilder:default=80
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	// +optional
	Port int32 `json:"port,omitempty"`

	// Annotations of the Service, e.g. for a cloud load balancer.
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// DisruptionSpec bounds voluntary disruptions.
type DisruptionSpec struct {
	// MaxUnavailable pods during a voluntary disruption, a number or a
	// percentage.
	// +kubebuilder:default=1
	// +kubebuilder:validation:XIntOrString
	// +kubebuilder:validation:XValidation:rule="type(self) == int ? self >= 0 : self.matches('^[0-9]+%$')",message="disruption.maxUnavailable must be a number of pods (0 or more) or a percentage such as 25%"
	// +optional
	MaxUnavailable *intstr.IntOrString `json:"maxUnavailable,omitempty"`
}

// DrainingPod is a terminating pod that still holds sessions.
type DrainingPod struct {
	// Pod is the pod's name.
	Pod string `json:"pod"`

	// Sessions still open on the pod.
	Sessions int32 `json:"sessions"`

	// Deadline at which the sessions left are closed with 1012.
	// +optional
	Deadline *metav1.Time `json:"deadline,omitempty"`

	// Since is when the pod began to drain.
	// +optional
	Since *metav1.Time `json:"since,omitempty"`
}

// AutoscalingStatus is what the session autoscaler last decided.
type AutoscalingStatus struct {
	// DesiredReplicas is what the autoscaler holds spec.replicas at: the
	// most pods the sessions called for within the scale-down window,
	// between minReplicas and maxReplicas.
	DesiredReplicas int32 `json:"desiredReplicas"`

	// RecommendedReplicas is what the live sessions call for now; below
	// DesiredReplicas while the scale-down window holds the pods.
	RecommendedReplicas int32 `json:"recommendedReplicas"`

	// TargetSessionsPerPod in effect: the spec's, or its default.
	TargetSessionsPerPod int32 `json:"targetSessionsPerPod"`

	// SessionsPerPod is the live sessions over spec.replicas, rounded up.
	SessionsPerPod int32 `json:"sessionsPerPod"`

	// LastScaleTime is when the autoscaler last changed spec.replicas.
	// +optional
	LastScaleTime *metav1.Time `json:"lastScaleTime,omitempty"`
}

// VoiceGatewayStatus is what the operator observes.
type VoiceGatewayStatus struct {
	// ObservedGeneration is the generation of the spec the status is about;
	// it is raised only once that spec was applied successfully.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`

	// Replicas is the number of pods, including old ones that still drain.
	// +optional
	Replicas int32 `json:"replicas"`

	// ReadyReplicas is the number of pods that accept sessions.
	// +optional
	ReadyReplicas int32 `json:"readyReplicas"`

	// UpdatedReplicas is the number of pods that run the current spec.
	// +optional
	UpdatedReplicas int32 `json:"updatedReplicas"`

	// Ready is ReadyReplicas/desired replicas, as kubectl shows it.
	// +optional
	Ready string `json:"ready,omitempty"`

	// Selector of the pods, for the scale subresource.
	// +optional
	Selector string `json:"selector,omitempty"`

	// Sessions is the number of live sessions over all pods, as reported
	// by each pod's admin status endpoint.
	// +optional
	Sessions int32 `json:"sessions"`

	// DrainingSessions is the part of Sessions held by terminating pods.
	// +optional
	DrainingSessions int32 `json:"drainingSessions"`

	// Draining lists the terminating pods that still hold sessions.
	// +listType=map
	// +listMapKey=pod
	// +kubebuilder:validation:MaxItems=1000
	// +optional
	Draining []DrainingPod `json:"draining,omitempty"`

	// Fleet is the pods' gossip membership (the shared rate limiter), as
	// their admin status endpoints report it; absent until a pod reports.
	// +optional
	Fleet *FleetMembership `json:"fleet,omitempty"`

	// FleetSecretName is the Secret that holds the fleet's keys, mounted
	// by every pod.
	// +optional
	FleetSecretName string `json:"fleetSecretName,omitempty"`

	// GeneratedAPIKey names the Secret and key where the API key the
	// operator generated can be read, when it generated one:
	// kubectl get secret <name> -o jsonpath='{.data.api-keys}' | base64 -d
	// +optional
	GeneratedAPIKey *SecretKeyRef `json:"generatedAPIKey,omitempty"`

	// Autoscaling is what the session autoscaler last decided, while
	// spec.autoscaling is enabled.
	// +optional
	Autoscaling *AutoscalingStatus `json:"autoscaling,omitempty"`

	// Conditions: Available, Progressing and Degraded.
	// +listType=map
	// +listMapKey=type
	// +optional
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// FleetMembership is what the running pods see of each other's gossip.
type FleetMembership struct {
	// Members is the number of members every reporting pod sees alive when
	// they agree, else the fewest any of them sees.
	Members int32 `json:"members"`
	// Reporting is the number of pods whose membership is known (draining
	// pods too: they gossip until they exit).
	Reporting int32 `json:"reporting"`
	// Agree is true when every reporting pod sees the same members and
	// that is all of them: the fleet shares one limiter state.
	Agree bool `json:"agree"`
}

// VoiceGateway runs voice server pods that hold realtime voice sessions and
// drain them without cutting calls when the pods are replaced.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:subresource:scale:specpath=.spec.replicas,statuspath=.status.replicas,selectorpath=.status.selector
// +kubebuilder:resource:shortName=vgw,categories=all
// +kubebuilder:validation:XValidation:rule="self.metadata.name.size() <= 50",message="metadata.name must be at most 50 characters: it names the Service, the Deployment and, with a suffix, the pods"
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.ready`,description="Pods accepting sessions / desired"
// +kubebuilder:printcolumn:name="Up-to-date",type=integer,JSONPath=`.status.updatedReplicas`,description="Pods that run the current spec"
// +kubebuilder:printcolumn:name="Sessions",type=integer,JSONPath=`.status.sessions`,description="Live sessions over all pods"
// +kubebuilder:printcolumn:name="Draining",type=integer,JSONPath=`.status.drainingSessions`,description="Sessions still held by terminating pods"
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
// +kubebuilder:printcolumn:name="Members",type=integer,JSONPath=`.status.fleet.members`,priority=1,description="Gossip members each pod sees (the shared rate limiter)"
// +kubebuilder:printcolumn:name="Fleet-agrees",type=boolean,JSONPath=`.status.fleet.agree`,priority=1,description="Every running pod sees the same members"
// +kubebuilder:printcolumn:name="Available",type=string,JSONPath=`.status.conditions[?(@.type=="Available")].status`,priority=1
// +kubebuilder:printcolumn:name="Degraded",type=string,JSONPath=`.status.conditions[?(@.type=="Degraded")].status`,priority=1,description="True when the operator cannot make the pods match the spec (kubectl describe says why)"
type VoiceGateway struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +required
	Spec VoiceGatewaySpec `json:"spec"`
	// +optional
	Status VoiceGatewayStatus `json:"status,omitempty"`
}

// VoiceGatewayList is a list of VoiceGateways.
//
// +kubebuilder:object:root=true
type VoiceGatewayList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []VoiceGateway `json:"items"`
}

func init() {
	SchemeBuilder.Register(&VoiceGateway{}, &VoiceGatewayList{})
}
