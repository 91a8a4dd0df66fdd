package e2e

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/version"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/kvinject/kvinject/e2e/fakeazure"
	"github.com/kvinject/kvinject/injector"
)

// envValue is a value the env file carries literally: blanks, $, ", #, =,
// a backslash and a newline (the kubelet's format has no escaping).
const envValue = "pa$$ w\"rd #1=\\\nline two"

// An app that reads only its environment, from a Deployment with a native
// sidecar in a restricted namespace: the kubelet sets each variable from the
// agent's env file when it starts the app, the values match the vault, and
// neither the Pod object nor the agent's log holds them.
func TestNodeEnvVars(t *testing.T) {
	t.Parallel()
	s := testNode(t)
	ctx := t.Context()
	const clientID = "00000000-0000-0000-0000-00000000e101"
	ns := nodeNamespace(t, s, "web", clientID)
	s.secretFor(t, clientID, "node-env-db", envValue)

	tmpl := nodePodSpec("web", map[string]string{
		"kvinject.io/secret-db-password":        "node-env-db",
		"kvinject.io/template-dsn":              `Server=db;Password={{ secret "db-password" }}`,
		"kvinject.io/refresh":                   "1m",
		"kvinject.io/env-DB_PASSWORD":           "db-password",
		"kvinject.io/env-ConnectionStrings__Db": "dsn",
	}, "-env", "DB_PASSWORD,ConnectionStrings__Db,UNSET_VAR")
	if _, err := s.c.Kube.AppsV1().Deployments(ns).Create(ctx, deployment("web", tmpl), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, s, ns, "app=web", running)
	if c := initStatus(pod, injector.EnvCheckContainer); c == nil || c.State.Terminated == nil || c.State.Terminated.ExitCode != 0 {
		t.Errorf("the env check did not pass on a kubelet with EnvFiles: %+v", c)
	}
	r := waitReport(t, s, ns, pod.Name, time.Minute, func(appReport) bool { return true })
	want := map[string]string{"DB_PASSWORD": envValue, "ConnectionStrings__Db": "Server=db;Password=" + envValue}
	for k, v := range want {
		if r.Env[k] != v {
			t.Errorf("the app's %s = %q, want %q", k, r.Env[k], v)
		}
	}
	if len(r.Env) != len(want) {
		t.Errorf("the app's environment has %v, want only %v", r.Env, want)
	}
	got, err := s.c.Kube.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(got)
	if strings.Contains(string(b), "pa$$") {
		t.Errorf("the Pod object holds the value")
	}
	out, _, err := kubectl(ctx, s.c, nil, "logs", "-n", ns, pod.Name, "-c", injector.AgentContainer)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "pa$$") {
		t.Errorf("the agent's log holds the value:\n%s", out)
	}
}

// A Job whose app reads its environment, with an init agent, completes.
func TestNodeEnvJob(t *testing.T) {
	t.Parallel()
	s := testNode(t)
	const clientID = "00000000-0000-0000-0000-00000000e102"
	ns := nodeNamespace(t, s, "batch", clientID)
	s.secretFor(t, clientID, "node-env-job", "job-env-token")

	tmpl := nodePodSpec("batch", map[string]string{
		"kvinject.io/secret-token": "node-env-job",
		"kvinject.io/env-TOKEN":    "token",
	}, "-once", "-env", "TOKEN")
	rs, err := runJob(t, s, ns, tmpl)
	if err != nil || len(rs) != 1 || rs[0].Env["TOKEN"] != "job-env-token" {
		t.Errorf("the Job's app saw %+v (%v), want TOKEN = job-env-token", rs, err)
	}
}

// A value the env file cannot carry (a single quote) stops the init agent
// with a message naming the variable, the file and the object, never the
// value; the app never starts (no container fails on a parse error).
func TestNodeEnvValueRefused(t *testing.T) {
	t.Parallel()
	s := testNode(t)
	const clientID = "00000000-0000-0000-0000-00000000e103"
	ns := nodeNamespace(t, s, "web", clientID)
	s.secretFor(t, clientID, "node-env-quote", "it's-secret")

	tmpl := nodePodSpec("web", map[string]string{
		"kvinject.io/secret-api-key": "node-env-quote",
		"kvinject.io/env-API_KEY":    "api-key",
	}, "-env", "API_KEY")
	tmpl.Spec.RestartPolicy = corev1.RestartPolicyNever
	agent := failedPod(t, s, ns, "web", tmpl)
	msg := agent.State.Terminated.Message
	for _, w := range []string{`environment variable "API_KEY"`, "single quote", "from file api-key (secret node-env-quote in vault " + s.vaultURL, "Fix:"} {
		if !strings.Contains(msg, w) {
			t.Errorf("termination message lacks %q:\n%s", w, msg)
		}
	}
	if strings.Contains(msg, "it's-secret") {
		t.Errorf("termination message holds the value:\n%s", msg)
	}
}

// kvinject.io/on-change: restart on the real node: after a rotation the
// agent publishes the new snapshot and exits with its restart code, the
// kubelet restarts every container in place, and the app, which reads only
// its environment, runs with the new value; the pod, its UID and its IP stay,
// every restart count is one, and with nothing more to change nothing more
// restarts.
func TestNodeEnvRestartOnChange(t *testing.T) {
	t.Parallel()
	s := testNode(t)
	ctx := t.Context()
	const clientID = "00000000-0000-0000-0000-00000000e104"
	const interval = 3 * time.Second
	ns := nodeNamespace(t, s, "web", clientID)
	s.secretFor(t, clientID, "node-env-rotate", "rotate-one")

	tmpl := nodePodSpec("web", map[string]string{
		"kvinject.io/secret-api-key": "node-env-rotate",
		"kvinject.io/env-API_KEY":    "api-key",
		"kvinject.io/refresh":        interval.String(),
		"kvinject.io/on-change":      "restart",
	}, "-env", "API_KEY")
	if _, err := s.c.Kube.AppsV1().Deployments(ns).Create(ctx, deployment("web", tmpl), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	before := waitPod(t, s, ns, "app=web", running)
	waitReport(t, s, ns, before.Name, time.Minute, func(r appReport) bool { return r.Env["API_KEY"] == "rotate-one" })

	s.setSecret(t, "node-env-rotate", "rotate-two")
	waitReport(t, s, ns, before.Name, 10*interval+time.Minute, func(r appReport) bool { return r.Env["API_KEY"] == "rotate-two" })
	after := waitPod(t, s, ns, "app=web", func(p *corev1.Pod) bool {
		a, app := initStatus(p, injector.AgentContainer), initStatus(p, "app")
		return running(p) && a != nil && a.Started != nil && *a.Started && app.RestartCount >= 1
	})
	if after.UID != before.UID || after.Status.PodIP != before.Status.PodIP {
		t.Errorf("the pod changed: UID %s -> %s, IP %s -> %s", before.UID, after.UID, before.Status.PodIP, after.Status.PodIP)
	}
	for _, name := range []string{injector.AgentContainer, injector.EnvCheckContainer, "app"} {
		if c := initStatus(after, name); c == nil || c.RestartCount != 1 {
			t.Errorf("container %s: %+v, want restart count 1 (one restart for one rotation)", name, c)
		}
	}
	// Three more refreshes with nothing new restart nothing.
	gets := func() int { return s.srv.Count(fakeazure.EndpointGetSecret, clientID) }
	n := gets()
	// The deadline only keeps a stuck agent from hanging the test.
	if err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 10*interval+time.Minute, true, func(context.Context) (bool, error) {
		return gets() >= n+3, nil
	}); err != nil {
		agent, _, _ := kubectl(context.Background(), s.c, nil, "logs", "-n", ns, after.Name, "-c", injector.AgentContainer)
		p, _ := s.c.Kube.CoreV1().Pods(ns).Get(context.Background(), after.Name, metav1.GetOptions{})
		b, _ := json.MarshalIndent(p.Status, "", "  ")
		t.Fatalf("%d refreshes after the restart, want 3: %v\nagent log:\n%s\npod status: %s", gets()-n, err, agent, b)
	}
	got, err := s.c.Kube.CoreV1().Pods(ns).Get(ctx, after.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if c := initStatus(got, "app"); c.RestartCount != 1 {
		t.Errorf("the app restarted again without a change: restart count %d", c.RestartCount)
	}
}

// On the package's API server, a pod that asks for environment variables
// is admitted with the fileKeyRefs as injected. Where the server lacks
// EnvFiles (before 1.35, or the gate off), kvinject denies it with its own
// reason and fix: see server_features_test.go, which runs the oldest
// supported release; `make e2e K8S_VERSION=1.33.13` runs this one there too.
func TestEnvFilesOnTheServer(t *testing.T) {
	t.Parallel()
	s := testStack(t)
	ns := testNamespace(t, s.c, nil)
	createServiceAccount(t, s, ns, "web", "00000000-0000-0000-0000-00000000d0e1")
	pod := appPod("web", "web", map[string]string{
		"kvinject.io/secret-db-password": "db-password",
		"kvinject.io/env-DB_PASSWORD":    "db-password",
	})
	got, err := s.c.Kube.CoreV1().Pods(ns).Create(t.Context(), pod, metav1.CreateOptions{})
	if s.c.Version.LessThan(version.MustParseSemantic("v1.35.0")) {
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "kvinject.io/env-DB_PASSWORD: the API server is v"+s.c.Version.String()) {
			t.Fatalf("server %s: %v, want kvinject's denial", s.c.Version, err)
		}
		return
	}
	if err != nil {
		t.Fatalf("server %s: %v", s.c.Version, err)
	}
	c := got.Spec.Containers[0]
	if len(c.Env) != 1 || c.Env[0].ValueFrom == nil || c.Env[0].ValueFrom.FileKeyRef == nil ||
		c.Env[0].ValueFrom.FileKeyRef.Key != "DB_PASSWORD" {
		t.Errorf("server %s: the app's env is %+v, want the fileKeyRef as injected", s.c.Version, c.Env)
	}
}

// kvinject.io/on-change with a hook on the pod's loopback: after a rotation
// the agent POSTs to the app, and at that call the files already hold the
// new value; the first snapshot calls nothing.
func TestNodeHookOnChange(t *testing.T) {
	t.Parallel()
	s := testNode(t)
	ctx := t.Context()
	const clientID = "00000000-0000-0000-0000-00000000e105"
	const interval = 3 * time.Second
	ns := nodeNamespace(t, s, "web", clientID)
	s.secretFor(t, clientID, "node-hook-db", "hook-one")

	tmpl := nodePodSpec("web", map[string]string{
		"kvinject.io/secret-db-password": "node-hook-db",
		"kvinject.io/refresh":            interval.String(),
		"kvinject.io/on-change":          "http://127.0.0.1:8081/reload",
	}, "-hook", "127.0.0.1:8081")
	if _, err := s.c.Kube.AppsV1().Deployments(ns).Create(ctx, deployment("web", tmpl), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, s, ns, "app=web", running)
	first := waitReport(t, s, ns, pod.Name, time.Minute, func(r appReport) bool { return r.Files["db-password"].Content == "hook-one" })
	if first.HookCalls != 0 {
		t.Errorf("the hook was called %d times before any change", first.HookCalls)
	}
	s.setSecret(t, "node-hook-db", "hook-two")
	r := waitReport(t, s, ns, pod.Name, 10*interval+time.Minute, func(r appReport) bool { return r.HookCalls > 0 })
	if r.HookCalls != 1 || r.HookSaw["db-password"] != "hook-two" {
		t.Errorf("hook calls %d, the files held %q at the call; want one call after the new value", r.HookCalls, r.HookSaw["db-password"])
	}
}
