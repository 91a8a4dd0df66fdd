package webhook

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
)

// versionedSA is webSA as the informer holds it: with a UID and a
// resourceVersion, without which nothing is cached.
func versionedSA(rv, clientID string) *corev1.ServiceAccount {
	sa := webSA.DeepCopy()
	sa.UID, sa.ResourceVersion = "6c0e5d1a-0000-4000-8000-000000000001", rv
	if clientID != "" {
		sa.Annotations["azure.workload.identity/client-id"] = clientID
	}
	return sa
}

func newCachingHarness(sas serviceAccounts, size int) *harness {
	hs := newHarness(sas)
	hs.h.Cache = NewReviewCache(size)
	return hs
}

// postRaw sends body and returns the response body as written.
func (hs *harness) postRaw(t *testing.T, body []byte) []byte {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	hs.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", rec.Code, rec.Body)
	}
	return rec.Body.Bytes()
}

// lastAudit is the last audit line logged, as written.
func (hs *harness) lastAudit() string {
	lines := bytes.Split(bytes.TrimSpace(hs.log.Bytes()), []byte("\n"))
	// The time differs between two runs of the same review.
	var m map[string]any
	_ = json.Unmarshal(lines[len(lines)-1], &m)
	delete(m, "time")
	out, _ := json.Marshal(m)
	return string(out)
}

func hits() float64   { return testutil.ToFloat64(reviewCacheHits) }
func misses() float64 { return testutil.ToFloat64(reviewCacheMisses) }

func withUID(uid string) func(map[string]any) {
	return func(r map[string]any) { request(r)["uid"] = uid }
}

// A review answered from the cache is byte for byte the answer, and the
// audit line, that the review would get from scratch: its own uid and dry
// run, the injector's patch, warnings or denial.
func TestReviewCacheAnswersAsAFreshReview(t *testing.T) {
	injected := func(t *testing.T) func(map[string]any) {
		hs := newHarness(serviceAccounts{"shop/web": webSA})
		body := review(t, nil)
		_, raw := requestPod(t, body)
		patched := applyPatch(t, raw, hs.post(t, body))
		return func(r map[string]any) {
			var obj map[string]any
			if err := json.Unmarshal(patched, &obj); err != nil {
				t.Fatal(err)
			}
			request(r)["object"] = obj
		}
	}
	for name, edit := range map[string]func(map[string]any){
		"patched": nil,
		"dry run": func(r map[string]any) { request(r)["dryRun"] = true },
		"named pod": func(r map[string]any) {
			request(r)["name"] = "web-0"
			podOf(r)["metadata"].(map[string]any)["name"] = "web-0"
		},
		"denied":    func(r map[string]any) { annotationsOf(r)["kvinject.io/refesh"] = "2m" },
		"warned":    func(r map[string]any) { annotationsOf(r)["kvinject.io/refresh"] = "5s" },
		"unchanged": injected(t),
		"no managedFields": func(r map[string]any) {
			delete(podOf(r)["metadata"].(map[string]any), "managedFields")
		},
	} {
		t.Run(name, func(t *testing.T) {
			sas := serviceAccounts{"shop/web": versionedSA("1", "")}
			fresh, cached := newHarness(sas), newCachingHarness(sas, 4)
			first := review(t, func(r map[string]any) {
				if edit != nil {
					edit(r)
				}
				withUID("first")(r)
			})
			second := review(t, func(r map[string]any) {
				if edit != nil {
					edit(r)
				}
				withUID("second")(r)
			})
			h0, m0 := hits(), misses()
			cached.postRaw(t, first)
			if d := misses() - m0; d != 1 {
				t.Fatalf("first review: misses grew by %v, want 1", d)
			}
			got := cached.postRaw(t, second)
			if d := hits() - h0; d != 1 {
				t.Fatalf("second review of the same pod: hits grew by %v, want 1", d)
			}
			want := fresh.postRaw(t, second)
			if !bytes.Equal(got, want) {
				t.Errorf("cached answer differs from a fresh one\ncached: %s\nfresh:  %s", got, want)
			}
			// The same line, which says it was answered from the cache.
			w := strings.Replace(fresh.lastAudit(), `{"decision"`, `{"cached":true,"decision"`, 1)
			if g := cached.lastAudit(); g != w {
				t.Errorf("cached audit line differs\ncached: %s\nwant:   %s", g, w)
			}
		})
	}
}

// What the key holds: everything of the pod but managedFields, the
// namespace, and the ServiceAccount's version.
func TestReviewCacheKey(t *testing.T) {
	setTime := func(ts string) func(map[string]any) {
		return func(r map[string]any) {
			mf := podOf(r)["metadata"].(map[string]any)["managedFields"].([]any)
			mf[0].(map[string]any)["time"] = ts
		}
	}
	t.Run("managedFields differ: hit", func(t *testing.T) {
		hs := newCachingHarness(serviceAccounts{"shop/web": versionedSA("1", "")}, 4)
		hs.postRaw(t, review(t, setTime("2026-11-28T04:00:00Z")))
		h0 := hits()
		hs.postRaw(t, review(t, setTime("2026-11-28T04:00:07Z")))
		if hits()-h0 != 1 {
			t.Error("a pod differing only in managedFields was not answered from the cache")
		}
	})
	t.Run("any other byte differs: miss", func(t *testing.T) {
		hs := newCachingHarness(serviceAccounts{"shop/web": versionedSA("1", "")}, 4)
		hs.postRaw(t, review(t, nil))
		for i, edit := range []func(map[string]any){
			func(r map[string]any) {
				podOf(r)["metadata"].(map[string]any)["labels"].(map[string]any)["app"] = "wab"
			},
			func(r map[string]any) { annotationsOf(r)["kvinject.io/refresh"] = "3m" },
			func(r map[string]any) { podOf(r)["spec"].(map[string]any)["futureField"] = true },
		} {
			h0 := hits()
			hs.postRaw(t, review(t, edit))
			if hits() != h0 {
				t.Errorf("edit %d: a different pod was answered from the cache", i)
			}
		}
	})
	t.Run("ServiceAccount changed: fresh answer", func(t *testing.T) {
		sas := serviceAccounts{"shop/web": versionedSA("1", "")}
		hs := newCachingHarness(sas, 4)
		before := hs.post(t, review(t, nil))
		sas["shop/web"] = versionedSA("2", "99999999-9999-9999-9999-999999999999")
		h0 := hits()
		after := hs.post(t, review(t, nil))
		if hits() != h0 {
			t.Error("answered from the cache after the ServiceAccount changed")
		}
		if bytes.Equal(before.Patch, after.Patch) || !bytes.Contains(after.Patch, []byte("99999999-9999-9999-9999-999999999999")) {
			t.Errorf("patch does not carry the ServiceAccount's new client ID: %s", after.Patch)
		}
		delete(sas, "shop/web")
		if resp := hs.post(t, review(t, nil)); resp.Allowed {
			t.Error("allowed after the ServiceAccount was deleted")
		}
	})
	t.Run("ServiceAccount without resourceVersion: not cached", func(t *testing.T) {
		hs := newCachingHarness(serviceAccounts{"shop/web": webSA}, 4)
		hs.postRaw(t, review(t, nil))
		if n := hs.h.Cache.Len(); n != 0 {
			t.Errorf("%d answers cached", n)
		}
	})
	t.Run("another namespace: miss", func(t *testing.T) {
		other := versionedSA("1", "")
		other.Namespace = "shop2"
		hs := newCachingHarness(serviceAccounts{"shop/web": versionedSA("1", ""), "shop2/web": other}, 4)
		// The pod leaves its namespace to the request.
		noNS := func(ns string) func(map[string]any) {
			return func(r map[string]any) {
				delete(podOf(r)["metadata"].(map[string]any), "namespace")
				request(r)["namespace"] = ns
			}
		}
		hs.postRaw(t, review(t, noNS("shop")))
		h0 := hits()
		hs.postRaw(t, review(t, noNS("shop2")))
		if hits() != h0 {
			t.Error("a review in another namespace was answered from the cache")
		}
		if l := hs.auditLines(t); l[1]["namespace"] != "shop2" {
			t.Errorf("audit %v", l[1])
		}
	})
}

// Anything the full decode would refuse is refused with the cache too.
func TestReviewCacheKeepsDecodeErrors(t *testing.T) {
	hs := newCachingHarness(serviceAccounts{"shop/web": versionedSA("1", "")}, 4)
	body := review(t, nil)
	hs.postRaw(t, body)
	// The cached pod, in a body that is not JSON elsewhere.
	broken := bytes.Replace(body, []byte(`"dryRun": false`), []byte(`"dryRun": fals`), 1)
	if bytes.Equal(broken, body) {
		t.Fatal("test body has no dryRun to break")
	}
	resp := hs.post(t, broken)
	if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusBadRequest {
		t.Fatalf("malformed review answered %+v, want a 400 error", resp)
	}
	// The cached pod with a managedFields that is not JSON.
	brokenMF := bytes.Replace(body, []byte(`"fieldsType": "FieldsV1"`), []byte(`"fieldsType": FieldsV1`), 1)
	if bytes.Equal(brokenMF, body) {
		t.Fatal("test body has no fieldsType to break")
	}
	if resp := hs.post(t, brokenMF); resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusBadRequest {
		t.Fatalf("malformed managedFields answered %+v, want a 400 error", resp)
	}
	// Names encoding/json would match case-insensitively are left to it.
	recased := bytes.Replace(body, []byte(`"uid": "0df2`), []byte(`"UID": "0df2`), 1)
	h0 := hits()
	if resp := hs.post(t, recased); !resp.Allowed || resp.UID != "0df28fbd-5f5f-4c9a-8d3f-2f0a7b9d6c11" {
		t.Fatalf("recased uid: %+v", resp)
	}
	if hits() != h0 {
		t.Error("a review with a recased member name was answered from the cache")
	}
}

func TestReviewCacheEvictsLeastRecentlyUsed(t *testing.T) {
	hs := newCachingHarness(serviceAccounts{"shop/web": versionedSA("1", "")}, 2)
	pod := func(i int) []byte {
		return review(t, func(r map[string]any) {
			podOf(r)["metadata"].(map[string]any)["labels"].(map[string]any)["pod-template-hash"] = fmt.Sprint(i)
		})
	}
	hs.postRaw(t, pod(1))
	hs.postRaw(t, pod(2))
	hs.postRaw(t, pod(1)) // 1 is now the most recent
	hs.postRaw(t, pod(3)) // evicts 2
	if n := hs.h.Cache.Len(); n != 2 {
		t.Fatalf("cache holds %d answers, want 2", n)
	}
	// In this order: looking 2 up again caches it, evicting another.
	for _, c := range []struct {
		pod int
		hit bool
	}{{1, true}, {3, true}, {2, false}} {
		h0 := hits()
		hs.postRaw(t, pod(c.pod))
		if got := hits()-h0 == 1; got != c.hit {
			t.Errorf("pod %d: hit %v, want %v", c.pod, got, c.hit)
		}
	}
}

func TestNewReviewCacheDisabled(t *testing.T) {
	if NewReviewCache(0) != nil || NewReviewCache(-1) != nil {
		t.Error("a cache of size <= 0 is not nil")
	}
}

// FuzzPeekReview: whatever peekReview reads from a body, encoding/json reads
// the same from it.
func FuzzPeekReview(f *testing.F) {
	body, err := os.ReadFile("testdata/review-web.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(body)
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a","kind":{"group":"","kind":"Pod"},"operation":"CREATE","object":{"metadata":{"managedFields":[1]}},"uid":"b"}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"a\u0041","kind":{"kind":"Pod"},"operation":"CREATE","object":{}}}`))
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"Uid":"a","uid":"b","kind":{"kind":"Pod"},"operation":"CREATE","object":{}}}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		env, ok := peekReview(body)
		if !ok {
			return
		}
		// The check a cached answer makes agrees with json.Valid whenever
		// the object without its managedFields is JSON, as a cached one is.
		obj := env.head
		if env.managedFields != nil {
			obj = append(append(append([]byte{}, env.head...), "null"...), env.tail...)
		}
		if json.Valid(obj) && env.valid(body) != json.Valid(body) {
			t.Fatalf("envelope check %v, json.Valid %v", env.valid(body), json.Valid(body))
		}
		if !json.Valid(body) {
			return
		}
		var r podReview
		if err := json.Unmarshal(body, &r); err != nil {
			// A pod the struct refuses (a wrongly typed field) goes on to the
			// full decode, which answers with the error.
			return
		}
		req := r.Request
		if req == nil || string(req.UID) != env.uid || req.Namespace != env.namespace || req.Name != env.name ||
			(req.DryRun != nil && *req.DryRun) != env.dryRun || req.Kind.Kind != "Pod" || req.Kind.Group != "" ||
			req.Operation != "CREATE" || req.SubResource != "" || !r.valid() {
			t.Fatalf("peekReview read %+v; encoding/json read %+v", env, req)
		}
	})
}

// The one-pass index refuses texts whose brackets do not balance; peekReview
// then leaves them to the full decode.
func TestScanBalancesBrackets(t *testing.T) {
	for text, ok := range map[string]bool{
		`{"a":[1,{"b":"}]"}],"c":{}}`: true,
		`{"a":[1}`:                    false,
		`{"a":1}}`:                    false,
		`{"a":"\"}`:                   false,
		`[{]}`:                        false,
	} {
		sc, got := newScan([]byte(text))
		if got != ok {
			t.Errorf("newScan(%s) = %v, want %v", text, got, ok)
		}
		if got {
			ms, mok := sc.members(nil, sc.text)
			if !mok || len(ms) != 2 || string(ms[0].value) != `[1,{"b":"}]"}]` || string(ms[1].value) != `{}` {
				t.Errorf("members of %s: %q, %v", text, ms, mok)
			}
			sc.release()
		}
	}
}

// Reviews answered at once, from the cache and from scratch, each get their
// own answer: the pooled bodies and the shared cache keep nothing of another
// review (run with -race too).
func TestConcurrentReviewsGetTheirOwnAnswers(t *testing.T) {
	sas := serviceAccounts{"shop/web": versionedSA("1", "")}
	fresh, cached := newHarness(sas), newCachingHarness(sas, 4)
	bodies := make([][]byte, 8)
	want := make([][]byte, len(bodies))
	for i := range bodies {
		bodies[i] = review(t, func(r map[string]any) {
			withUID(fmt.Sprintf("uid-%d", i))(r)
			podOf(r)["metadata"].(map[string]any)["labels"].(map[string]any)["pod-template-hash"] = fmt.Sprint(i % 3)
		})
		want[i] = fresh.postRaw(t, bodies[i])
	}
	errs := make(chan error, 16*len(bodies))
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for i, body := range bodies {
				rec := httptest.NewRecorder()
				req := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				cached.h.ServeHTTP(rec, req)
				if !bytes.Equal(rec.Body.Bytes(), want[i]) {
					errs <- fmt.Errorf("review %d answered\n%s\nwant\n%s", i, rec.Body.Bytes(), want[i])
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}
