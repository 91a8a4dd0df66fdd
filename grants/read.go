// Package grants derives the Azure side of kvinject from the workloads
// themselves: what each workload gets and which identity fetches it
// (Explain), and the least-privilege role assignments and federated
// credentials that let it (Derive), rendered for az, Terraform or Bicep.
//
// Every fact comes from injector.Explain, the parse the webhook runs: no
// annotation is read here.
package grants

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/injector"
	"github.com/kvinject/kvinject/offline"
)

// Workload is one opted-in workload of a manifest stream and its plan.
type Workload struct {
	Kind, Namespace, Name string
	Plan                  *injector.Plan
	Warnings              []string
}

// String names the workload as kubectl does: Deployment shop/orders.
func (w Workload) String() string { return w.Kind + " " + w.Namespace + "/" + w.Name }

// ReadOptions say what the stream does not: the namespace of documents that
// name none, and stand-ins for ServiceAccounts the stream lacks.
type ReadOptions struct {
	Namespace string
	// ClientID and TenantID stand in for the ServiceAccount annotations
	// azure.workload.identity/client-id and tenant-id, as in kvinject inject.
	ClientID, TenantID string
	Defaults           injector.Defaults
}

// Read decodes a YAML (or JSON) stream of workloads (Pod, Deployment,
// StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, or a List of them) and
// ServiceAccounts, and explains every workload that opts in, with the
// ServiceAccounts of the stream standing in for the cluster's.
//
//  1. Every document is decoded with the Kubernetes API types, rejecting
//     unknown fields, as kvinject inject does.
//  2. ServiceAccounts are collected before any workload is explained, so
//     their order in the stream does not matter.
//  3. Each pod template goes through injector.Explain with its
//     ServiceAccount: the webhook's parse, warnings and denials.
//
// problems lists every document that is invalid or that the webhook would
// deny; workloads holds the rest, in stream order.
func Read(r io.Reader, o ReadOptions) (workloads []Workload, problems []string, err error) {
	var objs []object
	yr := utilyaml.NewYAMLReader(bufio.NewReaderSize(r, 64<<10))
	for index := 1; ; index++ {
		doc, err := yr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read document %d: %w", index, err)
		}
		j, err := yaml.YAMLToJSON(doc)
		if err != nil {
			problems = append(problems, fmt.Sprintf("document %d: not YAML: %v", index, err))
			continue
		}
		if bytes.Equal(bytes.TrimSpace(j), []byte("null")) {
			index-- // a blank document or comments only
			continue
		}
		o, ps := decode(j, fmt.Sprintf("document %d", index))
		objs, problems = append(objs, o...), append(problems, ps...)
	}

	sas := map[string]*corev1.ServiceAccount{}
	for _, ob := range objs {
		if ob.sa != nil {
			sa := ob.sa
			if sa.Namespace == "" {
				sa.Namespace = o.Namespace
			}
			sas[sa.Namespace+"/"+sa.Name] = sa
		}
	}
	for _, ob := range objs {
		if ob.pod == nil {
			continue
		}
		pod := ob.pod
		if pod.Namespace == "" {
			pod.Namespace = ob.namespace
		}
		if pod.Namespace == "" {
			pod.Namespace = o.Namespace
		}
		w := Workload{Kind: ob.kind, Namespace: pod.Namespace, Name: ob.name}
		plan, warnings, err := injector.Explain(pod, offline.StandInServiceAccount(sas, pod, o.ClientID, o.TenantID), o.Defaults)
		w.Warnings = warnings
		if err != nil {
			var inv *injector.InvalidError
			if errors.As(err, &inv) {
				for _, p := range inv.Problems {
					problems = append(problems, fmt.Sprintf("%s (%s): %s", ob.where, w, p))
				}
			} else {
				problems = append(problems, fmt.Sprintf("%s (%s): %v", ob.where, w, err))
			}
			continue
		}
		if plan != nil {
			w.Plan = plan
			workloads = append(workloads, w)
		}
	}
	return workloads, problems, nil
}

// object is a decoded document: a pod template with its owner's name, or a
// ServiceAccount.
type object struct {
	where, kind, name, namespace string
	pod                          *corev1.Pod
	sa                           *corev1.ServiceAccount
}

// decode reads one document, or each item of a List.
func decode(j []byte, where string) ([]object, []string) {
	var head struct {
		Kind     string            `json:"kind"`
		Metadata metav1.ObjectMeta `json:"metadata"`
		Items    []json.RawMessage `json:"items"`
	}
	if err := json.Unmarshal(j, &head); err != nil {
		return nil, []string{fmt.Sprintf("%s: %v", where, err)}
	}
	if head.Kind == "List" {
		var objs []object
		var problems []string
		for i, item := range head.Items {
			o, p := decode(item, fmt.Sprintf("%s items[%d]", where, i))
			objs, problems = append(objs, o...), append(problems, p...)
		}
		return objs, problems
	}
	o := object{where: where, kind: head.Kind, name: head.Metadata.Name, namespace: head.Metadata.Namespace}
	var tmpl *corev1.PodTemplateSpec
	var err error
	switch head.Kind {
	case "ServiceAccount":
		o.sa = &corev1.ServiceAccount{}
		err = strict(j, o.sa)
	case "Pod":
		var p corev1.Pod
		err = strict(j, &p)
		tmpl = &corev1.PodTemplateSpec{ObjectMeta: p.ObjectMeta, Spec: p.Spec}
	case "Deployment":
		var d appsv1.Deployment
		err, tmpl = strict(j, &d), &d.Spec.Template
	case "StatefulSet":
		var s appsv1.StatefulSet
		err, tmpl = strict(j, &s), &s.Spec.Template
	case "DaemonSet":
		var d appsv1.DaemonSet
		err, tmpl = strict(j, &d), &d.Spec.Template
	case "ReplicaSet":
		var r appsv1.ReplicaSet
		err, tmpl = strict(j, &r), &r.Spec.Template
	case "Job":
		var jb batchv1.Job
		err, tmpl = strict(j, &jb), &jb.Spec.Template
	case "CronJob":
		var c batchv1.CronJob
		err, tmpl = strict(j, &c), &c.Spec.JobTemplate.Spec.Template
	default:
		if bytes.Contains(j, []byte(injector.AnnotationInject)) {
			return nil, []string{fmt.Sprintf("%s (%s %s): kind %s is not injected; only Pod, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job and CronJob are", where, head.Kind, head.Metadata.Name, head.Kind)}
		}
		return nil, nil
	}
	if err != nil {
		return nil, []string{fmt.Sprintf("%s (%s %s): %v", where, head.Kind, head.Metadata.Name, err)}
	}
	if tmpl != nil {
		o.pod = &corev1.Pod{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}
	}
	return []object{o}, nil
}

// strict decodes j into v, rejecting unknown fields.
func strict(j []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(j))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
