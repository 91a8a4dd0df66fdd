// Package webhook is kvinject's mutating admission webhook: an HTTPS server
// (controller-runtime's, for TLS, certificate reload, health and metrics)
// around the injector, with an informer cache of ServiceAccounts.
package webhook

import (
	"context"
	"encoding/json"
	"fmt"
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

// Handler answers AdmissionReview v1 requests for pod CREATEs. It is safe for
// concurrent use; it holds no per-review state and has no side effects, so a
// dry-run review is answered exactly like any other, and nothing one review
// sends can change the answer another gets.
type Handler struct {
	// Defaults fill in what a pod and its ServiceAccount leave unset.
	Defaults injector.Defaults
	// ServiceAccounts resolves the pod's ServiceAccount.
	ServiceAccounts ServiceAccounts
	// Server, when set, supplies Defaults.Server for each review: what the
	// API server honours, as the webhook last read it (serverFeatures).
	Server func() injector.Server
	// Log receives one audit line per review.
	Log *slog.Logger

	limitsOnce sync.Once
	limits     *limits
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
	// mode, identityFrom, vaults and objects are injector.Report's: what
	// the agent will do, from the annotations the injector parsed.
	mode            string
	identityFrom    string
	identityBinding bool
	vaults          []string
	objects         []string
	warnings        int
}

// ServeHTTP decodes one AdmissionReview, answers it, and records the outcome.
// It keeps no state between reviews.
//
//  1. The body is read within the shared budget (readBody), and at most
//     GOMAXPROCS reviews are decoded and answered at once.
//  2. The review, then the pod in request.object, are decoded once, by
//     encoding/json, so a repeated key resolves as the API server resolves
//     it; anything but a pod CREATE, or a pod without kvinject.io/inject (or
//     with "false"), is allowed untouched.
//  3. The pod's ServiceAccount is read (cache, then API server on a miss)
//     and injector.Inject decides: a denial carries its problems, an
//     injection its warnings, and its Report fills the audit line.
//  4. The patch is the one Inject recorded as it changed the pod
//     (Report.Patch): only what kvinject adds, so fields this build does not
//     know (a newer API server's) are never replaced.
//  5. The answer is written and flushed before the metrics and the audit
//     line, which never hold a secret value (only names and vault URLs).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method != http.MethodPost {
		http.Error(w, "admission reviews are POSTed", http.StatusMethodNotAllowed)
		return
	}
	var a audit
	resp := h.serve(r, &a)
	out, err := json.Marshal(&admissionv1.AdmissionReview{
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
	}
	reviewsByOutcome[a.decision].Inc()
	reviewDuration.Observe(time.Since(start).Seconds())
	h.log(r.Context(), &a)
}

// serve returns the response to the review in r and fills a.
func (h *Handler) serve(r *http.Request, a *audit) *admissionv1.AdmissionResponse {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		if mt, _, err := mime.ParseMediaType(ct); err != nil || mt != "application/json" {
			return errored(a, "", http.StatusBadRequest, fmt.Sprintf("content type %q, want application/json", ct))
		}
	}
	l := h.bounds()
	// release returns the body's chunk to the pool for the next request:
	// encoding/json copies every string and raw object out of body, so
	// nothing answered or logged for this review still points into it.
	body, release, err := l.readBody(r.Context(), r.Body)
	defer release()
	if err != nil {
		return errored(a, "", http.StatusBadRequest, fmt.Sprintf("read request body: %v", err))
	}
	// Decoding and injecting are CPU-bound and cost a few times the body
	// in memory: more of them at once than there are cores only adds memory.
	if err := l.decoders.Acquire(r.Context(), 1); err != nil {
		return errored(a, "", http.StatusServiceUnavailable, fmt.Sprintf("waiting to decode: %v", err))
	}
	defer l.decoders.Release(1)
	// One decode, encoding/json's: a repeated key is resolved as the API
	// server's decoder resolves it (the last scalar wins, objects merge),
	// and the object is decoded from the bytes of its last occurrence.
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
	return h.review(r.Context(), req, a)
}

// review decides one admission request.
func (h *Handler) review(ctx context.Context, req *admissionv1.AdmissionRequest, a *audit) *admissionv1.AdmissionResponse {
	allowed := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	// Only pod CREATEs are ours; anything else the configuration may route
	// here by mistake passes untouched.
	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.SubResource != "" || req.Operation != admissionv1.Create {
		a.decision = outcomeSkipped
		return allowed
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(req.Object.Raw, pod); err != nil {
		return errored(a, req.UID, http.StatusBadRequest, fmt.Sprintf("decode pod: %v", err))
	}
	if a.pod == "" {
		a.pod = pod.GenerateName
	}
	// The matchConditions send every pod that carries the annotation; check
	// again so a misconfigured webhook never touches a pod that did not ask.
	v, set := pod.Annotations[injector.AnnotationInject]
	if !set || v == "false" {
		a.decision = outcomeSkipped
		return allowed
	}
	// A pod in a create request may leave its namespace to the request URL.
	if pod.Namespace == "" {
		pod.Namespace = req.Namespace
	}
	var sa *corev1.ServiceAccount
	if v == "true" {
		saName := injector.ServiceAccountName(pod)
		a.serviceAccount = saName
		var err error
		sa, err = h.ServiceAccounts.ServiceAccount(ctx, pod.Namespace, saName)
		switch {
		case apierrors.IsNotFound(err):
			return denied(a, req.UID, fmt.Sprintf("kvinject: serviceaccount %q not found in namespace %q: kvinject reads the workload identity "+
				"(annotation azure.workload.identity/client-id) from the pod's ServiceAccount; create it before the pod or set spec.serviceAccountName",
				saName, pod.Namespace))
		case err != nil:
			return errored(a, req.UID, http.StatusInternalServerError, "kvinject: "+err.Error())
		}
	}
	// Any other value is denied by the injector, with the fix.
	d := h.Defaults
	if h.Server != nil {
		d.Server = h.Server()
	}
	_, r, err := injector.Inject(pod, sa, d)
	if err != nil {
		return denied(a, req.UID, err.Error())
	}
	a.mode, a.identityFrom, a.vaults, a.objects = r.Mode, r.ClientIDFrom, r.Vaults, r.Objects
	a.identityBinding = r.IdentityBinding
	a.warnings = len(r.Warnings)
	allowed.Warnings = r.Warnings
	if r.Patch == nil {
		a.decision = outcomeUnchanged
		return allowed
	}
	pt := admissionv1.PatchTypeJSONPatch
	allowed.PatchType, allowed.Patch = &pt, r.Patch
	a.decision = outcomePatched
	return allowed
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
		slog.String("mode", a.mode),
		slog.String("identityFrom", a.identityFrom),
		slog.Any("vaults", a.vaults),
		slog.Any("objects", a.objects),
		slog.Bool("dryRun", a.dryRun),
	}
	if a.identityBinding {
		attrs = append(attrs, slog.Bool("identityBinding", true))
	}
	if a.warnings > 0 {
		attrs = append(attrs, slog.Int("warnings", a.warnings))
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
