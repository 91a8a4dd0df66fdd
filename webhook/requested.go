package webhook

import (
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
	c, err := config.Load([]byte(raw))
	if err != nil {
		// The injector wrote it; a broken config is the agent's error to report.
		return nil, []string{"unreadable " + config.EnvVar + ": " + err.Error()}
	}
	for _, f := range c.Files {
		o := f.Object
		if o == nil {
			continue
		}
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
