package webhook

import (
	"github.com/prometheus/client_golang/prometheus"
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

	reviewCache = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "kvinject_webhook_review_cache_total",
		Help: "Lookups of pod reviews in the review cache by result: hit (answered from the cache) or miss.",
	}, []string{"result"})

	// Pre-resolved counters keep the label lookup off the review path.
	reviewsByOutcome  = map[string]prometheus.Counter{}
	reviewCacheHits   = reviewCache.WithLabelValues("hit")
	reviewCacheMisses = reviewCache.WithLabelValues("miss")
)

func init() {
	for _, o := range []string{outcomePatched, outcomeUnchanged, outcomeSkipped, outcomeDenied, outcomeError} {
		reviewsByOutcome[o] = reviewsTotal.WithLabelValues(o)
	}
	metrics.Registry.MustRegister(reviewsTotal, reviewDuration, reviewCache)
}
