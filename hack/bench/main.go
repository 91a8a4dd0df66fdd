// Command bench measures what users pay for kvinject, on this machine, in one
// bounded run: the webhook under load (real `kvinject webhook` process, real
// kube-apiserver for its ServiceAccount cache) beside a bare HTTPS floor
// server, the agent's init time against the round-trip floor, the idle
// sidecar's memory and CPU, and the binary's size. Everything listens on
// loopback. It writes results.json and results.md into -out.
//
// Run it from the module root with KUBEBUILDER_ASSETS set (make bench).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kvinject/kvinject/e2e/cluster"
)

type options struct {
	out           string
	reps          int
	loadDuration  time.Duration
	rate          float64
	conns         int
	idle          time.Duration
	fleetDuration time.Duration
	review        string
	vary          string
	capture       bool
	skipWebhook   bool
	skipAgent     bool
	skipGoBench   bool
	skipNode      bool
	report        string
	ldflags       string
	baseline      string
}

// results is everything one run measured; results.md is rendered from it.
type results struct {
	Started     time.Time `json:"started"`
	Machine     machine   `json:"machine"`
	Command     string    `json:"command"`
	Reps        int       `json:"reps"`
	LoadBefore  float64   `json:"loadAvgBefore"`
	LoadAfter   float64   `json:"loadAvgAfter"`
	BinaryBytes int64     `json:"binaryBytes"`
	// AgentBinaryBytes is the size of kvinject-agent, built the same way.
	AgentBinaryBytes int64           `json:"agentBinaryBytes"`
	GoBench          []goBench       `json:"goBenchmarks,omitempty"`
	Webhook          *webhookResults `json:"webhook,omitempty"`
	Agent            *agentResults   `json:"agent,omitempty"`
	Node             *nodeResults    `json:"node,omitempty"`
}

func main() {
	var o options
	flag.StringVar(&o.out, "out", "_out/bench", "directory for binaries, logs and results")
	flag.IntVar(&o.reps, "reps", 3, "repetitions of every measurement; the report shows medians")
	flag.DurationVar(&o.loadDuration, "load-duration", 8*time.Second, "measured time of each load run")
	flag.Float64Var(&o.rate, "rate", 200, "fixed rate (reviews/s) of the latency runs")
	flag.IntVar(&o.conns, "conns", 16, "keep-alive connections of the saturation runs")
	flag.DurationVar(&o.idle, "idle", 60*time.Second, "how long the idle sidecar is watched")
	flag.DurationVar(&o.fleetDuration, "fleet-duration", 60*time.Second, "how long the 100-sidecar fleet runs")
	flag.StringVar(&o.review, "review", capturedReview, "AdmissionReview body sent to the webhook")
	flag.StringVar(&o.vary, "vary", "auto", "string of the review that the distinct-pods runs replace by a counter, so no review repeats; auto: the suffix of its kube-api-access-* volume (each replica's own), \"\" skips those runs")
	flag.BoolVar(&o.capture, "capture", false, "only rewrite "+capturedReview+" from a real API server (needs KUBEBUILDER_ASSETS), measuring nothing")
	flag.BoolVar(&o.skipWebhook, "skip-webhook", false, "skip the webhook load runs (no control plane needed)")
	flag.BoolVar(&o.skipAgent, "skip-agent", false, "skip the agent runs")
	flag.BoolVar(&o.skipGoBench, "skip-go-bench", false, "skip the Go benchmarks of the review path")
	flag.BoolVar(&o.skipNode, "skip-node", false, "skip the runs on a real node (they need root and KVINJECT_NODE_ASSETS)")
	flag.StringVar(&o.ldflags, "ldflags", "-s -w", "linker flags of the built binaries; \"\" keeps symbols, for perf record")
	flag.StringVar(&o.baseline, "baseline", "", "another build of kvinject (e.g. main's) run beside this one on the same control plane, sent the distinct pods interleaved with it: before/after figures from one machine state")
	flag.StringVar(&o.report, "report", "", "only render this results.json as markdown, measuring nothing")
	flag.Parse()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// Bound the whole run: make bench must finish.
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	if o.report != "" {
		raw, err := os.ReadFile(o.report)
		var r results
		if err == nil {
			err = json.Unmarshal(raw, &r)
		}
		if err != nil {
			log.Error("-report", "error", err)
			os.Exit(1)
		}
		fmt.Print(r.markdown())
		return
	}
	if o.capture {
		if err := capture(ctx, "webhook/testdata/review-web.json", capturedReview); err != nil {
			log.Error("capture failed", "error", err)
			os.Exit(1)
		}
		return
	}
	if !o.skipNode && cluster.Outside() {
		// The node runs inside namespaces of the run's own, which reach no
		// network: build its images first, then run everything in there.
		if err := prepareNode(ctx, o.out); err != nil {
			log.Error("bench failed", "error", err)
			os.Exit(1)
		}
	}
	if !o.skipNode {
		if code, done := cluster.Isolate(); done {
			os.Exit(code)
		}
	}
	if err := run(ctx, o, log); err != nil {
		log.Error("bench failed", "error", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, log *slog.Logger) error {
	if o.reps < 1 {
		return errors.New("-reps must be at least 1")
	}
	out, err := filepath.Abs(o.out)
	if err != nil {
		return err
	}
	bin := filepath.Join(out, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		return err
	}
	r := &results{
		Started: time.Now().UTC(), Machine: describeMachine(), Reps: o.reps,
		Command: command(), LoadBefore: loadAvg(),
	}
	log.Info("building", "dir", bin)
	bins, err := build(ctx, bin, o.ldflags)
	if err != nil {
		return err
	}
	fi, err := os.Stat(bins.kvinject)
	if err != nil {
		return err
	}
	r.BinaryBytes = fi.Size()
	if fi, err = os.Stat(bins.agent); err != nil {
		return err
	}
	r.AgentBinaryBytes = fi.Size()

	if !o.skipGoBench {
		log.Info("go benchmarks", "packages", goBenchPackages)
		if r.GoBench, err = runGoBench(ctx, o.reps); err != nil {
			return err
		}
	}
	if !o.skipWebhook {
		if r.Webhook, err = benchWebhook(ctx, o, bins, out, log); err != nil {
			return fmt.Errorf("webhook: %w", err)
		}
	}
	if !o.skipAgent {
		if r.Agent, err = benchAgent(ctx, o, bins, out, log); err != nil {
			return fmt.Errorf("agent: %w", err)
		}
	}
	if !o.skipNode {
		if r.Node, err = benchNode(ctx, log); err != nil {
			return fmt.Errorf("node: %w", err)
		}
	}
	r.LoadAfter = loadAvg()

	raw, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(out, "results.json"), raw, 0o644); err != nil {
		return err
	}
	md := r.markdown()
	if err := os.WriteFile(filepath.Join(out, "results.md"), []byte(md), 0o644); err != nil {
		return err
	}
	fmt.Print(md)
	return nil
}

// command is how this run was started, for the report: make bench passes
// only -out.
func command() string {
	var args []string
	flag.Visit(func(f *flag.Flag) {
		switch {
		case f.Name == "out":
		case f.Value.String() == "true":
			args = append(args, "-"+f.Name)
		default:
			args = append(args, "-"+f.Name+" "+f.Value.String())
		}
	})
	if len(args) == 0 {
		return "make bench"
	}
	return "go run ./hack/bench " + strings.Join(args, " ")
}

type binaries struct {
	kvinject, agent, fleet, loadgen, floor string
}

// build compiles the shipped binary exactly as `make build` does, and the
// bench's own load generator and floor server.
func build(ctx context.Context, dir, ldflags string) (binaries, error) {
	b := binaries{
		kvinject: filepath.Join(dir, "kvinject"),
		agent:    filepath.Join(dir, "kvinject-agent"),
		fleet:    filepath.Join(dir, "fleet"),
		loadgen:  filepath.Join(dir, "loadgen"),
		floor:    filepath.Join(dir, "floor"),
	}
	for _, t := range []struct{ out, pkg string }{
		{b.kvinject, "./cmd/kvinject"},
		{b.agent, "./cmd/kvinject-agent"},
		{b.fleet, "./hack/bench/fleet"},
		{b.loadgen, "./hack/loadgen"},
		{b.floor, "./hack/bench/floor"},
	} {
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags="+ldflags, "-o", t.out, t.pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return b, fmt.Errorf("go build %s: %w\n%s", t.pkg, err, out)
		}
	}
	return b, nil
}

// process is a child the bench started; stop ends it with SIGTERM.
type process struct {
	cmd  *exec.Cmd
	done chan error
}

func start(cmd *exec.Cmd) (*process, error) {
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &process{cmd: cmd, done: make(chan error, 1)}
	go func() { p.done <- cmd.Wait() }()
	return p, nil
}

func (p *process) pid() int { return p.cmd.Process.Pid }

func (p *process) stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// poll calls f every 50ms until it returns nil or the deadline passes.
func poll(ctx context.Context, what string, timeout time.Duration, f func() error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not within %s: %w", what, timeout, err)
		case <-t.C:
		}
	}
}
