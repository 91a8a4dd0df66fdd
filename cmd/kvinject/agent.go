package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/kvinject/kvinject/agent"
	"github.com/kvinject/kvinject/agent/config"
)

const agentUsage = `Usage: kvinject agent init|sidecar|probe [flags]

  init     fetch every object once, write the files, exit
  sidecar  fetch, write, then refresh every interval until SIGTERM
  probe    exit 0 once the first complete snapshot is written

The configuration comes from $KVINJECT_CONFIG, the identity from
AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE and
AZURE_AUTHORITY_HOST; the kvinject webhook sets all of them.

Flags:
`

func runAgent(ctx context.Context, args []string) int {
	return agentMain(ctx, args, os.Getenv, os.Stderr)
}

func agentMain(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, agentUsage)
		return 2
	}
	mode := args[0]
	if mode == "help" || mode == "-h" || mode == "--help" {
		fmt.Fprint(stderr, agentUsage)
		return 0
	}
	fs := flag.NewFlagSet("kvinject agent "+mode, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, agentUsage); fs.PrintDefaults() }
	termLog := agent.DefaultTerminationLog
	if v := getenv("KVINJECT_TERMINATION_LOG"); v != "" {
		termLog = v
	}
	deadline := fs.Duration("deadline", agent.DefaultDeadline, "give up on the first fetch (retries included) after this long")
	fs.StringVar(&termLog, "termination-log", termLog, "file for the failure reason that kubelet shows (env KVINJECT_TERMINATION_LOG)")
	startJitter := fs.Duration("start-jitter", 0, "upper bound of a random delay before the first fetch; 0: sidecar refresh/10 up to 1s, init none; negative: none")
	dir := fs.String("dir", "", "probe: the snapshot directory (default: dir from $KVINJECT_CONFIG)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "kvinject agent %s: unexpected arguments %q\n", mode, fs.Args())
		return 2
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		fmt.Fprintf(stderr, "kvinject agent: --log-level %q: want debug, info, warn or error\n", *logLevel)
		return 2
	}
	log := slog.New(slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level}))

	switch mode {
	case "probe":
		d := *dir
		if d == "" {
			c, err := config.Load([]byte(getenv(config.EnvVar)))
			if err != nil {
				fmt.Fprintf(stderr, "kvinject agent probe: %v\n", err)
				return 1
			}
			d = c.Dir
		}
		if err := agent.Probe(d); err != nil {
			fmt.Fprintf(stderr, "kvinject agent probe: not ready: %v\n", err)
			return 1
		}
		return 0
	case "init", "sidecar":
		err := agent.Run(ctx, agent.Options{
			Mode:           agent.Mode(mode),
			Getenv:         getenv,
			Deadline:       *deadline,
			TerminationLog: termLog,
			StartJitter:    *startJitter,
			Logger:         log,
		})
		if err != nil {
			return 1
		}
		return 0
	}
	fmt.Fprintf(stderr, "kvinject agent: unknown mode %q\n\n", mode)
	fs.Usage()
	return 2
}
