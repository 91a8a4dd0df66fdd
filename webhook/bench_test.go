package webhook

import (
	"bytes"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"syscall"
	"testing"
	"time"
)

// BenchmarkHandler is one admission review of a Deployment's pod
// (testdata/review-web.json: three containers, the kube-api-access volume,
// two objects) through ServeHTTP, answered from scratch: decode,
// ServiceAccount lookup, Inject, patch, encode, metrics and the JSON audit
// line. The HTTPS server around it is measured by make bench. Beside the
// wall-clock ns/op it reports the process's CPU time per review (cpu-ns/op,
// garbage collection included), which other load on the machine changes far
// less.
func BenchmarkHandler(b *testing.B) {
	benchmarkHandler(b)
}

func benchmarkHandler(b *testing.B) {
	body, err := os.ReadFile("testdata/review-web.json")
	if err != nil {
		b.Fatal(err)
	}
	h := &Handler{
		Defaults:        testDefaults(),
		ServiceAccounts: serviceAccounts{"shop/web": webSA},
		Log:             slog.New(slog.NewJSONHandler(io.Discard, nil)),
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	cpu0, n := cpuTime(b), 0
	for b.Loop() {
		n++
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || !bytes.Contains(rec.Body.Bytes(), []byte(`"patchType":"JSONPatch"`)) {
			b.Fatalf("HTTP %d: %s", rec.Code, rec.Body)
		}
	}
	b.ReportMetric(float64(cpuTime(b)-cpu0)/float64(n), "cpu-ns/op")
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
