package observability

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	vgv1 "github.com/voicegateway/voicegateway/api/v1alpha1"
	"github.com/voicegateway/voicegateway/internal/testkit"
)

// exposition is what one /metrics answered: each family's type, and each
// label's values per family.
type exposition struct {
	types  map[string]dto.MetricType
	labels map[string]map[string][]string
}

// has reports whether a PromQL metric name is exported, a histogram's or
// summary's _bucket, _sum and _count series included.
func (e exposition) has(name string) bool {
	if _, ok := e.types[name]; ok {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok {
			if t, ok := e.types[base]; ok && (t == dto.MetricType_HISTOGRAM || t == dto.MetricType_SUMMARY) {
				return true
			}
		}
	}
	return false
}

// scrape GETs a /metrics URL and parses the text format.
func scrape(t *testing.T, url string) exposition {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parsing %s: %v", url, err)
	}
	e := exposition{types: map[string]dto.MetricType{}, labels: map[string]map[string][]string{}}
	for name, f := range families {
		e.types[name] = f.GetType()
		e.labels[name] = map[string][]string{}
		for _, m := range f.GetMetric() {
			for _, l := range m.GetLabel() {
				if !slices.Contains(e.labels[name][l.GetName()], l.GetValue()) {
					e.labels[name][l.GetName()] = append(e.labels[name][l.GetName()], l.GetValue())
				}
			}
		}
	}
	return e
}

// documentedMetric is one row of a metric table of docs/operations.md.
type documentedMetric struct {
	names  []string
	typ    string
	labels map[string][]string
	// perObject are labels whose values are the objects' the series are
	// about (a VoiceGateway's namespace and name), not a fixed list.
	perObject []string
	line      int
}

var (
	backticked = regexp.MustCompile("`([^`]+)`")
	labelSpec  = regexp.MustCompile("^`([a-z_]+)`:\\s*(.*)$")
)

// documentedMetrics reads the metric tables of docs/operations.md: the
// voice server's (under "## Metrics") and the operator's (under "### The
// operator's metrics"). A row is | `name`[, `name`] | type | labels |, the
// labels cell "`label`: `value`, `value`; `label`: …", then optionally
// " — " and prose.
func documentedMetrics(t *testing.T) (server, operator []documentedMetric) {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var section *[]documentedMetric
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case line == "## Metrics":
			section = &server
			continue
		case line == "### The operator's metrics":
			section = &operator
			continue
		case strings.HasPrefix(line, "## "):
			section = nil
			continue
		}
		if section == nil || !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), " | ")
		if len(cells) != 3 {
			t.Fatalf("docs/operations.md:%d: a metric row has three cells: %q", n, line)
		}
		row := documentedMetric{typ: strings.TrimSpace(cells[1]), labels: map[string][]string{}, line: n}
		for _, m := range backticked.FindAllStringSubmatch(cells[0], -1) {
			row.names = append(row.names, m[1])
		}
		spec, _, _ := strings.Cut(strings.TrimSpace(cells[2]), "—")
		for _, part := range strings.Split(spec, ";") {
			part = strings.TrimSpace(part)
			if part == "" {
				continue
			}
			m := labelSpec.FindStringSubmatch(part)
			if m == nil {
				t.Fatalf("docs/operations.md:%d: labels %q are not \"`label`: `value`, …\"", n, part)
			}
			for _, v := range backticked.FindAllStringSubmatch(m[2], -1) {
				row.labels[m[1]] = append(row.labels[m[1]], v[1])
			}
			if len(row.labels[m[1]]) == 0 {
				// A label of the object the series is about ("`voicegateway`:
				// its name"): any value, one series set per object.
				if !strings.Contains(m[2], "VoiceGateway") && !strings.Contains(m[2], "its name") {
					t.Fatalf("docs/operations.md:%d: label %s lists no values and names no object", n, m[1])
				}
				row.perObject = append(row.perObject, m[1])
			}
		}
		*section = append(*section, row)
	}
	if len(server) == 0 || len(operator) == 0 {
		t.Fatalf("docs/operations.md: %d voice server and %d operator metric rows", len(server), len(operator))
	}
	return server, operator
}

// checkDocumented diffs a metric table with a fresh process's /metrics:
// every documented metric is exported with its type and every documented
// label value exists before any event (pre-initialized), and every
// exported metric with the prefix is documented, its labels included.
func checkDocumented(t *testing.T, what string, rows []documentedMetric, got exposition, prefix string) {
	t.Helper()
	documented := map[string]bool{}
	for _, row := range rows {
		for _, name := range row.names {
			documented[name] = true
			typ, ok := got.types[name]
			if !ok {
				t.Errorf("docs/operations.md:%d documents %s, which a fresh %s does not export", row.line, name, what)
				continue
			}
			if want := strings.ToUpper(row.typ); typ.String() != want {
				t.Errorf("docs/operations.md:%d: %s is a %s, documented as a %s", row.line, name, strings.ToLower(typ.String()), row.typ)
			}
			for label, values := range row.labels {
				for _, v := range values {
					if !slices.Contains(got.labels[name][label], v) {
						t.Errorf("docs/operations.md:%d: %s{%s=%q} is not exported by a fresh %s: create it at start", row.line, name, label, v, what)
					}
				}
			}
			for _, label := range row.perObject {
				if len(got.labels[name][label]) == 0 {
					t.Errorf("docs/operations.md:%d: %s has no series with the label %s", row.line, name, label)
				}
			}
			for label, values := range got.labels[name] {
				if label == "le" || label == "quantile" || slices.Contains(row.perObject, label) {
					continue
				}
				for _, v := range values {
					if !slices.Contains(row.labels[label], v) {
						t.Errorf("a fresh %s exports %s{%s=%q}, which docs/operations.md:%d does not list", what, name, label, v, row.line)
					}
				}
			}
		}
	}
	for name := range got.types {
		if strings.HasPrefix(name, prefix) && !documented[name] {
			t.Errorf("a fresh %s exports %s, which docs/operations.md's metric table does not document", what, name)
		}
	}
}

// operatorProcess is the manager binary running against the test's API
// server, its metrics on a loopback port.
type operatorProcess struct {
	metricsAddr string
	logPath     string
}

// startOperator runs the real operator against the API server and waits
// until its controller has started (its reconcile counters exist).
func startOperator(t *testing.T) operatorProcess {
	t.Helper()
	p := operatorProcess{metricsAddr: testkit.FreeAddr(t), logPath: filepath.Join(t.TempDir(), "manager.log")}
	logFile, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(manager.Path(t), "--kubeconfig="+kubeconfig, "--metrics-bind-address="+p.metricsAddr,
		"--health-probe-bind-address="+testkit.FreeAddr(t), "--operator-namespace=default", "--status-poll-interval=1s")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logFile.Close()
		close(exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			data, _ := os.ReadFile(p.logPath)
			t.Logf("manager log:\n%s", data)
		}
	})
	testkit.Eventually(t, 60*time.Second, func() error {
		select {
		case <-exited:
			data, _ := os.ReadFile(p.logPath)
			t.Fatalf("the manager exited:\n%s", data)
		default:
		}
		resp, err := http.Get("http://" + p.metricsAddr + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if !bytes.Contains(body, []byte(`controller_runtime_reconcile_errors_total{controller="voicegateway"}`)) {
			return fmt.Errorf("the voicegateway controller has not started")
		}
		return nil
	})
	// The operator's own series are per VoiceGateway: one to reconcile,
	// in a namespace of its own.
	ctx := context.Background()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: "metrics-"}}
	if err := k8s.Create(ctx, ns); err != nil {
		t.Fatal(err)
	}
	gw := &vgv1.VoiceGateway{ObjectMeta: metav1.ObjectMeta{Namespace: ns.Name, Name: "demo"},
		Spec: vgv1.VoiceGatewaySpec{Auth: vgv1.AuthSpec{InsecureNoAuth: true}}}
	if err := k8s.Create(ctx, gw); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = k8s.Delete(context.Background(), ns) })
	testkit.Eventually(t, 60*time.Second, func() error {
		resp, err := http.Get("http://" + p.metricsAddr + "/metrics")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, want := range []string{"voicegateway_operator_drains_total{", "voicegateway_operator_pods_running{"} {
			if !bytes.Contains(body, []byte(want+`namespace="`+ns.Name+`"`)) {
				return fmt.Errorf("no %s series for the VoiceGateway yet", want)
			}
		}
		return nil
	})
	return p
}

// startVoiceServer runs a fresh voice server with the echo backend.
func startVoiceServer(t *testing.T) *testkit.Process {
	t.Helper()
	return testkit.Start(t, voiceServer.Path(t), "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
		"--insecure-no-auth", "--propagation-delay", "0s")
}

// TestMetricTablesAreWhatFreshProcessesExport diffs docs/operations.md's
// two metric tables against the /metrics of a voice server and an
// operator that have done nothing yet.
func TestMetricTablesAreWhatFreshProcessesExport(t *testing.T) {
	server, operator := documentedMetrics(t)
	vs := startVoiceServer(t)
	checkDocumented(t, "voice server", server, scrape(t, "http://"+vs.Admin+"/metrics"), "voicegateway_")
	op := startOperator(t)
	checkDocumented(t, "operator", operator, scrape(t, "http://"+op.metricsAddr+"/metrics"), "voicegateway_")
	vs.Signal(syscall.SIGTERM)
	if code := vs.WaitExit(30 * time.Second); code != 0 {
		t.Errorf("voice server exit code %d", code)
	}
}

// exportedByBoth is what a fresh voice server and operator export, for the
// rules' and the dashboard's checks.
func exportedByBoth(t *testing.T) (server, operator exposition) {
	t.Helper()
	vs := startVoiceServer(t)
	server = scrape(t, "http://"+vs.Admin+"/metrics")
	op := startOperator(t)
	operator = scrape(t, "http://"+op.metricsAddr+"/metrics")
	return server, operator
}

// scrapeLabels are the labels Prometheus adds to every series of a target:
// the voice servers' through the chart's PodMonitor (voicegateway by its
// relabeling), the operator's through its ServiceMonitor.
var scrapeLabels = struct{ server, operator []string }{
	server:   []string{"job", "instance", "namespace", "pod", "container", "endpoint", "voicegateway"},
	operator: []string{"job", "instance", "namespace", "pod", "container", "endpoint", "service"},
}

// prometheusSeries are the series Prometheus writes itself for each
// target, which no process exports.
var prometheusSeries = []string{"up", "scrape_duration_seconds", "scrape_samples_scraped"}

// checkReadsExported runs expressions through Prometheus' parser
// (promql-metrics) and fails each that does not parse, reads a metric
// neither process exports, matches a label the metric does not have (its
// own or the scrape's), matches a value of its own label that the process
// never exports (every documented value exists from the start), or groups
// by a label none of the metrics it reads has.
func checkReadsExported(t *testing.T, where string, exprs []string, server, operator exposition) {
	t.Helper()
	if len(exprs) == 0 {
		t.Fatalf("%s: no expressions", where)
	}
	for _, problem := range readProblems(t, where, exprs, server, operator) {
		t.Error(problem)
	}
}

// readProblems is what checkReadsExported finds wrong.
func readProblems(t *testing.T, where string, exprs []string, server, operator exposition) []string {
	t.Helper()
	var problems []string
	errorf := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	for _, r := range promqlMetrics(t, exprs) {
		if r.Error != "" {
			errorf("%s: %q does not parse: %s", where, r.Expr, r.Error)
			continue
		}
		if r.Unnamed || len(r.Metrics) == 0 {
			errorf("%s: %q has a selector without a metric name", where, r.Expr)
		}
		for _, name := range r.Metrics {
			if !server.has(name) && !operator.has(name) && !slices.Contains(prometheusSeries, name) {
				errorf("%s: %q reads %s, which neither the voice server nor the operator exports", where, r.Expr, name)
			}
		}
		grouping := map[string]bool{}
		for _, s := range r.Selectors {
			own, scraped := labelsOf(s.Metric, server, operator)
			for label := range own {
				grouping[label] = true
			}
			for _, label := range scraped {
				grouping[label] = true
			}
			for _, m := range s.Matchers {
				values, isOwn := own[m.Name]
				if !isOwn && !slices.Contains(scraped, m.Name) {
					errorf("%s: %q matches %s on label %q, which it does not have (its labels: %v, the scrape's: %v)",
						where, r.Expr, s.Metric, m.Name, keys(own), scraped)
					continue
				}
				if !isOwn || m.Type == "!=" || m.Type == "!~" {
					continue
				}
				if !matchesAny(m.Type, m.Value, values) {
					errorf("%s: %q matches %s{%s%s%q}, a value it never exports (it has %v)",
						where, r.Expr, s.Metric, m.Name, m.Type, m.Value, values)
				}
			}
		}
		for _, label := range r.Grouping {
			if !grouping[label] {
				errorf("%s: %q groups by %q, a label of none of the metrics it reads", where, r.Expr, label)
			}
		}
	}
	return problems
}

// labelsOf is a metric's own labels with their exported values, and the
// labels its scrape adds.
func labelsOf(metric string, server, operator exposition) (own map[string][]string, scraped []string) {
	own = map[string][]string{}
	for _, e := range []struct {
		exposition
		scrape []string
	}{{server, scrapeLabels.server}, {operator, scrapeLabels.operator}} {
		if !e.has(metric) {
			continue
		}
		family := metric
		if _, ok := e.types[metric]; !ok {
			for _, suffix := range []string{"_bucket", "_sum", "_count"} {
				if base, ok := strings.CutSuffix(metric, suffix); ok && e.has(metric) {
					if _, exported := e.types[base]; exported {
						family = base
						if suffix == "_bucket" {
							own["le"] = nil // any bucket
						}
					}
				}
			}
		}
		for label, values := range e.labels[family] {
			own[label] = append(own[label], values...)
		}
		if e.types[family] == dto.MetricType_SUMMARY {
			own["quantile"] = nil // any quantile
		}
		scraped = append(scraped, e.scrape...)
	}
	if slices.Contains(prometheusSeries, metric) {
		scraped = append(scraped, scrapeLabels.server...)
		scraped = append(scraped, scrapeLabels.operator...)
	}
	return own, scraped
}

// matchesAny reports whether an = or =~ matcher selects one of the values
// (a label with no values listed, le or quantile, takes any).
func matchesAny(typ, value string, values []string) bool {
	if len(values) == 0 {
		return true
	}
	if typ == "=" {
		return slices.Contains(values, value)
	}
	re, err := regexp.Compile("^(?:" + value + ")$")
	if err != nil {
		return false
	}
	return slices.ContainsFunc(values, re.MatchString)
}

func keys(m map[string][]string) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// promqlResult is one answer of promql-metrics.
type promqlResult struct {
	Expr      string   `json:"expr"`
	Metrics   []string `json:"metrics"`
	Selectors []struct {
		Metric   string `json:"metric"`
		Matchers []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Value string `json:"value"`
		} `json:"matchers"`
	} `json:"selectors"`
	Grouping []string `json:"grouping"`
	Unnamed  bool     `json:"unnamed"`
	Error    string   `json:"error"`
}

// promqlTool is hack/tools/promql-metrics built from this checkout's
// sources, once per run (a bin/tools copy may be older than them).
var promqlTool struct {
	once sync.Once
	dir  string
	path string
	err  error
}

func promqlMetrics(t *testing.T, exprs []string) []promqlResult {
	t.Helper()
	promqlTool.once.Do(func() {
		dir, err := os.MkdirTemp("", "promql-metrics-")
		promqlTool.dir = dir
		if err != nil {
			promqlTool.err = err
			return
		}
		promqlTool.path = filepath.Join(dir, "promql-metrics")
		cmd := exec.Command("go", "build", "-o", promqlTool.path, "./promql-metrics")
		cmd.Dir = filepath.Join(repoRoot, "hack", "tools")
		if out, err := cmd.CombinedOutput(); err != nil {
			promqlTool.err = fmt.Errorf("building hack/tools/promql-metrics: %v\n%s", err, out)
		}
	})
	if promqlTool.err != nil {
		t.Fatal(promqlTool.err)
	}
	in, err := jsonMarshal(exprs)
	if err != nil {
		t.Fatal(err)
	}
	out := mustRun(t, promqlTool.path, in)
	var results []promqlResult
	if err := jsonUnmarshal(out, &results); err != nil {
		t.Fatalf("promql-metrics: %v\n%s", err, out)
	}
	if len(results) != len(exprs) {
		t.Fatalf("promql-metrics answered %d of %d expressions", len(results), len(exprs))
	}
	return results
}

// toolPath is a binary of bin/tools or bin/k8s; the test fails when it is
// missing, naming the script that builds it.
func toolPath(t *testing.T, dir, name string) string {
	t.Helper()
	path := filepath.Join(repoRoot, "bin", dir, name)
	if _, err := os.Stat(path); err != nil {
		script := "hack/build-tools.sh (make tools)"
		if dir == "k8s" {
			script = "hack/build-k8s-binaries.sh " + name + " (make envtest-binaries)"
		}
		t.Fatalf("%s is missing: run %s", path, script)
	}
	return path
}

// mustRun runs a command in the repository root with stdin, failing the
// test when it fails; it returns stdout.
func mustRun(t *testing.T, path string, stdin []byte, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Dir = repoRoot
	cmd.Stdin = bytes.NewReader(stdin)
	scratch := t.TempDir()
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+scratch, "HELM_CONFIG_HOME="+scratch, "HELM_DATA_HOME="+scratch)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s%s", filepath.Base(path), strings.Join(args, " "), err, stdout.String(), stderr.String())
	}
	return stdout.Bytes()
}

// TestReadChecksCatchWrongLabels: the check the rules and the dashboard go
// through finds a label a metric does not have, a value of its label it
// never exports, and a grouping by a label none of its metrics has; and
// lets through the scrape's labels and Prometheus' own up.
func TestReadChecksCatchWrongLabels(t *testing.T) {
	server, operator := exportedByBoth(t)
	wrong := []string{
		`voicegateway_errors_total{kode="unauthorized"}`,
		`voicegateway_errors_total{code="unauthorised"}`,
		`voicegateway_errors_total{code=~"unauth.*|nope"} and voicegateway_errors_total{code=~"nope"}`,
		`sum by (voicegateway_name) (voicegateway_errors_total)`,
		`voicegateway_operator_drains_total{code="x"}`,
		`voicegateway_operator_pods_running{pod_name="x"}`,
		`voicegateway_operator_drains_total{result="cut"}`,
	}
	for _, expr := range wrong {
		if problems := readProblems(t, "test", []string{expr}, server, operator); len(problems) == 0 {
			t.Errorf("%q passed the check", expr)
		}
	}
	right := []string{
		`sum by (namespace, voicegateway, code) (rate(voicegateway_errors_total{code=~"unauthorized|rate_limited", pod!=""}[5m]))`,
		`voicegateway_operator_drains_total{result="sessions_left", service="x", voicegateway="demo"}`,
		`up{job="x"} == 0`,
	}
	for _, expr := range right {
		if problems := readProblems(t, "test", []string{expr}, server, operator); len(problems) != 0 {
			t.Errorf("%q: %v", expr, problems)
		}
	}
}
