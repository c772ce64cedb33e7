package packaging_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/voicegateway/voicegateway/internal/testenv"
	"github.com/voicegateway/voicegateway/internal/testkit"
)

// chartDir is the chart under test, relative to the repository root.
const chartDir = "charts/voicegateway-operator"

var (
	testConfig *rest.Config
	// k8s is a direct client with the API server's admin identity.
	k8s client.Client
	// adminKubeconfig is a kubeconfig file for helm and kubectl, as a
	// cluster administrator.
	adminKubeconfig string
	// repoRoot is the module's root folder.
	repoRoot string
	// scratchDir holds files shared by the tests: helm's folders, the
	// binaries built from the Dockerfile's command.
	scratchDir string
)

func TestMain(m *testing.M) {
	os.Exit(testenv.Main(m, func(s *testenv.Suite) error {
		testConfig, k8s, adminKubeconfig, scratchDir = s.Config, s.Client, s.Kubeconfig, s.Dir
		var err error
		repoRoot, err = testenv.RepoRoot()
		return err
	}))
}

// toolResult is what a command printed.
type toolResult struct {
	stdout, stderr string
}

// tool runs a binary from bin/k8s (helm, kubectl) in the repository root,
// with helm's folders inside the scratch folder so that nothing outside the
// test is read or written. It fails the test when the binary is missing.
func tool(t *testing.T, name string, args ...string) (toolResult, error) {
	t.Helper()
	bin, err := testenv.BinDir()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(bin, name)
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("%s is missing from %s: run `make envtest-binaries` (hack/build-k8s-binaries.sh %s)", name, bin, name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(scratchDir, "helm", "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(scratchDir, "helm", "config"),
		"HELM_DATA_HOME="+filepath.Join(scratchDir, "helm", "data"),
		"KUBECONFIG="+adminKubeconfig,
	)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	return toolResult{stdout: stdout.String(), stderr: stderr.String()}, err
}

// mustTool is tool that fails the test when the command fails.
func mustTool(t *testing.T, name string, args ...string) string {
	t.Helper()
	res, err := tool(t, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, res.stdout, res.stderr)
	}
	return res.stdout
}

// decodeObjects splits a multi-document YAML stream into objects, skipping
// empty documents.
func decodeObjects(t *testing.T, manifest []byte) []*unstructured.Unstructured {
	t.Helper()
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	var objects []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := decoder.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objects
			}
			t.Fatalf("decoding YAML: %v\n%s", err, manifest)
		}
		if len(u.Object) > 0 {
			objects = append(objects, u)
		}
	}
}

// manifest is a set of rendered objects.
type manifest []*unstructured.Unstructured

// find returns the object of that kind and name (and namespace, when not
// empty) converted into out, or fails the test.
func (m manifest) find(t *testing.T, kind, namespace, name string, out any) {
	t.Helper()
	for _, u := range m {
		if u.GetKind() == kind && u.GetName() == name && (namespace == "" || u.GetNamespace() == namespace) {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
				t.Fatalf("converting %s %s: %v", kind, name, err)
			}
			return
		}
	}
	t.Fatalf("no %s %s/%s among %v", kind, namespace, name, m.names())
}

// has reports whether an object of that kind and name is rendered.
func (m manifest) has(kind, name string) bool {
	for _, u := range m {
		if u.GetKind() == kind && u.GetName() == name {
			return true
		}
	}
	return false
}

// names lists "Kind namespace/name" of every object, for messages.
func (m manifest) names() []string {
	names := make([]string, 0, len(m))
	for _, u := range m {
		names = append(names, u.GetKind()+" "+u.GetNamespace()+"/"+u.GetName())
	}
	return names
}

// kinds counts the objects of each kind.
func (m manifest) kinds() map[string]int {
	kinds := map[string]int{}
	for _, u := range m {
		kinds[u.GetKind()]++
	}
	return kinds
}

// readRepoFile reads a file of the repository.
func readRepoFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, path))
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// crdName is the VoiceGateway CRD's name.
const crdName = "voicegateways.voicegateway.dev"

// getCRD reads the VoiceGateway CRD (unstructured: the client's scheme
// holds no apiextensions types).
func getCRD(ctx context.Context) (*unstructured.Unstructured, error) {
	crd := &unstructured.Unstructured{}
	crd.SetAPIVersion("apiextensions.k8s.io/v1")
	crd.SetKind("CustomResourceDefinition")
	err := k8s.Get(ctx, client.ObjectKey{Name: crdName}, crd)
	return crd, err
}

// ensureCRD installs the VoiceGateway CRD from config/crd when a test
// removed it (the Helm test removes it so that helm installs it).
func ensureCRD(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	crd, err := getCRD(ctx)
	if err == nil && crd.GetDeletionTimestamp() == nil {
		return
	}
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, func() error {
		if _, err := getCRD(ctx); !apierrors.IsNotFound(err) {
			return fmt.Errorf("the CRD is still being deleted (%v)", err)
		}
		return nil
	})
	if _, err := envtest.InstallCRDs(testConfig, envtest.CRDInstallOptions{
		Paths: []string{filepath.Join(repoRoot, "config", "crd", "bases")}, ErrorIfPathMissing: true,
	}); err != nil {
		t.Fatal(err)
	}
}
