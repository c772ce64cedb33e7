package controllers

import (
	"context"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// secretReader reads the Secrets a VoiceGateway uses. The manager watches
// Secrets by metadata only, so their data is not in its cache and each read
// would be a GET; the reader keeps what it read for as long as the cached
// metadata shows the same UID and resourceVersion, so that a reconcile of an
// unchanged VoiceGateway sends no request. A stale metadata cache only
// delays a change until its watch event, which reconciles again, as with
// any cached read.
type secretReader struct {
	// api reads from the API server.
	api client.Reader
	// metadata is the manager's cache, which holds every Secret's
	// metadata.
	metadata client.Reader

	mu sync.Mutex
	// read maps each VoiceGateway to the Secrets its last passes read, by
	// name. keepOnly drops those it no longer uses and forget all of them
	// when it is gone, so the map holds only Secrets in use.
	read map[types.NamespacedName]map[string]*corev1.Secret
}

func newSecretReader(api, metadata client.Reader) *secretReader {
	return &secretReader{api: api, metadata: metadata, read: map[types.NamespacedName]map[string]*corev1.Secret{}}
}

// get returns the Secret key for the VoiceGateway owner; the caller may
// change the copy it gets.
func (r *secretReader) get(ctx context.Context, owner, key types.NamespacedName) (*corev1.Secret, error) {
	var current metav1.PartialObjectMetadata
	current.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	err := r.metadata.Get(ctx, key, &current)
	switch {
	case err == nil:
		if known := r.lookup(owner, key.Name); known != nil && known.UID == current.UID && known.ResourceVersion == current.ResourceVersion {
			return known, nil
		}
	case apierrors.IsNotFound(err):
		// Not even its metadata is cached: a GET would only confirm it
		// (one round trip more in each new VoiceGateway's first pass). A
		// Secret created a moment ago arrives through the Secret watch,
		// which brings its VoiceGateways back; a fleet Secret the
		// operator then tries to create is found by its AlreadyExists.
		r.drop(owner, key.Name)
		return nil, err
	}
	return r.fetch(ctx, owner, key)
}

// fetch gets the Secret from the API server and keeps it.
func (r *secretReader) fetch(ctx context.Context, owner, key types.NamespacedName) (*corev1.Secret, error) {
	var secret corev1.Secret
	if err := r.api.Get(ctx, key, &secret); err != nil {
		if apierrors.IsNotFound(err) {
			r.drop(owner, key.Name)
		}
		return nil, err
	}
	r.remember(owner, &secret)
	return &secret, nil
}

func (r *secretReader) lookup(owner types.NamespacedName, name string) *corev1.Secret {
	r.mu.Lock()
	defer r.mu.Unlock()
	if known := r.read[owner][name]; known != nil {
		return known.DeepCopy()
	}
	return nil
}

// remember keeps a copy of a Secret as read or as written.
func (r *secretReader) remember(owner types.NamespacedName, secret *corev1.Secret) {
	r.mu.Lock()
	defer r.mu.Unlock()
	secrets := r.read[owner]
	if secrets == nil {
		secrets = map[string]*corev1.Secret{}
		r.read[owner] = secrets
	}
	secrets[secret.Name] = secret.DeepCopy()
}

// drop forgets one Secret, e.g. after a failed write.
func (r *secretReader) drop(owner types.NamespacedName, name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.read[owner], name)
}

// keepOnly forgets the Secrets of owner that are not named.
func (r *secretReader) keepOnly(owner types.NamespacedName, names map[string]bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for name := range r.read[owner] {
		if !names[name] {
			delete(r.read[owner], name)
		}
	}
	if len(r.read[owner]) == 0 {
		delete(r.read, owner)
	}
}

// forget drops everything read for a VoiceGateway that is gone.
func (r *secretReader) forget(owner types.NamespacedName) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.read, owner)
}

// lastValues remembers one value per VoiceGateway, so that something is
// said once per value rather than on every pass.
type lastValues struct {
	mu     sync.Mutex
	values map[types.NamespacedName]string
}

// first reports whether value is new for owner, and remembers it.
func (l *lastValues) first(owner types.NamespacedName, value string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.values[owner] == value {
		return false
	}
	if l.values == nil {
		l.values = map[types.NamespacedName]string{}
	}
	l.values[owner] = value
	return true
}

func (l *lastValues) forget(owner types.NamespacedName) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.values, owner)
}
