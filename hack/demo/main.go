// Command demo runs the whole product on this machine, in network namespaces
// of its own with no link to the machine's network: a real control plane
// (etcd, kube-apiserver, kube-controller-manager, kube-scheduler), a real node
// (kubelet, containerd, runc, a bridge CNI), the Key Vault and Entra ID
// emulator, and the kvinject webhook registered through the
// MutatingWebhookConfiguration from manifests/. `make demo` runs it (as root);
// see the README.
//
//	go run ./hack/demo [--keep] [--kvinject bin/kvinject] [--assets DIR]
//
// It walks through seven steps, each saying what it does and why, and stops
// everything it started when it ends, on Ctrl-C too. With --keep it waits
// after step 6 with the cluster up and prints how to reach it.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kvinject/kvinject/e2e/cluster"
)

func main() {
	os.Exit(run())
}

type options struct {
	keep       bool
	assets     string
	k8sVersion string
	kvinject   string
	refresh    time.Duration
}

func run() int {
	var o options
	flag.BoolVar(&o.keep, "keep", false, "after step 6, leave the control plane running and print a kubeconfig; Ctrl-C stops it")
	flag.StringVar(&o.assets, "assets", "", "directory with kube-apiserver, etcd and kube-controller-manager (default: build or reuse them with hack/controlplane.sh)")
	flag.StringVar(&o.k8sVersion, "k8s-version", envOr("K8S_VERSION", "1.37.2"), "Kubernetes release for hack/controlplane.sh")
	flag.StringVar(&o.kvinject, "kvinject", "", "built kvinject binary (default: go build it into a temporary directory)")
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
	if !cluster.InNode() {
		// On the machine: build, then run the demo inside namespaces of its own.
		defer os.RemoveAll(tmp)
		if !cluster.Outside() {
			// The namespaces' init.
			code, _ := cluster.Isolate()
			return code
		}
		if err := prepare(ctx, o, d.out, tmp); err != nil {
			if ctx.Err() != nil {
				fmt.Println("\nInterrupted.")
				return 130
			}
			fmt.Fprintf(os.Stderr, "\ndemo failed: %v\n", err)
			return 1
		}
		stop() // the demo inside handles Ctrl-C now
		code, done := cluster.Isolate()
		if !done {
			_, err := cluster.NodeAssets()
			fmt.Fprintf(os.Stderr, "\ndemo failed: no node can run here: %v\n", err)
			return 1
		}
		return code
	}
	d.o.kvinject = os.Getenv(kvinjectEnv)
	err = d.run(ctx)
	// Step 7 runs whatever happened: the end, an error or Ctrl-C.
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

// run is steps 1 to 6; shutdown is step 7.
func (d *demo) run(ctx context.Context) error {
	steps := []func(context.Context) error{d.step1, d.step2, d.step3, d.step4, d.step5, d.step6}
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
		"The control plane, the node, the webhook, the emulator and the pods keep running, so you can look around with kubectl and watch the app's log follow the vault. The API server listens on 127.0.0.1 inside the demo's own network namespace: enter it with nsenter from another shell on this machine.")
	enter := cluster.EnterCommand()
	d.out.say("KUBECONFIG=%s", d.cluster.Kubeconfig)
	d.out.say("%s env KUBECONFIG=%s %s get deploy,rs,pods -n shop -o wide", enter, d.cluster.Kubeconfig, d.kubectlPath())
	d.out.say("%s env KUBECONFIG=%s %s logs -n shop %s -c web -f", enter, d.cluster.Kubeconfig, d.kubectlPath(), d.pod.Name)
	d.out.say("%s env KUBECONFIG=%s %s logs -n shop deploy/orders -c web -f", enter, d.cluster.Kubeconfig, d.kubectlPath())
	d.out.say("%s env KUBECONFIG=%s %s describe pod report -n shop", enter, d.cluster.Kubeconfig, d.kubectlPath())
	d.out.say("To stop: press Ctrl-C here; everything the demo started stops and is cleaned up.")
	<-ctx.Done()
}
