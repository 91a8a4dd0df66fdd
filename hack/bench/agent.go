package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/kvinject/kvinject/agent"
	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/agent/keyvault"
	"github.com/kvinject/kvinject/e2e/fakeazure"
)

const (
	benchVault     = "bench-kv"
	benchNamespace = "bench"
	benchSA        = "agent"
	benchClientID  = "3c1e9a7b-5d2f-4e8a-9b6c-7d0e1f2a3b4c"
)

var objectCounts = []int{1, 20, 100}
var latencies = []time.Duration{0, 20 * time.Millisecond}

type initResult struct {
	Objects   int     `json:"objects"`
	LatencyMs float64 `json:"latencyMs"`
	// Runs are wall times from exec to exit, ms.
	Runs []float64 `json:"runsMs"`
	// Requests of the last run, from the emulator's counters.
	Challenges, Discovery, Tokens, Gets int
	// Rounds is the dependent round trips: the vault's challenge (the
	// sign-in runs beside it), discovery when sent, then the GETs in waves
	// of keyvault.MaxConcurrent.
	Rounds int `json:"rounds"`
	// FloorMs is process start + Rounds × latency.
	FloorMs float64 `json:"floorMs"`
	// PeakRSSMiB is the largest peak RSS of the runs (GNU time's; see timed).
	PeakRSSMiB float64 `json:"peakRssMiB"`
	CPUMs      float64 `json:"cpuMsMedian"`
}

type idleResult struct {
	Objects    int       `json:"objects"`
	Seconds    float64   `json:"seconds"`
	RSSMiB     []float64 `json:"rssMiB"`
	AnonMiB    float64   `json:"anonMiB"`
	FileMiB    float64   `json:"fileMiB"`
	PeakMiB    float64   `json:"peakRssMiB"`
	CPUMs      float64   `json:"cpuMs"`
	GoHeapMiB  float64   `json:"goHeapLiveMiB"`
	GoHeapLine string    `json:"gctrace"`
}

type agentResults struct {
	// ProcessStartMs is the median wall time of `kvinject-agent version`: the
	// cost of starting the binary at all.
	ProcessStartMs float64      `json:"processStartMs"`
	Init           []initResult `json:"init"`
	Idle           idleResult   `json:"idle"`
	Probe          probeResult  `json:"probe"`
	Ten            tenResult    `json:"tenSidecars"`
	Storm          stormResult  `json:"storm"`
	Fleet          fleetResult  `json:"fleet"`
}

// emulator is Entra ID, an OIDC issuer and one vault with 100 secrets.
type emulator struct {
	srv       *fakeazure.Server
	vaultURL  string
	caFile    string
	tokenFile string
}

func startEmulator(ctx context.Context, dir string, log *slog.Logger) (*emulator, error) {
	ca, err := fakeazure.NewCA()
	if err != nil {
		return nil, err
	}
	e := &emulator{caFile: filepath.Join(dir, "azure-ca.pem"), tokenFile: filepath.Join(dir, "sa-token")}
	if err := ca.WriteFile(e.caFile); err != nil {
		return nil, err
	}
	iss, err := fakeazure.NewIssuer(ctx, fakeazure.IssuerOptions{CA: ca})
	if err != nil {
		return nil, err
	}
	if e.srv, err = fakeazure.Start(ctx, fakeazure.Options{CA: ca, Logger: log}); err != nil {
		return nil, err
	}
	if e.vaultURL, err = e.srv.AddVault(benchVault); err != nil {
		return nil, err
	}
	if err := e.srv.AddFederatedCredential(benchClientID, iss.URL(), "system:serviceaccount:"+benchNamespace+":"+benchSA); err != nil {
		return nil, err
	}
	if err := e.srv.Grant(benchVault, benchClientID, fakeazure.RoleSecretsUser, "*"); err != nil {
		return nil, err
	}
	for i := range objectCounts[len(objectCounts)-1] {
		// A 32-byte random value, hex: the size of a typical password or key.
		v := make([]byte, 32)
		_, _ = rand.Read(v)
		if _, err := e.srv.SetSecret(benchVault, secretName(i), hex.EncodeToString(v), ""); err != nil {
			return nil, err
		}
	}
	if err := iss.WriteServiceAccountToken(e.tokenFile, benchNamespace, benchSA, time.Hour); err != nil {
		return nil, err
	}
	return e, nil
}

func secretName(i int) string { return fmt.Sprintf("secret-%03d", i) }

// env is the agent container's environment as the injector writes it.
func (e *emulator) env(dir string, n int, refresh time.Duration, metricsAddr string) ([]string, error) {
	c := config.Config{
		Version: config.Version,
		Dir:     dir,
		Refresh: config.Duration(refresh),
		Cloud: config.Cloud{
			// The emulator's vaults are https://127.0.0.1:<port>/ but
			// answer challenges for https://vault.azure.net, like Azure's.
			Name: config.CustomCloud, AuthorityHost: e.srv.AuthorityHost(), VaultSuffix: "vault.azure.net",
			DisableInstanceDiscovery: true, DisableChallengeResourceVerification: true,
		},
		Namespace: benchNamespace, ServiceAccount: benchSA, MetricsAddr: metricsAddr,
	}
	for i := range n {
		c.Files = append(c.Files, config.File{Name: secretName(i), Mode: 0o440,
			Object: &config.Object{Vault: e.vaultURL, Kind: config.KindSecret, Name: secretName(i)}})
	}
	raw, err := json.Marshal(c)
	if err != nil {
		return nil, err
	}
	return append(os.Environ(),
		config.EnvVar+"="+string(raw),
		"AZURE_CLIENT_ID="+benchClientID,
		"AZURE_TENANT_ID="+e.srv.TenantID(),
		"AZURE_FEDERATED_TOKEN_FILE="+e.tokenFile,
		"AZURE_AUTHORITY_HOST="+e.srv.AuthorityHost(),
		"SSL_CERT_FILE="+e.caFile,
		"KVINJECT_TERMINATION_LOG="+filepath.Join(dir, "..", "termination-log"),
	), nil
}

func benchAgent(ctx context.Context, o options, bins binaries, out string, log *slog.Logger) (*agentResults, error) {
	dir, err := os.MkdirTemp(out, "agent-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	e, err := startEmulator(ctx, dir, nil)
	if err != nil {
		return nil, err
	}
	defer e.srv.Close()
	res := &agentResults{}

	if res.Probe, err = probeRSS(ctx, bins.agent, e, dir); err != nil {
		return nil, err
	}
	if res.Ten, err = tenSidecars(ctx, bins.agent, e, dir, log); err != nil {
		return nil, err
	}
	if res.Storm, err = storm(ctx, bins.fleet, e, dir, log); err != nil {
		return nil, err
	}
	if res.Fleet, err = fleetPhase(ctx, bins.fleet, dir, o.fleetDuration, log); err != nil {
		return nil, err
	}

	var starts []float64
	for range 5 {
		t := time.Now()
		if out, err := exec.CommandContext(ctx, bins.agent, "version").CombinedOutput(); err != nil {
			return nil, fmt.Errorf("kvinject-agent version: %w: %s", err, out)
		}
		starts = append(starts, ms(time.Since(t)))
	}
	res.ProcessStartMs = median(starts)

	for _, lat := range latencies {
		// Every request, Entra ID included, waits lat before its answer.
		e.srv.SetLatency(fakeazure.Target{}, lat)
		for _, n := range objectCounts {
			ir := initResult{Objects: n, LatencyMs: ms(lat)}
			var cpus []float64
			for rep := range o.reps {
				e.srv.ResetCounts()
				wall, ru, _, err := runInit(ctx, bins.agent, e, dir, n, rep)
				if err != nil {
					return nil, err
				}
				ir.Runs = append(ir.Runs, wall)
				cpus = append(cpus, ms(time.Duration(ru.Utime.Nano()+ru.Stime.Nano())))
			}
			ir.CPUMs = median(cpus)
			ir.Challenges = e.srv.Count(fakeazure.EndpointChallenge, fakeazure.AnyClient)
			ir.Discovery = e.srv.Count(fakeazure.EndpointOpenIDConfiguration, fakeazure.AnyClient)
			ir.Tokens = e.srv.Count(fakeazure.EndpointToken, fakeazure.AnyClient)
			ir.Gets = e.srv.Count(fakeazure.EndpointGetSecret, fakeazure.AnyClient)
			ir.Rounds = 1 + (n+keyvault.MaxConcurrent-1)/keyvault.MaxConcurrent
			if ir.Discovery > 0 {
				ir.Rounds++
			}
			ir.FloorMs = res.ProcessStartMs + float64(ir.Rounds)*ms(lat)
			log.Info("agent init", "objects", n, "latency", lat, "medianMs", median(ir.Runs), "floorMs", ir.FloorMs,
				"gets", ir.Gets, "tokens", ir.Tokens, "challenges", ir.Challenges, "peakRssMiB", ir.PeakRSSMiB, "loadavg", loadAvg())
			if ir.Gets != n {
				return nil, fmt.Errorf("init with %d objects made %d GETs, want %d", n, ir.Gets, n)
			}
			if lat == 0 {
				_, _, peak, err := runInit(ctx, bins.agent, e, dir, n, -1)
				if err != nil {
					return nil, err
				}
				ir.PeakRSSMiB = peak
			}
			res.Init = append(res.Init, ir)
		}
	}
	e.srv.SetLatency(fakeazure.Target{}, 0)

	if res.Idle, err = idleSidecar(ctx, bins.agent, e, dir, o.idle, log); err != nil {
		return nil, err
	}
	return res, nil
}

// runInit runs `kvinject-agent init` once, into a fresh directory, and
// returns its wall time in ms and its resource usage.
func runInit(ctx context.Context, bin string, e *emulator, dir string, n, rep int) (float64, *syscall.Rusage, float64, error) {
	files := filepath.Join(dir, fmt.Sprintf("init-%d-%d", n, rep))
	if err := os.Mkdir(files, 0o755); err != nil {
		return 0, nil, 0, err
	}
	defer os.RemoveAll(files)
	env, err := e.env(files, n, 0, "")
	if err != nil {
		return 0, nil, 0, err
	}
	// The wall time is of the agent alone; its peak RSS comes from one
	// more run under GNU time (rep -1).
	peak := files + ".peak"
	cmd := exec.CommandContext(ctx, bin, "init", "--log-level=warn")
	if rep < 0 {
		cmd = timed(ctx, peak, bin, "init", "--log-level=warn")
	}
	cmd.Env = env
	t := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(t)
	if err != nil {
		return 0, nil, 0, fmt.Errorf("agent init (%d objects): %w\n%s", n, err, out)
	}
	ru, _ := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if ru == nil {
		ru = &syscall.Rusage{}
	}
	return ms(wall), ru, timedPeak(peak), nil
}

// gcLine matches a gctrace line: "gc 3 @0.1s 1%: ... 4->4->1 MB, ...".
var gcLine = regexp.MustCompile(`^gc \d+ .* (\d+)->(\d+)->(\d+) MB`)

// idleSidecar starts a refreshing sidecar with four objects and a 1h
// interval, waits for its first snapshot, then watches it for d.
func idleSidecar(ctx context.Context, bin string, e *emulator, dir string, d time.Duration, log *slog.Logger) (idleResult, error) {
	const n = 4
	r := idleResult{Objects: n, Seconds: d.Seconds()}
	files := filepath.Join(dir, "sidecar")
	if err := os.Mkdir(files, 0o755); err != nil {
		return r, err
	}
	port, err := freePort()
	if err != nil {
		return r, err
	}
	env, err := e.env(files, n, time.Hour, "127.0.0.1:"+strconv.Itoa(port))
	if err != nil {
		return r, err
	}
	cmd := exec.CommandContext(ctx, bin, "sidecar")
	// gctrace prints the live heap at every collection, the sidecar's
	// FreeOSMemory after the first cycle included.
	cmd.Env = append(env, "GODEBUG=gctrace=1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return r, err
	}
	p, err := start(cmd)
	if err != nil {
		return r, err
	}
	defer p.stop()
	var (
		mu     sync.Mutex
		lastGC string
	)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if gcLine.MatchString(sc.Text()) {
				mu.Lock()
				lastGC = sc.Text()
				mu.Unlock()
			}
		}
	}()
	if err := poll(ctx, "sidecar's first snapshot", 60*time.Second, func() error { return agent.Probe(files) }); err != nil {
		return r, err
	}
	// Let the first cycle's garbage be returned (FreeOSMemory) before watching.
	time.Sleep(2 * time.Second)
	cpu0, err := cpuTime(p.pid())
	if err != nil {
		return r, err
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	end := time.Now().Add(d)
	var last memory
	for time.Now().Before(end) {
		select {
		case <-ctx.Done():
			return r, ctx.Err()
		case <-tick.C:
		}
		if last, err = readMemory(p.pid()); err != nil {
			return r, err
		}
		r.RSSMiB = append(r.RSSMiB, mib(last.RSS))
	}
	cpu1, err := cpuTime(p.pid())
	if err != nil {
		return r, err
	}
	r.CPUMs = ms(cpu1 - cpu0)
	r.AnonMiB, r.FileMiB, r.PeakMiB = mib(last.Anon), mib(last.File), mib(last.HWM)
	mu.Lock()
	r.GoHeapLine = lastGC
	mu.Unlock()
	if m := gcLine.FindStringSubmatch(r.GoHeapLine); m != nil {
		live, _ := strconv.ParseFloat(m[3], 64)
		r.GoHeapMiB = live
	}
	log.Info("idle sidecar", "rssMiB", median(r.RSSMiB), "anonMiB", r.AnonMiB, "fileMiB", r.FileMiB,
		"cpuMs", r.CPUMs, "gc", r.GoHeapLine)
	return r, nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
