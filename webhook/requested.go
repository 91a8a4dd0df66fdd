package webhook

import (
	"errors"
	"net/url"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/kvinject/kvinject/agent/config"
)

// requested lists, for the audit line, the vaults and objects an injected pod
// asks for, read back from the agent's configuration (the contract the agent
// itself reads, so the audit shows exactly what will be fetched). Objects are
// "<vault host>/<kind>/<name>[@<version>]". Both are nil when pod has no agent.
func requested(pod *corev1.Pod) (vaults, objects []string) {
	raw := agentConfig(pod)
	if raw == "" {
		return nil, nil
	}
	objs, err := configObjects([]byte(raw))
	if err != nil {
		// The injector wrote it; a broken config is the agent's error to report.
		return nil, []string{"unreadable " + config.EnvVar + ": " + err.Error()}
	}
	for _, o := range objs {
		host := o.Vault
		if u, err := url.Parse(o.Vault); err == nil && u.Host != "" {
			host = u.Host
		}
		id := host + "/" + string(o.Kind) + "/" + o.Name
		if o.Version != "" {
			id += "@" + o.Version
		}
		if !slices.Contains(vaults, o.Vault) {
			vaults = append(vaults, o.Vault)
		}
		if !slices.Contains(objects, id) {
			objects = append(objects, id)
		}
	}
	return vaults, objects
}

// configObjects returns the objects of a KVINJECT_CONFIG's files, in order.
// It walks the JSON with the patch's scanner instead of decoding the whole
// config with encoding/json, which cost about 7 % of a review; the field
// names are config.File's and config.Object's JSON names, and
// TestConfigObjects holds it to config.Load.
func configObjects(cfg []byte) ([]config.Object, error) {
	// A config has 7 top-level members, a file 3 or 4 and an object 3 or
	// 4: small fixed buffers keep the walk off the heap.
	var topBuf, fileBuf, objBuf [8]member
	var elemBuf [16][]byte
	top, err := objectMembers(topBuf[:0], cfg)
	if err != nil {
		return nil, err
	}
	files := memberValue(top, "files")
	if files == nil || string(files) == "null" {
		return nil, nil
	}
	if files[0] != '[' {
		return nil, errors.New("files is not an array")
	}
	elems, err := appendElements(elemBuf[:0], files)
	if err != nil {
		return nil, err
	}
	out := make([]config.Object, 0, len(elems))
	for _, e := range elems {
		f, err := objectMembers(fileBuf[:0], e)
		if err != nil {
			return nil, err
		}
		v := memberValue(f, "object")
		if v == nil || string(v) == "null" {
			continue
		}
		om, err := objectMembers(objBuf[:0], v)
		if err != nil {
			return nil, err
		}
		var o config.Object
		for _, m := range []struct {
			key string
			dst *string
		}{{"vault", &o.Vault}, {"kind", (*string)(&o.Kind)}, {"name", &o.Name}, {"version", &o.Version}} {
			s := memberValue(om, m.key)
			if s == nil {
				continue
			}
			if s[0] != '"' {
				return nil, errors.New("object " + m.key + " is not a string")
			}
			b, err := unquote(s)
			if err != nil {
				return nil, err
			}
			*m.dst = string(b)
		}
		out = append(out, o)
	}
	return out, nil
}

// objectMembers appends the members of v, which must be a JSON object, to dst.
func objectMembers(dst []member, v []byte) ([]member, error) {
	if len(v) == 0 || v[0] != '{' {
		return nil, errSyntax
	}
	return appendMembers(dst, v)
}

// memberValue returns the value of key in ms, or nil.
func memberValue(ms []member, key string) []byte {
	for _, m := range ms {
		if string(m.key) == key {
			return m.value
		}
	}
	return nil
}

// agentConfig returns the agent's KVINJECT_CONFIG, from whichever container
// carries it (the init container in every mode).
func agentConfig(pod *corev1.Pod) string {
	for _, cs := range [][]corev1.Container{pod.Spec.InitContainers, pod.Spec.Containers} {
		for i := range cs {
			for _, e := range cs[i].Env {
				if e.Name == config.EnvVar {
					return e.Value
				}
			}
		}
	}
	return ""
}
