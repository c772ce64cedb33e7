// Package controllers holds the VoiceGateway reconciler: it turns each
// VoiceGateway into a ServiceAccount, a ConfigMap with the voice server's
// settings, a Deployment, a Service, a PodDisruptionBudget and a
// NetworkPolicy, applied by server-side apply with one field owner and owned
// by the VoiceGateway; it makes, repairs and rotates the fleet Secret the
// pods share; and it reports the pods' live sessions and drains in the
// status.
//
// The files split the work: desired.go builds the objects without I/O,
// apply.go applies them (and skips applies that would change nothing),
// fleet.go keeps the fleet Secret (its plan is a pure function), secrets.go
// reads Secrets without a request per pass, status.go computes the status
// without I/O, poller.go learns sessions from each pod's admin endpoint off
// the reconcile path (through server/admin/adminapi, the contract with the
// voice server), deletioncost.go writes each pod's deletion cost from its
// sessions, autoscaler.go scales spec.replicas on the sessions (and refuses
// a HorizontalPodAutoscaler that would fight it), rollout.go sizes the
// rollout's surge from them, wakeup.go brings a VoiceGateway back at a
// moment of the operator's clock, setup.go wires it all into a manager once.
package controllers

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/go-logr/logr"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
)

// secretRefIndex indexes VoiceGateways by the names of the Secrets they
// reference, the fleet Secret included, so that a changed or deleted Secret
// finds its VoiceGateways.
const secretRefIndex = ".spec.secretRefs"

// podGatewayIndex indexes the voice server pods by their VoiceGateway (the
// instance label), so that a pass lists its own pods from the cache
// without matching a label selector against and copying every pod the
// cache holds (at 1,000 VoiceGateways, 2,200 pods each pass: 14% of the
// process's CPU in the scale test's single creates, docs/benchmarks.md,
// "Operator at 1000 VoiceGateways").
const podGatewayIndex = ".metadata.labels.instance"

// +kubebuilder:rbac:groups=voicegateway.dev,resources=voicegateways,verbs=get;list;watch
// +kubebuilder:rbac:groups=voicegateway.dev,resources=voicegateways/status,verbs=get;patch;update
// +kubebuilder:rbac:groups=voicegateway.dev,resources=voicegateways/finalizers,verbs=update
// +kubebuilder:rbac:groups=voicegateway.dev,resources=voicegateways/scale,verbs=patch
// +kubebuilder:rbac:groups=autoscaling,resources=horizontalpodautoscalers,verbs=list;watch
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups=policy,resources=poddisruptionbudgets,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups="",resources=services;configmaps;serviceaccounts,verbs=get;list;watch;create;patch
// +kubebuilder:rbac:groups="",resources=pods,verbs=get;list;watch;patch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get;list;watch;create;update
// +kubebuilder:rbac:groups=networking.k8s.io,resources=networkpolicies,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// VoiceGatewayReconciler reconciles VoiceGateways.
type VoiceGatewayReconciler struct {
	// Client reads from the manager's cache and writes to the API server.
	Client client.Client
	// APIReader reads Secrets, which are watched by metadata only and so
	// are not in the cache with their data.
	APIReader client.Reader
	Recorder  events.EventRecorder
	Poller    *SessionPoller
	Options   BuildOptions
	Clock     clock.PassiveClock
	// MaxConcurrentReconciles is how many VoiceGateways are reconciled at
	// once.
	MaxConcurrentReconciles int
	// KeyActivationDelay is how long a new signing key only verifies
	// before it signs.
	KeyActivationDelay time.Duration

	applier *applier
	secrets *secretReader
	// costs rate-limits the pods' deletion-cost writes (deletioncost.go).
	costs *deletionCosts
	// autoscalers keeps each autoscaled VoiceGateway's scale-down window
	// (autoscaler.go).
	autoscalers *autoscalers
	// surges keeps the rollout surge chosen for each VoiceGateway's pod
	// template (rollout.go).
	surges *surges
	// wakeups brings a VoiceGateway back at a moment on Clock.
	wakeups *wakeups
	// declined remembers the rotation request last declined per
	// VoiceGateway (its fleet Secret is the user's), to say so once.
	declined lastValues
	// statuses remembers the status last written per VoiceGateway.
	statuses writtenStatuses
}

// setupWithManager registers the controller, its watches and the poller
// (Setup builds the reconciler).
func (r *VoiceGatewayReconciler) setupWithManager(ctx context.Context, mgr ctrl.Manager) error {
	r.applier = newApplier(r.Client, mgr.GetCache())
	r.secrets = newSecretReader(r.APIReader, mgr.GetCache())
	if err := mgr.GetFieldIndexer().IndexField(ctx, &vgv1.VoiceGateway{}, secretRefIndex, func(obj client.Object) []string {
		gateway := obj.(*vgv1.VoiceGateway)
		names := []string{fleetSecretName(gateway)}
		for _, ref := range referencedSecrets(gateway) {
			names = append(names, ref.Name)
		}
		return names
	}); err != nil {
		return fmt.Errorf("indexing VoiceGateways by Secret: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &corev1.Pod{}, podGatewayIndex, func(obj client.Object) []string {
		podLabels := obj.GetLabels()
		if podLabels[LabelName] != appName || podLabels[LabelInstance] == "" {
			return nil
		}
		return []string{podLabels[LabelInstance]}
	}); err != nil {
		return fmt.Errorf("indexing pods by VoiceGateway: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(ctx, &autoscalingv2.HorizontalPodAutoscaler{}, hpaTargetIndex, func(obj client.Object) []string {
		if name, _ := hpaTarget(obj.(*autoscalingv2.HorizontalPodAutoscaler)); name != "" {
			return []string{name}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing HorizontalPodAutoscalers by target: %w", err)
	}
	if err := mgr.Add(r.Poller); err != nil {
		return err
	}
	if err := mgr.Add(r.wakeups); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&vgv1.VoiceGateway{}, builder.WithPredicates(predicate.Funcs{UpdateFunc: notOnlyStatus})).
		Owns(&appsv1.Deployment{}).
		Owns(&corev1.Service{}).
		Owns(&corev1.ConfigMap{}).
		Owns(&corev1.ServiceAccount{}).
		Owns(&policyv1.PodDisruptionBudget{}).
		Owns(&networkingv1.NetworkPolicy{}).
		WatchesMetadata(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.gatewaysForSecret)).
		Watches(&autoscalingv2.HorizontalPodAutoscaler{}, handler.EnqueueRequestsFromMapFunc(hpaRequests)).
		WatchesRawSource(source.TypedChannel(r.Poller.Changes(), enqueueGateway)).
		WatchesRawSource(source.TypedChannel(r.wakeups.Changes(), enqueueGateway)).
		WithOptions(controller.Options{MaxConcurrentReconciles: r.MaxConcurrentReconciles}).
		Complete(r)
}

// notOnlyStatus lets an update of a VoiceGateway through unless all it
// changed is its status (and with it the resourceVersion and managed
// fields). A pass computes the status from everything else and never reads
// it back as an input, so the status write that ends a pass would only
// bring about one more pass that changes nothing, one for each status
// written: with the status following the live sessions at every poll, up
// to half the passes of a fleet whose sessions move. In the scale test, 200
// new VoiceGateways took 401 passes instead of 496, and the burst of 1,000
// 29 s instead of 34 (docs/benchmarks.md, "Operator at 1000
// VoiceGateways"). A status someone else overwrites is put right at the
// next pass any other change brings, not at once. A resync (the same
// resourceVersion) is let through.
func notOnlyStatus(e event.UpdateEvent) bool {
	oldGateway, okOld := e.ObjectOld.(*vgv1.VoiceGateway)
	newGateway, okNew := e.ObjectNew.(*vgv1.VoiceGateway)
	if !okOld || !okNew || oldGateway.ResourceVersion == newGateway.ResourceVersion {
		return true
	}
	return oldGateway.Generation != newGateway.Generation ||
		!equality.Semantic.DeepEqual(withoutStatus(oldGateway), withoutStatus(newGateway))
}

// withoutStatus is the VoiceGateway without what a status write changes.
func withoutStatus(gateway *vgv1.VoiceGateway) *vgv1.VoiceGateway {
	out := &vgv1.VoiceGateway{TypeMeta: gateway.TypeMeta, ObjectMeta: *gateway.ObjectMeta.DeepCopy(), Spec: gateway.Spec}
	out.ResourceVersion = ""
	out.ManagedFields = nil
	return out
}

// enqueueGateway turns the poller's and the wake-ups' events into requests.
var enqueueGateway = handler.TypedEnqueueRequestsFromMapFunc(func(_ context.Context, gateway types.NamespacedName) []reconcile.Request {
	return []reconcile.Request{{NamespacedName: gateway}}
})

func (r *VoiceGatewayReconciler) gatewaysForSecret(ctx context.Context, secret client.Object) []reconcile.Request {
	var gateways vgv1.VoiceGatewayList
	if err := r.Client.List(ctx, &gateways, client.InNamespace(secret.GetNamespace()),
		client.MatchingFields{secretRefIndex: secret.GetName()}); err != nil {
		logr.FromContextOrDiscard(ctx).Error(err, "Listing VoiceGateways for a Secret failed", "secret", client.ObjectKeyFromObject(secret))
		return nil
	}
	requests := make([]reconcile.Request, 0, len(gateways.Items))
	for _, gw := range gateways.Items {
		requests = append(requests, reconcile.Request{NamespacedName: client.ObjectKeyFromObject(&gw)})
	}
	return requests
}

// scope is what one reconcile pass works on and learns.
type scope struct {
	gateway    *vgv1.VoiceGateway
	key        types.NamespacedName
	inputs     inputs
	deployment *appsv1.Deployment
	// appliedDeployment is the API server's answer to this pass's apply of
	// the Deployment, newer than the cache right after a change.
	appliedDeployment *appsv1.Deployment
	// failure, once set, stops the phases that would write and becomes the
	// Degraded condition.
	failure *failure
	// fleet is the fleet Secret in use, once it was found valid.
	fleet *fleetState
	// secretsUsed names the Secrets this pass read.
	secretsUsed map[string]bool
	// requeueAfter, when positive, brings the VoiceGateway back then
	// (the next key expiry or periodic rotation).
	requeueAfter time.Duration
	// reports are the poller's reports of the pods, read once per pass.
	reports []PodReport
	// pods are the VoiceGateway's pods, from the cache.
	pods []corev1.Pod
	// costsPendingUntil, when not zero, is when a stale deletion cost may
	// be written (the per-pod interval holds it back).
	costsPendingUntil time.Time
	// conflict, when set, is a HorizontalPodAutoscaler that would fight
	// the operator; it becomes the Degraded condition.
	conflict *failure
	// autoscaling is the autoscaler's decision, for the status.
	autoscaling *vgv1.AutoscalingStatus
}

// fail records why the pass cannot make the cluster match the spec; the
// first failure is the one the user must fix first and is kept.
func (s *scope) fail(reason, message string) {
	if s.failure == nil {
		s.failure = &failure{reason: reason, message: message}
	}
}

// requeueAt asks for another pass after d, keeping the earliest request.
func (s *scope) requeueAt(d time.Duration) {
	// A second late, so the pass finds the moment passed.
	d += time.Second
	if s.requeueAfter <= 0 || d < s.requeueAfter {
		s.requeueAfter = d
	}
}

// Reconcile makes the cluster match one VoiceGateway and reports what it
// sees. The status is written once, at the end, and only when it changed.
func (r *VoiceGatewayReconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, reterr error) {
	gateway := &vgv1.VoiceGateway{}
	if err := r.Client.Get(ctx, req.NamespacedName, gateway); err != nil {
		if apierrors.IsNotFound(err) {
			// Its objects are collected through their owner references.
			r.applier.forget(req.NamespacedName)
			r.secrets.forget(req.NamespacedName)
			r.declined.forget(req.NamespacedName)
			r.statuses.forget(req.NamespacedName)
			r.Poller.ForgetGateway(req.NamespacedName)
			r.costs.forget(req.NamespacedName)
			r.autoscalers.forget(req.NamespacedName)
			r.surges.forget(req.NamespacedName)
			forgetGatewayMetrics(req.NamespacedName)
			r.wakeups.forget(req.NamespacedName)
			return ctrl.Result{}, nil
		}
		return ctrl.Result{}, err
	}
	if gateway.DeletionTimestamp != nil {
		return ctrl.Result{}, nil
	}

	s := &scope{gateway: gateway, key: req.NamespacedName, secretsUsed: map[string]bool{}, reports: r.Poller.Reports(req.NamespacedName)}
	defer func() {
		reterr = errors.Join(reterr, r.updateStatus(ctx, s))
		if reterr != nil {
			// An error retries with backoff; a result beside it is ignored.
			result = ctrl.Result{}
		} else if s.requeueAfter > 0 && (result.RequeueAfter <= 0 || s.requeueAfter < result.RequeueAfter) {
			result.RequeueAfter = s.requeueAfter
		}
	}()

	phases := []func(context.Context, *scope) error{
		r.ensureFleetSecret,
		r.readSecrets,
		r.observePods,
		r.updateDeletionCosts,
		r.checkAutoscalerConflict,
		r.autoscale,
		r.applyObjects,
		r.observeDeployment,
	}
	var errs []error
	for _, phase := range phases {
		if err := phase(ctx, s); err != nil {
			errs = append(errs, err)
		}
	}
	s.secretsUsed[fleetSecretName(gateway)] = true
	r.secrets.keepOnly(s.key, s.secretsUsed)
	if err := errors.Join(errs...); err != nil {
		return ctrl.Result{}, err
	}
	return ctrl.Result{RequeueAfter: s.requeueAfter}, nil
}

// readSecrets reads the data of each referenced Secret for the config hash.
// A missing Secret or key is a failure the user must fix; the Secret watch
// brings the VoiceGateway back when it appears, so there is no retry.
func (r *VoiceGatewayReconciler) readSecrets(ctx context.Context, s *scope) error {
	s.inputs.secretData = map[string]map[string][]byte{}
	for _, ref := range referencedSecrets(s.gateway) {
		if _, done := s.inputs.secretData[ref.Name]; !done {
			s.secretsUsed[ref.Name] = true
			secret, err := r.secrets.get(ctx, s.key, types.NamespacedName{Namespace: s.gateway.Namespace, Name: ref.Name})
			switch {
			case apierrors.IsNotFound(err):
				s.fail(ReasonSecretNotFound, fmt.Sprintf("Secret %q does not exist; create it, the pods are rolled out once it does", ref.Name))
				return nil
			case err != nil:
				s.fail(ReasonApplyFailed, "reading a referenced Secret failed; retrying")
				return fmt.Errorf("reading Secret %s: %w", ref.Name, err)
			}
			s.inputs.secretData[ref.Name] = secret.Data
		}
		if _, ok := s.inputs.secretData[ref.Name][ref.Key]; !ok {
			s.fail(ReasonSecretNotFound, fmt.Sprintf("Secret %q has no key %q", ref.Name, ref.Key))
			return nil
		}
	}
	return nil
}

// applyObjects builds and applies every owned object, the ConfigMap and the
// ServiceAccount before the Deployment whose pods use them, and removes the
// NetworkPolicy when it is switched off.
func (r *VoiceGatewayReconciler) applyObjects(ctx context.Context, s *scope) error {
	if s.failure != nil {
		return nil
	}
	if err := checkDefaulted(s.gateway.Spec); err != nil {
		s.fail(ReasonInvalidSpec, err.Error())
		return reconcile.TerminalError(err)
	}
	cfg, err := serverConfig(s.gateway)
	if err != nil {
		s.fail(ReasonInvalidSpec, "the voice server would refuse these settings: "+err.Error())
		return reconcile.TerminalError(err)
	}
	configMap, err := desiredConfigMap(s.gateway, cfg)
	if err != nil {
		s.fail(ReasonInvalidSpec, err.Error())
		return reconcile.TerminalError(err)
	}
	hash := configHash(configMap.Data[configFileKey], referencedSecrets(s.gateway), s.inputs)
	deployment := desiredDeployment(s.gateway, r.Options, hash)
	if err := applyPodTemplate(deployment, s.gateway.Spec.PodTemplate); err != nil {
		reason := ReasonInvalidSpec
		if errors.As(err, new(errInvalidPodTemplate)) {
			reason = ReasonInvalidPodTemplate
		}
		s.fail(reason, err.Error())
		return reconcile.TerminalError(err)
	}
	var current *appsv1.Deployment
	var cached appsv1.Deployment
	if err := r.Client.Get(ctx, s.key, &cached); err == nil && metav1.IsControlledBy(&cached, s.gateway) {
		current = &cached
	}
	r.surges.choose(s.key, deployment, current, func() intstr.IntOrString {
		sessions, _ := fleetSessions(s.pods, s.reports)
		return rolloutSurge(*s.gateway.Spec.Replicas, sessions, targetSessionsPerPod(s.gateway.Spec))
	})
	// Two waves of applies, each sent at once: every object the pods use
	// or that serves them, then the Deployment, so that its pods never
	// start before their ServiceAccount and ConfigMap exist. One apply is
	// a round trip to the API server (and an etcd write when it changes
	// something, tens of milliseconds on a busy control plane); sent one
	// after the other, the eight of a new VoiceGateway were most of its
	// time from create to reconciled (docs/benchmarks.md, "Operator at
	// 1000 VoiceGateways"). The objects are independent of one another
	// within a wave.
	first := []client.Object{
		desiredServiceAccount(s.gateway),
		configMap,
		desiredService(s.gateway),
		desiredPeersService(s.gateway),
		desiredPeersConfigMap(s.gateway, s.pods),
		desiredPodDisruptionBudget(s.gateway),
	}
	if networkPolicyEnabled(s.gateway) {
		first = append(first, desiredNetworkPolicy(s.gateway, r.Options))
	} else if err := r.removeNetworkPolicy(ctx, s); err != nil {
		s.fail(ReasonApplyFailed, "removing the NetworkPolicy failed; retrying")
		return err
	}
	for _, wave := range [][]client.Object{first, {deployment}} {
		if err := r.applyWave(ctx, s, wave); err != nil {
			return err
		}
	}
	return nil
}

// applyWave applies objects concurrently and waits for all of them. A
// failed apply does not stop the others (each is idempotent and the next
// pass sends again only what is still out of date); the failure of the
// first object in the given order becomes the pass's.
func (r *VoiceGatewayReconciler) applyWave(ctx context.Context, s *scope, objects []client.Object) error {
	applied := make([]*unstructured.Unstructured, len(objects))
	errs := make([]error, len(objects))
	var wg sync.WaitGroup
	for i, obj := range objects {
		wg.Go(func() { applied[i], errs[i] = r.applier.apply(ctx, s.key, obj) })
	}
	wg.Wait()
	for i, obj := range objects {
		if errs[i] != nil {
			s.fail(ReasonApplyFailed, "applying the "+obj.GetObjectKind().GroupVersionKind().Kind+" failed; retrying")
			return errs[i]
		}
		if applied[i] == nil {
			continue
		}
		logr.FromContextOrDiscard(ctx).V(1).Info("Applied", "kind", applied[i].GetKind(), "name", applied[i].GetName(),
			"resourceVersion", applied[i].GetResourceVersion())
		if _, isDeployment := obj.(*appsv1.Deployment); isDeployment {
			var d appsv1.Deployment
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(applied[i].Object, &d); err == nil {
				s.appliedDeployment = &d
			}
		}
	}
	return nil
}

// observePods lists the VoiceGateway's pods from the cache, for the
// deletion costs and the autoscaler.
func (r *VoiceGatewayReconciler) observePods(ctx context.Context, s *scope) error {
	// The index holds exactly the pods SelectorLabels selects (the cache
	// holds only the operator's pods).
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.InNamespace(s.gateway.Namespace),
		client.MatchingFields{podGatewayIndex: s.gateway.Name}); err != nil {
		return fmt.Errorf("listing pods: %w", err)
	}
	s.pods = pods.Items
	observeGatewayMetrics(s.key, s.pods)
	return nil
}

// removeNetworkPolicy deletes the VoiceGateway's NetworkPolicy, if it has
// one: spec.networkPolicy.enabled is false. One of the same name that it
// does not control is left alone. The read is from the cache, so a pass
// with nothing to remove sends no request.
func (r *VoiceGatewayReconciler) removeNetworkPolicy(ctx context.Context, s *scope) error {
	var policy networkingv1.NetworkPolicy
	err := r.Client.Get(ctx, s.key, &policy)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return err
	case !metav1.IsControlledBy(&policy, s.gateway):
		return nil
	}
	r.applier.forgetObject(s.key, objectKey{
		gvk: networkingv1.SchemeGroupVersion.WithKind("NetworkPolicy"), namespace: policy.Namespace, name: policy.Name})
	err = r.Client.Delete(ctx, &policy, client.Preconditions{UID: &policy.UID})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting NetworkPolicy %s: %w", policy.Name, err)
	}
	logr.FromContextOrDiscard(ctx).Info("Removed the NetworkPolicy: spec.networkPolicy.enabled is false", "name", policy.Name)
	return nil
}

// observeDeployment reads the Deployment from the cache for the status, or
// takes the answer to this pass's apply when the cache has not caught up
// with it yet, so that a new VoiceGateway's status is written once, not
// once before and once after its Deployment reaches the cache.
func (r *VoiceGatewayReconciler) observeDeployment(ctx context.Context, s *scope) error {
	var deployment appsv1.Deployment
	err := r.Client.Get(ctx, s.key, &deployment)
	switch {
	case apierrors.IsNotFound(err):
		s.deployment = s.appliedDeployment
		return nil
	case err != nil:
		return err
	}
	if s.appliedDeployment != nil && deployment.Generation < s.appliedDeployment.Generation {
		s.deployment = s.appliedDeployment
		return nil
	}
	if metav1.IsControlledBy(&deployment, s.gateway) {
		s.deployment = &deployment
	}
	return nil
}

// updateStatus is the pass's single status write, Cluster API style: the
// status is computed by a pure function, applied once when it changed, and
// the drain events the change implies are recorded after the write took.
func (r *VoiceGatewayReconciler) updateStatus(ctx context.Context, s *scope) error {
	reports := s.reports
	now := r.Clock.Now()
	next := computeStatus(s.gateway.Status, statusInputsOf(s, reports), metav1.NewTime(now.Truncate(time.Second)))
	if equality.Semantic.DeepEqual(s.gateway.Status, next) {
		return nil
	}
	if r.statuses.alreadyWritten(s.key, s.gateway.ResourceVersion, next) {
		return nil
	}
	if err := r.applyStatus(ctx, s.gateway, next); err != nil {
		if apierrors.IsNotFound(err) {
			return nil // deleted meanwhile: nothing to report on
		}
		if apierrors.IsConflict(err) {
			// Written meanwhile: the next pass computes it again from the
			// newer VoiceGateway, quietly.
			s.requeueAt(0)
			return nil
		}
		return fmt.Errorf("writing the status: %w", err)
	}
	r.statuses.remember(s.key, s.gateway.ResourceVersion, next)
	r.recordDrainEvents(s.gateway, next, reports, now)
	return nil
}

// writtenStatuses remembers, per VoiceGateway, the last status written
// and the resourceVersion of the VoiceGateway it was computed from. A pass
// that starts before the cache has seen that write (the owned objects'
// events of a first pass queue a second one at once) reads the old
// status and computes the same new one: without this it would send the
// same status again, a request that changes nothing (a third to a half
// of new VoiceGateways in the scale test) and, for a drain, the same
// events twice. Nothing is lost by skipping: the server already holds the
// status this pass would write.
type writtenStatuses struct {
	mu sync.Mutex
	// last holds one entry per live VoiceGateway; forget drops it when it
	// is gone.
	last map[types.NamespacedName]writtenStatus
}

type writtenStatus struct {
	basedOn string
	status  vgv1.VoiceGatewayStatus
}

// alreadyWritten: status was written from the VoiceGateway at
// resourceVersion, which is still what the cache holds.
func (w *writtenStatuses) alreadyWritten(gateway types.NamespacedName, resourceVersion string, status vgv1.VoiceGatewayStatus) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	last, ok := w.last[gateway]
	return ok && last.basedOn == resourceVersion && equality.Semantic.DeepEqual(last.status, status)
}

func (w *writtenStatuses) remember(gateway types.NamespacedName, resourceVersion string, status vgv1.VoiceGatewayStatus) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.last == nil {
		w.last = map[types.NamespacedName]writtenStatus{}
	}
	w.last[gateway] = writtenStatus{basedOn: resourceVersion, status: *status.DeepCopy()}
}

func (w *writtenStatuses) forget(gateway types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.last, gateway)
}

// statusInputsOf gathers what this pass learned for computeStatus.
func statusInputsOf(s *scope, reports []PodReport) statusInputs {
	return statusInputs{
		generation: s.gateway.Generation,
		// Nil only with a CRD older than the operator, and then the pass
		// failed (checkDefaulted) and Degraded says why.
		desiredReplicas: ptr.Deref(s.gateway.Spec.Replicas, 0),
		selector:        labels.SelectorFromSet(SelectorLabels(s.gateway.Name)).String(),
		deployment:      s.deployment,
		pods:            reports,
		failure:         s.failure,
		fleet:           s.fleet,
		conflict:        s.conflict,
		autoscaling:     s.autoscaling,
	}
}

// applyStatus writes status whole, by the same field owner: a field that
// is zero (no sessions) is stored as 0, so kubectl shows it, and one left
// out (no draining pods) is removed, which a merge patch computed from the
// difference would not do for both.
func (r *VoiceGatewayReconciler) applyStatus(ctx context.Context, gateway *vgv1.VoiceGateway, status vgv1.VoiceGatewayStatus) error {
	body, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&status)
	if err != nil {
		return err
	}
	dropNulls(body)
	applied := &unstructured.Unstructured{Object: map[string]any{"status": body}}
	applied.SetAPIVersion(vgv1.GroupVersion.String())
	applied.SetKind("VoiceGateway")
	applied.SetNamespace(gateway.Namespace)
	applied.SetName(gateway.Name)
	return r.Client.Status().Apply(ctx, client.ApplyConfigurationFromUnstructured(applied),
		client.FieldOwner(ManagedBy), client.ForceOwnership)
}

// recordDrainEvents records DrainStarted and DrainFinished for the pods
// that began or ended draining between the written status and the last.
func (r *VoiceGatewayReconciler) recordDrainEvents(gateway *vgv1.VoiceGateway, next vgv1.VoiceGatewayStatus, reports []PodReport, now time.Time) {
	regarding := gateway.DeepCopy()
	regarding.Status = next
	for _, e := range drainEvents(gateway.Status.Draining, next.Draining, reports, now) {
		r.Recorder.Eventf(regarding, nil, corev1.EventTypeNormal, e.reason, "Drain", "%s", e.message)
		if e.reason == EventDrainFinished {
			countDrainFinished(client.ObjectKeyFromObject(gateway), e.sessionsLeft)
		}
	}
}
