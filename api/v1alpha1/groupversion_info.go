// Package v1alpha1 holds the VoiceGateway API, group voicegateway.dev,
// version v1alpha1: the spec a user writes, the status the operator reports,
// their defaults and the validation the API server enforces (OpenAPI and CEL
// rules), so that a spec that could never run is refused at kubectl apply.
//
// +kubebuilder:object:generate=true
// +groupName=voicegateway.dev
package v1alpha1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the API group and version of the VoiceGateway kind.
	GroupVersion = schema.GroupVersion{Group: "voicegateway.dev", Version: "v1alpha1"}

	// SchemeBuilder registers the kinds of this group version.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the kinds of this group version to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
