package controllers

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// applier applies desired objects by server-side apply with one field owner
// and remembers what it applied, so that an unchanged VoiceGateway causes no
// request at all: an apply is skipped when the same desired object was
// applied before and the object has not changed since (its resourceVersion
// is the one the apply returned). This is the idea of Cluster API's SSA
// cache; without it every pass would send a PATCH that the API server then
// finds to be a no-op.
type applier struct {
	client client.Client
	// reader is the manager's cache; the owned kinds are watched, so reading
	// the current resourceVersion costs no request.
	reader client.Reader

	mu sync.Mutex
	// applied maps each VoiceGateway to its objects' "hash@resourceVersion"
	// after the last successful apply. forget drops a VoiceGateway's entries
	// when it is gone, so the map holds only live objects.
	applied map[types.NamespacedName]map[objectKey]string
}

type objectKey struct {
	gvk       schema.GroupVersionKind
	namespace string
	name      string
}

func newApplier(c client.Client, reader client.Reader) *applier {
	return &applier{client: c, reader: reader, applied: map[types.NamespacedName]map[objectKey]string{}}
}

// apply makes obj's fields owned by ManagedBy what obj says, taking over
// fields another manager set (ForceOwnership). When it sent a request, it
// returns the object as the API server answered (nil when the apply was
// skipped).
func (a *applier) apply(ctx context.Context, owner types.NamespacedName, obj client.Object) (*unstructured.Unstructured, error) {
	gvk := obj.GetObjectKind().GroupVersionKind()
	if gvk.Kind == "" {
		return nil, fmt.Errorf("applying %T %s: the desired object has no kind", obj, obj.GetName())
	}
	u, err := toApplyUnstructured(obj)
	if err != nil {
		return nil, err
	}
	raw, err := json.Marshal(u.Object)
	if err != nil {
		return nil, fmt.Errorf("applying %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	sum := sha256.Sum256(raw)
	desiredHash := hex.EncodeToString(sum[:])
	key := objectKey{gvk: gvk, namespace: obj.GetNamespace(), name: obj.GetName()}

	current, ok := obj.DeepCopyObject().(client.Object)
	if !ok {
		return nil, fmt.Errorf("applying %s: %T is not a client.Object", gvk.Kind, obj)
	}
	err = a.reader.Get(ctx, client.ObjectKeyFromObject(obj), current)
	switch {
	case err == nil:
		if a.lookup(owner, key) == desiredHash+"@"+current.GetResourceVersion() {
			return nil, nil
		}
	case apierrors.IsNotFound(err):
	default:
		return nil, fmt.Errorf("reading %s %s: %w", gvk.Kind, obj.GetName(), err)
	}

	if err := a.client.Apply(ctx, client.ApplyConfigurationFromUnstructured(u),
		client.FieldOwner(ManagedBy), client.ForceOwnership); err != nil {
		return nil, fmt.Errorf("applying %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	a.remember(owner, key, desiredHash+"@"+u.GetResourceVersion())
	return u, nil
}

func (a *applier) lookup(owner types.NamespacedName, key objectKey) string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.applied[owner][key]
}

func (a *applier) remember(owner types.NamespacedName, key objectKey, value string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	objects := a.applied[owner]
	if objects == nil {
		objects = map[objectKey]string{}
		a.applied[owner] = objects
	}
	objects[key] = value
}

// forgetObject drops what was remembered of one object that is being
// removed, so that it is applied again if it is wanted again.
func (a *applier) forgetObject(owner types.NamespacedName, key objectKey) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.applied[owner], key)
}

// forget drops what was remembered for a VoiceGateway that is gone.
func (a *applier) forget(owner types.NamespacedName) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.applied, owner)
}

// toApplyUnstructured turns a typed desired object into the body of an
// apply request: its status and every null (creationTimestamp and unset
// pointers the typed structs render) are left out, so the operator owns
// exactly the fields the builders set.
func toApplyUnstructured(obj client.Object) (*unstructured.Unstructured, error) {
	content, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("converting %T %s: %w", obj, obj.GetName(), err)
	}
	delete(content, "status")
	dropNulls(content)
	return &unstructured.Unstructured{Object: content}, nil
}

func dropNulls(m map[string]any) {
	for k, v := range m {
		switch v := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			dropNulls(v)
		case []any:
			for _, item := range v {
				if im, ok := item.(map[string]any); ok {
					dropNulls(im)
				}
			}
		}
	}
}
