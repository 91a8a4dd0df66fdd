package injector

import (
	"fmt"
	"path"

	"k8s.io/apimachinery/pkg/util/version"

	"github.com/kvinject/kvinject/agent/config"
)

// Server is what kvinject knows of the API server that admits the pod. The
// fields env-<NAME> and on-change: restart add (env[].valueFrom.fileKeyRef,
// restartPolicyRules) are kept or dropped by the API server's feature gates:
// a server without them drops the field and the pod runs without what it
// asked for. Like Defaults, Server is an input: the webhook reads it from its
// API server (webhook/server_features.go), kvinject inject from its
// --server-version and --server-feature-gates flags.
type Server struct {
	// Version is the API server's gitVersion (/version), e.g. v1.37.2;
	// "" when it is unknown.
	Version string
	// Gates are the API server's feature gates by name, as it reports them
	// (kubernetes_feature_enabled on its /metrics); nil when they could not
	// be read. A gate they do not list is on from the release that made it
	// on by default (serverFeatures).
	Gates map[string]bool
	// Unknown says why Version is "", for the denial.
	Unknown string
}

// Newest is the release kvinject is tested on; kvinject inject assumes an
// API server of this version unless told otherwise.
const Newest = "v1.37.2"

// feature is an API server feature gate that kvinject's fields need.
type feature struct {
	gate string
	// since is the first release where the gate is on by default (beta).
	since string
	// what is the field the API server drops without the gate.
	what string
}

// serverFeatures are the gates in the order they are checked
// (k8s.io/kubernetes pkg/features/kube_features.go).
var (
	featureEnvFiles = feature{gate: "EnvFiles", since: "1.35",
		what: "env[].valueFrom.fileKeyRef, which sets a variable from the agent's env file"}
	featureRestartRules = feature{gate: "ContainerRestartRules", since: "1.35",
		what: "the agent's restartPolicyRules, which restart the pod's containers in place"}
	featureRestartAll = feature{gate: "RestartAllContainersOnContainerExits", since: "1.36",
		what: "the RestartAllContainers action of the agent's restartPolicyRules"}
)

// ServerGates are the feature gates kvinject judges pods by, for a log line.
func ServerGates() []string {
	return []string{featureEnvFiles.gate, featureRestartRules.gate, featureRestartAll.gate}
}

// lacks returns why s does not honour f (the server version, or its gate
// off), or "" when it does; unknown is true when kvinject cannot tell. An
// unknown or unparsable version lacks every feature: kvinject does not
// admit a pod that might run without what it asked for.
func (s Server) lacks(f feature) (why string, unknown bool) {
	if s.Version == "" {
		reason := s.Unknown
		if reason == "" {
			reason = "nobody told it"
		}
		return fmt.Sprintf("kvinject does not know the API server's version (%s), so it cannot tell whether the server keeps %s", reason, f.what), true
	}
	v, err := version.ParseGeneric(s.Version)
	if err != nil {
		return fmt.Sprintf("the API server's version %q does not parse (%v), so kvinject cannot tell whether the server keeps %s", s.Version, err, f.what), true
	}
	on, listed := s.Gates[f.gate]
	switch {
	case listed && on:
		return "", false
	case listed:
		return fmt.Sprintf("the API server (%s) runs with the feature gate %s off, and drops %s", s.Version, f.gate, f.what), false
	case v.AtLeast(version.MustParseGeneric(f.since)):
		return "", false
	default:
		return fmt.Sprintf("the API server is %s, and before Kubernetes %s (feature gate %s) it drops %s", s.Version, f.since, f.gate, f.what), false
	}
}

// retryFix is the fix when kvinject cannot tell what the server keeps.
const retryFix = "Fix: create the pod again in a moment; if this persists, the webhook's log says why it cannot read the API server's /version"

// checkServer denies what the API server would not honour, naming the
// annotation, the reason and the fix.
//
//  1. Every env-<NAME> needs EnvFiles: without it the server drops the
//     fileKeyRef (and then refuses the pod with its own message, or a
//     kubelet would set the variable to "").
//  2. on-change: restart needs ContainerRestartRules and
//     RestartAllContainersOnContainerExits: without them the server drops
//     the restart rule silently, and the app never sees new values.
//  3. When kvinject cannot tell (Server unknown), both are denied with a
//     fix that says to retry: a pod is never admitted on a guess.
//
// Nodes are not checked here: the env-check container fails a pod on a
// kubelet without EnvFiles, and the scheduler places a restart-rule pod only
// on nodes that declare the feature (NodeDeclaredFeatures, GA in 1.37).
func checkServer(s *spec, srv Server, ps *problems) {
	if len(s.env) > 0 {
		if why, unknown := srv.lacks(featureEnvFiles); why != "" {
			for _, e := range s.env {
				alt := "remove the annotation and read the file " + path.Join(s.mountPath, e.File) + " instead"
				if unknown {
					ps.add(Prefix+EnvPrefix+e.Name, "%s. %s, or %s", why, retryFix, alt)
					continue
				}
				ps.add(Prefix+EnvPrefix+e.Name, "%s. Fix: upgrade the cluster to Kubernetes %s or later with %s on, or %s",
					why, featureEnvFiles.since, featureEnvFiles.gate, alt)
			}
		}
	}
	if s.onChange == config.OnChangeRestart {
		for _, f := range []feature{featureRestartRules, featureRestartAll} {
			why, unknown := srv.lacks(f)
			if why == "" {
				continue
			}
			if unknown {
				ps.add(AnnotationOnChange, "restart: %s. %s", why, retryFix)
			} else {
				ps.add(AnnotationOnChange, "restart: %s, so the app would never restart with new values. Fix: upgrade the cluster to Kubernetes %s or later with %s and %s on, or use a hook (http://127.0.0.1:<port>/<path>) or none",
					why, featureRestartAll.since, featureRestartRules.gate, featureRestartAll.gate)
			}
			break
		}
	}
}
