package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kvinject/kvinject/e2e/cluster"
	"github.com/kvinject/kvinject/e2e/fakeazure"
)

// loadResult is hack/loadgen's output.
type loadResult struct {
	Mode       string  `json:"mode"`
	Requests   int     `json:"requests"`
	Errors     int     `json:"errors"`
	FirstError string  `json:"firstError"`
	Seconds    float64 `json:"seconds"`
	Throughput float64 `json:"throughput"`
	P50        float64 `json:"p50Ms"`
	P99        float64 `json:"p99Ms"`
	P999       float64 `json:"p999Ms"`
	Max        float64 `json:"maxMs"`
	// SchedLagP99 is the load generator's own timer lateness at a fixed rate.
	SchedLagP99 float64 `json:"schedLagP99Ms"`
}

// serverRun is one repetition against one server.
type serverRun struct {
	Rate loadResult `json:"rate"`
	// RateCPU is the server's CPU use at the fixed rate, in % of one core.
	RateCPU    float64    `json:"rateCpuPercent"`
	Saturation loadResult `json:"saturation"`
	// SatCPUPerReview is the server's CPU time per review at saturation, µs.
	SatCPUPerReview float64 `json:"satCpuPerReviewUs"`
}

type serverResults struct {
	Runs []serverRun `json:"runs"`
	// Memory: after start, and after every run (RSS now and its peak).
	IdleRSSMiB float64 `json:"idleRssMiB"`
	RSSMiB     float64 `json:"rssAfterLoadMiB"`
	HWMMiB     float64 `json:"peakRssMiB"`
	// AnonMiB is private memory; FileMiB the executable's resident pages
	// (clean, shared by every process of the same image on a node).
	AnonMiB float64 `json:"anonMiB"`
	FileMiB float64 `json:"fileMiB"`
}

type webhookResults struct {
	Review  string        `json:"review"`
	Rate    float64       `json:"rate"`
	Conns   int           `json:"conns"`
	Seconds float64       `json:"secondsPerRun"`
	Floor   serverResults `json:"floor"`
	// Webhook is sent the same review again and again, as a ReplicaSet's
	// replicas would with the ServiceAccount plugin off (no cache: each
	// answered from scratch).
	Webhook serverResults `json:"webhook"`
	// Distinct is the same webhook process sent a different pod every time
	// (Vary replaced by a counter): every review answered from scratch.
	Vary     string         `json:"vary,omitempty"`
	Distinct *serverResults `json:"distinct,omitempty"`
	// Baseline is -baseline's build, sent the distinct pods too.
	BaselineBinary string         `json:"baselineBinary,omitempty"`
	Baseline       *serverResults `json:"baseline,omitempty"`
}

func benchWebhook(ctx context.Context, o options, bins binaries, out string, log *slog.Logger) (*webhookResults, error) {
	review, err := filepath.Abs(o.review)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(review); err != nil {
		return nil, fmt.Errorf("-review: %w", err)
	}
	certDir := filepath.Join(out, "certs")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return nil, err
	}
	// The webhook's cert-manager Secret layout: tls.crt, tls.key and ca.crt.
	caPEM, err := fakeazure.NewServingCertDir(certDir)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(certDir, "ca.crt"), caPEM, 0o600); err != nil {
		return nil, err
	}

	log.Info("starting the control plane")
	c, err := cluster.Start(ctx, cluster.Options{})
	if err != nil {
		return nil, err
	}
	defer c.Stop()
	if err := serviceAccountFor(ctx, c, review); err != nil {
		return nil, err
	}

	floorProc, floorURL, err := startFloor(ctx, bins, certDir, out)
	if err != nil {
		return nil, err
	}
	defer floorProc.stop()
	hookProc, hookURL, err := startWebhook(ctx, bins.kvinject, certDir, filepath.Join(out, "webhook.log"), c.Kubeconfig)
	if err != nil {
		return nil, err
	}
	defer hookProc.stop()
	var baseProc *process
	var baseURL string
	if o.baseline != "" {
		if baseProc, baseURL, err = startWebhook(ctx, o.baseline, certDir, filepath.Join(out, "baseline.log"), c.Kubeconfig); err != nil {
			return nil, fmt.Errorf("-baseline: %w", err)
		}
		defer baseProc.stop()
	}

	res := &webhookResults{Review: o.review, Rate: o.rate, Conns: o.conns, Seconds: o.loadDuration.Seconds()}
	type server struct {
		name, url, expect, vary string
		p                       *process
		r                       *serverResults
	}
	servers := []server{
		{name: "floor", url: floorURL, expect: `"allowed":true`, p: floorProc, r: &res.Floor},
		// The webhook must really patch: a denial would be cheaper.
		{name: "webhook", url: hookURL, expect: `"patchType":"JSONPatch"`, p: hookProc, r: &res.Webhook},
	}
	if vary := o.vary; vary != "" {
		if vary == "auto" {
			raw, err := os.ReadFile(review)
			if err != nil {
				return nil, err
			}
			if vary, err = accessSuffix(raw); err != nil {
				return nil, fmt.Errorf("-vary auto: %s: %w", review, err)
			}
		}
		res.Vary, res.Distinct = vary, &serverResults{}
		servers = append(servers, server{name: "webhook, distinct pods", url: hookURL, expect: `"patchType":"JSONPatch"`, vary: vary, p: hookProc, r: res.Distinct})
		if baseProc != nil {
			res.BaselineBinary, res.Baseline = o.baseline, &serverResults{}
			servers = append(servers, server{name: "baseline, distinct pods", url: baseURL, expect: `"patchType":"JSONPatch"`, vary: vary, p: baseProc, r: res.Baseline})
		}
	}
	// Read the webhook's idle memory a moment after it is ready.
	time.Sleep(time.Second)
	for _, s := range servers {
		if s.vary != "" {
			continue // the webhook's process again
		}
		m, err := readMemory(s.p.pid())
		if err != nil {
			return nil, err
		}
		s.r.IdleRSSMiB = mib(m.RSS)
	}
	caFile := filepath.Join(certDir, "ca.crt")
	for rep := range o.reps {
		// Interleaved, so a noisy neighbour hits both servers alike.
		for _, mode := range []string{"rate", "saturation"} {
			for _, s := range servers {
				rate := 0.0
				if mode == "rate" {
					rate = o.rate
				}
				cpu0, err := cpuTime(s.p.pid())
				if err != nil {
					return nil, err
				}
				lr, err := loadgen(ctx, bins.loadgen, s.url, review, caFile, s.expect, s.vary, rate, o.conns, o.loadDuration)
				if err != nil {
					return nil, fmt.Errorf("%s %s: %w", s.name, mode, err)
				}
				cpu1, err := cpuTime(s.p.pid())
				if err != nil {
					return nil, err
				}
				// The warm-up second is in the CPU time too.
				cpu := (cpu1 - cpu0).Seconds()
				if len(s.r.Runs) <= rep {
					s.r.Runs = append(s.r.Runs, serverRun{})
				}
				run := &s.r.Runs[rep]
				if mode == "rate" {
					run.Rate = lr
					run.RateCPU = 100 * cpu / (o.loadDuration + time.Second).Seconds()
				} else {
					run.Saturation = lr
					total := lr.Throughput * (o.loadDuration + time.Second).Seconds()
					run.SatCPUPerReview = 1e6 * cpu / total
				}
				log.Info("load run", "rep", rep+1, "server", s.name, "mode", mode,
					"throughput", int(lr.Throughput), "p50ms", lr.P50, "p99ms", lr.P99, "p999ms", lr.P999,
					"errors", lr.Errors, "cpuSeconds", cpu, "loadavg", loadAvg())
				if lr.Errors > 0 {
					return nil, fmt.Errorf("%s %s: %d errors, first: %s", s.name, mode, lr.Errors, lr.FirstError)
				}
			}
		}
	}
	// The distinct-pods runs are the same webhook process: its memory is
	// the webhook's, after all of them.
	for _, s := range servers {
		if s.vary != "" {
			continue // the webhook's process again
		}
		m, err := readMemory(s.p.pid())
		if err != nil {
			return nil, err
		}
		s.r.RSSMiB, s.r.HWMMiB, s.r.AnonMiB, s.r.FileMiB = mib(m.RSS), mib(m.HWM), mib(m.Anon), mib(m.File)
	}
	return res, nil
}

// serviceAccountFor creates the namespace and the workload-identity
// ServiceAccount the review's pod runs as.
func serviceAccountFor(ctx context.Context, c *cluster.Cluster, reviewFile string) error {
	raw, err := os.ReadFile(reviewFile)
	if err != nil {
		return err
	}
	var review struct {
		Request struct {
			Namespace string          `json:"namespace"`
			Object    json.RawMessage `json:"object"`
		} `json:"request"`
	}
	if err := json.Unmarshal(raw, &review); err != nil {
		return fmt.Errorf("%s: %w", reviewFile, err)
	}
	var pod corev1.Pod
	if err := json.Unmarshal(review.Request.Object, &pod); err != nil {
		return fmt.Errorf("%s: pod: %w", reviewFile, err)
	}
	ns := review.Request.Namespace
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	if _, err := c.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", ns, err)
	}
	_, err = c.Kube.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{
		Name: sa, Namespace: ns,
		Annotations: map[string]string{
			"azure.workload.identity/client-id": "6f1d2e3c-4b5a-4978-8a9b-0c1d2e3f4a5b",
			"azure.workload.identity/tenant-id": "72f988bf-86f1-41af-91ab-2d7cd011db47",
		},
	}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("create serviceaccount %s/%s: %w", ns, sa, err)
	}
	return nil
}

func startFloor(ctx context.Context, bins binaries, certDir, out string) (*process, string, error) {
	cmd := exec.CommandContext(ctx, bins.floor, "-cert-dir", certDir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	logf, err := os.Create(filepath.Join(out, "floor.log"))
	if err != nil {
		return nil, "", err
	}
	cmd.Stderr = logf
	p, err := start(cmd)
	if err != nil {
		return nil, "", err
	}
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		p.stop()
		return nil, "", fmt.Errorf("floor server did not print its address: %w", err)
	}
	return p, "https://" + string(bytes.TrimSpace([]byte(line))) + "/mutate-pods", nil
}

// deploymentMemoryLimit is the webhook container's memory limit in
// manifests/deployment.yaml and the chart, which they hand the Go runtime as
// GOMEMLIMIT.
const deploymentMemoryLimit = "128MiB"

// startWebhook runs `kvinject webhook` (the binary bin) as the Deployment
// does, on loopback, with the Deployment's GOMEMLIMIT, and waits for /readyz
// (TLS up, ServiceAccount cache synced).
func startWebhook(ctx context.Context, bin, certDir, logFile, kubeconfig string) (*process, string, error) {
	ports := make([]int, 3)
	for i := range ports {
		p, err := freePort()
		if err != nil {
			return nil, "", err
		}
		ports[i] = p
	}
	logf, err := os.Create(logFile)
	if err != nil {
		return nil, "", err
	}
	cmd := exec.CommandContext(ctx, bin, "webhook",
		"--host=127.0.0.1", "--port="+strconv.Itoa(ports[0]),
		"--cert-dir="+certDir, "--kubeconfig="+kubeconfig,
		"--agent-image=ghcr.io/kvinject/kvinject:bench",
		"--metrics-bind-address=127.0.0.1:"+strconv.Itoa(ports[1]),
		"--health-probe-bind-address=127.0.0.1:"+strconv.Itoa(ports[2]))
	cmd.Env = append(os.Environ(), "GOMEMLIMIT="+deploymentMemoryLimit)
	// Audit lines go to a file, as a container runtime would collect them.
	cmd.Stdout, cmd.Stderr = logf, logf
	p, err := start(cmd)
	if err != nil {
		return nil, "", err
	}
	ready := fmt.Sprintf("http://127.0.0.1:%d/readyz", ports[2])
	err = poll(ctx, "webhook /readyz", 90*time.Second, func() error {
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("webhook exited: %v (see %s)", err, logf.Name())
		default:
		}
		resp, err := http.Get(ready)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("HTTP %d", resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		p.stop()
		return nil, "", err
	}
	return p, fmt.Sprintf("https://127.0.0.1:%d/mutate-pods", ports[0]), nil
}

func loadgen(ctx context.Context, bin, url, body, ca, expect, vary string, rate float64, conns int, d time.Duration) (loadResult, error) {
	args := []string{"-url", url, "-body", body, "-ca", ca, "-expect", expect,
		"-duration", d.String(), "-warmup", "1s"}
	if vary != "" {
		args = append(args, "-vary", vary)
	}
	if rate > 0 {
		// Enough workers that a slow answer never delays the next send.
		args = append(args, "-rate", strconv.FormatFloat(rate, 'f', -1, 64), "-conns", "32")
	} else {
		args = append(args, "-conns", strconv.Itoa(conns))
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	raw, err := cmd.Output()
	if err != nil {
		return loadResult{}, fmt.Errorf("loadgen: %w: %s", err, stderr.String())
	}
	var r loadResult
	if err := json.Unmarshal(raw, &r); err != nil {
		return r, fmt.Errorf("loadgen output %q: %w", raw, err)
	}
	return r, nil
}
