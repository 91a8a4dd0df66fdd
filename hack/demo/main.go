// Command demo runs the whole product on this machine, on loopback only: a real
// control plane (etcd, kube-apiserver, kube-controller-manager), the Key Vault
// and Entra ID emulator, the kvinject webhook registered through the
// MutatingWebhookConfiguration from manifests/, and the agent run the way a
// kubelet would. `make demo` runs it; see the README.
//
//	go run ./hack/demo [--keep] [--kvinject bin/kvinject] [--kvinject-agent bin/kvinject-agent] [--assets DIR]
//
// It walks through six steps, each saying what it does and why, and stops
// everything it started when it ends, on Ctrl-C too. With --keep it waits
// after step 5 with the control plane up and prints a kubeconfig.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"
)

func main() {
	os.Exit(run())
}

type options struct {
	keep       bool
	assets     string
	k8sVersion string
	kvinject   string
	agent      string
	refresh    time.Duration
}

func run() int {
	var o options
	flag.BoolVar(&o.keep, "keep", false, "after step 5, leave the control plane running and print a kubeconfig; Ctrl-C stops it")
	flag.StringVar(&o.assets, "assets", "", "directory with kube-apiserver, etcd and kube-controller-manager (default: build or reuse them with hack/controlplane.sh)")
	flag.StringVar(&o.k8sVersion, "k8s-version", envOr("K8S_VERSION", "1.37.2"), "Kubernetes release for hack/controlplane.sh")
	flag.StringVar(&o.kvinject, "kvinject", "", "built kvinject binary (default: go build it and kvinject-agent into a temporary directory)")
	flag.StringVar(&o.agent, "kvinject-agent", "", "built kvinject-agent binary (default: kvinject-agent beside --kvinject)")
	flag.DurationVar(&o.refresh, "refresh", 5*time.Second, "refresh interval the demo applies instead of the example's 30s, so step 4 does not wait half a minute")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "demo: unexpected arguments %q\n", flag.Args())
		return 2
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	tmp, err := os.MkdirTemp("", "kvinject-demo-")
	if err != nil {
		fmt.Fprintf(os.Stderr, "demo: %v\n", err)
		return 1
	}
	d := &demo{o: o, tmp: tmp, out: newPrinter(os.Stdout)}
	err = d.run(ctx)
	// Step 6 runs whatever happened: the end, an error or Ctrl-C.
	d.shutdown()
	os.RemoveAll(tmp)
	switch {
	case ctx.Err() != nil:
		fmt.Println("\nInterrupted; everything the demo started is stopped.")
		return 130
	case err != nil:
		fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
		return 1
	}
	return 0
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

// run is steps 1 to 5; shutdown is step 6.
func (d *demo) run(ctx context.Context) error {
	if d.o.kvinject == "" {
		d.out.note("building kvinject and kvinject-agent (go build ./cmd/kvinject ./cmd/kvinject-agent)")
		bins, err := buildKvinject(ctx, d.tmp)
		if err != nil {
			return err
		}
		d.o.kvinject, d.o.agent = bins.Kvinject, bins.Agent
	}
	if d.o.agent == "" {
		d.o.agent = filepath.Join(filepath.Dir(d.o.kvinject), "kvinject-agent")
	}
	for flag, p := range map[string]*string{"--kvinject": &d.o.kvinject, "--kvinject-agent": &d.o.agent} {
		if abs, err := filepath.Abs(*p); err == nil {
			*p = abs
		}
		if _, err := os.Stat(*p); err != nil {
			return fmt.Errorf("%s: %w (build it with make build)", flag, err)
		}
	}
	steps := []func(context.Context) error{d.step1, d.step2, d.step3, d.step4, d.step5}
	for _, s := range steps {
		if err := s(ctx); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
	if d.o.keep {
		d.keep(ctx)
	}
	return nil
}

func (d *demo) keep(ctx context.Context) {
	d.out.step(0, "--keep: everything stays up until Ctrl-C",
		"The control plane, the webhook, the emulator and the web pod's agent keep running, so you can look around with kubectl and watch the files refresh.")
	d.out.say("export KUBECONFIG=%s", d.cluster.Kubeconfig)
	d.out.say("kubectl get deploy,rs,pods -n shop")
	d.out.say("kubectl describe pod report -n shop")
	d.out.say("kubectl get mutatingwebhookconfiguration kvinject -o yaml")
	if app := appContainer(d.runner.Pod); app != nil {
		if dir, err := d.runner.HostPath(app.Name, mountPath(app)); err == nil {
			d.out.say("ls -l %s    # %s of pod %s", dir, mountPath(app), d.runner.Pod.Name)
		}
	}
	d.out.say("Press Ctrl-C to stop everything.")
	<-ctx.Done()
}
