package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"

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
