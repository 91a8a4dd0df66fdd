package webhook

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// FuzzHandler sends whole bodies: whatever the bytes, the handler answers
// with an AdmissionReview (or an HTTP error) and never panics.
func FuzzHandler(f *testing.F) {
	body, err := os.ReadFile("testdata/review-web.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(body)
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a\"b","kind":{"kind":"Pod"},"operation":"CREATE","object":{"metadata":{"annotations":{"kvinject.io/inject":"tr\"ue"}}}}}`))
	f.Add([]byte(`{"request":{"object":{"object":1},"object":[]}}`))
	f.Add([]byte(`{`))
	hs := newHarness(serviceAccounts{"shop/web": webSA})
	f.Fuzz(func(t *testing.T, b []byte) {
		hs.log.Reset()
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		hs.h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("HTTP %d for %q", rec.Code, b)
		}
	})
}

// stalledBody announces a large body, sends its first bytes, then waits
// until released.
type stalledBody struct {
	first   []byte
	release <-chan struct{}
}

func (s *stalledBody) Read(p []byte) (int, error) {
	if len(s.first) > 0 {
		n := copy(p, s.first)
		s.first = s.first[n:]
		return n, nil
	}
	<-s.release
	return 0, io.ErrUnexpectedEOF
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// Bodies that announce 7 MiB and send one byte cost what they sent, not
// what they announced, and a genuine review is answered meanwhile.
func TestStalledBodiesHoldNoMemory(t *testing.T) {
	hs := newHarness(serviceAccounts{"shop/web": webSA})
	release := make(chan struct{})
	before := heapInUse()
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := httptest.NewRequest(http.MethodPost, Path, &stalledBody{first: []byte("{"), release: release})
			req.ContentLength = 7 << 20
			hs.h.ServeHTTP(httptest.NewRecorder(), req)
		}()
	}
	// Until the 64 have read their first byte, heap growth could hide.
	deadline := time.Now().Add(10 * time.Second)
	for hs.h.bounds().body.TryAcquire(bodyBudget - 64*readChunk + 1) {
		hs.h.bounds().body.Release(bodyBudget - 64*readChunk + 1)
		if time.Now().After(deadline) {
			t.Fatal("the stalled bodies were not read within 10 s")
		}
		time.Sleep(time.Millisecond)
	}
	if grown := int64(heapInUse()) - int64(before); grown > 8<<20 {
		t.Errorf("64 stalled bodies announcing 7 MiB grew the heap by %d MiB, want < 8", grown>>20)
	}
	resp := hs.post(t, review(t, nil))
	if !resp.Allowed || resp.Patch == nil {
		t.Errorf("genuine review while bodies stall: %+v", resp.Result)
	}
	close(release)
	wg.Wait()
}

// A body over MaxRequestBytes is refused, whatever its Content-Length says.
func TestBodyOverTheLimitIsRefused(t *testing.T) {
	hs := newHarness(serviceAccounts{"shop/web": webSA})
	big := strings.NewReader(`{"request":{"object":{"x":"` + strings.Repeat("a", MaxRequestBytes) + `"}}}`)
	req := httptest.NewRequest(http.MethodPost, Path, big)
	req.ContentLength = -1
	rec := httptest.NewRecorder()
	hs.h.ServeHTTP(rec, req)
	if !strings.Contains(rec.Body.String(), "body exceeds 4194304 bytes") {
		t.Errorf("answer %s, want the body limit", rec.Body)
	}
	// The budget is whole again.
	if !hs.h.bounds().body.TryAcquire(bodyBudget) {
		t.Error("the refused body kept part of the budget")
	}
}

// While the budget is held, a body waits for it until its request ends.
func TestBodyWaitsForTheBudgetUntilItsRequestEnds(t *testing.T) {
	hs := newHarness(serviceAccounts{"shop/web": webSA})
	l := hs.h.bounds()
	if !l.body.TryAcquire(bodyBudget) {
		t.Fatal("budget taken")
	}
	defer l.body.Release(bodyBudget)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	_, release, err := l.readBody(ctx, strings.NewReader("{}"))
	release()
	if err == nil || !strings.Contains(err.Error(), "waiting for memory") {
		t.Errorf("err %v, want a wait for the budget that ends with the request", err)
	}
}
