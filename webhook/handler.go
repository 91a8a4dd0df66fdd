// Package webhook is kvinject's mutating admission webhook: an HTTPS server
// (controller-runtime's, for TLS, certificate reload, health and metrics)
// around the injector, with an informer cache of ServiceAccounts.
package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"strconv"
	"sync"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/kvinject/kvinject/injector"
)

// Path is where the handler is served; the MutatingWebhookConfiguration's
// clientConfig.service.path must match.
const Path = "/mutate-pods"

// maxRequestBytes bounds a review's body. The API server's own limit for an
// object is 3 MiB; a review carries the object once more as oldObject at most.
const maxRequestBytes = 7 << 20

// Handler answers AdmissionReview v1 requests for pod CREATEs. It is safe for
// concurrent use; it holds no per-review state and has no side effects, so a
// dry-run review is answered exactly like any other.
type Handler struct {
	// Defaults fill in what a pod and its ServiceAccount leave unset.
	Defaults injector.Defaults
	// ServiceAccounts resolves the pod's ServiceAccount.
	ServiceAccounts ServiceAccounts
	// Log receives one audit line per review.
	Log *slog.Logger
	// Cache answers repeated reviews of the same pod (a ReplicaSet's
	// replicas); nil answers every review from scratch.
	Cache *ReviewCache
}

// audit is what the one log line per review records. It never holds a secret
// value: object names and vault URLs are configuration.
type audit struct {
	uid            string
	namespace      string
	pod            string
	serviceAccount string
	dryRun         bool
	decision       string
	message        string
	vaults         []string
	objects        []string
	warnings       int
	// cached: answered from the review cache.
	cached bool
}

// ServeHTTP decodes one AdmissionReview, answers it, and records the outcome.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method != http.MethodPost {
		http.Error(w, "admission reviews are POSTed", http.StatusMethodNotAllowed)
		return
	}
	var a audit
	resp := h.serve(w, r, &a)
	buf, out, err := encode(&admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: admissionv1.SchemeGroupVersion.String(), Kind: "AdmissionReview"},
		Response: resp,
	})
	if err != nil {
		// Unreachable with these types; answer so the API server applies the failure policy.
		a.decision, a.message = outcomeError, fmt.Sprintf("encode response: %v", err)
		http.Error(w, a.message, http.StatusInternalServerError)
	} else {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", strconv.Itoa(len(out)))
		_, _ = w.Write(out)
		// The API server waits for the answer, not for the audit line:
		// send it before logging (with its length, so it is not chunked).
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		encodeBuffers.Put(buf)
	}
	reviewsByOutcome[a.decision].Inc()
	reviewDuration.Observe(time.Since(start).Seconds())
	h.log(r.Context(), &a)
}

// serve returns the response to the review in r and fills a.
func (h *Handler) serve(w http.ResponseWriter, r *http.Request, a *audit) *admissionv1.AdmissionResponse {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return errored(a, "", http.StatusBadRequest, fmt.Sprintf("content type %q, want application/json", ct))
		}
	}
	buf := bodyBuffers.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxPooledBody {
			bodyBuffers.Put(buf)
		}
	}()
	body, err := readBody(http.MaxBytesReader(w, r.Body, maxRequestBytes), r.ContentLength, buf)
	if err != nil {
		return errored(a, "", http.StatusBadRequest, fmt.Sprintf("read request body: %v", err))
	}
	var env envelope
	cacheable := false
	if h.Cache != nil {
		if env, cacheable = peekReview(body); cacheable {
			if resp := h.cached(r.Context(), body, &env, a); resp != nil {
				reviewCacheHits.Inc()
				return resp
			}
			reviewCacheMisses.Inc()
		}
	}
	// Decoding is most of a review's cost: decode the pod in the same pass
	// as the review, and fall back to the two-step decoding below, with its
	// precise errors, for anything that is not a well-formed pod review.
	var fast podReview
	if json.Unmarshal(body, &fast) == nil && fast.valid() {
		req := fast.Request
		a.uid, a.namespace, a.pod = string(req.UID), req.Namespace, req.Name
		a.dryRun = req.DryRun != nil && *req.DryRun
		var in inputs
		resp := h.review(r.Context(), &req.AdmissionRequest, req.Object, a, &in)
		if cacheable && in.sa != nil {
			h.Cache.put(&env, in.sa, &cachedAnswer{
				saNamespace: in.saNamespace, saName: in.saName, generateName: in.generateName,
				response: *resp, decision: a.decision, message: a.message, vaults: a.vaults, objects: a.objects,
			})
		}
		return resp
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(body, &review); err != nil {
		return errored(a, "", http.StatusBadRequest, fmt.Sprintf("decode AdmissionReview: %v", err))
	}
	if review.APIVersion != admissionv1.SchemeGroupVersion.String() || review.Kind != "AdmissionReview" {
		return errored(a, "", http.StatusBadRequest, fmt.Sprintf("got %s %s, want %s AdmissionReview (set admissionReviewVersions: [v1])",
			review.APIVersion, review.Kind, admissionv1.SchemeGroupVersion))
	}
	req := review.Request
	if req == nil {
		return errored(a, "", http.StatusBadRequest, "AdmissionReview has no request")
	}
	a.uid, a.namespace, a.pod = string(req.UID), req.Namespace, req.Name
	a.dryRun = req.DryRun != nil && *req.DryRun
	return h.review(r.Context(), req, nil, a, &inputs{})
}

// inputs records what an answer was made from, for the review cache. sa is
// nil unless the answer is the injector's alone (patched, unchanged or
// denied by it), which a repeated review of the same pod would get again.
type inputs struct {
	sa                  *corev1.ServiceAccount
	saNamespace, saName string
	generateName        string
}

// cached returns the cached answer to the review in body, or nil.
func (h *Handler) cached(ctx context.Context, body []byte, env *envelope, a *audit) *admissionv1.AdmissionResponse {
	e := h.Cache.get(env)
	if e == nil {
		return nil
	}
	// The full decode rejects a malformed body; a cached answer must too.
	if !env.valid(body) {
		return nil
	}
	sa, err := h.ServiceAccounts.ServiceAccount(ctx, e.saNamespace, e.saName)
	if err != nil || sa.UID != e.saUID || sa.ResourceVersion != e.saResourceVersion {
		return nil
	}
	resp := e.response
	resp.UID = types.UID(env.uid)
	a.uid, a.namespace, a.pod, a.dryRun = env.uid, env.namespace, env.name, env.dryRun
	if a.pod == "" {
		a.pod = e.generateName
	}
	a.serviceAccount = e.saName
	a.decision, a.message, a.vaults, a.objects = e.decision, e.message, e.vaults, e.objects
	a.warnings = len(resp.Warnings)
	a.cached = true
	return &resp
}

// podReview is an AdmissionReview whose object is decoded as a pod. Only the
// fields review reads are decoded besides the pod.
type podReview struct {
	metav1.TypeMeta `json:",inline"`
	Request         *struct {
		admissionv1.AdmissionRequest
		// Object shadows the embedded RawExtension.
		Object *corev1.Pod `json:"object"`
	} `json:"request"`
}

// valid reports whether the fast path may answer r: a v1 review of a pod.
func (r *podReview) valid() bool {
	return r.APIVersion == admissionv1.SchemeGroupVersion.String() && r.Kind == "AdmissionReview" &&
		r.Request != nil && r.Request.Object != nil
}

// review decides one admission request. pod is the request's object when
// the caller has decoded it already, else nil.
func (h *Handler) review(ctx context.Context, req *admissionv1.AdmissionRequest, pod *corev1.Pod, a *audit, in *inputs) *admissionv1.AdmissionResponse {
	allowed := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	// Only pod CREATEs are ours; anything else the configuration may route
	// here by mistake passes untouched.
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.SubResource != "" || req.Operation != admissionv1.Create {
		a.decision = outcomeSkipped
		return allowed
	}
	if pod == nil {
		pod = &corev1.Pod{}
		if err := json.Unmarshal(req.Object.Raw, pod); err != nil {
			return errored(a, req.UID, http.StatusBadRequest, fmt.Sprintf("decode pod: %v", err))
		}
	}
	if a.pod == "" {
		a.pod = pod.GenerateName
	}
	// The matchConditions send only opted-in pods; check again so a
	// misconfigured webhook never touches a pod that did not ask.
	if pod.Annotations[injector.AnnotationInject] != "true" {
		a.decision = outcomeSkipped
		return allowed
	}
	// A pod in a create request may leave its namespace to the request URL.
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	saName := injector.ServiceAccountName(pod)
	a.serviceAccount = saName
	sa, err := h.ServiceAccounts.ServiceAccount(ctx, pod.Namespace, saName)
	switch {
	case apierrors.IsNotFound(err):
		return denied(a, req.UID, fmt.Sprintf("kvinject: serviceaccount %q not found in namespace %q: kvinject reads the workload identity "+
			"(annotation azure.workload.identity/client-id) from the pod's ServiceAccount; create it before the pod or set spec.serviceAccountName",
			saName, pod.Namespace))
	case err != nil:
		return errored(a, req.UID, http.StatusInternalServerError, "kvinject: "+err.Error())
	}
	mutated, warnings, err := injector.Inject(pod, sa, h.Defaults)
	made := inputs{sa: sa, saNamespace: pod.Namespace, saName: saName, generateName: pod.GenerateName}
	if err != nil {
		*in = made
		return denied(a, req.UID, err.Error())
	}
	a.vaults, a.objects = requested(mutated)
	a.warnings = len(warnings)
	allowed.Warnings = warnings
	patch, err := podPatch(pod, mutated)
	if err != nil {
		return errored(a, req.UID, http.StatusInternalServerError, "kvinject: "+err.Error())
	}
	*in = made
	if patch == nil {
		a.decision = outcomeUnchanged
		return allowed
	}
	pt := admissionv1.PatchTypeJSONPatch
	allowed.PatchType, allowed.Patch = &pt, patch
	a.decision = outcomePatched
	return allowed
}

// readBody reads a request body into buf, grown once to the length the
// client sent (the API server does) instead of doubling up from 512 bytes.
func readBody(r io.Reader, length int64, buf *bytes.Buffer) ([]byte, error) {
	buf.Reset()
	if length > 0 && length <= maxRequestBytes {
		buf.Grow(int(length) + bytes.MinRead)
	}
	_, err := buf.ReadFrom(r)
	return buf.Bytes(), err
}

// bodyBuffers hold request bodies for the length of a review: nothing
// decoded from a body, nor the review cache, keeps a slice of it.
var bodyBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// maxPooledBody keeps the rare huge body's buffer out of the pool.
const maxPooledBody = 256 << 10

// encodeBuffers hold the two encodings podPatch diffs (the patch is copied
// out of them) and the response until it is written, so they are reused
// across reviews.
var encodeBuffers = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// encode writes v's encoding/json encoding into a pooled buffer, without
// the copy json.Marshal makes.
func encode(v any) (*bytes.Buffer, []byte, error) {
	buf := encodeBuffers.Get().(*bytes.Buffer)
	buf.Reset()
	if err := json.NewEncoder(buf).Encode(v); err != nil {
		encodeBuffers.Put(buf)
		return nil, nil, err
	}
	return buf, bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

func denied(a *audit, uid types.UID, msg string) *admissionv1.AdmissionResponse {
	a.decision, a.message = outcomeDenied, msg
	return &admissionv1.AdmissionResponse{UID: uid, Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: http.StatusForbidden, Reason: metav1.StatusReasonForbidden, Message: msg,
	}}
}

// errored answers a review that could not be decided. The API server then
// applies the webhook's failure policy and shows msg.
func errored(a *audit, uid types.UID, code int32, msg string) *admissionv1.AdmissionResponse {
	a.decision, a.message = outcomeError, msg
	return &admissionv1.AdmissionResponse{UID: uid, Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: code, Message: msg,
	}}
}

// log writes the audit line.
func (h *Handler) log(ctx context.Context, a *audit) {
	attrs := []slog.Attr{
		slog.String("decision", a.decision),
		slog.String("uid", a.uid),
		slog.String("namespace", a.namespace),
		slog.String("pod", a.pod),
		slog.String("serviceAccount", a.serviceAccount),
		slog.Any("vaults", a.vaults),
		slog.Any("objects", a.objects),
		slog.Bool("dryRun", a.dryRun),
	}
	if a.warnings > 0 {
		attrs = append(attrs, slog.Int("warnings", a.warnings))
	}
	if a.cached {
		attrs = append(attrs, slog.Bool("cached", true))
	}
	if a.message != "" {
		attrs = append(attrs, slog.String("message", a.message))
	}
	level := slog.LevelInfo
	if a.decision == outcomeError {
		level = slog.LevelError
	}
	h.Log.LogAttrs(ctx, level, "admission review", attrs...)
}
