package webhook

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	apiversion "k8s.io/apimachinery/pkg/version"
	"k8s.io/client-go/discovery"

	"github.com/kvinject/kvinject/injector"
)

const (
	// featuresInterval is how often the webhook reads the API server's
	// version and gates again: an upgrade, or a gate switched (which
	// restarts the API server), is seen within it.
	featuresInterval = 5 * time.Minute
	// featuresRetry is how often it tries while it knows nothing yet.
	featuresRetry = 5 * time.Second
	// featuresTimeout bounds one read of /version and /metrics.
	featuresTimeout = 30 * time.Second
	// maxGateBytes bounds the lines of featureMetric kept: a few hundred
	// gates of under 100 bytes each.
	maxGateBytes = 1 << 20
	// featureMetric is the API server's gauge of its feature gates, one
	// series per gate (name, stage), 1 for on.
	featureMetric = "kubernetes_feature_enabled"
)

// serverFeatures keeps what the API server says of itself, for the
// injector (injector.Server): its version, and its feature gates if it lets
// the webhook read them.
//
//  1. run reads /version (readable by every client: the
//     system:public-info-viewer role) and the kubernetes_feature_enabled
//     series of /metrics (needs the nonResourceURL rule in the webhook's
//     ClusterRole), at once, then every featuresInterval; every
//     featuresRetry while it knows nothing yet.
//  2. Until a read of /version succeeds, Server is unknown and says why: the
//     injector then denies pods with env-<NAME> or on-change: restart with
//     that reason (fail closed: it cannot tell whether the server keeps
//     their fields); every other pod is injected as usual.
//  3. A failed later read keeps what was read last: a server does not lose
//     features because the webhook could not reach it for a moment.
//  4. /metrics is optional: when it cannot be read (forbidden, no such
//     series), Gates are nil and the version's defaults decide. Only the
//     lines of the one metric, at most maxGateBytes, are handed to the
//     Prometheus text parser, so memory stays bounded whatever the size of
//     /metrics.
//  5. Each change is logged once.
type serverFeatures struct {
	version func(ctx context.Context) (string, error)
	metrics func(ctx context.Context) (io.ReadCloser, error)
	log     *slog.Logger

	mu  sync.RWMutex
	cur injector.Server
}

func newServerFeatures(d discovery.DiscoveryInterface, log *slog.Logger) *serverFeatures {
	return &serverFeatures{
		// Through the REST client, not ServerVersion, so ctx bounds it.
		version: func(ctx context.Context) (string, error) {
			b, err := d.RESTClient().Get().AbsPath("/version").Do(ctx).Raw()
			if err != nil {
				return "", err
			}
			var info apiversion.Info
			if err := json.Unmarshal(b, &info); err != nil {
				return "", fmt.Errorf("decode /version: %w", err)
			}
			return info.GitVersion, nil
		},
		metrics: func(ctx context.Context) (io.ReadCloser, error) {
			return d.RESTClient().Get().AbsPath("/metrics").SetHeader("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain))).Stream(ctx)
		},
		log: log,
		cur: injector.Server{Unknown: "the webhook has not read /version yet"},
	}
}

// Server is the last known state, for one review.
func (f *serverFeatures) Server() injector.Server {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.cur
}

// run reads every interval until ctx is done (the first read is Start's).
func (f *serverFeatures) run(ctx context.Context, interval time.Duration) error {
	for {
		wait := interval
		if f.Server().Version == "" {
			wait = featuresRetry
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
		f.read(ctx)
	}
}

// read reads the server once and records the result (steps 2-5).
func (f *serverFeatures) read(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, featuresTimeout)
	defer cancel()
	v, err := f.version(ctx)
	if err == nil && v == "" {
		err = fmt.Errorf("no gitVersion")
	}
	if err != nil {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.cur.Version == "" {
			f.cur.Unknown = "GET /version: " + err.Error()
		}
		f.log.Warn("cannot read the API server's version; pods with env-* or on-change: restart are judged by the last one read, or denied if none", "error", err, "last", f.cur.Version)
		return
	}
	next := injector.Server{Version: v}
	gates, gerr := f.gates(ctx)
	if gerr == nil {
		next.Gates = gates
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if next.Version == f.cur.Version && maps.Equal(next.Gates, f.cur.Gates) {
		return
	}
	f.cur = next
	attrs := []any{"version", v, "gatesRead", gerr == nil}
	for _, g := range injector.ServerGates() {
		if on, ok := gates[g]; ok {
			attrs = append(attrs, g, on)
		}
	}
	if gerr != nil {
		attrs = append(attrs, "gatesError", gerr.Error())
	}
	f.log.Info("API server features", attrs...)
}

// gates reads the kubernetes_feature_enabled series of /metrics.
func (f *serverFeatures) gates(ctx context.Context) (map[string]bool, error) {
	body, err := f.metrics(ctx)
	if err != nil {
		return nil, fmt.Errorf("GET /metrics: %w", err)
	}
	defer body.Close()
	return parseGates(body)
}

// parseGates keeps the lines of featureMetric (its samples, HELP and TYPE)
// and parses them with the Prometheus text parser.
func parseGates(r io.Reader) (map[string]bool, error) {
	var kept bytes.Buffer
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Bytes()
		name := bytes.TrimPrefix(bytes.TrimPrefix(line, []byte("# HELP ")), []byte("# TYPE "))
		if rest, ok := bytes.CutPrefix(name, []byte(featureMetric)); ok && (len(rest) == 0 || rest[0] == '{' || rest[0] == ' ') {
			if kept.Len()+len(line) > maxGateBytes {
				return nil, fmt.Errorf("/metrics has over %d bytes of %s", maxGateBytes, featureMetric)
			}
			kept.Write(line)
			kept.WriteByte('\n')
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read /metrics: %w", err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(&kept)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", featureMetric, err)
	}
	fam, ok := families[featureMetric]
	if !ok || len(fam.GetMetric()) == 0 {
		return nil, fmt.Errorf("/metrics has no %s", featureMetric)
	}
	gates := map[string]bool{}
	for _, m := range fam.GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "name" {
				gates[l.GetValue()] = m.GetGauge().GetValue() == 1
			}
		}
	}
	return gates, nil
}
