package main

import (
	"context"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
)

// goBenchPackages hold the benchmarks of the review path: annotation parsing
// and Inject (injector), the whole handler (webhook).
var goBenchPackages = []string{"./injector", "./webhook"}

type goBench struct {
	Name    string    `json:"name"`
	NsPerOp []float64 `json:"nsPerOp"`
	BPerOp  float64   `json:"bytesPerOp"`
	Allocs  float64   `json:"allocsPerOp"`
}

// benchLine matches "BenchmarkX-2  1234  5678 ns/op ... 90 B/op  12 allocs/op".
var benchLine = regexp.MustCompile(`(?m)^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([\d.]+) ns/op.*?\s([\d.]+) B/op\s+([\d.]+) allocs/op`)

// runGoBench runs the Go benchmarks count times each.
func runGoBench(ctx context.Context, count int) ([]goBench, error) {
	args := append([]string{"test", "-run", "^$", "-bench", ".", "-benchmem", "-count", strconv.Itoa(count)}, goBenchPackages...)
	out, err := exec.CommandContext(ctx, "go", args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("go %v: %w\n%s", args, err, out)
	}
	var res []goBench
	index := map[string]int{}
	for _, m := range benchLine.FindAllStringSubmatch(string(out), -1) {
		ns, _ := strconv.ParseFloat(m[2], 64)
		b, _ := strconv.ParseFloat(m[3], 64)
		allocs, _ := strconv.ParseFloat(m[4], 64)
		i, ok := index[m[1]]
		if !ok {
			i = len(res)
			index[m[1]] = i
			res = append(res, goBench{Name: m[1]})
		}
		res[i].NsPerOp = append(res[i].NsPerOp, ns)
		res[i].BPerOp, res[i].Allocs = b, allocs
	}
	if len(res) == 0 {
		return nil, fmt.Errorf("no benchmark results in:\n%s", out)
	}
	return res, nil
}
