package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/kvinject/kvinject/agent/config"
)

// metrics are the sidecar's Prometheus metrics. They live in their own
// registry, without the Go runtime and process collectors of the default one:
// the agent is meant to stay small, and the kubelet already reports its
// memory and CPU.
type metrics struct {
	reg         *prometheus.Registry
	fetches     *prometheus.CounterVec
	duration    prometheus.Histogram
	cycles      *prometheus.CounterVec
	lastSuccess prometheus.Gauge
	// refresh is the sidecar's interval, so an alert can say "no success
	// for three of its own intervals" whatever each workload set.
	refresh   prometheus.Gauge
	snapshots prometheus.Counter
	// certExpiry is by file name: file names are in the pod's annotations
	// already, and bounded by them.
	certExpiry *prometheus.GaugeVec
}

func newMetrics(refresh time.Duration) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvinject_agent_fetches_total",
			Help: "Key Vault GETs by result: success, retryable_error (retried), error.",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "kvinject_agent_fetch_duration_seconds",
			Help:    "Duration of one Key Vault GET, sign-in included when it happened.",
			Buckets: []float64{.01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}),
		cycles: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "kvinject_agent_cycles_total",
			Help: "Fetch cycles by result: success, error (the last good files were kept).",
		}, []string{"result"}),
		lastSuccess: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvinject_agent_last_success_timestamp_seconds",
			Help: "Unix time of the last cycle that fetched every object and rendered every file.",
		}),
		refresh: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "kvinject_agent_refresh_interval_seconds",
			Help: "The sidecar's refresh interval (kvinject.io/refresh).",
		}),
		snapshots: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "kvinject_agent_snapshots_written_total",
			Help: "Snapshots published because some file changed.",
		}),
		certExpiry: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "kvinject_agent_certificate_expiration_timestamp_seconds",
			Help: "NotAfter of the leaf certificate in each published file that holds one, as Unix time.",
		}, []string{"file"}),
	}
	m.reg.MustRegister(m.fetches, m.duration, m.cycles, m.lastSuccess, m.refresh, m.snapshots, m.certExpiry)
	m.refresh.Set(refresh.Seconds())
	for _, r := range []string{"success", "retryable_error", "error"} {
		m.fetches.WithLabelValues(r)
	}
	m.cycles.WithLabelValues("success")
	m.cycles.WithLabelValues("error")
	return m
}

// fetch records one GET; m may be nil (init mode has no metrics).
func (m *metrics) fetch(result string, d time.Duration) {
	if m == nil {
		return
	}
	m.fetches.WithLabelValues(result).Inc()
	m.duration.Observe(d.Seconds())
}

func (m *metrics) cycle(err error) {
	if m == nil {
		return
	}
	if err != nil {
		m.cycles.WithLabelValues("error").Inc()
		return
	}
	m.cycles.WithLabelValues("success").Inc()
	m.lastSuccess.SetToCurrentTime()
}

// published records the files of a snapshot now on disk: the expiry of each
// file's certificate, and none for a file that holds none.
func (m *metrics) published(files []config.File, changed bool, notAfter map[string]time.Time) {
	if m == nil {
		return
	}
	if changed {
		m.snapshots.Inc()
	}
	for _, f := range files {
		if t, ok := notAfter[f.Name]; ok {
			m.certExpiry.WithLabelValues(f.Name).Set(float64(t.Unix()))
		} else {
			m.certExpiry.DeleteLabelValues(f.Name)
		}
	}
}

// serve listens on addr and serves /metrics until stop is called.
func (m *metrics) serve(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "error", err.Error())
		}
	}()
	log.Info("serving metrics", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}
