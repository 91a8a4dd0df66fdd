// Command kvinject is the admission webhook and the offline injector. The
// in-pod agent is its own binary, cmd/kvinject-agent, in the same image.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `kvinject gets Azure Key Vault objects into Kubernetes pods.

Usage:
  kvinject webhook [flags]        run the mutating admission webhook
  kvinject inject -f FILE|-       show what the webhook would do to manifests, offline
  kvinject version                print the version
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var code int
	switch os.Args[1] {
	case "webhook":
		code = runWebhook(ctx, os.Args[2:])
	case "inject":
		code = runInject(ctx, os.Args[2:], os.Stdin, os.Stdout, os.Stderr)
	case "version", "--version":
		fmt.Println("kvinject", version)
	case "help", "-h", "--help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "kvinject: unknown command %q\n\n%s", os.Args[1], usage)
		code = 2
	}
	stop()
	os.Exit(code)
}
