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
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
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
//
// The pieces are controller-runtime's (webhook server, cache, metrics server,
// healthz), run here without its manager: the manager also links leader
// election and event recording, and with them every typed client-go
// clientset, informer and lister, into the one binary that every pod's agent
// also runs.
func Start(ctx context.Context, o Options) (done <-chan error, err error) {
	if o.Config == nil {
		return nil, errors.New("webhook: Options.Config is nil: need a kubeconfig or in-cluster config to watch ServiceAccounts")
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	logger := logr.FromSlogHandler(o.Logger.Handler())
	// controller-runtime's components (the webhook server, certwatcher, cache)
	// log through its global logger.
	ctrllog.SetLogger(logger)
	grace := o.GracefulShutdownTimeout
	if grace == 0 {
		grace = 15 * time.Second
	}

	cfg := rest.CopyConfig(o.Config)
	if cfg.UserAgent == "" {
		cfg.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	httpClient, err := rest.HTTPClientFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("webhook: API server client: %w", err)
	}
	mapper, err := apiutil.NewDynamicRESTMapper(cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("webhook: API server REST mapper: %w", err)
	}
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, err
	}
	saMeta := newServiceAccountMeta()
	saCache, err := cache.New(cfg, cache.Options{
		HTTPClient: httpClient,
		Scheme:     scheme,
		Mapper:     mapper,
		// The cache holds ServiceAccount metadata and nothing else: any other
		// read fails instead of silently starting an informer that RBAC would
		// refuse.
		ReaderFailOnMissingInformer: true,
		DefaultTransform:            cache.TransformStripManagedFields(),
		ByObject: map[client.Object]cache.ByObject{
			// The injector never modifies the ServiceAccount, so reviews read
			// the cached object without a deep copy.
			saMeta: {UnsafeDisableDeepCopy: ptr.To(true)},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("webhook: serviceaccount cache: %w", err)
	}
	informer, err := saCache.GetInformer(ctx, saMeta)
	if err != nil {
		return nil, fmt.Errorf("webhook: serviceaccount informer: %w", err)
	}
	// Cache misses go to the API server directly.
	live, err := client.New(cfg, client.Options{HTTPClient: httpClient, Scheme: scheme, Mapper: mapper})
	if err != nil {
		return nil, fmt.Errorf("webhook: API server reader: %w", err)
	}

	metricsAddr := o.MetricsBindAddress
	if metricsAddr == "" {
		// controller-runtime would take "" to mean :8080 on every interface.
		metricsAddr = "0"
	}
	// nil when disabled. It serves controller-runtime's metrics.Registry,
	// where the review metrics are registered.
	metricsSrv, err := metricsserver.NewServer(metricsserver.Options{BindAddress: metricsAddr}, cfg, httpClient)
	if err != nil {
		return nil, fmt.Errorf("webhook: metrics server: %w", err)
	}

	mux := http.NewServeMux()
	server := newServer(o, mux)
	serverStarted := server.StartedChecker()
	cacheSynced := func(*http.Request) error {
		if !informer.HasSynced() {
			return errors.New("serviceaccount cache not synced yet")
		}
		return nil
	}
	mux.Handle(Path, &Handler{
		Defaults:        o.Defaults,
		ServiceAccounts: cachedServiceAccounts{cache: saCache, live: live},
		Log:             o.Logger,
	})

	var probes *http.Server
	var probesListener net.Listener
	if addr := o.HealthProbeBindAddress; addr != "" && addr != "0" {
		// Bound here so that a taken port fails Start, before anything runs.
		if probesListener, err = net.Listen("tcp", addr); err != nil {
			return nil, fmt.Errorf("webhook: health probes: listen on %s: %w", addr, err)
		}
		probes = newProbeServer(
			map[string]healthz.Checker{"ping": healthz.Ping},
			map[string]healthz.Checker{"serviceaccounts": cacheSynced, "webhook": serverStarted},
		)
	}

	// runCtx ends on shutdown or on the first component to fail. The servers
	// stop then (the webhook server finishing in-flight reviews); the cache
	// stops only after them, so that those reviews can still read it.
	runCtx, stopRun := context.WithCancel(logr.NewContext(ctx, logger))
	cacheCtx, stopCache := context.WithCancel(context.WithoutCancel(runCtx))
	var (
		servers, all sync.WaitGroup
		mu           sync.Mutex
		failure      error // the first component's error, under mu
	)
	run := func(ctx context.Context, name string, start func(context.Context) error) {
		all.Add(1)
		go func() {
			defer all.Done()
			if err := start(ctx); err != nil {
				mu.Lock()
				if failure == nil {
					failure = fmt.Errorf("%s: %w", name, err)
				}
				mu.Unlock()
				stopRun()
			}
		}()
	}
	serve := func(name string, start func(context.Context) error) {
		servers.Add(1)
		run(runCtx, name, func(ctx context.Context) error {
			defer servers.Done()
			return start(ctx)
		})
	}
	serve("webhook server", server.Start)
	if metricsSrv != nil {
		serve("metrics server", metricsSrv.Start)
	}
	if probes != nil {
		serve("health probes", func(ctx context.Context) error {
			return serveUntilDone(ctx, probes, func() error { return probes.Serve(probesListener) })
		})
	}
	run(cacheCtx, "serviceaccount cache", saCache.Start)

	result := make(chan error, 1)
	go func() {
		<-runCtx.Done()
		stopRun()
		stopped := make(chan struct{})
		go func() {
			servers.Wait()
			stopCache()
			all.Wait()
			close(stopped)
		}()
		var timeout error
		select {
		case <-stopped:
		case <-time.After(grace):
			stopCache()
			timeout = fmt.Errorf("webhook: shutdown did not finish within the grace period of %s", grace)
		}
		mu.Lock()
		defer mu.Unlock()
		result <- errors.Join(failure, timeout)
	}()

	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for cacheSynced(nil) != nil || serverStarted(nil) != nil {
		select {
		case <-runCtx.Done():
			err := <-result
			if err == nil {
				err = ctx.Err()
			}
			return nil, fmt.Errorf("webhook: stopped before it was ready: %w", err)
		case <-tick.C:
		}
	}
	o.Logger.Info("webhook ready", "port", o.Port, "certDir", o.CertDir)
	return result, nil
}

// Bounds of the HTTPS server, whoever connects (docs/security.md). The API
// server sends a review at once and waits at most the webhook's
// timeoutSeconds (30 s at most) for the answer.
const (
	readHeaderTimeout = 5 * time.Second
	// readTimeout bounds reading a request, headers and body; on HTTP/2, per
	// stream. The API server sends a body at once; a slow one holds part of
	// the body budget at most this long, shorter than the webhook's
	// timeoutSeconds (5 s in manifests/), so a genuine review waiting for
	// the budget is still answered in time.
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
}

// newServer returns the review server for o, serving mux. Handlers are
// registered on mux directly: the review handler records its own metrics.
func newServer(o Options, mux *http.ServeMux) *reviewServer {
	return &reviewServer{o: o, handler: mux}
}

// Start serves until ctx is done, then lets in-flight reviews finish.
//
//  1. The certificate watcher loads tls.crt and tls.key, and fails Start if
//     it cannot; it then reloads them whenever they change.
//  2. The listener admits at most maxConnections connections; further ones
//     wait in the kernel's backlog until one closes.
//  3. Every request has readHeaderTimeout for its headers and readTimeout
//     for headers and body, so a slow client is cut off; kept-alive
//     connections close after idleTimeout.
//  4. An HTTP/2 connection carries at most maxStreams requests at once, with
//     small receive windows: the Handler's budget bounds their bodies.
func (s *reviewServer) Start(ctx context.Context) error {
	minVersion := s.o.TLSMinVersion
	if minVersion == 0 {
		minVersion = tls.VersionTLS12
	}
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
	l, err := net.Listen("tcp", net.JoinHostPort(s.o.Host, strconv.Itoa(s.o.Port)))
	if err != nil {
		return err
	}
	srv := &http.Server{
		// ServeTLS offers HTTP/2 and HTTP/1.1 over this configuration.
		TLSConfig:         &tls.Config{MinVersion: minVersion, GetCertificate: watcher.GetCertificate},
		Handler:           s.handler,
		ReadHeaderTimeout: readHeaderTimeout,
		ReadTimeout:       readTimeout,
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

// newProbeServer serves /healthz and /readyz (and /healthz/<check>,
// /readyz/<check> for one check), as controller-runtime's manager does.
func newProbeServer(live, ready map[string]healthz.Checker) *http.Server {
	mux := http.NewServeMux()
	for path, checks := range map[string]map[string]healthz.Checker{"/healthz": live, "/readyz": ready} {
		h := http.StripPrefix(path, &healthz.Handler{Checks: checks})
		mux.Handle(path, h)
		mux.Handle(path+"/", h)
	}
	return &http.Server{
		Handler:           mux,
		MaxHeaderBytes:    1 << 20,
		IdleTimeout:       90 * time.Second,
		ReadHeaderTimeout: 32 * time.Second,
	}
}

// serveUntilDone runs serve (srv's) until ctx is done, then lets open
// requests finish; Start bounds the whole shutdown by the grace period.
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
