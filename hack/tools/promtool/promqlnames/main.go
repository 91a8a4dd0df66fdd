// Command promqlnames parses PromQL expressions with Prometheus's own parser
// and prints the metric names each one selects. It reads one expression per
// line from stdin (newlines inside an expression escaped as \n) and writes
// one line per expression: the names, space-separated, sorted. An expression
// that does not parse, or selects a series without a literal metric name,
// is an error naming its line.
package main

import (
	"bufio"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	bad := false
	for n := 1; sc.Scan(); n++ {
		line := strings.ReplaceAll(sc.Text(), `\n`, "\n")
		names, err := metricNames(line)
		if err != nil {
			fmt.Fprintf(os.Stderr, "promqlnames: line %d: %v\n", n, err)
			bad = true
			fmt.Fprintln(w)
			continue
		}
		fmt.Fprintln(w, strings.Join(names, " "))
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "promqlnames:", err)
		bad = true
	}
	if bad {
		w.Flush()
		os.Exit(1)
	}
}

func metricNames(expr string) ([]string, error) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		return nil, err
	}
	set := map[string]bool{}
	var walkErr error
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == labels.MetricName {
				if m.Type != labels.MatchEqual {
					walkErr = fmt.Errorf("%s selects metric names by pattern", vs)
				}
				name = m.Value
			}
		}
		if name == "" {
			walkErr = fmt.Errorf("%s has no metric name", vs)
		}
		set[name] = true
		return nil
	})
	if walkErr != nil {
		return nil, walkErr
	}
	names := make([]string, 0, len(set))
	for n := range set {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}
