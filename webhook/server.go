package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/kvinject/kvinject/injector"
)

// Options configure the webhook process.
type Options struct {
	// Defaults are handed to the injector for every review.
	Defaults injector.Defaults
	// Host and Port are where the HTTPS server listens; Host "" is every address.
	Host string
	Port int
	// CertDir holds tls.crt and tls.key, re-read whenever they change.
	CertDir string
	// TLSMinVersion is e.g. tls.VersionTLS12.
	TLSMinVersion uint16
	// MetricsBindAddress serves Prometheus metrics over HTTP; "" or "0"
	// disables it.
	MetricsBindAddress string
	// HealthProbeBindAddress serves /healthz and /readyz; "" or "0" disables it.
	HealthProbeBindAddress string
	// GracefulShutdownTimeout bounds how long in-flight reviews may finish
	// after the context is cancelled.
	GracefulShutdownTimeout time.Duration
	// Config reaches the API server, for the ServiceAccount informer.
	Config *rest.Config
	// Logger receives the audit lines and controller-runtime's logs.
	Logger *slog.Logger
}

// Start runs the webhook until ctx is cancelled. It returns once the server
// is ready to answer reviews (TLS listener up, ServiceAccount cache synced),
// or with the error that kept it from getting there. After a nil error, done
// receives the result of the shutdown once ctx is cancelled and in-flight
// reviews have finished.
func Start(ctx context.Context, o Options) (done <-chan error, err error) {
	if o.Config == nil {
		return nil, errors.New("webhook: Options.Config is nil: need a kubeconfig or in-cluster config to watch ServiceAccounts")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	logger := logr.FromSlogHandler(o.Logger.Handler())
	// controller-runtime's components (the webhook server, certwatcher) log
	// through its global logger.
	ctrllog.SetLogger(logger)

	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	saMeta := newServiceAccountMeta()
	shutdown := o.GracefulShutdownTimeout
	if shutdown == 0 {
		shutdown = 15 * time.Second
	}
	mux := http.NewServeMux()
	server := newServer(o, mux)
	metricsAddr := o.MetricsBindAddress
	if metricsAddr == "" {
		// controller-runtime would take "" to mean :8080 on every interface.
		metricsAddr = "0"
	}
	mgr, err := manager.New(o.Config, manager.Options{
		Scheme: scheme,
		Logger: logger,
		Cache: cache.Options{
			// The cache holds ServiceAccount metadata and nothing else: any
			// other read fails instead of silently starting an informer that
			// RBAC would refuse.
			ReaderFailOnMissingInformer: true,
			DefaultTransform:            cache.TransformStripManagedFields(),
			ByObject: map[client.Object]cache.ByObject{
				// The injector never modifies the ServiceAccount, so reviews
				// read the cached object without a deep copy.
				saMeta: {UnsafeDisableDeepCopy: ptr.To(true)},
			},
		},
		Metrics:                 metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:  o.HealthProbeBindAddress,
		WebhookServer:           server,
		GracefulShutdownTimeout: &shutdown,
	})
	if err != nil {
		return nil, fmt.Errorf("webhook: create manager: %w", err)
	}
	informer, err := mgr.GetCache().GetInformer(ctx, saMeta)
	if err != nil {
		return nil, fmt.Errorf("webhook: serviceaccount informer: %w", err)
	}
	cacheSynced := func(*http.Request) error {
		if !informer.HasSynced() {
			return errors.New("serviceaccount cache not synced yet")
		}
		return nil
	}
	// GetWebhookServer also registers the server with the manager.
	serverStarted := mgr.GetWebhookServer().StartedChecker()
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("serviceaccounts", cacheSynced); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("webhook", serverStarted); err != nil {
		return nil, err
	}
	mux.Handle(Path, &Handler{
		Defaults: o.Defaults,
		ServiceAccounts: cachedServiceAccounts{
			cache: mgr.GetCache(),
			live:  mgr.GetAPIReader(),
		},
		Log: o.Logger,
	})

	errc := make(chan error, 1)
	go func() { errc <- mgr.Start(ctx) }()

	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if cacheSynced(nil) == nil && serverStarted(nil) == nil {
			o.Logger.Info("webhook ready", "port", o.Port, "certDir", o.CertDir)
			return errc, nil
		}
		select {
		case err := <-errc:
			if err == nil {
				err = ctx.Err()
			}
			return nil, fmt.Errorf("webhook: stopped before it was ready: %w", err)
		case <-tick.C:
		}
	}
}

// Run is Start followed by waiting for the shutdown.
func Run(ctx context.Context, o Options) error {
	done, err := Start(ctx, o)
	if err != nil {
		return err
	}
	return <-done
}

// newServer is controller-runtime's HTTPS server with kvinject's TLS
// settings. Its certwatcher reloads tls.crt and tls.key from CertDir when
// they change (cert-manager rotates them in the mounted Secret), so rotation
// needs no restart. Handlers are registered on its mux directly: the review
// handler records its own metrics, so controller-runtime's per-path
// instrumentation would only duplicate them.
func newServer(o Options, mux *http.ServeMux) crwebhook.Server {
	minVersion := o.TLSMinVersion
	if minVersion == 0 {
		minVersion = tls.VersionTLS12
	}
	return crwebhook.NewServer(crwebhook.Options{
		Host:       o.Host,
		Port:       o.Port,
		CertDir:    o.CertDir,
		WebhookMux: mux,
		TLSOpts:    []func(*tls.Config){func(c *tls.Config) { c.MinVersion = minVersion }},
	})
}
