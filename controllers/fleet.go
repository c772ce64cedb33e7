package controllers

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
	"github.com/voicegateway/voicegateway/server/fleet"
)

const (
	// AnnotationRotatedFor on a fleet Secret the operator owns records the
	// value of the VoiceGateway's rotate-keys annotation it last acted on,
	// so that each new value rotates the keys once and only once.
	AnnotationRotatedFor = "voicegateway.dev/rotated-for"
)

// DefaultKeyActivationDelay is how long a new signing key is only verified
// before replicas sign with it (--key-activation-delay): longer than the
// kubelet takes to refresh a mounted Secret (its sync period plus its
// cache's lifetime, about a minute each) plus the server's poll of the
// file, so that no replica is shown a token signed with a key it has not
// read yet. The retention of a replaced key is fleet.DefaultRotation's.
var DefaultKeyActivationDelay = fleet.DefaultRotation.Activation

// Event reasons about the fleet Secret. Their messages name Secrets, data
// keys, key ids and times, never a secret value.
const (
	EventFleetSecretCreated   = "FleetSecretCreated"
	EventFleetSecretRecreated = "FleetSecretRecreated"
	EventFleetSecretRepaired  = "FleetSecretRepaired"
	EventKeysRotated          = "KeysRotated"
	EventKeysPruned           = "KeysPruned"
	EventRotationIgnored      = "RotationIgnored"
	EventRotationDeferred     = "RotationDeferred"
)

// fleetSecretName is the Secret every pod mounts at fleetDir: the user's
// when spec.auth.fleetSecretRef names one, else <name>-fleet.
func fleetSecretName(vg *vgv1.VoiceGateway) string {
	if ref := vg.Spec.Auth.FleetSecretRef; ref != nil {
		return ref.Name
	}
	return vg.Name + "-fleet"
}

// operatorOwnsFleetSecret: the operator makes, repairs and rotates the
// fleet Secret unless the user brings their own.
func operatorOwnsFleetSecret(vg *vgv1.VoiceGateway) bool {
	return vg.Spec.Auth.FleetSecretRef == nil
}

// needsFleetAPIKeys: the API keys come from the fleet Secret when no other
// Secret holds them and authentication is on.
func needsFleetAPIKeys(vg *vgv1.VoiceGateway) bool {
	return vg.Spec.Auth.APIKeysSecretRef == nil && !vg.Spec.Auth.InsecureNoAuth
}

// fleetState is what a reconcile pass learned of the fleet Secret.
type fleetState struct {
	secretName string
	// generatedAPIKey: the pods' API keys are the api-keys the operator
	// generated into its own fleet Secret.
	generatedAPIKey bool
}

// fleetPolicy is everything besides its current content that decides what
// an owned fleet Secret should hold.
type fleetPolicy struct {
	now    time.Time
	random io.Reader
	// withAPIKey: the Secret must hold api-keys.
	withAPIKey bool
	// rotateRequest is the VoiceGateway's rotate-keys annotation ("" when
	// absent).
	rotateRequest string
	// rotationPeriod rotates when the newest key is this old; 0 never.
	rotationPeriod time.Duration
	rotation       fleet.Rotation
}

// fleetChange is what planFleetSecret decided for an owned fleet Secret.
type fleetChange struct {
	data       map[string][]byte
	rotatedFor string
	// changed: data or rotatedFor differ from the Secret's, so it must be
	// written.
	changed bool
	// repaired names the files that were missing or invalid and were made
	// anew.
	repaired []string
	// rotated is the new signing key when the keys were rotated; cause says
	// why.
	rotated *fleet.TokenKey
	cause   string
	// retiring are the older keys after a rotation, with their new ends.
	retiring []fleet.TokenKey
	// deferred: a rotation was due, but the keys that still verify fill
	// the file; it happens once the oldest ends (next).
	deferred bool
	// pruned are the ids of keys dropped because they no longer verify.
	pruned []string
	// next is when the Secret needs another look: a key stops verifying or
	// the rotation period elapses. Zero: not before something changes.
	next time.Time
}

// planFleetSecret decides the content of an owned fleet Secret from its
// current data and the value of its rotated-for annotation, without I/O:
// every valid file is kept byte for byte, a missing or invalid one is made
// anew, the signing keys are rotated when a new rotation was requested or
// the newest key is older than the rotation period, and keys that no longer
// verify are dropped. Nothing changes on a pass with nothing to do.
func planFleetSecret(data map[string][]byte, rotatedFor string, p fleetPolicy) (fleetChange, error) {
	filled, made, err := fleet.Fill(data, p.random, p.now, p.withAPIKey)
	if err != nil {
		return fleetChange{}, fmt.Errorf("generating fleet keys: %w", err)
	}
	c := fleetChange{data: filled, rotatedFor: rotatedFor, repaired: made}
	keys, err := fleet.ParseTokenKeys(filled[fleet.TokenKeysFile])
	if err != nil {
		return fleetChange{}, err
	}
	original := keys

	switch {
	case slices.Contains(made, fleet.TokenKeysFile):
		// Brand-new keys answer any pending request.
		if p.rotateRequest != "" {
			c.rotatedFor = p.rotateRequest
		}
	case p.rotateRequest != "" && p.rotateRequest != rotatedFor:
		c.cause = fmt.Sprintf("requested by the %s annotation", vgv1.AnnotationRotateKeys)
	case p.rotationPeriod > 0 && !p.now.Before(keys.Newest().Created.Add(p.rotationPeriod)):
		c.cause = fmt.Sprintf("the newest key is older than spec.auth.keyRotationPeriod %s", p.rotationPeriod)
	}
	if c.cause != "" {
		rotated, err := keys.Rotate(p.random, p.now, p.rotation)
		switch {
		case errors.Is(err, fleet.ErrTooManyKeys):
			// The request stays pending (rotatedFor unchanged) and is
			// answered once a key ends.
			c.deferred = true
			keys = keys.Pruned(p.now)
		case err != nil:
			return fleetChange{}, fmt.Errorf("rotating the signing keys: %w", err)
		default:
			keys = rotated
			c.rotated = &keys.Keys[0]
			c.retiring = keys.Keys[1:]
			if p.rotateRequest != "" {
				c.rotatedFor = p.rotateRequest
			}
		}
	} else {
		keys = keys.Pruned(p.now)
	}
	for _, key := range original.Keys {
		if !slices.ContainsFunc(keys.Keys, func(k fleet.TokenKey) bool { return k.ID == key.ID }) {
			c.pruned = append(c.pruned, key.ID)
		}
	}
	if !keys.Equal(original) {
		if c.data[fleet.TokenKeysFile], err = keys.Marshal(); err != nil {
			return fleetChange{}, err
		}
	}

	if end, ok := keys.NextPrune(); ok && end.After(p.now) {
		c.next = end
	}
	if p.rotationPeriod > 0 {
		if due := keys.Newest().Created.Add(p.rotationPeriod); c.next.IsZero() || due.Before(c.next) {
			c.next = due
		}
	}
	c.changed = c.rotatedFor != rotatedFor || !sameData(data, c.data)
	return c, nil
}

func sameData(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

// keyRotation times rotations: the activation delay is the operator's
// flag, the retention follows from the client tokens' longest life.
func (r *VoiceGatewayReconciler) keyRotation() fleet.Rotation {
	return fleet.Rotation{Activation: r.KeyActivationDelay, Retain: fleet.DefaultRotation.Retain}
}

// ensureFleetSecret makes sure the fleet Secret exists and is complete, and
// hands its admin token to the poller. An owned Secret is created once,
// repaired and rotated when needed, and otherwise never written; a user's
// Secret is only read and checked. A Secret of the fleet's name that this
// VoiceGateway does not control is never touched.
func (r *VoiceGatewayReconciler) ensureFleetSecret(ctx context.Context, s *scope) error {
	vg := s.gateway
	key := types.NamespacedName{Namespace: vg.Namespace, Name: fleetSecretName(vg)}
	secret, err := r.secrets.get(ctx, s.key, key)
	if apierrors.IsNotFound(err) && operatorOwnsFleetSecret(vg) {
		err = r.createFleetSecret(ctx, s, key)
		if !apierrors.IsAlreadyExists(err) {
			return err
		}
		// The cache had not seen it yet: read it and go on with it.
		secret, err = r.secrets.fetch(ctx, s.key, key)
	}
	switch {
	case apierrors.IsNotFound(err) && !operatorOwnsFleetSecret(vg):
		s.fail(ReasonSecretNotFound, fmt.Sprintf("Secret %q named in spec.auth.fleetSecretRef does not exist; create it in the fleet Secret format (docs/operations.md)", key.Name))
		return nil
	case apierrors.IsNotFound(err):
		// Created and gone again at once: the next pass makes it anew.
		s.fail(ReasonApplyFailed, "the fleet Secret was deleted while it was being created; retrying")
		return err
	case err != nil:
		s.fail(ReasonApplyFailed, "reading the fleet Secret failed; retrying")
		return fmt.Errorf("reading Secret %s: %w", key.Name, err)
	case !operatorOwnsFleetSecret(vg):
		return r.checkUserFleetSecret(ctx, s, secret)
	case !metav1.IsControlledBy(secret, vg):
		s.fail(ReasonFleetSecretNotOwned, fmt.Sprintf("Secret %q exists and is not controlled by this VoiceGateway, so the operator leaves it alone: delete or rename it, or name it in spec.auth.fleetSecretRef to use it as the fleet Secret", key.Name))
		return nil
	}
	return r.updateFleetSecret(ctx, s, secret)
}

// createFleetSecret makes the fleet Secret with fresh keys, owned by the
// VoiceGateway so that it is collected with it.
func (r *VoiceGatewayReconciler) createFleetSecret(ctx context.Context, s *scope, key types.NamespacedName) error {
	vg := s.gateway
	withAPIKey := needsFleetAPIKeys(vg)
	data, err := fleet.Generate(rand.Reader, r.Clock.Now(), withAPIKey)
	if err != nil {
		s.fail(ReasonApplyFailed, "generating the fleet keys failed; retrying")
		return err
	}
	secret := &corev1.Secret{ObjectMeta: objectMeta(vg, key.Name), Type: corev1.SecretTypeOpaque, Data: data}
	if request := vg.Annotations[vgv1.AnnotationRotateKeys]; request != "" {
		// The keys are new: a rotation already requested is done.
		secret.Annotations = map[string]string{AnnotationRotatedFor: request}
	}
	if err := r.Client.Create(ctx, secret); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return err // the caller reads it
		}
		s.fail(ReasonApplyFailed, "creating the fleet Secret failed; retrying")
		return fmt.Errorf("creating Secret %s: %w", key.Name, err)
	}
	r.secrets.remember(s.key, secret)
	logr.FromContextOrDiscard(ctx).Info("Created the fleet Secret", "secret", key.Name)

	what := "client-token signing key, admin token and fleet key"
	if withAPIKey {
		what = "client-token signing key, admin token, fleet key and an API key; read the API key with: " + apiKeyCommand(key)
	}
	if s.gateway.Status.FleetSecretName == key.Name {
		r.Recorder.Eventf(vg, nil, corev1.EventTypeWarning, EventFleetSecretRecreated, "FleetSecret",
			"The fleet Secret %s was deleted and has been created again with new keys (%s): client tokens and API keys issued before no longer work", key.Name, what)
	} else {
		r.Recorder.Eventf(vg, nil, corev1.EventTypeNormal, EventFleetSecretCreated, "FleetSecret",
			"Created the fleet Secret %s with a new %s", key.Name, what)
	}
	return r.useFleetSecret(s, secret, withAPIKey)
}

// updateFleetSecret repairs, rotates and prunes an owned fleet Secret,
// writing it only when its content changed. The update carries the
// resourceVersion that was read, so that a concurrent change makes it fail
// and retry rather than overwrite.
func (r *VoiceGatewayReconciler) updateFleetSecret(ctx context.Context, s *scope, secret *corev1.Secret) error {
	vg := s.gateway
	withAPIKey := needsFleetAPIKeys(vg)
	policy := fleetPolicy{
		now:           r.Clock.Now(),
		random:        rand.Reader,
		withAPIKey:    withAPIKey,
		rotateRequest: vg.Annotations[vgv1.AnnotationRotateKeys],
		rotation:      r.keyRotation(),
	}
	if period := vg.Spec.Auth.KeyRotationPeriod; period != nil {
		policy.rotationPeriod = period.Duration
	}
	change, err := planFleetSecret(secret.Data, secret.Annotations[AnnotationRotatedFor], policy)
	if err != nil {
		s.fail(ReasonApplyFailed, "generating the fleet keys failed; retrying")
		return err
	}
	if !change.next.IsZero() {
		s.requeueAt(change.next.Sub(policy.now))
	}
	if change.changed {
		updated := secret.DeepCopy()
		updated.Data = change.data
		if change.rotatedFor != "" {
			if updated.Annotations == nil {
				updated.Annotations = map[string]string{}
			}
			updated.Annotations[AnnotationRotatedFor] = change.rotatedFor
		}
		if err := r.Client.Update(ctx, updated); err != nil {
			r.secrets.drop(s.key, secret.Name)
			s.fail(ReasonApplyFailed, "updating the fleet Secret failed; retrying")
			return fmt.Errorf("updating Secret %s: %w", secret.Name, err)
		}
		r.secrets.remember(s.key, updated)
		secret = updated
		r.recordFleetChange(ctx, vg, secret.Name, change)
	}
	return r.useFleetSecret(s, secret, withAPIKey)
}

// recordFleetChange tells the user what changed in their fleet Secret:
// file names, key ids and times, never a value.
func (r *VoiceGatewayReconciler) recordFleetChange(ctx context.Context, vg *vgv1.VoiceGateway, name string, c fleetChange) {
	log := logr.FromContextOrDiscard(ctx)
	if len(c.repaired) > 0 {
		log.Info("Repaired the fleet Secret", "secret", name, "files", c.repaired)
		message := fmt.Sprintf("Secret %s lacked valid %s; made them anew and kept the rest", name, strings.Join(c.repaired, ", "))
		if slices.Contains(c.repaired, fleet.APIKeysFile) {
			message += "; read the API key with: " + apiKeyCommand(types.NamespacedName{Namespace: vg.Namespace, Name: name})
		}
		r.Recorder.Eventf(vg, nil, corev1.EventTypeWarning, EventFleetSecretRepaired, "FleetSecret", "%s", message)
	}
	if c.rotated != nil {
		var retiring []string
		for _, key := range c.retiring {
			if key.VerifyUntil != nil {
				retiring = append(retiring, fmt.Sprintf("%s verifies until %s", key.ID, key.VerifyUntil.UTC().Format(time.RFC3339)))
			}
		}
		log.Info("Rotated the client-token signing keys", "secret", name, "newKey", c.rotated.ID, "cause", c.cause)
		message := fmt.Sprintf("Rotated the signing keys of Secret %s (%s): new key %s signs from %s", name, c.cause,
			c.rotated.ID, c.rotated.SignFrom.UTC().Format(time.RFC3339))
		if len(retiring) > 0 {
			message += "; " + strings.Join(retiring, ", ")
		}
		r.Recorder.Eventf(vg, nil, corev1.EventTypeNormal, EventKeysRotated, "RotateKeys", "%s", message)
	}
	if c.deferred {
		r.Recorder.Eventf(vg, nil, corev1.EventTypeWarning, EventRotationDeferred, "RotateKeys",
			"Secret %s already holds %d signing keys that verify live tokens; the rotation (%s) happens at %s, when the oldest ends",
			name, fleet.MaxTokenKeys, c.cause, c.next.UTC().Format(time.RFC3339))
	}
	if len(c.pruned) > 0 {
		log.Info("Dropped expired signing keys", "secret", name, "keys", c.pruned)
		r.Recorder.Eventf(vg, nil, corev1.EventTypeNormal, EventKeysPruned, "RotateKeys",
			"Dropped signing keys %s from Secret %s: every token they signed has expired", strings.Join(c.pruned, ", "), name)
	}
}

// checkUserFleetSecret validates the user's fleet Secret; the operator
// never writes it, so a rotation request can only be declined.
func (r *VoiceGatewayReconciler) checkUserFleetSecret(ctx context.Context, s *scope, secret *corev1.Secret) error {
	vg := s.gateway
	if request := vg.Annotations[vgv1.AnnotationRotateKeys]; request != "" && r.declined.first(s.key, request) {
		r.Recorder.Eventf(vg, nil, corev1.EventTypeWarning, EventRotationIgnored, "RotateKeys",
			"The operator does not rotate Secret %s named in spec.auth.fleetSecretRef, which it does not own: rotate its token-keys.json yourself (docs/operations.md)", secret.Name)
	}
	if err := fleet.Check(secret.Data, needsFleetAPIKeys(vg)); err != nil {
		s.fail(ReasonInvalidFleetSecret, fmt.Sprintf("Secret %q named in spec.auth.fleetSecretRef is not a valid fleet Secret: %s",
			secret.Name, strings.ReplaceAll(err.Error(), "\n", "; ")))
		return nil
	}
	logr.FromContextOrDiscard(ctx).V(1).Info("Using the user's fleet Secret", "secret", secret.Name)
	return r.useFleetSecret(s, secret, false)
}

// useFleetSecret records the valid fleet Secret in the pass's scope and
// gives its admin token to the poller.
func (r *VoiceGatewayReconciler) useFleetSecret(s *scope, secret *corev1.Secret, generatedAPIKey bool) error {
	token, err := fleet.ParseAdminToken(secret.Data[fleet.AdminTokenFile])
	if err != nil {
		// Checked or generated just before: cannot happen.
		return err
	}
	r.Poller.SetAdminToken(s.key, token)
	s.fleet = &fleetState{secretName: secret.Name, generatedAPIKey: generatedAPIKey}
	return nil
}

// apiKeyCommand is how a user reads the generated API key.
func apiKeyCommand(secret types.NamespacedName) string {
	return fmt.Sprintf("kubectl -n %s get secret %s -o jsonpath='{.data.%s}' | base64 -d", secret.Namespace, secret.Name, fleet.APIKeysFile)
}
