package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"golang.org/x/net/netutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/kvinject/kvinject/injector"
)

// Options configure the webhook process.
type Options struct {
	// Defaults are handed to the injector for every review.
	Defaults injector.Defaults
	// Host and Port are where the HTTPS server listens; Host "" is every address.
	Host string
	Port int
	// CertDir holds tls.crt and tls.key, re-read whenever they change;
	// unused when GetCertificate is set.
	CertDir string
	// GetCertificate, when set, supplies the serving certificate for every
	// TLS handshake instead of CertDir (a self-managed certificate source).
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
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

// Start runs the webhook on controller-runtime's manager until ctx is
// cancelled. It returns once the server is ready to answer reviews
// (ServiceAccount cache synced, TLS listener up), or with the error that kept
// it from getting there. After a nil error, done receives the manager's
// result once ctx is cancelled and in-flight reviews have finished.
//
// The manager runs the ServiceAccount cache, the metrics server, the health
// probes and the review server; the review server is ours (reviewServer),
// added as a plain runnable, because controller-runtime's webhook server sets
// no read or idle timeouts and no connection or HTTP/2 stream limits.
//
//  1. The cache holds ServiceAccount metadata only, and its informer is
//     requested before the manager starts, so the manager waits for it to
//     sync before it starts the review server.
//  2. The review server is in the manager's leader-election group (election
//     is off, so it runs at once after the caches): on shutdown the manager
//     stops it, letting in-flight reviews finish, before it stops the cache
//     they read.
//  3. The whole shutdown is bounded by GracefulShutdownTimeout.
//  4. The API server's version and gates are read once before the manager
//     starts, then again periodically (serverFeatures), for the reviews of
//     pods with env-<NAME> or on-change: restart.
func Start(ctx context.Context, o Options) (done <-chan error, err error) {
	if o.Config == nil {
		return nil, errors.New("webhook: Options.Config is nil: need a kubeconfig or in-cluster config to watch ServiceAccounts")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	logger := logr.FromSlogHandler(o.Logger.Handler())
	// controller-runtime's components (certwatcher, cache) log through its
	// global logger.
	ctrllog.SetLogger(logger)
	grace := o.GracefulShutdownTimeout
	if grace == 0 {
		grace = 15 * time.Second
	}
	cfg := rest.CopyConfig(o.Config)
	if cfg.UserAgent == "" {
		cfg.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	metricsAddr := o.MetricsBindAddress
	if metricsAddr == "" {
		// controller-runtime would take "" to mean :8080 on every interface.
		metricsAddr = "0"
	}
	saMeta := newServiceAccountMeta()
	mgr, err := manager.New(cfg, manager.Options{
		Scheme:                  scheme,
		Logger:                  logger,
		Metrics:                 metricsserver.Options{BindAddress: metricsAddr},
		HealthProbeBindAddress:  o.HealthProbeBindAddress,
		GracefulShutdownTimeout: &grace,
		Cache: cache.Options{
			// Any read but a ServiceAccount's fails instead of silently
			// starting an informer that RBAC would refuse.
			ReaderFailOnMissingInformer: true,
			DefaultTransform:            cache.TransformStripManagedFields(),
			ByObject: map[client.Object]cache.ByObject{
				// The injector never modifies the ServiceAccount, so reviews
				// read the cached object without a deep copy.
				saMeta: {UnsafeDisableDeepCopy: ptr.To(true)},
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("webhook: manager: %w", err)
	}
	informer, err := mgr.GetCache().GetInformer(ctx, saMeta)
	if err != nil {
		return nil, fmt.Errorf("webhook: serviceaccount informer: %w", err)
	}

	disco, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("webhook: discovery client: %w", err)
	}
	features := newServerFeatures(disco, o.Logger)
	// Read once before serving, so the first reviews know the server.
	features.read(ctx)
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		return features.run(ctx, featuresInterval)
	})); err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	mux.Handle(Path, &Handler{
		Defaults: o.Defaults,
		Server:   features.Server,
		// Cache misses go to the API server directly.
		ServiceAccounts: cachedServiceAccounts{cache: mgr.GetCache(), live: mgr.GetAPIReader()},
		Log:             o.Logger,
	})
	server := newServer(o, mux)
	if err := mgr.Add(manager.RunnableFunc(server.Start)); err != nil {
		return nil, err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("serviceaccounts", func(*http.Request) error {
		if !informer.HasSynced() {
			return errors.New("serviceaccount cache not synced yet")
		}
		return nil
	}); err != nil {
		return nil, err
	}
	if err := mgr.AddReadyzCheck("webhook", server.StartedChecker()); err != nil {
		return nil, err
	}

	result := make(chan error, 1)
	go func() { result <- mgr.Start(logr.NewContext(ctx, logger)) }()
	select {
	case <-server.listening:
	case err := <-result:
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("webhook: stopped before it was ready: %w", err)
	}
	o.Logger.Info("webhook ready", "port", o.Port, "certDir", o.CertDir)
	return result, nil
}

// Bounds of the HTTPS server, whoever connects (docs/security.md). The API
// server sends a review at once and waits at most the webhook's
// timeoutSeconds (30 s at most) for the answer.
const (
	readHeaderTimeout = 5 * time.Second
	// readTimeout bounds reading a request's body, from the moment its
	// headers are in; on HTTP/2, per stream. The API server sends a body at
	// once; a slow one holds part of the body budget at most this long,
	// shorter than the webhook's timeoutSeconds (5 s in manifests/), so a
	// genuine review waiting for the budget is still answered in time. It
	// is set per request, not as http.Server.ReadTimeout, whose clock starts
	// at the TLS handshake for a connection's first request: a connection
	// the API server dialed and parked for 3 s would fail its first review.
	readTimeout  = 3 * time.Second
	writeTimeout = 30 * time.Second
	// idleTimeout closes kept-alive connections the API server no longer uses.
	idleTimeout    = 60 * time.Second
	maxHeaderBytes = 64 << 10
	// maxConnections bounds open connections: a kube-apiserver keeps a
	// few to a webhook, and a cluster has a few kube-apiservers.
	maxConnections = 256
	// maxStreams bounds concurrent requests on one HTTP/2 connection.
	maxStreams = 32
)

// reviewServer is the HTTPS server for reviews: TLS from CertDir, reloaded
// when the files change (cert-manager rotates them in the mounted Secret),
// and the bounds above.
type reviewServer struct {
	o       Options
	handler http.Handler
	mu      sync.Mutex
	addr    string // set once listening
	// listening is closed once the listener is up.
	listening chan struct{}
}

// newServer returns the review server for o, serving mux. Handlers are
// registered on mux directly: the review handler records its own metrics.
func newServer(o Options, mux *http.ServeMux) *reviewServer {
	return &reviewServer{o: o, handler: mux, listening: make(chan struct{})}
}

// Start serves until ctx is done, then lets in-flight reviews finish.
//
//  1. Certificates come from Options.GetCertificate when set; otherwise a
//     certificate watcher loads tls.crt and tls.key from CertDir, failing
//     Start if it cannot, and reloads them whenever they change.
//  2. The listener admits at most maxConnections connections; further ones
//     wait in the kernel's backlog until one closes.
//  3. Every request has readHeaderTimeout for its headers, then readTimeout
//     for its body from the moment its handler starts, so a slow client is
//     cut off; kept-alive connections close after idleTimeout.
//  4. An HTTP/2 connection carries at most maxStreams requests at once, with
//     small receive windows: the Handler's budget bounds their bodies.
func (s *reviewServer) Start(ctx context.Context) error {
	minVersion := s.o.TLSMinVersion
	if minVersion == 0 {
		minVersion = tls.VersionTLS12
	}
	getCertificate := s.o.GetCertificate
	if getCertificate == nil {
		watcher, err := certwatcher.New(filepath.Join(s.o.CertDir, "tls.crt"), filepath.Join(s.o.CertDir, "tls.key"))
		if err != nil {
			return err
		}
		watchCtx, stopWatch := context.WithCancel(ctx)
		defer stopWatch()
		go func() {
			if err := watcher.Start(watchCtx); err != nil {
				ctrllog.FromContext(ctx).Error(err, "certificate watcher")
			}
		}()
		getCertificate = watcher.GetCertificate
	}
	l, err := net.Listen("tcp", net.JoinHostPort(s.o.Host, strconv.Itoa(s.o.Port)))
	if err != nil {
		return err
	}
	srv := &http.Server{
		// ServeTLS offers HTTP/2 and HTTP/1.1 over this configuration.
		TLSConfig: &tls.Config{MinVersion: minVersion, GetCertificate: getCertificate},
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			// HTTP/1.1's and HTTP/2's response writers both support it;
			// without it a body would have no bound, so refuse.
			if err := http.NewResponseController(w).SetReadDeadline(time.Now().Add(readTimeout)); err != nil {
				http.Error(w, "no read deadline: "+err.Error(), http.StatusInternalServerError)
				return
			}
			s.handler.ServeHTTP(w, r)
		}),
		ReadHeaderTimeout: readHeaderTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		MaxHeaderBytes:    maxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          maxStreams,
			MaxReceiveBufferPerStream:     64 << 10,
			MaxReceiveBufferPerConnection: 1 << 20,
		},
		ErrorLog: slog.NewLogLogger(slog.Default().Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	s.addr = l.Addr().String()
	s.mu.Unlock()
	close(s.listening)
	limited := netutil.LimitListener(l, maxConnections)
	return serveUntilDone(ctx, srv, func() error { return srv.ServeTLS(limited, "", "") })
}

// StartedChecker reports whether the server accepts TLS connections.
func (s *reviewServer) StartedChecker() healthz.Checker {
	return func(*http.Request) error {
		s.mu.Lock()
		addr := s.addr
		s.mu.Unlock()
		if addr == "" {
			return errors.New("webhook server has not been started yet")
		}
		d := &net.Dialer{Timeout: 10 * time.Second}
		conn, err := tls.DialWithDialer(d, "tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // a reachability probe of our own listener
		if err != nil {
			return fmt.Errorf("webhook server is not reachable: %w", err)
		}
		return conn.Close()
	}
}

// serveUntilDone runs serve (srv's) until ctx is done, then lets open
// requests finish; the manager bounds the shutdown by the grace period.
func serveUntilDone(ctx context.Context, srv *http.Server, serve func() error) error {
	shutdown := make(chan error, 1)
	go func() {
		<-ctx.Done()
		shutdown <- srv.Shutdown(context.WithoutCancel(ctx))
	}()
	if err := serve(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return <-shutdown
}
