// Command kvinject-agent is the in-pod agent that the kvinject webhook
// injects: it signs in with workload identity, fetches the pod's Key Vault
// objects and writes them to the shared in-memory volume (package agent).
// It is its own small binary, in the same image as the webhook, so that a
// sidecar maps none of the webhook's Kubernetes client code.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/kvinject/kvinject/agent"
	"github.com/kvinject/kvinject/agent/config"
)

// version is stamped at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `Usage: kvinject-agent init|sidecar|probe|env-check|version [flags]

  init       fetch every object once, write the files, exit
  sidecar    fetch, write, then refresh every interval until SIGTERM
  probe      exit 0 once the first complete snapshot is written
  env-check  exit 0 if the kubelet set $KVINJECT_ENV_CHECK from the env file
  version    print the version

The configuration comes from $KVINJECT_CONFIG, the identity from
AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE and
AZURE_AUTHORITY_HOST; the kvinject webhook sets all of them.

Flags:
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	mode := args[0]
	switch mode {
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	case "version", "--version":
		fmt.Fprintln(stdout, "kvinject-agent", version)
		return 0
	}
	fs := flag.NewFlagSet("kvinject-agent "+mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, usage); fs.PrintDefaults() }
	termLog := agent.DefaultTerminationLog
	if v := getenv("KVINJECT_TERMINATION_LOG"); v != "" {
		termLog = v
	}
	deadline := fs.Duration("deadline", agent.DefaultDeadline, "give up on the first fetch (retries included) after this long")
	fs.StringVar(&termLog, "termination-log", termLog, "file for the failure reason that kubelet shows (env KVINJECT_TERMINATION_LOG)")
	dir := fs.String("dir", "", "probe: the snapshot directory (default: dir from $KVINJECT_CONFIG)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kvinject-agent %s: unexpected arguments %q\n", mode, fs.Args())
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "kvinject-agent: --log-level %q: want debug, info, warn or error\n", *logLevel)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	switch mode {
	case "probe":
		d := *dir
		if d == "" {
			c, err := config.Load([]byte(getenv(config.EnvVar)))
			if err != nil {
				fmt.Fprintf(stderr, "kvinject-agent probe: %v\n", err)
				return 1
			}
			d = c.Dir
		}
		if err := agent.Probe(d); err != nil {
			fmt.Fprintf(stderr, "kvinject-agent probe: not ready: %v\n", err)
			return 1
		}
		return 0
	case "env-check":
		if getenv(config.EnvCheck) == config.EnvCheckValue {
			return 0
		}
		msg := "kvinject agent: this node's kubelet did not set environment variables from the agent's env file (" + config.EnvCheck + " is empty): " +
			"it runs without the EnvFiles feature (a kubelet before 1.35, or the EnvFiles feature gate off), and would have started the app with empty variables.\n" +
			"  Fix: run the pod on nodes whose kubelet is 1.35 or later with EnvFiles on, or read the secrets from their files instead of kvinject.io/env-* annotations"
		fmt.Fprintln(stderr, msg)
		_ = os.WriteFile(termLog, []byte(msg), 0o644)
		return 1
	case "init", "sidecar":
		err := agent.Run(ctx, agent.Options{
			Mode:           agent.Mode(mode),
			Getenv:         getenv,
			Deadline:       *deadline,
			TerminationLog: termLog,
			Logger:         log,
		})
		if errors.Is(err, agent.ErrRestart) {
			return config.RestartExitCode
		}
		if err != nil {
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "kvinject-agent: unknown mode %q\n\n", mode)
	fs.Usage()
	return 2
}
