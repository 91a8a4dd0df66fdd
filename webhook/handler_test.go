package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/injector"
)

// serviceAccounts is the ServiceAccount cache for handler tests; the e2e
// suite proves the real informer against a real API server.
type serviceAccounts map[string]*corev1.ServiceAccount

func (s serviceAccounts) ServiceAccount(_ context.Context, namespace, name string) (*corev1.ServiceAccount, error) {
	if sa, ok := s[namespace+"/"+name]; ok {
		return sa, nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("serviceaccounts"), name)
}

var webSA = &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", Annotations: map[string]string{
	"azure.workload.identity/client-id": "00000000-0000-0000-0000-000000000002",
	"azure.workload.identity/tenant-id": "11111111-1111-1111-1111-111111111111",
}}}

func testDefaults() injector.Defaults {
	c, _ := config.KnownCloud("AzurePublicCloud")
	return injector.Defaults{Image: "ghcr.io/kvinject/kvinject:v0.0.0-test", Cloud: c}
}

// harness is a Handler with a captured audit log.
type harness struct {
	h   *Handler
	log bytes.Buffer
}

func newHarness(sas serviceAccounts) *harness {
	hs := &harness{}
	hs.h = &Handler{Defaults: testDefaults(), ServiceAccounts: sas, Log: slog.New(slog.NewJSONHandler(&hs.log, nil))}
	return hs
}

// postRaw sends body and returns the answer, or nil when the webhook
// refused the body (an error response without a uid).
func (hs *harness) postRaw(t *testing.T, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	resp := hs.post(t, body)
	if !resp.Allowed && resp.UID == "" && resp.Result != nil && resp.Result.Code == http.StatusBadRequest {
		return nil
	}
	return resp
}

// post sends body as the API server does and decodes the AdmissionReview answer.
func (hs *harness) post(t *testing.T, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, Path+"?timeout=5s", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	hs.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("HTTP %d: %s", rec.Code, rec.Body)
	}
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var out admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("response is not an AdmissionReview: %v\n%s", err, rec.Body)
	}
	if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" || out.Response == nil {
		t.Fatalf("response %s %s, response %v", out.APIVersion, out.Kind, out.Response)
	}
	return out.Response
}

// auditLines returns the audit lines logged so far.
func (hs *harness) auditLines(t *testing.T) []map[string]any {
	t.Helper()
	var lines []map[string]any
	for _, l := range bytes.Split(bytes.TrimSpace(hs.log.Bytes()), []byte("\n")) {
		var m map[string]any
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("audit line is not JSON: %v: %s", err, l)
		}
		lines = append(lines, m)
	}
	return lines
}

// review is testdata/review-web.json, a review as the API server sends it for
// a Deployment's pod, with edit applied to its generic form.
func review(t *testing.T, edit func(r map[string]any)) []byte {
	t.Helper()
	raw, err := os.ReadFile("testdata/review-web.json")
	if err != nil {
		t.Fatal(err)
	}
	if edit == nil {
		return raw
	}
	var r map[string]any
	if err := json.Unmarshal(raw, &r); err != nil {
		t.Fatal(err)
	}
	edit(r)
	out, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func request(r map[string]any) map[string]any { return r["request"].(map[string]any) }

func podOf(r map[string]any) map[string]any { return request(r)["object"].(map[string]any) }

func annotationsOf(r map[string]any) map[string]any {
	return podOf(r)["metadata"].(map[string]any)["annotations"].(map[string]any)
}

// requestPod decodes the pod in a review body.
func requestPod(t *testing.T, body []byte) (*corev1.Pod, []byte) {
	t.Helper()
	var r struct {
		Request struct {
			Object json.RawMessage `json:"object"`
		} `json:"request"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := json.Unmarshal(r.Request.Object, &pod); err != nil {
		t.Fatal(err)
	}
	return &pod, r.Request.Object
}

// applyPatch applies a response's patch to the raw pod, as the API server does.
func applyPatch(t *testing.T, rawPod []byte, resp *admissionv1.AdmissionResponse) []byte {
	t.Helper()
	if resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("patchType %v, want JSONPatch", resp.PatchType)
	}
	p, err := jsonpatch.DecodePatch(resp.Patch)
	if err != nil {
		t.Fatalf("patch is not RFC 6902: %v\n%s", err, resp.Patch)
	}
	out, err := p.Apply(rawPod)
	if err != nil {
		t.Fatalf("apply patch: %v\n%s", err, resp.Patch)
	}
	return out
}

func TestReviewPatchesPodToInjectorOutput(t *testing.T) {
	hs := newHarness(serviceAccounts{"shop/web": webSA})
	body := review(t, nil)
	before := testutil.ToFloat64(reviewsByOutcome[outcomePatched])

	resp := hs.post(t, body)

	if !resp.Allowed || resp.UID != "0df28fbd-5f5f-4c9a-8d3f-2f0a7b9d6c11" {
		t.Fatalf("allowed=%v uid=%q result=%v", resp.Allowed, resp.UID, resp.Result)
	}
	pod, raw := requestPod(t, body)
	want, wantReport, err := injector.Inject(pod, webSA, testDefaults())
	wantWarnings := wantReport.Warnings
	if err != nil {
		t.Fatalf("Inject: %v", err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(applyPatch(t, raw, resp), &got); err != nil {
		t.Fatal(err)
	}
	// Compared in their encoded form: managedFields hold raw JSON whose
	// spacing the patch library does not keep.
	g, _ := json.MarshalIndent(&got, "", " ")
	w, _ := json.MarshalIndent(want, "", " ")
	if !bytes.Equal(g, w) {
		t.Fatalf("patched pod differs from Inject's output\ngot:  %s\nwant: %s", g, w)
	}
	if !slices.Equal(resp.Warnings, wantWarnings) {
		t.Errorf("warnings %q, want %q", resp.Warnings, wantWarnings)
	}
	if d := testutil.ToFloat64(reviewsByOutcome[outcomePatched]) - before; d != 1 {
		t.Errorf("kvinject_webhook_reviews_total{outcome=patched} grew by %v, want 1", d)
	}

	lines := hs.auditLines(t)
	if len(lines) != 1 {
		t.Fatalf("%d audit lines, want 1", len(lines))
	}
	l := lines[0]
	for k, v := range map[string]any{
		"msg": "admission review", "decision": "patched", "namespace": "shop", "pod": "web-7d9f8b6c5d-",
		"serviceAccount": "web", "dryRun": false, "uid": "0df28fbd-5f5f-4c9a-8d3f-2f0a7b9d6c11",
		"mode": injector.ModeSidecar, "identityFrom": "ServiceAccount shop/web annotation azure.workload.identity/client-id",
	} {
		if l[k] != v {
			t.Errorf("audit %s = %v, want %v", k, l[k], v)
		}
	}
	wantVaults := []any{"https://shared-kv.vault.azure.net/", "https://shop-kv.vault.azure.net/"}
	if !slices.Equal(asList(l["vaults"]), wantVaults) {
		t.Errorf("audit vaults %v, want %v", l["vaults"], wantVaults)
	}
	wantObjects := []any{"shared-kv.vault.azure.net/cert/web-tls", "shop-kv.vault.azure.net/secret/db-password"}
	if !slices.Equal(asList(l["objects"]), wantObjects) {
		t.Errorf("audit objects %v, want %v", l["objects"], wantObjects)
	}
}

// asList returns a logged list of strings, sorted.
func asList(v any) []any {
	l, _ := v.([]any)
	slices.SortFunc(l, func(a, b any) int { return strings.Compare(a.(string), b.(string)) })
	return l
}

// The patch touches only what the injector changed, so fields this build does
// not know (a newer API server's) survive injection: an unknown field in
// every object the injector touches or passes by (the pod, metadata, spec,
// its security context, every init container, container, volume mount, env
// var and volume, with an init container already there for the agent to go
// in front of) is kept, on the same object, and the rest of the pod is
// byte for byte Inject's output.
func TestReviewPatchKeepsUnknownFields(t *testing.T) {
	hs := newHarness(serviceAccounts{"shop/web": webSA})
	n := 0
	mark := func(o any) {
		n++
		o.(map[string]any)["futureField"] = map[string]any{"n": float64(n)}
	}
	body := review(t, func(r map[string]any) {
		pod := podOf(r)
		spec := pod["spec"].(map[string]any)
		spec["initContainers"] = []any{map[string]any{"name": "migrate", "image": "migrate:1",
			"volumeMounts": []any{map[string]any{"name": "kube-api-access-x7k2p", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}}}}
		delete(annotationsOf(r), "kvinject.io/containers")
		mark(pod)
		mark(pod["metadata"])
		mark(spec)
		mark(spec["securityContext"])
		for _, list := range []string{"initContainers", "containers"} {
			for _, c := range spec[list].([]any) {
				mark(c)
				for _, sub := range []string{"volumeMounts", "env"} {
					if l, ok := c.(map[string]any)[sub].([]any); ok {
						for _, e := range l {
							mark(e)
						}
					}
				}
			}
		}
		for _, v := range spec["volumes"].([]any) {
			mark(v)
		}
	})
	resp := hs.post(t, body)
	if !resp.Allowed {
		t.Fatalf("denied: %v", resp.Result)
	}
	pod, raw := requestPod(t, body)
	var patched any
	if err := json.Unmarshal(applyPatch(t, raw, resp), &patched); err != nil {
		t.Fatal(err)
	}
	var orig any
	_ = json.Unmarshal(raw, &orig)
	// Where each marker was, named by the path of "name"s down to it.
	want, got := markers(orig, ""), markers(patched, "")
	if len(want) != n {
		t.Fatalf("found %d of %d markers in the review", len(want), n)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("unknown field at %s: %q after the patch, want %q", k, got[k], v)
		}
	}
	injected, _, err := injector.Inject(pod, webSA, testDefaults())
	if err != nil {
		t.Fatal(err)
	}
	stripped, _ := json.Marshal(patched)
	var strippedPod corev1.Pod
	if err := json.Unmarshal(stripped, &strippedPod); err != nil {
		t.Fatal(err)
	}
	g, _ := json.MarshalIndent(&strippedPod, "", " ")
	w, _ := json.MarshalIndent(injected, "", " ")
	if !bytes.Equal(g, w) {
		t.Errorf("patched pod, unknown fields aside, differs from Inject's output\ngot:  %s\nwant: %s", g, w)
	}
}

// markers maps the path to every futureField in v (list elements named by
// their "name", or their mountPath) to its encoding.
func markers(v any, path string) map[string]string {
	out := map[string]string{}
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if k == "futureField" {
				b, _ := json.Marshal(e)
				out[path] = string(b)
				continue
			}
			for p, m := range markers(e, path+"/"+k) {
				out[p] = m
			}
		}
	case []any:
		for i, e := range v {
			id := strconv.Itoa(i)
			if m, ok := e.(map[string]any); ok {
				if n, ok := m["name"].(string); ok {
					id = n
				}
				if p, ok := m["mountPath"].(string); ok {
					id += "@" + p
				}
			}
			for p, m := range markers(e, path+"["+id+"]") {
				out[p] = m
			}
		}
	}
	return out
}

// A review body may repeat keys at any level. Without a cache nothing one
// review sends reaches another's answer; the decode resolves a repeat as
// encoding/json does (the API server's decoder resolves them alike), and the
// answer is exactly Inject's for the pod so decoded. Reviews of the genuine
// pod before and after get the same answer.
func TestDuplicateKeysAnswerOnlyTheirOwnReview(t *testing.T) {
	hs := newHarness(serviceAccounts{"shop/web": webSA})
	genuine := review(t, func(map[string]any) {}) // compact
	first := hs.post(t, genuine)
	_, rawPod := requestPod(t, genuine)
	hostilePod := bytes.Replace(rawPod, []byte(`"annotations":{`),
		[]byte(`"annotations":{"kvinject.io/vault":"https://attacker.example/","kvinject.io/mount-path":"/srv/x",`), 1)
	rawReview := string(genuine)
	for name, body := range map[string]string{
		"object twice":         strings.Replace(rawReview, `"object":`, `"object":`+string(hostilePod)+`,"object":`, 1),
		"request twice":        strings.Replace(rawReview, `"request":`, `"request":{"uid":"x","object":`+string(hostilePod)+`},"request":`, 1),
		"uid twice":            strings.Replace(rawReview, `"uid":`, `"uid":"evil","uid":`, 1),
		"annotations twice":    strings.Replace(rawReview, `"annotations":{`, `"annotations":{"kvinject.io/vault":"https://attacker.example/"},"annotations":{`, 1),
		"annotation key twice": strings.Replace(rawReview, `"kvinject.io/vault":"shop-kv"`, `"kvinject.io/vault":"https://attacker.example/","kvinject.io/vault":"shop-kv"`, 1),
		"spec twice":           strings.Replace(rawReview, `"spec":{`, `"spec":{"nodeName":"n1"},"spec":{`, 1),
		"kind twice":           strings.Replace(rawReview, `"kind":"AdmissionReview"`, `"kind":"Other","kind":"AdmissionReview"`, 1),
	} {
		t.Run(name, func(t *testing.T) {
			if body == rawReview {
				t.Fatal("the edit did not apply")
			}
			resp := hs.postRaw(t, []byte(body))
			if resp == nil {
				return // refused
			}
			// What the API server would store from these bytes, decoded as it does.
			var r admissionv1.AdmissionReview
			if err := json.Unmarshal([]byte(body), &r); err != nil {
				t.Fatal(err)
			}
			if resp.UID != r.Request.UID {
				t.Errorf("uid %q, want %q", resp.UID, r.Request.UID)
			}
			var pod corev1.Pod
			if err := json.Unmarshal(r.Request.Object.Raw, &pod); err != nil {
				t.Fatal(err)
			}
			want, _, err := injector.Inject(&pod, webSA, testDefaults())
			if err != nil {
				if resp.Allowed {
					t.Errorf("allowed, want the injector's denial %v", err)
				}
				return
			}
			stored, _ := json.Marshal(&pod)
			var got corev1.Pod
			if err := json.Unmarshal(applyPatch(t, stored, resp), &got); err != nil {
				t.Fatal(err)
			}
			g, _ := json.Marshal(&got)
			w, _ := json.Marshal(want)
			if !bytes.Equal(g, w) {
				t.Errorf("answer differs from Inject's for the decoded pod\ngot:  %s\nwant: %s", g, w)
			}
		})
	}
	if again := hs.post(t, genuine); !bytes.Equal(again.Patch, first.Patch) {
		t.Errorf("the genuine review's answer changed after hostile ones:\n%s\n%s", first.Patch, again.Patch)
	}
}

func TestReviewDeniesWithInjectorMessage(t *testing.T) {
	hs := newHarness(serviceAccounts{"shop/web": webSA})
	body := review(t, func(r map[string]any) {
		a := annotationsOf(r)
		a["kvinject.io/refesh"] = "2m"
		a["kvinject.io/vault"] = "my_vault"
	})
	pod, _ := requestPod(t, body)
	_, _, wantErr := injector.Inject(pod, webSA, testDefaults())
	if wantErr == nil {
		t.Fatal("Inject accepted the invalid pod")
	}

	resp := hs.post(t, body)

	if resp.Allowed || resp.Patch != nil {
		t.Fatalf("allowed=%v patch=%s, want a denial", resp.Allowed, resp.Patch)
	}
	if resp.Result == nil || resp.Result.Code != http.StatusForbidden || resp.Result.Message != wantErr.Error() {
		t.Fatalf("result %+v, want code 403 and message %q", resp.Result, wantErr)
	}
	for _, s := range []string{"kvinject.io/refesh", "did you mean kvinject.io/refresh", "kvinject.io/vault"} {
		if !strings.Contains(resp.Result.Message, s) {
			t.Errorf("message %q does not mention %q", resp.Result.Message, s)
		}
	}
	if l := hs.auditLines(t); len(l) != 1 || l[0]["decision"] != "denied" || l[0]["message"] != wantErr.Error() {
		t.Errorf("audit %v", l)
	}
}

func TestReviewAllowsPodsThatDidNotOptIn(t *testing.T) {
	for name, edit := range map[string]func(map[string]any){
		"no annotation": func(r map[string]any) { delete(annotationsOf(r), "kvinject.io/inject") },
		"false":         func(r map[string]any) { annotationsOf(r)["kvinject.io/inject"] = "false" },
		"no annotations at all": func(r map[string]any) {
			delete(podOf(r)["metadata"].(map[string]any), "annotations")
		},
	} {
		t.Run(name, func(t *testing.T) {
			// No ServiceAccounts: a pod that did not opt in needs none.
			hs := newHarness(serviceAccounts{})
			resp := hs.post(t, review(t, edit))
			if !resp.Allowed || resp.Patch != nil || resp.PatchType != nil || resp.Result != nil {
				t.Fatalf("got %+v, want allowed without a patch", resp)
			}
			if l := hs.auditLines(t); len(l) != 1 || l[0]["decision"] != "skipped" {
				t.Errorf("audit %v", l)
			}
		})
	}
}

func TestReviewOfOtherOperationsAndKinds(t *testing.T) {
	for name, edit := range map[string]func(map[string]any){
		"update":      func(r map[string]any) { request(r)["operation"] = "UPDATE" },
		"subresource": func(r map[string]any) { request(r)["subResource"] = "ephemeralcontainers" },
		"not a pod": func(r map[string]any) {
			request(r)["kind"] = map[string]any{"group": "apps", "version": "v1", "kind": "Deployment"}
		},
	} {
		t.Run(name, func(t *testing.T) {
			resp := newHarness(serviceAccounts{"shop/web": webSA}).post(t, review(t, edit))
			if !resp.Allowed || resp.Patch != nil {
				t.Fatalf("got %+v, want allowed without a patch", resp)
			}
		})
	}
}

func TestReviewDryRunGetsTheSameAnswer(t *testing.T) {
	hs := newHarness(serviceAccounts{"shop/web": webSA})
	plain := hs.post(t, review(t, nil))
	dry := hs.post(t, review(t, func(r map[string]any) { request(r)["dryRun"] = true }))
	if !dry.Allowed || !bytes.Equal(dry.Patch, plain.Patch) || !slices.Equal(dry.Warnings, plain.Warnings) {
		t.Fatalf("dry run answered %+v, want the same as %+v", dry, plain)
	}
	lines := hs.auditLines(t)
	if len(lines) != 2 || lines[1]["dryRun"] != true || lines[0]["dryRun"] != false {
		t.Errorf("audit dryRun: %v", lines)
	}
}

func TestReviewDeniesMissingServiceAccount(t *testing.T) {
	hs := newHarness(serviceAccounts{})
	resp := hs.post(t, review(t, nil))
	if resp.Allowed || resp.Result == nil || resp.Result.Code != http.StatusForbidden {
		t.Fatalf("got %+v, want a 403 denial", resp)
	}
	for _, s := range []string{`serviceaccount "web" not found in namespace "shop"`, "azure.workload.identity/client-id", "create it"} {
		if !strings.Contains(resp.Result.Message, s) {
			t.Errorf("message %q does not say %q", resp.Result.Message, s)
		}
	}
	if l := hs.auditLines(t); len(l) != 1 || l[0]["decision"] != "denied" || l[0]["serviceAccount"] != "web" {
		t.Errorf("audit %v", l)
	}
}

// With reinvocationPolicy IfNeeded the API server may send an injected pod
// again; it must come back unchanged.
func TestReviewOfInjectedPodIsUnchanged(t *testing.T) {
	hs := newHarness(serviceAccounts{"shop/web": webSA})
	body := review(t, nil)
	_, raw := requestPod(t, body)
	injected := applyPatch(t, raw, hs.post(t, body))

	var r map[string]any
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	var obj map[string]any
	if err := json.Unmarshal(injected, &obj); err != nil {
		t.Fatal(err)
	}
	request(r)["object"] = obj
	again, _ := json.Marshal(r)

	resp := hs.post(t, again)
	if !resp.Allowed || resp.Patch != nil {
		t.Fatalf("reinvocation answered %+v, want allowed without a patch", resp)
	}
	if l := hs.auditLines(t); l[1]["decision"] != "unchanged" {
		t.Errorf("audit %v", l[1])
	}
}

func TestMalformedReviewsGetAnErrorResponse(t *testing.T) {
	for name, tc := range map[string]struct {
		body        string
		contentType string
		want        string
	}{
		"not JSON":           {body: "{", want: "decode AdmissionReview"},
		"empty":              {body: "", want: "decode AdmissionReview"},
		"v1beta1":            {body: `{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"1"}}`, want: "want admission.k8s.io/v1 AdmissionReview"},
		"no request":         {body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, want: "no request"},
		"pod not an object":  {body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"2","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","object":"pod"}}`, want: "decode pod"},
		"no pod":             {body: `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"3","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE"}}`, want: "decode pod"},
		"wrong content type": {body: "{}", contentType: "application/yaml", want: `content type "application/yaml"`},
	} {
		t.Run(name, func(t *testing.T) {
			hs := newHarness(serviceAccounts{})
			before := testutil.ToFloat64(reviewsByOutcome[outcomeError])
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, Path, strings.NewReader(tc.body))
			ct := tc.contentType
			if ct == "" {
				ct = "application/json"
			}
			req.Header.Set("Content-Type", ct)
			hs.h.ServeHTTP(rec, req)

			var out admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
				t.Fatalf("HTTP %d %q: not an AdmissionReview response: %v", rec.Code, rec.Body, err)
			}
			r := out.Response
			if r.Allowed || r.Result == nil || r.Result.Code != http.StatusBadRequest || !strings.Contains(r.Result.Message, tc.want) {
				t.Fatalf("got %+v, want a 400 error saying %q", r, tc.want)
			}
			if d := testutil.ToFloat64(reviewsByOutcome[outcomeError]) - before; d != 1 {
				t.Errorf("error counter grew by %v", d)
			}
		})
	}
}

func TestNonPostIsRejected(t *testing.T) {
	rec := httptest.NewRecorder()
	newHarness(nil).h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, Path, nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Fatalf("GET: HTTP %d", rec.Code)
	}
}

// blockingLog holds every log record until released.
type blockingLog struct {
	slog.Handler
	logging chan struct{}
	release chan struct{}
}

func (b *blockingLog) Handle(ctx context.Context, r slog.Record) error {
	b.logging <- struct{}{}
	<-b.release
	return b.Handler.Handle(ctx, r)
}

// The API server gets its answer before the audit line is written, so a
// slow log never delays a pod.
func TestAnswerIsSentBeforeTheAuditLine(t *testing.T) {
	logs := &blockingLog{Handler: slog.NewJSONHandler(io.Discard, nil), logging: make(chan struct{}, 1), release: make(chan struct{})}
	h := &Handler{Defaults: testDefaults(), ServiceAccounts: serviceAccounts{"shop/web": webSA}, Log: slog.New(logs)}
	srv := httptest.NewServer(h)
	defer srv.Close()
	defer close(logs.release)

	// Were the answer sent after the audit line, this would time out.
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Post(srv.URL+Path, "application/json", bytes.NewReader(review(t, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out admissionv1.AdmissionReview
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.Response == nil || !out.Response.Allowed {
		t.Fatalf("answer %+v, %v", out.Response, err)
	}
	if resp.ContentLength <= 0 || len(resp.TransferEncoding) > 0 {
		t.Errorf("Content-Length %d, Transfer-Encoding %v: want a sized answer", resp.ContentLength, resp.TransferEncoding)
	}
	// The handler is still writing its audit line.
	select {
	case <-logs.logging:
	case <-time.After(10 * time.Second):
		t.Fatal("no audit line")
	}
}
