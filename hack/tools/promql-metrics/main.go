// Command promql-metrics reads a JSON array of PromQL expressions on stdin
// and writes, for each, the metric names its selectors read, or the parse
// error, as a JSON array on stdout. The tests of test/observability use it
// to check that the alert rules and the Grafana dashboard read only metrics
// that the voice server and the operator export; it is Prometheus' own
// parser, so an expression it accepts is one Prometheus accepts.
//
//	echo '["rate(voicegateway_sessions_total[5m])"]' | promql-metrics
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"slices"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

// result is one expression's answer.
type result struct {
	Expr    string   `json:"expr"`
	Metrics []string `json:"metrics,omitempty"`
	// Unnamed is set when a selector names no metric (e.g. {job="x"}),
	// which no check can resolve.
	Unnamed bool   `json:"unnamed,omitempty"`
	Error   string `json:"error,omitempty"`
}

func main() {
	var exprs []string
	if err := json.NewDecoder(os.Stdin).Decode(&exprs); err != nil {
		fmt.Fprintln(os.Stderr, "promql-metrics: stdin must be a JSON array of strings:", err)
		os.Exit(2)
	}
	results := make([]result, 0, len(exprs))
	for _, expr := range exprs {
		results = append(results, metricsOf(expr))
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(results); err != nil {
		fmt.Fprintln(os.Stderr, "promql-metrics:", err)
		os.Exit(1)
	}
}

func metricsOf(expr string) result {
	r := result{Expr: expr}
	node, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		r.Error = err.Error()
		return r
	}
	for _, selectors := range parser.ExtractSelectors(node) {
		name := ""
		for _, m := range selectors {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if name == "" {
			r.Unnamed = true
			continue
		}
		if !slices.Contains(r.Metrics, name) {
			r.Metrics = append(r.Metrics, name)
		}
	}
	slices.Sort(r.Metrics)
	return r
}
