package webhook

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/kvinject/kvinject/injector"
)

// metricsSample is a slice of a v1.37.2 kube-apiserver's /metrics, with
// series around the one kvinject reads that share its prefix.
const metricsSample = `# HELP apiserver_request_total [STABLE] Counter of apiserver requests.
# TYPE apiserver_request_total counter
apiserver_request_total{code="200",verb="GET"} 12
# HELP kubernetes_feature_enabled [BETA] This metric records the data about the stage and enablement of a k8s feature.
# TYPE kubernetes_feature_enabled gauge
kubernetes_feature_enabled{name="ContainerRestartRules",stage="BETA"} 1
kubernetes_feature_enabled{name="EnvFiles",stage="BETA"} 0
kubernetes_feature_enabled{name="RestartAllContainersOnContainerExits",stage="BETA"} 1
# HELP kubernetes_feature_enabled_total not a real series
# TYPE kubernetes_feature_enabled_total counter
kubernetes_feature_enabled_total 3
`

func TestParseGates(t *testing.T) {
	g, err := parseGates(strings.NewReader(metricsSample))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{"ContainerRestartRules": true, "EnvFiles": false, "RestartAllContainersOnContainerExits": true}
	if len(g) != len(want) {
		t.Fatalf("gates %v, want %v", g, want)
	}
	for k, v := range want {
		if g[k] != v {
			t.Errorf("gate %s = %v, want %v", k, g[k], v)
		}
	}
	if _, err := parseGates(strings.NewReader("apiserver_request_total 1\n")); err == nil {
		t.Error("a /metrics without the gauge gave no error")
	}
	// A line over the bound, or too many lines of the gauge, fail the read,
	// not the process's memory.
	if _, err := parseGates(strings.NewReader(strings.Repeat("kubernetes_feature_enabled{name=\"G\"} 1\n", 40000))); err == nil {
		t.Error("1.5 MiB of the gauge gave no error")
	}
	if _, err := parseGates(strings.NewReader(strings.Repeat("x", 2<<20))); err == nil {
		t.Error("a 2 MiB line gave no error")
	}
}

// TestServerFeaturesRead: unknown (with the reason) until /version answers;
// then version and gates; /metrics failing leaves the gates nil; a failed
// later read keeps what was read last.
func TestServerFeaturesRead(t *testing.T) {
	var versionErr, metricsErr error
	ver := "v1.37.2"
	f := &serverFeatures{
		version: func(context.Context) (string, error) { return ver, versionErr },
		metrics: func(context.Context) (io.ReadCloser, error) {
			if metricsErr != nil {
				return nil, metricsErr
			}
			return io.NopCloser(strings.NewReader(metricsSample)), nil
		},
		log: slog.New(slog.DiscardHandler),
		cur: injector.Server{Unknown: "not read yet"},
	}
	ctx := context.Background()

	versionErr = errors.New("connection refused")
	f.read(ctx)
	if s := f.Server(); s.Version != "" || s.Unknown != "GET /version: connection refused" {
		t.Errorf("after a failed first read: %+v", s)
	}

	versionErr, metricsErr = nil, errors.New(`forbidden: User "system:serviceaccount:kvinject-system:kvinject-webhook" cannot get path "/metrics"`)
	f.read(ctx)
	if s := f.Server(); s.Version != "v1.37.2" || s.Gates != nil {
		t.Errorf("with /metrics forbidden: %+v", s)
	}

	metricsErr = nil
	f.read(ctx)
	if s := f.Server(); s.Version != "v1.37.2" || s.Gates == nil || s.Gates["EnvFiles"] {
		t.Errorf("with /metrics: %+v", s)
	}

	versionErr, ver = errors.New("timeout"), ""
	f.read(ctx)
	if s := f.Server(); s.Version != "v1.37.2" || s.Gates == nil {
		t.Errorf("a failed later read lost what was known: %+v", s)
	}
}
