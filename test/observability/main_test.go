// Package observability checks the observability pack against real
// processes: docs/operations.md's metric tables against the /metrics of a
// fresh voice server and a fresh operator, the chart's alerts with
// `promtool test rules` and their runbooks, the Grafana dashboard's
// expressions (parsed by Prometheus' own parser) against what those
// processes export, and the chart's PodMonitor, ServiceMonitor and
// PrometheusRule on a real API server with the Prometheus Operator's CRDs.
// promtool and the CRDs come from hack/build-tools.sh (bin/tools);
// promql-metrics is built from hack/tools by the tests themselves, so that
// it is never older than its sources; helm from bin/k8s.
package observability

import (
	"os"
	"testing"

	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/voicegateway/voicegateway/internal/testbin"
	"github.com/voicegateway/voicegateway/internal/testenv"
)

var (
	voiceServer = testbin.New("github.com/voicegateway/voicegateway/cmd/voice-server")
	manager     = testbin.New("github.com/voicegateway/voicegateway/cmd/manager")

	testConfig *rest.Config
	k8s        client.Client
	kubeconfig string
	repoRoot   string
)

func TestMain(m *testing.M) {
	code := testenv.Main(m, func(s *testenv.Suite) error {
		testConfig, k8s, kubeconfig = s.Config, s.Client, s.Kubeconfig
		var err error
		repoRoot, err = testenv.RepoRoot()
		return err
	})
	if promqlTool.dir != "" {
		_ = os.RemoveAll(promqlTool.dir)
	}
	voiceServer.Remove(code)
	manager.Remove(code)
	os.Exit(code)
}
