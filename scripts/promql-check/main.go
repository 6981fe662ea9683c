// promql-check parses PromQL expressions with Prometheus' own parser (the one promtool uses) and
// prints, for each, the metric names it selects or the parse error. It reads one JSON string per
// line on stdin and writes one JSON object per line: {"expr": ..., "metrics": [...]} or
// {"expr": ..., "error": ...}. tests/unit/test_chart_monitoring.py runs it on the alert rules
// and dashboard queries of manifests/monitoring/. Built by scripts/build-promql-check.sh (the
// parser alone: promtool itself pulls in every service discovery SDK).
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"github.com/prometheus/prometheus/promql/parser"
)

type result struct {
	Expr    string   `json:"expr"`
	Metrics []string `json:"metrics,omitempty"`
	Error   string   `json:"error,omitempty"`
}

func check(p parser.Parser, expr string) result {
	node, err := p.ParseExpr(expr)
	if err != nil {
		return result{Expr: expr, Error: err.Error()}
	}
	names := map[string]bool{}
	parser.Inspect(node, func(n parser.Node, _ []parser.Node) error {
		if selector, ok := n.(*parser.VectorSelector); ok {
			names[selector.Name] = true
		}
		return nil
	})
	metrics := make([]string, 0, len(names))
	for name := range names {
		metrics = append(metrics, name)
	}
	sort.Strings(metrics)
	return result{Expr: expr, Metrics: metrics}
}

func main() {
	p := parser.NewParser(parser.Options{})
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	out := json.NewEncoder(os.Stdout)
	for scanner.Scan() {
		var expr string
		if err := json.Unmarshal(scanner.Bytes(), &expr); err != nil {
			fmt.Fprintf(os.Stderr, "promql-check: a line is not a JSON string: %v\n", err)
			os.Exit(2)
		}
		if err := out.Encode(check(p, expr)); err != nil {
			fmt.Fprintf(os.Stderr, "promql-check: %v\n", err)
			os.Exit(2)
		}
	}
	if err := scanner.Err(); err != nil {
		fmt.Fprintf(os.Stderr, "promql-check: %v\n", err)
		os.Exit(2)
	}
}
