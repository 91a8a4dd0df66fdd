// Command kvinject is the admission webhook and the offline injector. The
// in-pod agent is its own binary, cmd/kvinject-agent, in the same image.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/kvinject/kvinject/grants"
	"github.com/kvinject/kvinject/migrate"
	"github.com/kvinject/kvinject/offline"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `kvinject gets Azure Key Vault objects into Kubernetes pods.

Usage:
  kvinject webhook [flags]        run the mutating admission webhook
  kvinject inject -f FILE|-       show what the webhook would do to manifests, offline
  kvinject explain -f FILE|-      what each workload gets, as whom, and the Azure roles it needs
  kvinject grants -f FILE|- ...   least-privilege role assignments and federated credentials (az, terraform, bicep)
  kvinject migrate -f FILE...     rewrite Secrets Store CSI driver workloads (SecretProviderClass) for kvinject
  kvinject version                print the version
`

// pluginBinary is the name kubectl finds a plugin by: kubectl kvinject runs
// kubectl-kvinject with argv[0] the plugin's path.
const pluginBinary = "kubectl-kvinject"

// commandName is how usage texts name this binary.
func commandName(argv0 string) string {
	if filepath.Base(argv0) == pluginBinary {
		return "kubectl kvinject"
	}
	return "kvinject"
}

// usageText is the usage with the binary's name.
func usageText(argv0 string) string {
	return strings.ReplaceAll(usage, "  kvinject ", "  "+commandName(argv0)+" ")
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usageText(os.Args[0]))
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var code int
	switch os.Args[1] {
	case "webhook":
		code = runWebhook(ctx, os.Args[2:])
	case "inject":
		code = runInject(ctx, commandName(os.Args[0]), os.Args[2:], os.Stdin, os.Stdout, os.Stderr)
	case "explain":
		code = grants.Command(offlineEnv()).Explain(os.Args[2:])
	case "grants":
		code = grants.Command(offlineEnv()).Grants(os.Args[2:])
	case "migrate":
		code = migrate.Command(offlineEnv()).Run(os.Args[2:])
	case "version", "--version":
		fmt.Println("kvinject", version)
	case "help", "-h", "--help":
		fmt.Print(usageText(os.Args[0]))
	default:
		fmt.Fprintf(os.Stderr, "%s: unknown command %q\n\n%s", commandName(os.Args[0]), os.Args[1], usageText(os.Args[0]))
		code = 2
	}
	stop()
	os.Exit(code)
}

func offlineEnv() offline.Env {
	return offline.Env{Name: commandName(os.Args[0]), Version: version, Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr}
}
