package observability

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

var (
	jsonMarshal   = json.Marshal
	jsonUnmarshal = json.Unmarshal
)

const (
	chartDir  = "charts/voicegateway-operator"
	rulesFile = chartDir + "/files/prometheus-rules.yaml"
	testsFile = "test/observability/testdata/alerts_test.yaml"
	// runbooks is where each alert's runbook_url points.
	runbooks = "https://github.com/voicegateway/voicegateway/blob/main/docs/operations.md#"
)

// monitoringAPIs are the Prometheus Operator kinds the chart renders only
// where their CRDs exist.
var monitoringAPIs = []string{
	"monitoring.coreos.com/v1/PodMonitor",
	"monitoring.coreos.com/v1/ServiceMonitor",
	"monitoring.coreos.com/v1/PrometheusRule",
}

// renderChart runs helm template with the release voicegateway in
// voicegateway-system and returns the objects.
func renderChart(t *testing.T, args ...string) []*unstructured.Unstructured {
	t.Helper()
	out := mustRun(t, toolPath(t, "k8s", "helm"), nil,
		append([]string{"template", "voicegateway", chartDir, "--namespace", "voicegateway-system"}, args...)...)
	decoder := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(out), 4096)
	var objects []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := decoder.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objects
			}
			t.Fatalf("decoding helm template's output: %v", err)
		}
		if len(u.Object) > 0 {
			objects = append(objects, u)
		}
	}
}

// withMonitoringAPIs renders as on a cluster with the Prometheus Operator's
// CRDs.
func withMonitoringAPIs(args ...string) []string {
	for _, api := range monitoringAPIs {
		args = append(args, "--api-versions", api)
	}
	return args
}

func find(t *testing.T, objects []*unstructured.Unstructured, kind string) *unstructured.Unstructured {
	t.Helper()
	for _, u := range objects {
		if u.GetKind() == kind {
			return u
		}
	}
	t.Fatalf("helm template renders no %s", kind)
	return nil
}

// TestMonitoringRenderedOnlyWithItsCRDs: without the Prometheus Operator's
// APIs the chart renders no monitoring object and needs nothing; with them
// it renders the PodMonitor, the operator's ServiceMonitor and the
// PrometheusRule; the dashboard's ConfigMap needs no CRD.
func TestMonitoringRenderedOnlyWithItsCRDs(t *testing.T) {
	kinds := func(objects []*unstructured.Unstructured) []string {
		var out []string
		for _, u := range objects {
			out = append(out, u.GetKind())
		}
		return out
	}
	without := kinds(renderChart(t))
	for _, kind := range []string{"PodMonitor", "ServiceMonitor", "PrometheusRule"} {
		if slices.Contains(without, kind) {
			t.Errorf("without the monitoring APIs the chart renders a %s: %v", kind, without)
		}
	}
	if !slices.Contains(without, "ConfigMap") {
		t.Errorf("the dashboard's ConfigMap is missing: %v", without)
	}
	with := kinds(renderChart(t, withMonitoringAPIs()...))
	for _, kind := range []string{"PodMonitor", "ServiceMonitor", "PrometheusRule", "ConfigMap"} {
		if !slices.Contains(with, kind) {
			t.Errorf("with the monitoring APIs the chart renders no %s: %v", kind, with)
		}
	}
	off := kinds(renderChart(t, withMonitoringAPIs("--set", "monitoring.podMonitor.enabled=false",
		"--set", "monitoring.prometheusRule.enabled=false", "--set", "monitoring.grafanaDashboard.enabled=false",
		"--set", "metrics.serviceMonitor.enabled=false")...))
	for _, kind := range []string{"PodMonitor", "ServiceMonitor", "PrometheusRule", "ConfigMap"} {
		if slices.Contains(off, kind) {
			t.Errorf("switched off, the chart still renders a %s: %v", kind, off)
		}
	}
}

// ruleFile is a Prometheus rule file.
type ruleFile struct {
	Groups []struct {
		Name  string `json:"name"`
		Rules []struct {
			Alert       string            `json:"alert"`
			Record      string            `json:"record"`
			Expr        string            `json:"expr"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

func readYAML(t *testing.T, path string, out any) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(repoRoot, path))
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, out); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

// runbookHeadings lists the ### headings of docs/operations.md's "## Alerts".
func runbookHeadings(t *testing.T) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var headings []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "## Alerts":
			in = true
		case strings.HasPrefix(line, "## "):
			in = false
		case in && strings.HasPrefix(line, "### "):
			headings = append(headings, strings.TrimPrefix(line, "### "))
		}
	}
	return headings
}

// TestAlerts: the chart's PrometheusRule is the rule file; the rule file
// passes its unit tests (promtool test rules), in which every alert fires
// at least once; every alert has a severity, a summary, a description and a
// runbook_url that points at its own section of docs/operations.md, which
// has one section per alert and no other; and every expression parses and
// reads only metrics a fresh voice server or operator exports.
func TestAlerts(t *testing.T) {
	var rules ruleFile
	readYAML(t, rulesFile, &rules)

	rendered := find(t, renderChart(t, withMonitoringAPIs()...), "PrometheusRule")
	var fromFile map[string]any
	readYAML(t, rulesFile, &fromFile)
	if spec, _, _ := unstructured.NestedMap(rendered.Object, "spec"); !reflect.DeepEqual(spec, fromFile) {
		t.Errorf("the chart's PrometheusRule spec is not %s", rulesFile)
	}

	out := mustRun(t, toolPath(t, "tools", "promtool"), nil, "test", "rules", testsFile)
	if !strings.Contains(string(out), "SUCCESS") {
		t.Errorf("promtool test rules:\n%s", out)
	}

	var tests struct {
		Tests []struct {
			AlertRuleTest []struct {
				Alertname string `json:"alertname"`
				ExpAlerts []any  `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	readYAML(t, testsFile, &tests)
	fires := map[string]bool{}
	for _, tc := range tests.Tests {
		for _, at := range tc.AlertRuleTest {
			fires[at.Alertname] = fires[at.Alertname] || len(at.ExpAlerts) > 0
		}
	}

	headings := runbookHeadings(t)
	var alerts, exprs []string
	for _, g := range rules.Groups {
		for _, r := range g.Rules {
			exprs = append(exprs, r.Expr)
			if r.Alert == "" {
				continue
			}
			alerts = append(alerts, r.Alert)
			if !fires[r.Alert] {
				t.Errorf("%s: no case of %s shows it firing", r.Alert, testsFile)
			}
			if sev := r.Labels["severity"]; sev != "warning" && sev != "critical" {
				t.Errorf("%s: severity %q, want warning or critical", r.Alert, sev)
			}
			if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("%s: annotations %v lack a summary or a description", r.Alert, r.Annotations)
			}
			if want := runbooks + strings.ToLower(r.Alert); r.Annotations["runbook_url"] != want {
				t.Errorf("%s: runbook_url %q, want %q", r.Alert, r.Annotations["runbook_url"], want)
			}
			if !slices.Contains(headings, r.Alert) {
				t.Errorf("%s has no runbook: docs/operations.md needs \"### %s\" under \"## Alerts\"", r.Alert, r.Alert)
			}
		}
	}
	for _, h := range headings {
		if !slices.Contains(alerts, h) {
			t.Errorf("docs/operations.md has a runbook for %s, which is no alert of %s", h, rulesFile)
		}
	}
	if len(alerts) < 8 {
		t.Errorf("only %d alerts: %v", len(alerts), alerts)
	}
	server, operator := exportedByBoth(t)
	checkReadsExported(t, rulesFile, exprs, server, operator)
}

// grafanaVariable is a dashboard variable in an expression; Prometheus
// never sees one, so the check puts in what Grafana would.
var grafanaVariable = regexp.MustCompile(`\$\{?([A-Za-z_]+)\}?`)

func substituteGrafanaVariables(expr string) string {
	return grafanaVariable.ReplaceAllStringFunc(expr, func(v string) string {
		name := strings.Trim(v, "${}")
		if strings.HasPrefix(name, "__") { // $__rate_interval, $__range, $__interval
			return "5m"
		}
		return ".*" // a multi-value variable inside a =~ matcher
	})
}

// TestGrafanaDashboard: the chart's dashboard ConfigMap carries the sidecar's
// label and the dashboard file; the JSON parses, every panel queries the
// dashboard's data source, the variables' label_values queries and every
// panel's expressions parse and read only metrics a fresh voice server or
// operator exports; and it shows what an SRE looks for.
func TestGrafanaDashboard(t *testing.T) {
	cm := find(t, renderChart(t), "ConfigMap")
	if cm.GetLabels()["grafana_dashboard"] != "1" {
		t.Errorf("the dashboard ConfigMap's labels %v lack grafana_dashboard: \"1\"", cm.GetLabels())
	}
	data, _, _ := unstructured.NestedString(cm.Object, "data", "voicegateway.json")
	file, err := os.ReadFile(filepath.Join(repoRoot, chartDir, "files", "grafana-dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	if data != strings.TrimRight(string(file), "\n") {
		t.Errorf("the ConfigMap's voicegateway.json is not files/grafana-dashboard.json")
	}

	type target struct {
		Expr       string `json:"expr"`
		Datasource struct {
			UID string `json:"uid"`
		} `json:"datasource"`
	}
	var dashboard struct {
		UID        string `json:"uid"`
		Title      string `json:"title"`
		Templating struct {
			List []struct {
				Name  string `json:"name"`
				Type  string `json:"type"`
				Query any    `json:"query"`
			} `json:"list"`
		} `json:"templating"`
		Panels []struct {
			Type    string   `json:"type"`
			Title   string   `json:"title"`
			Targets []target `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal([]byte(data), &dashboard); err != nil {
		t.Fatalf("the dashboard is not JSON: %v", err)
	}
	if dashboard.UID == "" || dashboard.Title == "" {
		t.Errorf("dashboard uid %q title %q", dashboard.UID, dashboard.Title)
	}
	var exprs, titles []string
	for _, p := range dashboard.Panels {
		if p.Type == "row" {
			continue
		}
		titles = append(titles, p.Title)
		if len(p.Targets) == 0 {
			t.Errorf("panel %q queries nothing", p.Title)
		}
		for _, tg := range p.Targets {
			if tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q queries data source %q, not the dashboard's ${datasource}", p.Title, tg.Datasource.UID)
			}
			exprs = append(exprs, substituteGrafanaVariables(tg.Expr))
		}
	}
	labelValues := regexp.MustCompile(`^label_values\((.+), *[a-z_]+\)$`)
	for _, v := range dashboard.Templating.List {
		if v.Type != "query" {
			continue
		}
		q, _ := v.Query.(map[string]any)
		query, _ := q["query"].(string)
		m := labelValues.FindStringSubmatch(query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, query)
			continue
		}
		exprs = append(exprs, substituteGrafanaVariables(m[1]))
	}
	// What the issue asked an SRE to find on it.
	for _, want := range []string{"Sessions per pod", "Session ends by close code", "Echo and relay latency",
		"Drain countdown", "Rate limiter", "Memory per pod"} {
		if !slices.Contains(titles, want) {
			t.Errorf("no panel %q among %v", want, titles)
		}
	}
	server, operator := exportedByBoth(t)
	checkReadsExported(t, "the Grafana dashboard", exprs, server, operator)
}

// TestScrapeLabelsAreWhatTheAlertsRead: the PodMonitor names its job as
// VoiceGatewayMetricsDown reads it, and the operator's ServiceMonitor
// honors the namespace and voicegateway labels of the operator's own
// series, which VoiceGatewayDrainCutSessions and the dashboard group by.
func TestScrapeLabelsAreWhatTheAlertsRead(t *testing.T) {
	objects := renderChart(t, withMonitoringAPIs()...)
	endpoints, _, _ := unstructured.NestedSlice(find(t, objects, "PodMonitor").Object, "spec", "podMetricsEndpoints")
	job := ""
	for _, e := range endpoints {
		relabelings, _, _ := unstructured.NestedSlice(e.(map[string]any), "relabelings")
		for _, r := range relabelings {
			if r := r.(map[string]any); r["targetLabel"] == "job" {
				job, _ = r["replacement"].(string)
			}
		}
	}
	rules, err := os.ReadFile(filepath.Join(repoRoot, rulesFile))
	if err != nil {
		t.Fatal(err)
	}
	if job == "" || !strings.Contains(string(rules), `up{job="`+job+`"}`) {
		t.Errorf("the PodMonitor's job %q is not what the rules read up{job=...} of", job)
	}
	smEndpoints, _, _ := unstructured.NestedSlice(find(t, objects, "ServiceMonitor").Object, "spec", "endpoints")
	if len(smEndpoints) != 1 || smEndpoints[0].(map[string]any)["honorLabels"] != true {
		t.Errorf("the operator's ServiceMonitor endpoints %v do not honor the series' labels", smEndpoints)
	}
}
