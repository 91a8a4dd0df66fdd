// Package migrate turns workloads that mount Azure Key Vault objects through
// the Secrets Store CSI driver into kvinject workloads: the CSI volume and its
// mounts become kvinject annotations on the pod template, and the consumers
// of the Secrets the driver syncs (secretObjects) become kvinject
// environment variables. What cannot migrate is listed with its reason;
// nothing is dropped silently.
package migrate

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"

	yamlv2 "go.yaml.in/yaml/v2"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/injector"
	"github.com/kvinject/kvinject/offline"
)

// Input is one manifest file.
type Input struct {
	Name string
	Data []byte
}

// Options are what the input does not say.
type Options struct {
	// Namespace is that of objects that name none.
	Namespace string
	// ClientID and TenantID stand in for the ServiceAccount annotations
	// azure.workload.identity/client-id and tenant-id, as in kvinject inject.
	ClientID, TenantID string
	// Defaults are the webhook's defaults flags: every migrated pod is
	// checked with them, as the webhook will admit it.
	Defaults injector.Defaults
	// Refresh, if set, is written as kvinject.io/refresh on every migrated
	// pod (the CSI driver's --rotation-poll-interval, if it rotates).
	Refresh string
}

// Result is the outcome of Run.
type Result struct {
	// Files are the inputs, in order, with every migrated workload
	// rewritten and every other document copied byte for byte.
	Files []Input
	// Migrated and NotMigrated are the workloads that mount a
	// SecretProviderClass, in input order.
	Migrated    []Workload
	NotMigrated []Workload
	// Problems are documents that cannot be read.
	Problems []string
	// Unused are the objects no workload of the input needs once the
	// migrated workloads have rolled out.
	Unused []string
	// Notes are facts about the input a reviewer should know, such as a
	// SecretProviderClass no workload mounts.
	Notes []string
}

// OK reports whether everything migrated.
func (r *Result) OK() bool { return len(r.NotMigrated) == 0 && len(r.Problems) == 0 }

// Workload is one workload that mounts a SecretProviderClass.
type Workload struct {
	// Name is "Deployment shop/web".
	Name string
	// Classes are the SecretProviderClasses it mounts.
	Classes []string
	// Reasons say why it did not migrate.
	Reasons []string
	// Warnings say what changes besides the mechanism.
	Warnings []string
	// Summary says what the migrated workload gets.
	Summary string
}

// Run migrates the workloads of inputs.
//
//  1. Every document is read: SecretProviderClasses with a mirror of the
//     driver's v1 type, workloads and ServiceAccounts with the Kubernetes
//     API types (unknown fields rejected, as kvinject inject does).
//  2. Each workload with a CSI volume of the driver is rewritten on its own
//     (rewrite): annotations for its classes' objects and identity, its
//     synced-Secret variables as kvinject variables, and the CSI volumes and
//     mounts removed. The result goes through injector.Explain with the
//     webhook's defaults, so a pod the webhook would deny does not migrate.
//  3. The Secrets a class syncs exist only while a pod mounts the class (the
//     driver's pods own them). For each class no remaining workload mounts,
//     every reference to its Secrets that was not migrated (an Ingress's
//     TLS, another workload, a Secret volume) would dangle, so the
//     workloads that mount the class do not migrate. Repeated until nothing
//     changes: a workload kept on the driver keeps its classes mounted.
//  4. Migrated workloads are written back into their documents; every other
//     document is copied byte for byte.
func Run(inputs []Input, o Options) *Result {
	r := &Result{}
	in := read(inputs, o, r)
	for _, w := range in.workloads {
		in.rewrite(w, o)
	}
	for changed := true; changed; {
		changed = in.dangling()
	}
	refs := in.references()
	in.write(r)
	for _, w := range in.workloads {
		sort.Strings(w.report.Warnings)
		if w.out != nil {
			r.Migrated = append(r.Migrated, w.report)
		} else {
			r.NotMigrated = append(r.NotMigrated, w.report)
		}
	}
	in.unused(r, refs)
	return r
}

// document is one YAML document of an input file.
type document struct {
	root    map[string]any
	changed bool
}

// object is a document, or an item of a List document.
type object struct {
	doc                        *document
	where                      string
	kind, namespace, name      string
	m                          map[string]any
	isSecretProviderClassGroup bool
}

func (o *object) String() string { return o.kind + " " + o.namespace + "/" + o.name }

// workload is an object with a pod template that mounts a class.
type workload struct {
	*object
	path []string // of the template in m
	tmpl map[string]any
	pod  *corev1.Pod
	// tmplNamespace is the template's own metadata.namespace, usually "".
	tmplNamespace string
	// spSecrets are the nodePublishSecretRef Secrets of its CSI volumes.
	spSecrets []string
	classes   []*class
	// out is the migrated pod, nil if it does not migrate.
	out *corev1.Pod
	// migratedRefs are the paths of the references to synced Secrets that
	// the migration replaced.
	migratedRefs map[string]bool
	report       Workload
}

func (w *workload) fail(format string, a ...any) {
	w.out = nil
	w.report.Reasons = append(w.report.Reasons, fmt.Sprintf(format, a...))
}

type inputs struct {
	names     []string
	files     [][][]byte // chunks per file, as offline.Split cuts them
	docs      [][]*document
	objects   []*object
	classes   map[string]*class // by namespace/name
	classList []*class
	sas       map[string]*corev1.ServiceAccount
	workloads []*workload
}

// read decodes every document of every input.
func read(files []Input, o Options, r *Result) *inputs {
	in := &inputs{classes: map[string]*class{}, sas: map[string]*corev1.ServiceAccount{}}
	var pods []*object
	for _, f := range files {
		chunks := offline.Split(f.Data)
		docs := make([]*document, len(chunks))
		index := 0
		for i, c := range chunks {
			if i%2 == 1 || offline.IsBlank(c) {
				continue
			}
			index++
			where := fmt.Sprintf("%s document %d", f.Name, index)
			var root map[string]any
			if err := yaml.Unmarshal(c, &root); err != nil {
				r.Problems = append(r.Problems, fmt.Sprintf("%s: not YAML: %v", where, err))
				continue
			}
			d := &document{root: root}
			docs[i] = d
			if items, ok := root["items"].([]any); ok && root["kind"] == "List" {
				for j, item := range items {
					if m, ok := item.(map[string]any); ok {
						pods = append(pods, in.add(d, m, fmt.Sprintf("%s items[%d]", where, j), o, r))
					}
				}
				continue
			}
			pods = append(pods, in.add(d, root, where, o, r))
		}
		in.names = append(in.names, f.Name)
		in.files = append(in.files, chunks)
		in.docs = append(in.docs, docs)
	}
	for _, ob := range pods {
		if ob == nil {
			continue
		}
		path, _ := offline.TemplatePath(ob.kind)
		tmpl := offline.PodTemplate(ob.m, path)
		if tmpl == nil || !mountsCSI(tmpl) {
			continue
		}
		w := &workload{object: ob, path: path, tmpl: tmpl, migratedRefs: map[string]bool{}}
		w.report.Name = ob.String()
		pod, err := offline.DecodePod(tmpl)
		if err != nil {
			w.fail("%s: %s: %v", ob.where, fieldPath(path, "pod"), err)
		} else {
			w.tmplNamespace = pod.Namespace
			if pod.Namespace == "" {
				pod.Namespace = ob.namespace
			}
			w.pod = pod
		}
		in.workloads = append(in.workloads, w)
	}
	return in
}

// add indexes one object; it returns the object if it may hold a pod template.
func (in *inputs) add(d *document, m map[string]any, where string, o Options, r *Result) *object {
	j, err := json.Marshal(m)
	if err != nil {
		r.Problems = append(r.Problems, fmt.Sprintf("%s: %v", where, err))
		return nil
	}
	var head struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Metadata   struct {
			Name, Namespace string
		} `json:"metadata"`
	}
	_ = json.Unmarshal(j, &head) // only names the object; the typed decode below reports errors
	ob := &object{doc: d, where: where, kind: head.Kind, namespace: head.Metadata.Namespace, name: head.Metadata.Name, m: m}
	if ob.namespace == "" {
		ob.namespace = o.Namespace
	}
	in.objects = append(in.objects, ob)
	group, _, _ := strings.Cut(head.APIVersion, "/")
	switch {
	case head.Kind == "SecretProviderClass" && group == spcGroup:
		ob.isSecretProviderClassGroup = true
		c := readClass(j, where, o.Namespace)
		if c.name == "" {
			r.Problems = append(r.Problems, fmt.Sprintf("%s: %s", where, strings.Join(c.problems, "; ")))
			return nil
		}
		key := c.namespace + "/" + c.name
		if _, dup := in.classes[key]; dup {
			r.Problems = append(r.Problems, fmt.Sprintf("%s: %s is in the input twice", where, c))
			return nil
		}
		in.classes[key] = c
		in.classList = append(in.classList, c)
	case head.Kind == "ServiceAccount":
		var sa corev1.ServiceAccount
		if err := json.Unmarshal(j, &sa); err == nil {
			if sa.Namespace == "" {
				sa.Namespace = o.Namespace
			}
			in.sas[sa.Namespace+"/"+sa.Name] = &sa
		}
	default:
		if _, ok := offline.TemplatePath(head.Kind); ok {
			return ob
		}
	}
	return nil
}

// mountsCSI reports whether a pod template has a volume of the driver,
// before it is decoded, so that workloads without one are left alone.
func mountsCSI(tmpl map[string]any) bool {
	spec, _ := tmpl["spec"].(map[string]any)
	vols, _ := spec["volumes"].([]any)
	for _, v := range vols {
		vm, _ := v.(map[string]any)
		csi, _ := vm["csi"].(map[string]any)
		if csi != nil && csi["driver"] == csiDriver {
			return true
		}
	}
	return false
}

// fieldPath joins a template path and a field for messages.
func fieldPath(path []string, field string) string {
	if len(path) == 0 {
		return field
	}
	return strings.Join(path, ".") + "." + field
}

// container is one container of the pod with its path in messages.
type container struct {
	c    *corev1.Container
	path string
}

func containers(pod *corev1.Pod, prefix string) []container {
	var cs []container
	for i := range pod.Spec.InitContainers {
		cs = append(cs, container{&pod.Spec.InitContainers[i], fmt.Sprintf("%sspec.initContainers[%d]", prefix, i)})
	}
	for i := range pod.Spec.Containers {
		cs = append(cs, container{&pod.Spec.Containers[i], fmt.Sprintf("%sspec.containers[%d]", prefix, i)})
	}
	return cs
}

// rewrite migrates one workload on its own (step 2 of Run).
func (in *inputs) rewrite(w *workload, o Options) {
	if w.pod == nil {
		return
	}
	pod := w.pod.DeepCopy()
	prefix := ""
	if len(w.path) > 0 {
		prefix = strings.Join(w.path, ".") + "."
	}
	failed := false
	fail := func(format string, a ...any) { failed = true; w.fail(format, a...) }

	// The CSI volumes, their classes and mounts.
	var vols []corev1.Volume
	byVolume := map[string]*class{}
	for i, v := range pod.Spec.Volumes {
		if v.CSI == nil || v.CSI.Driver != csiDriver {
			vols = append(vols, v)
			continue
		}
		field := fmt.Sprintf("%sspec.volumes[%d] (%s)", prefix, i, v.Name)
		name := v.CSI.VolumeAttributes["secretProviderClass"]
		for _, k := range slices.Sorted(maps.Keys(v.CSI.VolumeAttributes)) {
			if k != "secretProviderClass" {
				w.report.Warnings = append(w.report.Warnings, fmt.Sprintf("%s: volumeAttributes.%s is not migrated", field, k))
			}
		}
		c := in.classes[pod.Namespace+"/"+name]
		switch {
		case name == "":
			fail("%s: no volumeAttributes.secretProviderClass", field)
			continue
		case c == nil:
			w.report.Classes = append(w.report.Classes, "SecretProviderClass "+pod.Namespace+"/"+name)
			fail("%s: SecretProviderClass %s/%s is not in the input; add it (kubectl get secretproviderclass -n %s %s -o yaml)", field, pod.Namespace, name, pod.Namespace, name)
			continue
		}
		w.report.Classes = append(w.report.Classes, c.String())
		w.classes = append(w.classes, c)
		byVolume[v.Name] = c
		for _, p := range c.problems {
			fail("%s: %s", c, p)
		}
		for _, m := range c.warnings {
			w.report.Warnings = append(w.report.Warnings, c.String()+": "+m)
		}
		if v.CSI.NodePublishSecretRef != nil {
			w.spSecrets = append(w.spSecrets, v.CSI.NodePublishSecretRef.Name)
		}
	}
	pod.Spec.Volumes = vols

	// One identity, cloud and mount path for the pod: kvinject has one agent
	// and one directory per pod.
	clientIDs, tenants, clouds, vaults := set{}, set{}, set{}, set{}
	for _, c := range w.classes {
		if len(c.problems) > 0 {
			continue
		}
		clientIDs.add(c.clientID)
		tenants.add(c.tenantID)
		clouds.add(c.cloud)
		vaults.add(c.vault)
	}
	if len(clientIDs) > 1 {
		fail("the classes sign in with different clientIDs (%s); kvinject signs in as one identity per pod", clientIDs)
	}
	if len(tenants) > 1 {
		fail("the classes name different tenants (%s); kvinject signs in as one identity per pod", tenants)
	}
	if len(clouds) > 1 {
		fail("the classes name different clouds (%s)", clouds)
	}
	targets := map[string]bool{}
	mounted := map[string]bool{}
	paths := set{}
	for _, ct := range containers(pod, prefix) {
		var keep []corev1.VolumeMount
		for j, m := range ct.c.VolumeMounts {
			if byVolume[m.Name] == nil {
				keep = append(keep, m)
				continue
			}
			if m.SubPath != "" || m.SubPathExpr != "" {
				fail("%s.volumeMounts[%d]: mounts one file of CSI volume %s with subPath; kvinject mounts the whole directory, mount %s instead", ct.path, j, m.Name, m.MountPath)
			}
			paths.add(m.MountPath)
			targets[ct.c.Name] = true
			mounted[ct.c.Name] = true
		}
		ct.c.VolumeMounts = keep
	}
	if len(paths) > 1 {
		fail("the CSI volumes are mounted at %s; kvinject mounts its files at one path per pod", paths)
	}
	if len(w.classes) > 1 && len(paths) == 1 {
		w.report.Warnings = append(w.report.Warnings, fmt.Sprintf("the files of %d classes share one directory, %s, in every targeted container", len(w.classes), paths))
	}

	// Objects: one list; each object names its vault when the pod reads
	// several.
	var objects []keyVaultObject
	files := map[string]*class{}
	for _, c := range w.classes {
		for i, ob := range c.objects {
			if other := files[c.files[i]]; other != nil {
				fail("file %s comes from both %s and %s; kvinject writes one directory", c.files[i], other, c)
			}
			files[c.files[i]] = c
			if len(vaults) > 1 {
				ob.Vault = c.vault
			}
			objects = append(objects, ob)
		}
	}

	// Variables from the synced Secrets.
	env := map[string]string{} // name -> file
	had := map[string]set{}    // container -> variables it had
	synced := func(name string) (*class, *secretObject) {
		for _, c := range w.classes {
			if so := c.secrets[name]; so != nil {
				return c, so
			}
		}
		return nil, nil
	}
	addEnv := func(ct container, name, file, field string) {
		if f, ok := env[name]; ok && f != file {
			fail("%s: variable %s comes from file %s here and %s in another container; kvinject sets one value per pod", field, name, file, f)
		}
		env[name] = file
		if had[ct.c.Name] == nil {
			had[ct.c.Name] = set{}
		}
		had[ct.c.Name].add(name)
		targets[ct.c.Name] = true
	}
	for _, ct := range containers(pod, prefix) {
		explicit := set{}
		for _, e := range ct.c.Env {
			explicit.add(e.Name)
		}
		var keepFrom []corev1.EnvFromSource
		var plain []corev1.EnvVar
		migratedFrom := -1
		for j, ef := range ct.c.EnvFrom {
			var c *class
			var so *secretObject
			if ef.SecretRef != nil {
				c, so = synced(ef.SecretRef.Name)
			}
			if so == nil {
				if migratedFrom >= 0 {
					src := "a source"
					if ef.ConfigMapRef != nil {
						src = "ConfigMap " + ef.ConfigMapRef.Name
					} else if ef.SecretRef != nil {
						src = "Secret " + ef.SecretRef.Name
					}
					w.report.Warnings = append(w.report.Warnings, fmt.Sprintf("%s.envFrom[%d] (%s) comes after a migrated envFrom[%d]: if it sets a migrated name, kvinject's variable now wins over it", ct.path, j, src, migratedFrom))
				}
				keepFrom = append(keepFrom, ef)
				continue
			}
			field := fmt.Sprintf("%s.envFrom[%d]", ct.path, j)
			if isTLS(so) {
				fail("%s: Secret %s (synced by %s) is of type kubernetes.io/tls: the driver splits the PEM into tls.crt and tls.key; kvinject variables carry whole files", field, so.SecretName, c)
				continue
			}
			migratedFrom = j
			w.migratedRefs[field+".secretRef.name"] = true
			for _, key := range so.keys() {
				name := ef.Prefix + key
				if explicit[name] {
					continue // env[] wins over envFrom
				}
				if d := so.entry(key); d.PlainValue != "" {
					plain = append(plain, corev1.EnvVar{Name: name, Value: d.PlainValue})
				} else {
					addEnv(ct, name, d.ObjectName, field)
				}
			}
		}
		ct.c.EnvFrom = keepFrom
		var keep []corev1.EnvVar
		for j, e := range ct.c.Env {
			var ref *corev1.SecretKeySelector
			if e.ValueFrom != nil {
				ref = e.ValueFrom.SecretKeyRef
			}
			var c *class
			var so *secretObject
			if ref != nil {
				c, so = synced(ref.Name)
			}
			if so == nil {
				keep = append(keep, e)
				continue
			}
			field := fmt.Sprintf("%s.env[%d] (%s)", ct.path, j, e.Name)
			d := so.entry(ref.Key)
			switch {
			case d == nil:
				fail("%s: key %q is not in the data of Secret %s (synced by %s)", field, ref.Key, so.SecretName, c)
				keep = append(keep, e)
			case isTLS(so):
				fail("%s: Secret %s (synced by %s) is of type kubernetes.io/tls: the driver writes only the %s part of file %s; kvinject variables carry whole files", field, so.SecretName, c, ref.Key, d.ObjectName)
				keep = append(keep, e)
			case d.PlainValue != "":
				w.migratedRefs[fmt.Sprintf("%s.env[%d].valueFrom.secretKeyRef.name", ct.path, j)] = true
				keep = append(keep, corev1.EnvVar{Name: e.Name, Value: d.PlainValue})
			default:
				w.migratedRefs[fmt.Sprintf("%s.env[%d].valueFrom.secretKeyRef.name", ct.path, j)] = true
				addEnv(ct, e.Name, d.ObjectName, field)
			}
		}
		ct.c.Env = append(keep, plain...)
	}
	// kvinject appends its variables after the container's own, and the
	// kubelet expands $(NAME) only from variables defined earlier.
	for _, ct := range containers(w.pod, prefix) {
		for j, e := range ct.c.Env {
			if w.migratedRefs[fmt.Sprintf("%s.env[%d].valueFrom.secretKeyRef.name", ct.path, j)] {
				continue
			}
			for _, name := range slices.Sorted(maps.Keys(env)) {
				if strings.Contains(e.Value, "$("+name+")") {
					fail("%s.env[%d] (%s) refers to $(%s); kvinject sets %s after the container's own variables, so it would not expand. Read %s from the file instead", ct.path, j, e.Name, name, name, env[name])
				}
			}
		}
	}
	if failed {
		return
	}

	// Containers that now get more than they had.
	var names []string
	for _, ct := range containers(pod, prefix) {
		if !targets[ct.c.Name] {
			continue
		}
		names = append(names, ct.c.Name)
		if !mounted[ct.c.Name] && len(objects) > 0 {
			w.report.Warnings = append(w.report.Warnings, fmt.Sprintf("container %s did not mount the CSI volume; it now also sees the files (kvinject.io/containers targets it for its variables)", ct.c.Name))
		}
		var extra []string
		for name := range env {
			if !had[ct.c.Name][name] {
				extra = append(extra, name)
			}
		}
		if len(extra) > 0 {
			sort.Strings(extra)
			w.report.Warnings = append(w.report.Warnings, fmt.Sprintf("container %s now also gets variable(s) %s: kvinject sets every variable in every targeted container", ct.c.Name, strings.Join(extra, ", ")))
		}
	}

	if len(names) == 0 {
		fail("no container mounts the CSI volume or reads a synced Secret through env or envFrom, so kvinject would deliver nothing: keep the volume if it only syncs Secrets for something else, or remove it")
		return
	}

	// The annotations.
	c0 := w.classes[0]
	a := map[string]string{
		injector.AnnotationInject:   "true",
		injector.AnnotationTenantID: c0.tenantID,
	}
	if len(vaults) == 1 {
		a[injector.AnnotationVault] = c0.vault
	}
	if len(w.classes) == 1 {
		// The class's own text, as kvinject.io/objects takes it.
		a[injector.AnnotationObjects] = c0.objectsText + "\n"
	} else {
		// A plain list in the provider's field order, each with its vault.
		list, err := yamlv2.Marshal(objects)
		if err != nil {
			fail("encode objects: %v", err)
			return
		}
		a[injector.AnnotationObjects] = string(list)
	}
	if c0.clientID != "" {
		a[injector.AnnotationClientID] = c0.clientID
	}
	switch {
	case c0.cloud != "" && c0.cloud != o.Defaults.Cloud.Name:
		a[injector.AnnotationCloud] = c0.cloud
	case c0.cloud == "" && o.Defaults.Cloud.Name != "AzurePublicCloud":
		// A webhook set up for another cloud is set up for these vaults.
		w.report.Warnings = append(w.report.Warnings, fmt.Sprintf("%s names no cloudName (the provider uses AzurePublicCloud); the webhook's --cloud %s applies", c0, o.Defaults.Cloud.Name))
	}
	if len(paths) == 1 {
		a[injector.AnnotationMountPath] = paths.sorted()[0]
	}
	a[injector.AnnotationContainers] = strings.Join(names, ",")
	for name, file := range env {
		a[injector.Prefix+injector.EnvPrefix+name] = file
	}
	if o.Refresh != "" {
		a[injector.AnnotationRefresh] = o.Refresh
	}
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	// kvinject annotations of the template's own (a ca-configmap, a
	// refresh) are kept; one that migrate writes too is a conflict.
	for _, k := range slices.Sorted(maps.Keys(a)) {
		if v, ok := pod.Annotations[k]; ok && !(k == injector.AnnotationInject && v == a[k]) {
			fail("%smetadata.annotations: %s is already set; remove it (migrate writes it from the class)", prefix, k)
		}
	}
	if failed {
		return
	}
	maps.Copy(pod.Annotations, a)

	// What the webhook will do with it.
	sa := offline.StandInServiceAccount(in.sas, pod, o.ClientID, o.TenantID)
	plan, warnings, err := injector.Explain(pod.DeepCopy(), sa, o.Defaults)
	if err != nil {
		var inv *injector.InvalidError
		if errors.As(err, &inv) {
			for _, p := range inv.Problems {
				fail("the webhook would deny the migrated pod: %s", p)
			}
		} else {
			fail("the webhook would deny the migrated pod: %v", err)
		}
		if c0.clientID == "" {
			w.fail("%s has no clientID and ServiceAccount %s/%s in the input has no %s; set one of them (or --sa-client-id) to the identity's client ID",
				c0, pod.Namespace, injector.ServiceAccountName(pod), injector.WorkloadIdentityClientID)
		}
		return
	}
	for _, m := range warnings {
		w.report.Warnings = append(w.report.Warnings, "webhook: "+m)
	}
	if c0.clientID == "" {
		sp := "with the service principal of nodePublishSecretRef"
		if len(w.spSecrets) > 0 {
			sp += " Secret " + pod.Namespace + "/" + strings.Join(w.spSecrets, ", ")
		}
		w.report.Warnings = append(w.report.Warnings, fmt.Sprintf("%s has no clientID: the driver signed in %s; the pod now signs in as %s (%s): grant it the objects (kvinject grants)",
			c0, sp, plan.ClientID, plan.ClientIDFrom))
	}
	w.out = pod
	w.report.Summary = fmt.Sprintf("%d file(s) at %s in %s, %d variable(s), as client %s (%s)",
		len(plan.Files), plan.MountPath, strings.Join(names, ","), len(env), plan.ClientID, plan.ClientIDFrom)
}

// isTLS reports whether the driver syncs so as a kubernetes.io/tls Secret,
// whose tls.crt and tls.key it cuts out of the file (secretutil.GetCertPart).
func isTLS(so *secretObject) bool { return so.Type == string(corev1.SecretTypeTLS) }

// set is a set of non-empty strings.
type set map[string]bool

func (s set) add(v string) {
	if v != "" {
		s[v] = true
	}
}

func (s set) sorted() []string { return slices.Sorted(maps.Keys(s)) }

func (s set) String() string { return strings.Join(s.sorted(), ", ") }

// reference is a string field equal to a Secret's name.
type reference struct {
	object *object
	path   string
}

// references lists, by namespace/name of Secret, every field of the input
// that names a synced Secret and stays after the migration. A field refers
// to a Secret when its path mentions "secret" (secretName, secretKeyRef,
// secretRef, imagePullSecrets, nodePublishSecretRef, ...) or is a Gateway's
// certificateRefs; metadata and the classes themselves are not searched.
func (in *inputs) references() map[string][]reference {
	names := map[string]bool{}
	for _, c := range in.classList {
		for s := range c.secrets {
			names[c.namespace+"/"+s] = true
		}
	}
	byObject := map[*object]*workload{}
	for _, w := range in.workloads {
		byObject[w.object] = w
	}
	refs := map[string][]reference{}
	for _, ob := range in.objects {
		if ob.isSecretProviderClassGroup || ob.kind == "Secret" {
			continue
		}
		w := byObject[ob]
		for _, k := range slices.Sorted(maps.Keys(ob.m)) {
			if k == "metadata" || k == "kind" || k == "apiVersion" {
				continue
			}
			walk(ob.m[k], k, false, func(path, v string) {
				key := ob.namespace + "/" + v
				if !names[key] {
					return
				}
				if w != nil && w.out != nil && w.migratedRefs[path] {
					return
				}
				refs[key] = append(refs[key], reference{ob, path})
			})
		}
	}
	return refs
}

func walk(v any, path string, named bool, f func(path, v string)) {
	l := strings.ToLower(path[strings.LastIndex(path, ".")+1:])
	named = named || strings.Contains(l, "secret") && l != "secretproviderclass" || strings.HasPrefix(l, "certificaterefs")
	switch v := v.(type) {
	case map[string]any:
		for _, k := range slices.Sorted(maps.Keys(v)) {
			walk(v[k], path+"."+k, named, f)
		}
	case []any:
		for i, x := range v {
			walk(x, fmt.Sprintf("%s[%d]", path, i), named, f)
		}
	case string:
		if named {
			f(path, v)
		}
	}
}

// dangling is step 3 of Run; it reports whether it failed a workload.
func (in *inputs) dangling() bool {
	refs := in.references()
	changed := false
	for _, c := range in.classList {
		if in.mountedAfter(c) {
			continue
		}
		for _, s := range slices.Sorted(maps.Keys(c.secrets)) {
			rs := refs[c.namespace+"/"+s]
			if len(rs) == 0 {
				continue
			}
			for _, w := range in.workloads {
				if w.out == nil || !slices.Contains(w.classes, c) {
					continue
				}
				for _, r := range rs {
					w.fail("%s syncs Secret %s/%s, which %s uses at %s (%s); the driver deletes that Secret with the last pod that mounts the class. Keep the CSI volume until %s no longer needs the Secret, or create the Secret another way",
						c, c.namespace, s, r.object, r.path, useOf(r.path), r.object)
				}
				changed = true
			}
		}
	}
	return changed
}

// useOf names what a reference is for.
func useOf(path string) string {
	switch {
	case strings.Contains(path, "tls[") && strings.HasSuffix(path, "secretName"):
		return "TLS"
	case strings.Contains(path, "imagePullSecrets"):
		return "image pull"
	case strings.Contains(path, "secretKeyRef"), strings.Contains(path, "envFrom"):
		return "environment variable"
	case strings.Contains(path, "volumes["):
		return "a Secret volume, which migrate does not turn into files: read the class's files at the CSI mount path instead (objectAlias can give them the Secret's key names) and migrate again"
	}
	return "a reference"
}

// mountedAfter reports whether a workload that stays on the driver mounts c.
func (in *inputs) mountedAfter(c *class) bool {
	for _, w := range in.workloads {
		if w.out == nil && slices.Contains(w.classes, c) {
			return true
		}
	}
	return false
}

// write puts the migrated pods into their documents and renders the files
// (step 4 of Run).
func (in *inputs) write(r *Result) {
	for _, w := range in.workloads {
		if w.out == nil {
			continue
		}
		out := w.out.DeepCopy()
		out.Namespace = w.tmplNamespace
		if err := offline.EncodePod(out, w.tmpl, len(w.path) == 0); err != nil {
			w.fail("%v", err)
			continue
		}
		w.doc.changed = true
	}
	for fi, chunks := range in.files {
		var buf bytes.Buffer
		for i, c := range chunks {
			d := in.docs[fi][i]
			if d == nil || !d.changed {
				buf.Write(c)
				continue
			}
			b, err := yaml.Marshal(d.root)
			if err != nil {
				r.Problems = append(r.Problems, fmt.Sprintf("encode: %v", err))
				buf.Write(c)
				continue
			}
			buf.Write(b)
		}
		r.Files = append(r.Files, Input{Name: in.names[fi], Data: buf.Bytes()})
	}
}

// unused lists the classes and synced Secrets no workload of the input
// needs once the migrated ones have rolled out.
func (in *inputs) unused(r *Result, refs map[string][]reference) {
	for _, c := range in.classList {
		used := false
		for _, w := range in.workloads {
			if slices.Contains(w.classes, c) {
				used = true
			}
		}
		if !used {
			r.Notes = append(r.Notes, fmt.Sprintf("%s (%s): no workload in the input mounts it; left as it is", c, c.where))
			continue
		}
		if in.mountedAfter(c) {
			continue
		}
		r.Unused = append(r.Unused, fmt.Sprintf("%s (%s)", c, c.where))
		for _, s := range slices.Sorted(maps.Keys(c.secrets)) {
			if len(refs[c.namespace+"/"+s]) == 0 {
				r.Unused = append(r.Unused, fmt.Sprintf("Secret %s/%s (synced by %s; the driver deletes it with the last pod that mounts the class)", c.namespace, s, c.name))
			}
		}
	}
	seen := set{}
	for _, w := range in.workloads {
		if w.out == nil {
			for _, s := range w.spSecrets {
				seen.add(w.pod.Namespace + "/" + s) // still used
			}
		}
	}
	for _, w := range in.workloads {
		for _, s := range w.spSecrets {
			if key := w.pod.Namespace + "/" + s; w.out != nil && !seen[key] {
				seen.add(key)
				r.Unused = append(r.Unused, fmt.Sprintf("Secret %s (nodePublishSecretRef of %s): no migrated workload reads it; delete it once nothing else does", key, w.object))
			}
		}
	}
}
