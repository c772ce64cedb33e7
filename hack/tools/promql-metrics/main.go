// Command promql-metrics reads a JSON array of PromQL expressions on stdin
// and writes, for each, the metric names its selectors read, each selector
// with its label matchers, the labels it groups or matches by, or the parse
// error, as a JSON array on stdout. The tests of test/observability use it
// to check that the alert rules and the Grafana dashboard read only metrics
// that the voice server and the operator export, and only labels (and label
// values) those metrics have; it is Prometheus' own parser, so an
// expression it accepts is one Prometheus accepts.
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
	// Selectors are the expression's vector selectors, each with its
	// metric name (empty when it names none) and its other matchers.
	Selectors []selector `json:"selectors,omitempty"`
	// Grouping are the labels of by (...), without (...), on (...) and
	// ignoring (...) clauses.
	Grouping []string `json:"grouping,omitempty"`
	// Unnamed is set when a selector names no metric (e.g. {job="x"}),
	// which no check can resolve.
	Unnamed bool   `json:"unnamed,omitempty"`
	Error   string `json:"error,omitempty"`
}

type selector struct {
	Metric   string    `json:"metric"`
	Matchers []matcher `json:"matchers,omitempty"`
}

type matcher struct {
	Name string `json:"name"`
	// Type is =, !=, =~ or !~.
	Type  string `json:"type"`
	Value string `json:"value"`
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
		s := selector{}
		for _, m := range selectors {
			if m.Name == labels.MetricName && m.Type == labels.MatchEqual {
				s.Metric = m.Value
				continue
			}
			s.Matchers = append(s.Matchers, matcher{Name: m.Name, Type: m.Type.String(), Value: m.Value})
		}
		r.Selectors = append(r.Selectors, s)
		if s.Metric == "" {
			r.Unnamed = true
			continue
		}
		if !slices.Contains(r.Metrics, s.Metric) {
			r.Metrics = append(r.Metrics, s.Metric)
		}
	}
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		switch n := n.(type) {
		case *parser.AggregateExpr:
			r.Grouping = append(r.Grouping, n.Grouping...)
		case *parser.BinaryExpr:
			if n.VectorMatching != nil {
				r.Grouping = append(r.Grouping, n.VectorMatching.MatchingLabels...)
				r.Grouping = append(r.Grouping, n.VectorMatching.Include...)
			}
		}
		return nil
	})
	slices.Sort(r.Metrics)
	slices.Sort(r.Grouping)
	r.Grouping = slices.Compact(r.Grouping)
	return r
}
