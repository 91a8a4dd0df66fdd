package webhook

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

// Outcomes of a review, the values of the "outcome" label and the audit
// line's "decision".
const (
	// outcomePatched: the pod was injected; the response carries a patch.
	outcomePatched = "patched"
	// outcomeUnchanged: the pod opted in but needed no change (already injected,
	// e.g. on reinvocation).
	outcomeUnchanged = "unchanged"
	// outcomeSkipped: not a pod CREATE that opted in; allowed untouched.
	outcomeSkipped = "skipped"
	// outcomeDenied: the pod was rejected with the reason in the response.
	outcomeDenied = "denied"
	// outcomeError: the review could not be processed (malformed request,
	// API server unreachable); the API server applies the failure policy.
	outcomeError = "error"
)

var (
	reviewsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvinject_webhook_reviews_total",
		Help: "Admission reviews by outcome: patched, unchanged, skipped, denied, error.",
	}, []string{"outcome"})

	reviewDuration = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "kvinject_webhook_review_duration_seconds",
		Help: "Time from reading the request to writing the response of one admission review.",
		// A review takes well under a millisecond; the API server gives up at
		// the webhook's timeoutSeconds.
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	})

	// Pre-resolved counters keep the label lookup off the review path.
	reviewsByOutcome = map[string]prometheus.Counter{}
)

func init() {
	for _, o := range []string{outcomePatched, outcomeUnchanged, outcomeSkipped, outcomeDenied, outcomeError} {
		reviewsByOutcome[o] = reviewsTotal.WithLabelValues(o)
	}
	metrics.Registry.MustRegister(reviewsTotal, reviewDuration)
	// The Go runtime's and the process's figures (heap, goroutines, RSS,
	// open files) show what hostile traffic costs. controller-runtime
	// registers the same collectors when its controller package is linked.
	for _, c := range []prometheus.Collector{
		collectors.NewGoCollector(collectors.WithGoCollectorRuntimeMetrics(collectors.MetricsAll)),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := metrics.Registry.Register(c); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			panic(err)
		}
	}
}
