package injector

import (
	"errors"
	"strings"
	"testing"
)

// TestServerFeatures: a pod with env-<NAME> or on-change: restart is denied
// on an API server that would drop the field, naming the annotation, the
// reason (the version or the gate) and the fix; the same pod is injected
// where the server keeps it; a pod with neither is injected whatever the
// server. An unknown server denies both, and says why it is unknown.
func TestServerFeatures(t *testing.T) {
	env := map[string]string{Prefix + EnvPrefix + "DB_PASSWORD": "db-password", Prefix + EnvPrefix + "API_KEY": "db-password"}
	restart := map[string]string{AnnotationRefresh: "1m", AnnotationOnChange: "restart"}
	cases := []struct {
		name   string
		server Server
		ann    map[string]string
		// want are the problems' texts, in order; none: injected.
		want []string
	}{
		{"env on 1.33", Server{Version: "v1.33.13"}, env, []string{
			"kvinject.io/env-API_KEY: the API server is v1.33.13, and before Kubernetes 1.35 (feature gate EnvFiles) it drops env[].valueFrom.fileKeyRef, which sets a variable from the agent's env file. " +
				"Fix: upgrade the cluster to Kubernetes 1.35 or later with EnvFiles on, or remove the annotation and read the file /mnt/secrets/db-password instead",
			"kvinject.io/env-DB_PASSWORD: the API server is v1.33.13",
		}},
		{"env on 1.34 with the alpha gate on", Server{Version: "v1.34.1", Gates: map[string]bool{"EnvFiles": true}}, env, nil},
		{"env on 1.35", Server{Version: "v1.35.0"}, env, nil},
		{"env with a vendor's version", Server{Version: "v1.36.2-eks-a737599"}, env, nil},
		{"env with the gate off", Server{Version: "v1.37.2", Gates: map[string]bool{"EnvFiles": false, "ContainerRestartRules": true}}, env, []string{
			"kvinject.io/env-API_KEY: the API server (v1.37.2) runs with the feature gate EnvFiles off, and drops env[].valueFrom.fileKeyRef",
			"kvinject.io/env-DB_PASSWORD: the API server (v1.37.2) runs with the feature gate EnvFiles off",
		}},
		{"env, unknown server", Server{Unknown: "GET /version: connection refused"}, env, []string{
			"kvinject.io/env-API_KEY: kvinject does not know the API server's version (GET /version: connection refused), so it cannot tell whether the server keeps env[].valueFrom.fileKeyRef, which sets a variable from the agent's env file. " +
				"Fix: create the pod again in a moment; if this persists, the webhook's log says why it cannot read the API server's /version, or remove the annotation and read the file /mnt/secrets/db-password instead",
			"kvinject.io/env-DB_PASSWORD: kvinject does not know",
		}},
		{"env, unparsable version", Server{Version: "main"}, env, []string{
			`kvinject.io/env-API_KEY: the API server's version "main" does not parse`,
			`kvinject.io/env-DB_PASSWORD: the API server's version "main" does not parse`,
		}},
		{"restart on 1.35", Server{Version: "v1.35.3"}, restart, []string{
			"kvinject.io/on-change: restart: the API server is v1.35.3, and before Kubernetes 1.36 (feature gate RestartAllContainersOnContainerExits) it drops the RestartAllContainers action of the agent's restartPolicyRules, " +
				"so the app would never restart with new values. Fix: upgrade the cluster to Kubernetes 1.36 or later with ContainerRestartRules and RestartAllContainersOnContainerExits on, or use a hook (http://127.0.0.1:<port>/<path>) or none",
		}},
		{"restart on 1.34", Server{Version: "v1.34.0"}, restart, []string{
			"kvinject.io/on-change: restart: the API server is v1.34.0, and before Kubernetes 1.35 (feature gate ContainerRestartRules) it drops the agent's restartPolicyRules",
		}},
		{"restart on 1.36", Server{Version: "v1.36.0"}, restart, nil},
		{"restart with its gate off", Server{Version: "v1.37.2", Gates: map[string]bool{"RestartAllContainersOnContainerExits": false}}, restart, []string{
			"kvinject.io/on-change: restart: the API server (v1.37.2) runs with the feature gate RestartAllContainersOnContainerExits off",
		}},
		{"restart, unknown server", Server{}, restart, []string{
			"kvinject.io/on-change: restart: kvinject does not know the API server's version (nobody told it), so it cannot tell whether the server keeps the agent's restartPolicyRules, which restart the pod's containers in place. Fix: create the pod again in a moment",
		}},
		{"files only, unknown server", Server{}, nil, nil},
		{"files only on 1.33", Server{Version: "v1.33.13"}, nil, nil},
		{"hook on 1.33", Server{Version: "v1.33.13"}, map[string]string{AnnotationRefresh: "1m", AnnotationOnChange: "http://127.0.0.1:8080/reload"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := testDefaults()
			d.Server = tc.server
			_, _, err := Inject(testPod(tc.ann), nil, d)
			var inv *InvalidError
			if tc.want == nil {
				if err != nil {
					t.Fatalf("denied: %v", err)
				}
				return
			}
			if !errors.As(err, &inv) || len(inv.Problems) != len(tc.want) {
				t.Fatalf("err = %v, want %d problems", err, len(tc.want))
			}
			for i, w := range tc.want {
				if got := inv.Problems[i].String(); !strings.HasPrefix(got, w) {
					t.Errorf("problem %d:\n%s\nwant it to start with\n%s", i, got, w)
				}
			}
		})
	}
}
