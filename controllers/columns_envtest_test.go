package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/rest"

	"github.com/voicegateway/voicegateway/internal/testkit"
)

// TestDurationsSayWhatIsWrong: a duration that is no duration ("90", "2
// minutes") is refused with the field's name and an example, and nothing
// else: not the schema's regular expression, not a CEL evaluation error of
// the rules that compare durations.
func TestDurationsSayWhatIsWrong(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	for _, path := range [][]string{
		{"sessions", "idleTimeout"}, {"sessions", "maxDuration"}, {"auth", "clientTokenTTL"}, {"auth", "keyRotationPeriod"},
		{"rateLimit", "window"}, {"rateLimit", "blockDuration"}, {"drain", "preStopDelay"}, {"drain", "timeout"}, {"drain", "notifyWindow"},
	} {
		for _, value := range []string{"90", "2 minutes"} {
			u := &unstructured.Unstructured{Object: map[string]any{
				"apiVersion": "voicegateway.dev/v1alpha1", "kind": "VoiceGateway",
				"metadata": map[string]any{"namespace": namespace, "name": "durations"},
				"spec":     map[string]any{"auth": map[string]any{"insecureNoAuth": true}},
			}}
			if path[0] == "auth" {
				u.Object["spec"] = map[string]any{}
			}
			if err := unstructured.SetNestedField(u.Object, value, append([]string{"spec"}, path...)...); err != nil {
				t.Fatal(err)
			}
			err := k8s.Create(ctx, u)
			if err == nil {
				_ = k8s.Delete(ctx, u)
				t.Errorf("%s %q accepted", strings.Join(path, "."), value)
				continue
			}
			msg := err.Error()
			want := strings.Join(path, ".") + " must be a duration: a number and a unit (ms, s, m or h), such as "
			if !apierrors.IsInvalid(err) || !strings.Contains(msg, want) || strings.Contains(msg, "should match") ||
				strings.Contains(msg, "evaluation error") || strings.Contains(msg, "no such overload") || strings.Count(msg, "must") != 1 {
				t.Errorf("%s %q: %v\nwant only %q", strings.Join(path, "."), value, err, want)
			}
		}
	}
}

// TestPrinterColumns reads `kubectl get vgw` as the API server prints it
// (the Table kubectl asks for): READY, UP-TO-DATE (updated replicas),
// SESSIONS, DRAINING and AGE, and in the wide view AVAILABLE and DEGRADED,
// which reads True or False rather than a reason such as AsExpected.
func TestPrinterColumns(t *testing.T) {
	ctx := context.Background()
	namespace := newNamespace(t)
	startOperator(t, namespace, managerOptions{})
	gw := newGateway(namespace, "columns")
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	httpClient, err := rest.HTTPClientFor(testConfig)
	if err != nil {
		t.Fatal(err)
	}
	url := strings.TrimSuffix(testConfig.Host, "/") + "/apis/voicegateway.dev/v1alpha1/namespaces/" + namespace + "/voicegateways/columns"
	var table metav1.Table
	testkit.Eventually(t, 30*time.Second, func() error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
		resp, err := httpClient.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		table = metav1.Table{}
		if err := json.NewDecoder(resp.Body).Decode(&table); err != nil {
			return err
		}
		if len(table.Rows) != 1 {
			return fmt.Errorf("rows %v", table.Rows)
		}
		if cell := table.Rows[0].Cells[degradedColumn(table)]; cell != "False" {
			return fmt.Errorf("DEGRADED %v, want False once reconciled", cell)
		}
		return nil
	})
	var names, wide []string
	for _, c := range table.ColumnDefinitions {
		if c.Priority == 0 {
			names = append(names, c.Name)
		} else {
			wide = append(wide, c.Name)
		}
	}
	if want := []string{"Name", "Ready", "Up-to-date", "Sessions", "Draining", "Age"}; !slices.Equal(names, want[:len(names)]) ||
		len(names) < len(want) {
		t.Errorf("columns %v, want %v first", names, want)
	}
	if !slices.Contains(wide, "Available") || !slices.Contains(wide, "Degraded") {
		t.Errorf("wide columns %v", wide)
	}
	upToDate := slices.Index(names, "Up-to-date")
	if upToDate < 0 || fmt.Sprint(table.Rows[0].Cells[upToDate]) != "0" {
		t.Errorf("UP-TO-DATE cell %v (no kubelet here: 0 pods run the spec)", table.Rows[0].Cells)
	}
}

func degradedColumn(table metav1.Table) int {
	for i, c := range table.ColumnDefinitions {
		if c.Name == "Degraded" {
			return i
		}
	}
	return 0
}
