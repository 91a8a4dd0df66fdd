package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kvinject/kvinject/e2e/cluster"
)

// The demo runs a real node, inside namespaces of its own (cluster.Isolate):
// nothing in there reaches the network, so everything that needs the module
// proxy or Debian happens first, on the machine: the control plane and the
// node (hack/controlplane.sh, hack/node.sh), the kvinject binary, the agent
// image (`make image`, this platform) and the app image (e2e/testapp). The
// demo then runs itself inside; imagesEnv and kvinjectEnv tell it where.

const (
	imagesEnv   = "KVINJECT_DEMO_IMAGES"
	kvinjectEnv = "KVINJECT_DEMO_KVINJECT"
	// agentImage is the webhook's --agent-image, as `make image VERSION=demo` tags it.
	agentImage = "ghcr.io/kvinject/kvinject:demo"
	// appImage replaces the example's nginx image: e2e/testapp, built here,
	// logs what it reads from its secrets volume.
	appImage    = "kvinject.local/testapp:1"
	exampleApp  = "nginxinc/nginx-unprivileged:1.29"
	agentTar    = "agent.tar"
	testAppPkg  = "github.com/kvinject/kvinject/e2e/testapp"
	testAppUser = 101 // nginx-unprivileged's user: not the agent's 65532
)

// prepare builds what the node needs, on the machine, and sets the
// environment the demo inside reads.
func prepare(ctx context.Context, o options, out *printer, tmp string) error {
	if os.Getuid() != 0 {
		return fmt.Errorf("the demo runs a real node (kubelet, containerd, runc): run it as root")
	}
	assets := o.assets
	if assets == "" {
		var err error
		if assets, err = script(ctx, out, "hack/controlplane.sh", o.k8sVersion); err != nil {
			return err
		}
	}
	node, err := script(ctx, out, "hack/node.sh", o.k8sVersion)
	if err != nil {
		return err
	}
	os.Setenv(cluster.AssetsEnv, assets)
	os.Setenv(cluster.NodeAssetsEnv, node)

	kvinject := o.kvinject
	if kvinject == "" {
		out.note("building kvinject (go build ./cmd/kvinject)")
		if kvinject, err = buildKvinject(ctx, tmp); err != nil {
			return err
		}
	}
	if kvinject, err = filepath.Abs(kvinject); err != nil {
		return err
	}
	if _, err := os.Stat(kvinject); err != nil {
		return fmt.Errorf("--kvinject: %w (build it with make build)", err)
	}
	os.Setenv(kvinjectEnv, kvinject)

	images := filepath.Join(tmp, "images")
	out.note("building the agent image (make image IMAGE_PLATFORMS=linux/%s VERSION=demo) and the app image (e2e/testapp)", runtime.GOARCH)
	agent, err := cluster.BuildAgentImage(ctx, ".", images, agentImage)
	if err != nil {
		return err
	}
	if err := os.Rename(agent, filepath.Join(images, agentTar)); err != nil {
		return err
	}
	if _, err := cluster.BuildImage(ctx, images, appImage, testAppPkg, testAppUser); err != nil {
		return err
	}
	os.Setenv(imagesEnv, images)
	return nil
}

// script runs one of the hack/ build scripts, showing its progress, and
// returns the directory it prints.
func script(ctx context.Context, out *printer, name, version string) (string, error) {
	out.say("%s %s (the first run builds from the Go module proxy: minutes; later runs: seconds)", name, version)
	cmd := exec.CommandContext(ctx, name, version)
	cmd.Stderr = &prefixWriter{p: out}
	// Compiling is minutes of silence: say that it is still going.
	done := make(chan struct{})
	go func(start time.Time) {
		tick := time.NewTicker(30 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				out.block(fmt.Sprintf("... still building (%s)", time.Since(start).Round(time.Second)))
			}
		}
	}(time.Now())
	b, err := cmd.Output()
	close(done)
	if err != nil {
		return "", fmt.Errorf("%s %s (run the demo from the repository root): %w", name, version, err)
	}
	return strings.TrimSpace(string(b)), nil
}

// importImages imports the images prepare built into the node.
func (d *demo) importImages(ctx context.Context) error {
	dir := os.Getenv(imagesEnv)
	for _, tar := range []string{agentTar, "testapp.tar"} {
		if err := d.cluster.ImportImage(ctx, filepath.Join(dir, tar)); err != nil {
			return err
		}
	}
	return nil
}

// appReport is one JSON line of e2e/testapp's log (see its doc).
type appReport struct {
	Files map[string]struct {
		Content string `json:"content"`
		Mode    string `json:"mode"`
	} `json:"files"`
	WriteError string            `json:"writeError"`
	Status     map[string]string `json:"status"`
	Tokens     map[string]string `json:"tokens"`
	Env        map[string]string `json:"env"`
}

// appReport returns the app container's latest report and its log line.
func (d *demo) appReport(ctx context.Context, pod string) (appReport, string, error) {
	var r appReport
	logs, err := d.logs(ctx, pod, "web")
	if err != nil {
		return r, "", err
	}
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if j, ok := strings.CutPrefix(lines[i], reportPrefix); ok {
			return r, lines[i], json.Unmarshal([]byte(j), &r)
		}
	}
	return r, "", fmt.Errorf("no report in the log of %s/web yet", pod)
}

const reportPrefix = "KVINJECT-APP "

// listing is the report's files as ls -l would list them, with a readable
// summary of each.
func (r appReport) listing() string {
	names := make([]string, 0, len(r.Files))
	for n := range r.Files {
		if !strings.HasPrefix(n, "..") {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		f := r.Files[n]
		m, _ := strconv.ParseUint(f.Mode, 8, 32)
		fmt.Fprintf(&b, "%s  %5d  %s:%s\n", os.FileMode(m), len(f.Content), n, summarize([]byte(f.Content)))
	}
	return strings.TrimRight(b.String(), "\n")
}

// appLine shortens a report line to the named files' content, as the app
// logged them.
func appLine(line string, files ...string) string {
	var r struct {
		Files map[string]json.RawMessage `json:"files"`
	}
	if json.Unmarshal([]byte(strings.TrimPrefix(line, reportPrefix)), &r) != nil {
		return line
	}
	var parts []string
	for _, f := range files {
		parts = append(parts, fmt.Sprintf("%q:%s", f, r.Files[f]))
	}
	return reportPrefix + `{"files":{` + strings.Join(parts, ",") + `,...},...}`
}

// logs is `kubectl logs pod -c container` (through the kubelet).
func (d *demo) logs(ctx context.Context, pod, container string) (string, error) {
	b, err := d.cluster.Kube.CoreV1().Pods(namespace).GetLogs(pod, &corev1.PodLogOptions{Container: container}).DoRaw(ctx)
	if err != nil {
		return "", fmt.Errorf("logs of %s/%s: %w", pod, container, err)
	}
	return string(b), nil
}

// waitRunning waits until the pod's first container runs.
func (d *demo) waitRunning(ctx context.Context, name string, timeout time.Duration) (*corev1.Pod, error) {
	var pod *corev1.Pod
	err := d.poll(ctx, timeout, "pod "+name+" to run", func() error {
		p, err := d.cluster.Kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		for _, c := range p.Status.ContainerStatuses {
			if c.Name == p.Spec.Containers[0].Name && c.State.Running != nil {
				pod = p
				return nil
			}
		}
		return fmt.Errorf("phase %s", p.Status.Phase)
	})
	if err != nil {
		return nil, fmt.Errorf("%w\nkubelet (tail):\n%s", err, tailString(d.cluster.NodeLog("kubelet"), 3000))
	}
	return pod, nil
}

// getPods shows `kubectl get pods -o wide`: the real containers' states.
func (d *demo) getPods(ctx context.Context) error {
	if d.kubectl == "" {
		return nil
	}
	out, err := d.kubectlRun(ctx, nil, "get", "pods", "-n", namespace, "-o", "wide")
	if err != nil {
		return err
	}
	d.out.say("$ kubectl get pods -n %s -o wide", namespace)
	d.out.block(out)
	return nil
}

// kubectlPath is the kubectl the demo uses, for the commands --keep prints.
func (d *demo) kubectlPath() string {
	if d.kubectl == "" {
		return "kubectl"
	}
	return d.kubectl
}
