// Package offline is what `kvinject inject` does: it injects the pods and pod
// templates of a multi-document YAML stream exactly as the webhook would, and
// copies every other document byte for byte.
package offline

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/injector"
)

// Options are what the webhook would know besides the stream.
type Options struct {
	// ClientID and TenantID stand in for the annotations of a pod's
	// ServiceAccount that the stream does not hold or set.
	ClientID, TenantID string
	// Namespace is that of documents that name none.
	Namespace string
	// Defaults are the webhook's defaults flags.
	Defaults injector.Defaults
}

// separatorRE matches a YAML document separator line, with an optional comment.
var separatorRE = regexp.MustCompile(`^---(\s.*)?$`)

// Documents injects every opted-in document of a multi-document YAML
// stream. Documents it does not change are copied byte for byte, separators
// included, so a diff of input and output shows only what kvinject adds.
// ServiceAccounts in the stream are used for the pods that run as them.
func Documents(in []byte, o Options) (out []byte, warnings, problems []string) {
	chunks := Split(in)
	sas := serviceAccounts(chunks, o.Namespace)
	var buf bytes.Buffer
	index := 0
	for i, c := range chunks {
		if i%2 == 1 || IsBlank(c) {
			buf.Write(c)
			continue
		}
		index++
		res, w, p := injectDocument(c, index, o, sas)
		warnings = append(warnings, w...)
		problems = append(problems, p...)
		buf.Write(res)
	}
	return buf.Bytes(), warnings, problems
}

// Split cuts a multi-document YAML stream into chunks that alternate:
// document, separator line, document, ... Joining them gives the input back
// byte for byte; a document may be blank (IsBlank).
func Split(in []byte) [][]byte {
	var chunks [][]byte
	var doc []byte
	for _, line := range bytes.SplitAfter(in, []byte("\n")) {
		if separatorRE.Match(bytes.TrimRight(line, "\r\n")) {
			chunks = append(chunks, doc, line)
			doc = nil
			continue
		}
		doc = append(doc, line...)
	}
	return append(chunks, doc)
}

// serviceAccounts finds the ServiceAccount documents, by namespace/name.
func serviceAccounts(chunks [][]byte, namespace string) map[string]*corev1.ServiceAccount {
	sas := map[string]*corev1.ServiceAccount{}
	for i, c := range chunks {
		if i%2 == 1 || IsBlank(c) {
			continue
		}
		var sa corev1.ServiceAccount
		if yaml.Unmarshal(c, &sa) != nil || sa.Kind != "ServiceAccount" {
			continue
		}
		if sa.Namespace == "" {
			sa.Namespace = namespace
		}
		sas[sa.Namespace+"/"+sa.Name] = &sa
	}
	return sas
}

// IsBlank reports whether a document holds only whitespace and comments.
func IsBlank(doc []byte) bool {
	for _, line := range bytes.Split(doc, []byte("\n")) {
		l := bytes.TrimSpace(line)
		if len(l) > 0 && l[0] != '#' {
			return false
		}
	}
	return true
}

// TemplatePath says where kind keeps its pod template (nil for a Pod, whose
// metadata and spec are at the top), and whether kvinject injects that kind.
func TemplatePath(kind string) ([]string, bool) {
	p, ok := templatePaths[kind]
	return p, ok
}

// PodTemplate follows path (TemplatePath) from obj to its pod template; nil
// when a step is missing or not an object.
func PodTemplate(obj map[string]any, path []string) map[string]any {
	tmpl := obj
	for _, key := range path {
		next, ok := tmpl[key].(map[string]any)
		if !ok {
			return nil
		}
		tmpl = next
	}
	return tmpl
}

// templatePaths says where each supported kind keeps its pod template.
var templatePaths = map[string][]string{
	"Pod":         nil,
	"Deployment":  {"spec", "template"},
	"StatefulSet": {"spec", "template"},
	"DaemonSet":   {"spec", "template"},
	"ReplicaSet":  {"spec", "template"},
	"Job":         {"spec", "template"},
	"CronJob":     {"spec", "jobTemplate", "spec", "template"},
}

// injectDocument returns the document, injected or as it was.
func injectDocument(doc []byte, index int, o Options, sas map[string]*corev1.ServiceAccount) ([]byte, []string, []string) {
	var obj map[string]any
	if err := yaml.Unmarshal(doc, &obj); err != nil {
		return doc, nil, []string{fmt.Sprintf("document %d: not YAML: %v", index, err)}
	}
	where := fmt.Sprintf("document %d", index)
	var changed bool
	var warnings, problems []string
	if items, ok := obj["items"].([]any); ok && obj["kind"] == "List" {
		// kubectl get -o yaml prints a List.
		for i, item := range items {
			if m, ok := item.(map[string]any); ok {
				c, w, p := injectObject(m, fmt.Sprintf("%s items[%d]", where, i), o, sas)
				changed = changed || c
				warnings, problems = append(warnings, w...), append(problems, p...)
			}
		}
	} else {
		changed, warnings, problems = injectObject(obj, where, o, sas)
	}
	if !changed || len(problems) > 0 {
		return doc, warnings, problems
	}
	res, err := yaml.Marshal(obj)
	if err != nil {
		return doc, warnings, []string{fmt.Sprintf("%s: encode: %v", where, err)}
	}
	return res, warnings, nil
}

// injectObject injects one object in place and reports whether it changed.
func injectObject(obj map[string]any, where string, o Options, sas map[string]*corev1.ServiceAccount) (changed bool, warnings, problems []string) {
	var meta struct {
		Kind     string            `json:"kind"`
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	if b, err := json.Marshal(obj); err == nil {
		_ = json.Unmarshal(b, &meta) // best effort, only for naming the object
	}
	name := meta.Metadata.Name
	if meta.Metadata.Namespace != "" {
		name = meta.Metadata.Namespace + "/" + name
	}
	where = fmt.Sprintf("%s (%s %s)", where, meta.Kind, name)
	prefix := func(msgs []string) []string {
		for i, m := range msgs {
			msgs[i] = where + ": " + m
		}
		return msgs
	}

	path, supported := TemplatePath(meta.Kind)
	if !supported {
		if b, _ := json.Marshal(obj); bytes.Contains(b, []byte(injector.AnnotationInject)) {
			return false, prefix([]string{fmt.Sprintf("kind %s is not injected; only Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job and CronJob are", meta.Kind)}), nil
		}
		return false, nil, nil
	}
	tmpl := PodTemplate(obj, path)
	if tmpl == nil {
		return false, nil, prefix([]string{fmt.Sprintf("no %s", strings.Join(path, "."))})
	}

	pod, err := DecodePod(tmpl)
	if err != nil {
		field := strings.Join(path, ".")
		if field == "" {
			field = "pod"
		}
		return false, nil, prefix([]string{fmt.Sprintf("%s: %v", field, err)})
	}
	templateNamespace := pod.Namespace
	if pod.Namespace == "" {
		pod.Namespace = meta.Metadata.Namespace
	}
	if pod.Namespace == "" {
		pod.Namespace = o.Namespace
	}
	sa := StandInServiceAccount(sas, pod, o.ClientID, o.TenantID)
	injected, r, err := injector.Inject(pod, sa, o.Defaults)
	warnings = r.Warnings
	if err != nil {
		var inv *injector.InvalidError
		if !errors.As(err, &inv) {
			return false, nil, prefix([]string{err.Error()})
		}
		var ps []string
		for _, p := range inv.Problems {
			ps = append(ps, p.String())
		}
		return false, prefix(warnings), prefix(ps)
	}
	if r.Mode == "" || r.Mode == injector.ModeReinvoked {
		return false, prefix(warnings), nil // not opted in, or injected before
	}
	injected.Namespace = templateNamespace
	if err := EncodePod(injected, tmpl, meta.Kind == "Pod"); err != nil {
		return false, nil, prefix([]string{err.Error()})
	}
	return true, prefix(warnings), nil
}

// StandInServiceAccount is the pod's ServiceAccount from the stream (sas,
// keyed by namespace/name), with clientID and tenantID standing in for the
// workload-identity annotations it does not set, as the webhook would read
// them from the API server.
func StandInServiceAccount(sas map[string]*corev1.ServiceAccount, pod *corev1.Pod, clientID, tenantID string) *corev1.ServiceAccount {
	name := injector.ServiceAccountName(pod)
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: pod.Namespace}}
	if found, ok := sas[pod.Namespace+"/"+name]; ok {
		sa = found.DeepCopy()
	}
	if sa.Annotations == nil {
		sa.Annotations = map[string]string{}
	}
	for key, v := range map[string]string{injector.WorkloadIdentityClientID: clientID, injector.WorkloadIdentityTenantID: tenantID} {
		if sa.Annotations[key] == "" && v != "" {
			sa.Annotations[key] = v
		}
	}
	return sa
}

// DecodePod reads the metadata and spec of a pod or pod template, rejecting
// unknown fields: re-encoding would drop them silently.
func DecodePod(tmpl map[string]any) (*corev1.Pod, error) {
	b, err := json.Marshal(map[string]any{"metadata": tmpl["metadata"], "spec": tmpl["spec"]})
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var pod corev1.Pod
	if err := dec.Decode(&pod); err != nil {
		return nil, err
	}
	return &pod, nil
}

// EncodePod writes metadata and spec back into the template map, without the
// empty fields Go's types add (creationTimestamp: null, resources: {}).
func EncodePod(pod *corev1.Pod, tmpl map[string]any, isPod bool) error {
	b, err := json.Marshal(struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Spec     corev1.PodSpec    `json:"spec"`
	}{pod.ObjectMeta, pod.Spec})
	if err != nil {
		return fmt.Errorf("encode pod: %w", err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return fmt.Errorf("encode pod: %w", err)
	}
	prune(m)
	tmpl["metadata"], tmpl["spec"] = m["metadata"], m["spec"]
	if isPod {
		if st, ok := tmpl["status"].(map[string]any); ok && len(st) == 0 {
			delete(tmpl, "status")
		}
	}
	return nil
}

// prune removes the empty values that encoding a Go struct adds.
func prune(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if x == nil {
				delete(v, k)
				continue
			}
			if m, ok := x.(map[string]any); ok && len(m) == 0 && (k == "resources" || k == "status") {
				delete(v, k)
				continue
			}
			prune(x)
		}
	case []any:
		for _, x := range v {
			prune(x)
		}
	}
}
