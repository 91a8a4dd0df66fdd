package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/kvinject/kvinject/agent"
	"github.com/kvinject/kvinject/e2e/fakeazure"
)

// probeResult is the startup probe's cost: kubelet runs it every second
// while a pod starts.
type probeResult struct {
	// PeakRSSMiB is the largest peak RSS over the runs, before and after the
	// first snapshot.
	PeakRSSMiB float64   `json:"peakRssMiB"`
	RunsMs     []float64 `json:"runsMs"`
}

// probeRSS runs `kvinject-agent probe` five times on an empty directory and
// five times on a ready one.
func probeRSS(ctx context.Context, bin string, e *emulator, dir string) (probeResult, error) {
	var r probeResult
	files := filepath.Join(dir, "probe")
	if err := os.Mkdir(files, 0o755); err != nil {
		return r, err
	}
	env, err := e.env(files, 1, 0, "")
	if err != nil {
		return r, err
	}
	for _, ready := range []bool{false, true} {
		if ready {
			init := exec.CommandContext(ctx, bin, "init", "--log-level=warn")
			init.Env = env
			if out, err := init.CombinedOutput(); err != nil {
				return r, fmt.Errorf("init for the probe: %w\n%s", err, out)
			}
		}
		for range 5 {
			peak := filepath.Join(dir, "probe-peak")
			cmd := timed(ctx, peak, bin, "probe")
			cmd.Env = env
			t := time.Now()
			err := cmd.Run()
			r.RunsMs = append(r.RunsMs, ms(time.Since(t)))
			if ready && err != nil {
				return r, fmt.Errorf("probe on a ready snapshot: %w", err)
			}
			r.PeakRSSMiB = max(r.PeakRSSMiB, timedPeak(peak))
		}
	}
	return r, nil
}

// tenResult is ten idle sidecars on one machine, as on one node: RSS counts
// the binary's shared pages in each, PSS divides them among the ten.
type tenResult struct {
	RSSMiB []float64 `json:"rssMiB"`
	PSSMiB []float64 `json:"pssMiB"`
}

// tenSidecars starts ten sidecar processes (four objects, 1h refresh), waits
// until each has published and idled, and reads /proc/<pid>/smaps_rollup.
func tenSidecars(ctx context.Context, bin string, e *emulator, dir string, log *slog.Logger) (tenResult, error) {
	var r tenResult
	var procs []*process
	defer func() {
		for _, p := range procs {
			p.stop()
		}
	}()
	for i := range 10 {
		files := filepath.Join(dir, "ten-"+strconv.Itoa(i))
		if err := os.Mkdir(files, 0o755); err != nil {
			return r, err
		}
		env, err := e.env(files, 4, time.Hour, "")
		if err != nil {
			return r, err
		}
		cmd := exec.CommandContext(ctx, bin, "sidecar", "--log-level=warn")
		cmd.Env = env
		p, err := start(cmd)
		if err != nil {
			return r, err
		}
		procs = append(procs, p)
		if err := poll(ctx, "sidecar's first snapshot", 60*time.Second, func() error { return agent.Probe(files) }); err != nil {
			return r, err
		}
	}
	time.Sleep(2 * time.Second) // the last one's FreeOSMemory after its first cycle
	for _, p := range procs {
		rss, pss, err := smapsRollup(p.pid())
		if err != nil {
			return r, err
		}
		r.RSSMiB, r.PSSMiB = append(r.RSSMiB, mib(rss)), append(r.PSSMiB, mib(pss))
	}
	log.Info("ten sidecars", "rssMiB", r.RSSMiB, "pssMiB", r.PSSMiB)
	return r, nil
}

// smapsRollup reads Rss and Pss (KiB) of pid.
func smapsRollup(pid int) (rss, pss int64, err error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/smaps_rollup")
	if err != nil {
		return 0, 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 {
			switch f[0] {
			case "Rss:":
				rss, _ = strconv.ParseInt(f[1], 10, 64)
			case "Pss:":
				pss, _ = strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	return rss, pss, nil
}

// stormResult is 50 agents whose first fetch meets a vault outage (503
// without Retry-After, Entra ID included) of StormSeconds.
type stormResult struct {
	Agents, Objects int
	StormSeconds    float64 `json:"stormSeconds"`
	// RecoveryMs: per agent, from the end of the outage to its files.
	RecoveryMs []float64 `json:"recoveryMs"`
	// MeanRetrySeconds: agents × objects × outage / requests during it, the
	// mean time between one agent's tries at one object.
	MeanRetrySeconds float64 `json:"meanRetrySeconds"`
}

func storm(ctx context.Context, fleetBin string, e *emulator, dir string, log *slog.Logger) (stormResult, error) {
	r := stormResult{Agents: 50, Objects: 2, StormSeconds: 20}
	e.srv.ResetCounts()
	e.srv.SetOutage(true)
	env, err := e.env(filepath.Join(dir, "unused"), r.Objects, 0, "")
	if err != nil {
		return r, err
	}
	var (
		mu   sync.Mutex
		done = map[int]time.Time{}
	)
	wait, err := runFleet(ctx, fleetBin, env, filepath.Join(dir, "storm"), "init", r.Agents, func(i int, at time.Time, failed string) {
		mu.Lock()
		defer mu.Unlock()
		if failed == "" {
			done[i] = at
		}
	})
	if err != nil {
		return r, err
	}
	time.Sleep(time.Duration(r.StormSeconds * float64(time.Second)))
	// Tries at objects: the vault's requests (a try during the outage is
	// its unauthenticated challenge request, answered 503).
	var during int
	for _, c := range e.srv.Counts() {
		if c.Endpoint == fakeazure.EndpointChallenge || c.Endpoint == fakeazure.EndpointGetSecret {
			during += c.N
		}
	}
	e.srv.SetOutage(false)
	end := time.Now()
	if err := wait(); err != nil {
		return r, err
	}
	if len(done) != r.Agents {
		return r, fmt.Errorf("storm: %d of %d agents fetched", len(done), r.Agents)
	}
	for _, at := range done {
		r.RecoveryMs = append(r.RecoveryMs, ms(at.Sub(end)))
	}
	slices.Sort(r.RecoveryMs)
	r.MeanRetrySeconds = float64(r.Agents*r.Objects) * r.StormSeconds / float64(during)
	log.Info("storm", "recoveryMedianMs", median(r.RecoveryMs), "recoveryMaxMs", r.RecoveryMs[len(r.RecoveryMs)-1], "meanRetrySeconds", r.MeanRetrySeconds, "requests", during)
	return r, nil
}

// fleetResult is 100 sidecars started at one instant, 5 objects each,
// refreshing every 10 s: GETs per second from the emulator's request log.
type fleetResult struct {
	Agents, Objects int
	RefreshSeconds  float64 `json:"refreshSeconds"`
	Seconds         float64 `json:"seconds"`
	// PerSecond are GETs in each second of the run.
	PerSecond []int `json:"getsPerSecond"`
	// PeakOverMean is over the seconds from the second cycle on (from half
	// a refresh after the start) to the last whole second.
	PeakOverMean float64 `json:"peakOverMean"`
	Gets, Tokens int
	// WantGets is one GET per distinct object per cycle that began.
	Cycles int `json:"cycles"`
}

func fleetPhase(ctx context.Context, fleetBin, dir string, d time.Duration, log *slog.Logger) (fleetResult, error) {
	r := fleetResult{Agents: 100, Objects: 5, RefreshSeconds: 10, Seconds: d.Seconds()}
	arrivals := &arrivalLog{}
	fdir := filepath.Join(dir, "fleet")
	if err := os.Mkdir(fdir, 0o755); err != nil {
		return r, err
	}
	e, err := startEmulator(ctx, fdir, slog.New(arrivals))
	if err != nil {
		return r, err
	}
	defer e.srv.Close()
	env, err := e.env(filepath.Join(dir, "unused"), r.Objects, 10*time.Second, "")
	if err != nil {
		return r, err
	}
	fctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	start := time.Now()
	wait, err := runFleet(fctx, fleetBin, env, filepath.Join(fdir, "agents"), "sidecar", r.Agents, func(int, time.Time, string) {})
	if err != nil {
		return r, err
	}
	<-fctx.Done()
	_ = wait()
	r.PerSecond = make([]int, int(d/time.Second))
	for _, at := range arrivals.times() {
		if s := int(at.Sub(start) / time.Second); s >= 0 && s < len(r.PerSecond) {
			r.PerSecond[s]++
		}
	}
	steady := r.PerSecond[int(r.RefreshSeconds/2):]
	sum := 0
	for _, n := range steady {
		sum += n
	}
	mean := float64(sum) / float64(len(steady))
	r.PeakOverMean = float64(slices.Max(steady)) / mean
	r.Gets = e.srv.Count(fakeazure.EndpointGetSecret, fakeazure.AnyClient)
	r.Tokens = e.srv.Count(fakeazure.EndpointToken, fakeazure.AnyClient)
	log.Info("fleet", "peakOverMean", r.PeakOverMean, "gets", r.Gets, "tokens", r.Tokens, "perSecond", r.PerSecond)
	return r, nil
}

// runFleet starts the fleet helper with n agents and calls done for each
// agent's first fetch; wait ends the helper (SIGTERM) and waits for it.
func runFleet(ctx context.Context, bin string, env []string, dir, mode string, n int, done func(i int, at time.Time, failed string)) (wait func() error, err error) {
	cmd := exec.CommandContext(ctx, bin, "-agents", strconv.Itoa(n), "-mode", mode, "-dir", dir)
	cmd.Env = env
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	lines := make(chan struct{})
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			var l struct {
				Agent        int    `json:"agent"`
				DoneUnixNano int64  `json:"doneUnixNano"`
				Error        string `json:"error"`
			}
			if json.Unmarshal(sc.Bytes(), &l) == nil {
				done(l.Agent, time.Unix(0, l.DoneUnixNano), l.Error)
			}
		}
	}()
	return func() error {
		<-lines
		err := cmd.Wait()
		if ctx.Err() != nil {
			return nil // stopped by us
		}
		return err
	}, nil
}

// arrivalLog is a slog.Handler for the emulator's per-request lines: it
// keeps the arrival time of every GET of a secret.
type arrivalLog struct {
	mu sync.Mutex
	at []time.Time
}

func (l *arrivalLog) Enabled(context.Context, slog.Level) bool { return true }

func (l *arrivalLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "endpoint" && a.Value.String() == string(fakeazure.EndpointGetSecret) {
			l.mu.Lock()
			l.at = append(l.at, r.Time)
			l.mu.Unlock()
			return false
		}
		return true
	})
	return nil
}

func (l *arrivalLog) times() []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.at)
}

func (l *arrivalLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *arrivalLog) WithGroup(string) slog.Handler      { return l }
