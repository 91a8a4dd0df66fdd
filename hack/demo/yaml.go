package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"
)

// documents splits multi-document YAML.
func documents(data []byte) ([][]byte, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var docs [][]byte
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return docs, nil
		}
		if err != nil {
			return nil, err
		}
		if len(bytes.TrimSpace(doc)) > 0 {
			docs = append(docs, doc)
		}
	}
}

// findObject decodes the first document of kind into obj.
func findObject(data []byte, kind string, obj any) (bool, error) {
	docs, err := documents(data)
	if err != nil {
		return false, err
	}
	for _, doc := range docs {
		var tm metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &tm); err != nil {
			return false, err
		}
		if tm.Kind == kind {
			return true, yaml.UnmarshalStrict(doc, obj)
		}
	}
	return false, nil
}

// createAll creates every object of the YAML stream (the demo's stand-in for
// kubectl apply when kubectl is not installed).
func createAll(ctx context.Context, c client.Client, data []byte) ([]string, error) {
	docs, err := documents(data)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, doc := range docs {
		u := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(doc, &u.Object); err != nil {
			return nil, err
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := c.Create(ctx, u); err != nil {
			return nil, fmt.Errorf("create %s %s: %w", u.GetKind(), u.GetName(), err)
		}
		names = append(names, fmt.Sprintf("%s/%s", u.GetKind(), u.GetName()))
	}
	return names, nil
}

// templateAndPodYAML renders a Deployment's pod template and a pod created
// from it as comparable YAML: the pod's own metadata (name, uid, owner,
// pod-template-hash) and the fields the API server defaults only on pods or
// only on new containers are left out of both, so the difference is what
// the webhook added.
func templateAndPodYAML(tmpl *corev1.PodTemplateSpec, pod *corev1.Pod) (string, string, error) {
	from := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Labels: tmpl.Labels, Annotations: tmpl.Annotations},
		Spec:       *tmpl.Spec.DeepCopy(),
	}
	labels := map[string]string{}
	for k, v := range pod.Labels {
		if k != "pod-template-hash" {
			labels[k] = v
		}
	}
	to := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: pod.Annotations},
		Spec:       *pod.Spec.DeepCopy(),
	}
	var out [2]string
	for i, p := range []*corev1.Pod{from, to} {
		withoutDefaults(&p.Spec)
		b, err := yaml.Marshal(p)
		if err != nil {
			return "", "", err
		}
		out[i] = string(b)
	}
	return out[0], out[1], nil
}

func withoutDefaults(s *corev1.PodSpec) {
	// Pod-only defaults and admission plugins' additions.
	s.EnableServiceLinks, s.PreemptionPolicy, s.Priority, s.Tolerations = nil, nil, nil, nil
	s.DeprecatedServiceAccount, s.NodeName = "", ""
	for _, list := range [][]corev1.Container{s.InitContainers, s.Containers} {
		for i := range list {
			c := &list[i]
			if c.TerminationMessagePath == corev1.TerminationMessagePathDefault {
				c.TerminationMessagePath = ""
			}
			if c.TerminationMessagePolicy == corev1.TerminationMessageReadFile {
				c.TerminationMessagePolicy = ""
			}
			c.ImagePullPolicy = ""
			for _, p := range []*corev1.Probe{c.StartupProbe, c.LivenessProbe, c.ReadinessProbe} {
				if p != nil && p.SuccessThreshold == 1 {
					p.SuccessThreshold = 0
				}
			}
		}
	}
	for i := range s.Volumes {
		if p := s.Volumes[i].Projected; p != nil && p.DefaultMode != nil && *p.DefaultMode == 0o644 {
			p.DefaultMode = nil
		}
	}
}
