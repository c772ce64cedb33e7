package controllers

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
)

// TestNotOnlyStatus: the write of its own status does not bring a
// VoiceGateway back; every other change, and a resync, does.
func TestNotOnlyStatus(t *testing.T) {
	base := &vgv1.VoiceGateway{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: "gw", ResourceVersion: "10", Generation: 3,
		Annotations: map[string]string{"a": "1"}, Labels: map[string]string{"l": "1"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}}}}
	base.Spec.Replicas = ptrTo(int32(2))
	tests := map[string]struct {
		change func(gw *vgv1.VoiceGateway)
		want   bool
	}{
		"status only": {func(gw *vgv1.VoiceGateway) {
			gw.ResourceVersion = "11"
			gw.Status.Sessions = 7
			gw.ManagedFields = append(gw.ManagedFields, metav1.ManagedFieldsEntry{Manager: ManagedBy, Subresource: "status"})
		}, false},
		"resync": {func(*vgv1.VoiceGateway) {}, true},
		"spec": {func(gw *vgv1.VoiceGateway) {
			gw.ResourceVersion, gw.Generation = "11", 4
			gw.Spec.Replicas = ptrTo(int32(3))
		}, true},
		"annotation (a rotation request)": {func(gw *vgv1.VoiceGateway) {
			gw.ResourceVersion = "11"
			gw.Annotations = map[string]string{"a": "1", vgv1.AnnotationRotateKeys: "now"}
		}, true},
		"label": {func(gw *vgv1.VoiceGateway) {
			gw.ResourceVersion = "11"
			gw.Labels = map[string]string{"l": "2"}
		}, true},
		"deletion": {func(gw *vgv1.VoiceGateway) {
			gw.ResourceVersion = "11"
			now := metav1.Now()
			gw.DeletionTimestamp = &now
		}, true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			next := base.DeepCopy()
			tt.change(next)
			if got := notOnlyStatus(event.UpdateEvent{ObjectOld: base.DeepCopy(), ObjectNew: next}); got != tt.want {
				t.Errorf("notOnlyStatus = %v, want %v", got, tt.want)
			}
		})
	}
}

func ptrTo[T any](v T) *T { return &v }
