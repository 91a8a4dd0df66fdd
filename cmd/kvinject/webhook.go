package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"

	"github.com/kvinject/kvinject/webhook"
)

// runWebhook serves admission reviews until ctx is cancelled (SIGTERM), then
// finishes in-flight reviews and exits.
func runWebhook(ctx context.Context, args []string) int {
	fs := flag.NewFlagSet("kvinject webhook", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: kvinject webhook [flags]\n\nEvery flag can also be set by the environment variable in brackets; a flag given on the command line wins.\n\n")
		fs.PrintDefaults()
	}
	flags := webhook.BindFlags(fs)
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(os.Stderr, "kvinject webhook: %v\n", err)
		return 2
	}
	opts, err := flags.Options()
	if err != nil {
		fmt.Fprintf(os.Stderr, "kvinject webhook: %v\n", err)
		return 2
	}
	opts.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	opts.Logger.Info("starting kvinject webhook", "version", version, "port", opts.Port, "agentImage", opts.Defaults.Image)
	done, err := webhook.Start(ctx, opts)
	if err == nil {
		err = <-done
	}
	if err != nil {
		opts.Logger.Error("webhook failed", "error", err)
		return 1
	}
	return 0
}
