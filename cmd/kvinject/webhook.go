package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"

	"github.com/kvinject/kvinject/servingcert"
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
	collectLessOften()
	opts.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	opts.Logger.Info("starting kvinject webhook", "version", version, "port", opts.Port, "agentImage", opts.Defaults.Image)
	if st := flags.SelfManagedTLS(); st.Enabled {
		// Self-managed TLS only fills --cert-dir (and keeps caBundle); the
		// server reloads the files as it does a mounted Secret's.
		if err := runServingCert(ctx, st, opts); err != nil {
			opts.Logger.Error("webhook failed", "error", err)
			return 1
		}
	}
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

// webhookGCPercent is the webhook's GOGC under a memory limit. A review
// allocates about 64 kB that is garbage once it is answered, over a live heap
// of a few MiB, so at Go's default of 100 the collector runs every hundred or
// so reviews and takes a tenth or more of the CPU at saturation; at 400 it
// runs a quarter as often, for a heap of about five times the live one
// instead of two (docs/performance.md).
const webhookGCPercent = 400

// collectLessOften sets webhookGCPercent when a memory limit bounds the heap
// (GOMEMLIMIT: the Deployment and the chart set it to the container's
// limit, and the runtime collects harder as the heap nears it). Without a
// limit, or with GOGC set, the runtime's setting stands.
func collectLessOften() {
	if os.Getenv("GOGC") == "" && debug.SetMemoryLimit(-1) != math.MaxInt64 {
		debug.SetGCPercent(webhookGCPercent)
	}
}

// runServingCert writes the first serving certificate into opts.CertDir and
// keeps it and the caBundle current until ctx is done.
func runServingCert(ctx context.Context, st webhook.SelfManagedTLS, opts webhook.Options) error {
	c, err := servingcert.NewClient(opts.Config)
	if err != nil {
		return err
	}
	m := &servingcert.Manager{
		Client:      c,
		Namespace:   st.Namespace,
		SecretName:  st.SecretName,
		WebhookName: st.Configuration,
		DNSNames:    st.DNSNames(),
		Dir:         opts.CertDir,
		Logger:      opts.Logger,
	}
	return m.Run(ctx)
}
