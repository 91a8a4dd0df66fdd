package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/e2e/cluster"
	"github.com/kvinject/kvinject/e2e/fakeazure"
	"github.com/kvinject/kvinject/injector"
)

// The identity of the example's ServiceAccount (examples/deployment-all-kinds.yaml).
const (
	exampleFile = "examples/deployment-all-kinds.yaml"
	namespace   = "shop"
	saName      = "shop-web"
	clientID    = "6f1c9a52-3c3e-4c52-9f3b-2f0a4c6d8e11"
	tenantID    = "72f988bf-86f1-41af-91ab-2d7cd011db47"
	vaultName   = "shop-kv"
	agentName   = "kvinject-agent"
	failingPod  = "report"
)

type demo struct {
	o       options
	tmp     string
	out     *printer
	kubectl string // "" when kubectl is not installed

	cluster  *cluster.Cluster
	srv      *fakeazure.Server
	vaultURL string
	caFile   string
	webhook  *process
	pod      *corev1.Pod
	started  time.Time
}

// caConfigMap holds the emulator's CA in namespace shop: the webhook's
// --ca-configmap, so every agent trusts it besides its image's bundle.
const caConfigMap = "azure-ca"

func (d *demo) step1(ctx context.Context) error {
	d.started = time.Now()
	d.out.step(1, "Start a cluster with a real node, the Key Vault emulator and the webhook",
		"kvinject is a mutating admission webhook, so it needs a real kube-apiserver (with etcd) to send it pods, kube-controller-manager to turn a Deployment into pods, kube-scheduler and a node to run them: a kubelet with containerd, runc and a bridge network. Azure Key Vault and Entra ID are played by an emulator that checks tokens and RBAC like the real services. All of it runs in network namespaces the demo made, with no link to this machine's network; images are built here and imported, never pulled; nothing contacts Azure.")
	assets := os.Getenv(cluster.AssetsEnv)
	// hack/controlplane.sh builds a kubectl of the same release (no version
	// skew); without one there, any kubectl on PATH, else the demo uses the client.
	if p := filepath.Join(assets, "kubectl"); isExecutable(p) {
		d.kubectl = p
	} else if p, err := exec.LookPath("kubectl"); err == nil {
		d.kubectl = p
	}
	t := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{ControllerManager: true, Node: true, NodeUntainted: true})
	if err != nil {
		return err
	}
	d.cluster = c
	d.out.say("etcd, kube-apiserver %s, kube-controller-manager and kube-scheduler are up at %s; node %s is Ready (%s)", c.Version, c.Config.Host, cluster.NodeName, since(t))
	if err := d.importImages(ctx); err != nil {
		return err
	}
	d.out.say("imported into containerd (ctr images import): %s (make image) and %s (e2e/testapp, in place of the example's %s)", agentImage, appImage, exampleApp)

	d.caFile = filepath.Join(d.tmp, "azure-ca.pem")
	d.srv, err = fakeazure.Start(context.WithoutCancel(ctx), fakeazure.Options{
		TenantID: tenantID, CAFile: d.caFile,
		// Entra ID verifies pod tokens against the API server's own issuer
		// (OIDC discovery and JWKS), as it would for an AKS cluster.
		IssuerClient: c.IssuerHTTPClient,
		// Pods reach it on their bridge's address.
		Host: net.ParseIP(cluster.BridgeIP),
	})
	if err != nil {
		return err
	}
	if d.vaultURL, err = d.srv.AddVault(vaultName); err != nil {
		return err
	}
	if _, err := d.srv.SetSecret(vaultName, "db-password", "correct-horse-battery-staple", ""); err != nil {
		return err
	}
	if _, err := d.srv.AddCertificate(vaultName, "web-tls", fakeazure.ContentTypePFX); err != nil {
		return err
	}
	if _, err := d.srv.AddKey(vaultName, "signing-key", "RSA"); err != nil {
		return err
	}
	if _, err := d.srv.SetSecret(vaultName, "payments-api-key", "pk_live_not-for-shop-web", ""); err != nil {
		return err
	}
	d.out.say("Key Vault emulator: vault %s at %s, Entra ID at %s (tenant %s)", vaultName, d.vaultURL, d.srv.AuthorityHost(), tenantID)
	d.out.say("  seeded: secret db-password, certificate web-tls (PFX, signed by an intermediate and a root),")
	d.out.say("          key signing-key (RSA 2048), secret payments-api-key")

	if err := d.startWebhook(ctx); err != nil {
		return err
	}
	return nil
}

func (d *demo) step2(ctx context.Context) error {
	d.out.step(2, "Give the workload an identity, apply the example, see what the webhook added",
		"In Azure you would create a federated credential for the ServiceAccount and grant it roles on the vault; here the emulator gets the same. Then examples/deployment-all-kinds.yaml is applied: a ServiceAccount with its workload-identity annotations and a Deployment asking for a secret, a certificate, a key and a template. kube-controller-manager creates the pods, and the API server sends each to the webhook.")
	subject := "system:serviceaccount:" + namespace + ":" + saName
	if err := d.srv.AddFederatedCredential(clientID, d.cluster.Issuer, subject); err != nil {
		return err
	}
	for _, g := range []struct {
		role   fakeazure.Role
		object string
	}{{fakeazure.RoleSecretsUser, "db-password"}, {fakeazure.RoleSecretsUser, "web-tls"}, {fakeazure.RoleReader, "signing-key"}} {
		if err := d.srv.Grant(vaultName, clientID, g.role, g.object); err != nil {
			return err
		}
	}
	d.out.say("Entra ID: app %s trusts issuer %s for subject %s", clientID, d.cluster.Issuer, subject)
	d.out.say("Key Vault RBAC: Secrets User on db-password and web-tls, Reader (public key only) on signing-key, nothing on payments-api-key")

	// Enforcing Pod Security "restricted" shows that the injected pod (agent
	// included) passes the strictest built-in policy.
	if _, err := d.cluster.Kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: namespace, Labels: map[string]string{"pod-security.kubernetes.io/enforce": "restricted"},
	}}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create namespace %s: %w", namespace, err)
	}
	example, err := os.ReadFile(exampleFile)
	if err != nil {
		return fmt.Errorf("read %s (run the demo from the repository root): %w", exampleFile, err)
	}
	const asked = "kvinject.io/refresh: 30s"
	if !bytes.Contains(example, []byte(asked)) {
		return fmt.Errorf("%s no longer says %q; update the demo", exampleFile, asked)
	}
	refresh := "kvinject.io/refresh: " + d.o.refresh.String()
	example = bytes.Replace(example, []byte(asked), []byte(refresh), 1)
	if !bytes.Contains(example, []byte("image: "+exampleApp)) {
		return fmt.Errorf("%s no longer runs %s; update the demo", exampleFile, exampleApp)
	}
	example = bytes.Replace(example, []byte("image: "+exampleApp), []byte("image: "+appImage+"\n        imagePullPolicy: Never"), 1)
	ca, err := os.ReadFile(d.caFile)
	if err != nil {
		return err
	}
	if _, err := d.cluster.Kube.CoreV1().ConfigMaps(namespace).Create(ctx, &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: caConfigMap}, Data: map[string]string{"emulator-ca.pem": string(ca)},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	d.out.say("$ kubectl create namespace %s", namespace)
	d.out.say("$ kubectl label namespace %s pod-security.kubernetes.io/enforce=restricted    # injected pods must pass it", namespace)
	d.out.say("$ kubectl create configmap %s -n %s --from-file=emulator-ca.pem    # the agents trust the emulator's CA (--ca-configmap)", caConfigMap, namespace)
	d.out.say("$ kubectl apply -f %s    # with %q instead of 30s, so step 4 is quick, and image %s", exampleFile, refresh, appImage)
	if err := d.apply(ctx, example); err != nil {
		return err
	}

	pod, err := d.waitForPod(ctx)
	if err != nil {
		return err
	}
	d.pod = pod
	dep, err := d.cluster.Kube.AppsV1().Deployments(namespace).Get(ctx, "web", metav1.GetOptions{})
	if err != nil {
		return err
	}
	d.out.say("Deployment web → ReplicaSet → pod %s, annotated kvinject.io/status=%s", pod.Name, pod.Annotations["kvinject.io/status"])
	d.out.say("What the webhook added (the Deployment's pod template vs. the pod the API server stored;")
	d.out.say("fields the API server fills in by default are left out of both sides):")
	from, to, err := templateAndPodYAML(&dep.Spec.Template, pod)
	if err != nil {
		return err
	}
	d.out.block(unifiedDiff("template (as applied)", "pod (as admitted)", from, to, 3))
	for _, c := range pod.Spec.InitContainers {
		for _, e := range c.Env {
			if e.Name == config.EnvVar {
				var pretty bytes.Buffer
				if err := json.Indent(&pretty, []byte(e.Value), "", "  "); err == nil {
					d.out.say("The agent's configuration, env %s (object names and paths only, never a value):", config.EnvVar)
					d.out.block(pretty.String())
				}
			}
		}
	}
	replicas := 1
	if dep.Spec.Replicas != nil {
		replicas = int(*dep.Spec.Replicas)
	}
	lines, err := d.replicaReviews(ctx, pod.GenerateName, replicas)
	if err != nil {
		return err
	}
	d.out.say("The webhook's audit log, one line per review. The ServiceAccount admission plugin gives each replica its own kube-api-access-<random> volume before the webhook sees it; the agent's containers mount an empty kvinject-no-api-token directory at that token's path, so the plugin leaves them without a Kubernetes API token and the API server has no reason to call the webhook again:")
	d.out.block(strings.Join(lines, "\n"))
	return nil
}

// replicaReviews waits for the webhook's audit lines of n pods created from
// generateName and returns them, shortened to what a reader looks at.
func (d *demo) replicaReviews(ctx context.Context, generateName string, n int) ([]string, error) {
	var lines []string
	err := d.poll(ctx, 60*time.Second, fmt.Sprintf("the webhook's audit lines of %d replicas", n), func() error {
		lines = lines[:0]
		raw, err := os.ReadFile(d.webhook.logPath)
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(raw), "\n") {
			var a struct {
				Msg, Namespace, Pod, Decision string
				DryRun                        bool
				Objects                       []string
			}
			if json.Unmarshal([]byte(l), &a) != nil || a.Msg != "admission review" || a.Namespace != namespace || a.Pod != generateName || a.DryRun {
				continue
			}
			lines = append(lines, fmt.Sprintf("pod=%s decision=%s objects=%s", a.Pod, a.Decision, strings.Join(a.Objects, ",")))
		}
		if len(lines) < n {
			return fmt.Errorf("%d of %d", len(lines), n)
		}
		return nil
	})
	return lines, err
}

func (d *demo) step3(ctx context.Context) error {
	d.out.step(3, "The kubelet runs the pod",
		"kube-scheduler puts the pod on the node; the kubelet has containerd start it as the API server admitted it: the projected service-account token (audience api://AzureADTokenExchange) in the agent only, the secrets volume a tmpfs, the agent a native sidecar whose startup probe holds the app back until every file is written. The agent signs in at Entra ID with that token, reads the vault and writes the files; then the app starts and reads them.")
	t := time.Now()
	pod, err := d.waitRunning(ctx, d.pod.Name, 2*time.Minute)
	if err != nil {
		return err
	}
	d.pod = pod
	for _, v := range pod.Spec.Volumes {
		if v.Projected != nil {
			for _, s := range v.Projected.Sources {
				if t := s.ServiceAccountToken; t != nil && t.Audience != "" {
					d.out.say("token: the kubelet's TokenRequest for %s/%s bound to pod %s, audience %s, %ds → volume %s", namespace, pod.Spec.ServiceAccountName, pod.Name, t.Audience, *t.ExpirationSeconds, v.Name)
				}
			}
		}
	}
	d.out.say("%s (native sidecar) started, startup probe `kvinject-agent probe` passed; app container web running (%s after the pod was created... %s here)", agentName, since(pod.CreationTimestamp.Time), since(t))
	if err := d.getPods(ctx); err != nil {
		return err
	}
	logs, err := d.logs(ctx, pod.Name, agentName)
	if err != nil {
		return err
	}
	d.out.say("$ kubectl logs %s -c %s -n %s", pod.Name, agentName, namespace)
	d.out.block(agentLog(logs, 0))
	r, _, err := d.appReport(ctx, pod.Name)
	if err != nil {
		return err
	}
	d.out.say("what container web sees at %s (e2e/testapp logs it as JSON; here as ls -l would):", mountPath(appContainer(pod)))
	d.out.block(r.listing())
	d.out.say("the app cannot write there (%s), runs as uid %s with groups %s, and holds no Azure token", r.WriteError, strings.Fields(r.Status["Uid"])[0], r.Status["Groups"])
	return nil
}

func (d *demo) step4(ctx context.Context) error {
	d.out.step(4, "Rotate a secret and watch the app see it",
		fmt.Sprintf("Someone sets a new version of db-password in Key Vault. The agent fetches every %s (jittered by ±10%%), writes a complete new snapshot and swaps the ..data link in one rename, so the app never reads half an update. db.env, the template, follows in the same snapshot. The app's own log shows what it reads.", d.o.refresh))
	before, _, err := d.appReport(ctx, d.pod.Name)
	if err != nil {
		return err
	}
	logs, err := d.logs(ctx, d.pod.Name, agentName)
	if err != nil {
		return err
	}
	logged := len(logs)
	if _, err := d.srv.SetSecret(vaultName, "db-password", "staple-battery-horse-correct", ""); err != nil {
		return err
	}
	t := time.Now()
	d.out.say("set a new version of db-password in the emulator; following the app's log (kubectl logs %s -c web) ...", d.pod.Name)
	var after appReport
	var line string
	if err := d.poll(ctx, 3*d.o.refresh+10*time.Second, "the app's log to show the new db-password", func() error {
		r, l, err := d.appReport(ctx, d.pod.Name)
		if err != nil {
			return err
		}
		if r.Files["db-password"].Content == before.Files["db-password"].Content {
			return fmt.Errorf("db-password still %q", r.Files["db-password"].Content)
		}
		after, line = r, l
		return nil
	}); err != nil {
		return err
	}
	d.out.say("db-password changed after %s: %q → %q", since(t), before.Files["db-password"].Content, after.Files["db-password"].Content)
	d.out.say("the app's own log line, files db-password and db.env:")
	d.out.block(appLine(line, "db-password", "db.env"))
	if logs, err = d.logs(ctx, d.pod.Name, agentName); err != nil {
		return err
	}
	d.out.say("agent log of that cycle:")
	d.out.block(agentLog(logs, logged))
	return nil
}

// The environment example (examples/deployment-env-restart.yaml).
const (
	envExampleFile = "examples/deployment-env-restart.yaml"
	envExampleApp  = "registry.example/orders:1.4"
	envDeployment  = "orders"
	envSecret      = "orders-api-token"
	envVar         = "ORDERS_API_TOKEN"
)

func (d *demo) step5(ctx context.Context) error {
	d.out.step(5, "An app that reads its secret only from its environment: restart on rotation",
		fmt.Sprintf("examples/deployment-env-restart.yaml asks for %s as the variable %s (the agent's env file, through fileKeyRef) and kvinject.io/on-change: restart. A process reads its environment once, so when a refresh (every %s here) brings a new value the agent publishes it and exits with its restart code; the kubelet restarts every container of the pod in place: same pod, UID and IP, and the app starts with the new value.", envSecret, envVar, d.o.refresh))
	if _, err := d.srv.SetSecret(vaultName, envSecret, "demo-token-one", ""); err != nil {
		return err
	}
	if err := d.srv.Grant(vaultName, clientID, fakeazure.RoleSecretsUser, envSecret); err != nil {
		return err
	}
	d.out.say("seeded secret %s, Secrets User on it for app %s", envSecret, clientID)
	example, err := os.ReadFile(envExampleFile)
	if err != nil {
		return fmt.Errorf("read %s (run the demo from the repository root): %w", envExampleFile, err)
	}
	const asked = "kvinject.io/refresh: 30s"
	if !bytes.Contains(example, []byte(asked)) || !bytes.Contains(example, []byte("image: "+envExampleApp)) {
		return fmt.Errorf("%s no longer says %q and runs %s; update the demo", envExampleFile, asked, envExampleApp)
	}
	refresh := "kvinject.io/refresh: " + d.o.refresh.String()
	example = bytes.Replace(example, []byte(asked), []byte(refresh), 1)
	example = bytes.Replace(example, []byte("image: "+envExampleApp),
		[]byte("image: "+appImage+"\n        imagePullPolicy: Never\n        args: [\"-env\", \""+envVar+"\"]"), 1)
	d.out.say("$ kubectl apply -f %s    # with %q, and image %s reporting $%s", envExampleFile, refresh, appImage, envVar)
	if err := d.apply(ctx, example); err != nil {
		return err
	}
	var before *corev1.Pod
	if err := d.poll(ctx, 2*time.Minute, "a running pod of Deployment "+envDeployment, func() error {
		pods, err := d.cluster.Kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=" + envDeployment})
		if err != nil {
			return err
		}
		for i := range pods.Items {
			if s := containerStatus(&pods.Items[i], "web"); s != nil && s.State.Running != nil {
				before = &pods.Items[i]
				return nil
			}
		}
		return fmt.Errorf("%d pods, none running", len(pods.Items))
	}); err != nil {
		return err
	}
	var line string
	if err := d.poll(ctx, time.Minute, "the app to report "+envVar, func() error {
		r, l, err := d.appReport(ctx, before.Name)
		if err != nil {
			return err
		}
		if r.Env[envVar] == "" {
			return fmt.Errorf("%s not reported yet", envVar)
		}
		line = l
		return nil
	}); err != nil {
		return err
	}
	d.out.say("pod %s (UID %s, IP %s); the app's own log line, its environment:", before.Name, before.UID, before.Status.PodIP)
	d.out.block(envLine(line))

	if _, err := d.srv.SetSecret(vaultName, envSecret, "demo-token-two", ""); err != nil {
		return err
	}
	t := time.Now()
	d.out.say("set a new version of %s in the emulator; waiting for the restart in place ...", envSecret)
	var after *corev1.Pod
	if err := d.poll(ctx, 10*d.o.refresh+time.Minute, "the app to restart with the new "+envVar, func() error {
		r, l, err := d.appReport(ctx, before.Name)
		if err != nil {
			return err
		}
		if r.Env[envVar] != "demo-token-two" {
			return fmt.Errorf("%s still %q", envVar, r.Env[envVar])
		}
		p, err := d.cluster.Kube.CoreV1().Pods(namespace).Get(ctx, before.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if s := containerStatus(p, "web"); s == nil || s.RestartCount < 1 || s.State.Running == nil {
			return fmt.Errorf("container web not yet restarted and running")
		}
		after, line = p, l
		return nil
	}); err != nil {
		return err
	}
	d.out.say("restarted in place after %s; the app's new log line:", since(t))
	d.out.block(envLine(line))
	var counts []string
	for _, name := range []string{agentName, injector.EnvCheckContainer, "web"} {
		if s := containerStatus(after, name); s != nil {
			counts = append(counts, fmt.Sprintf("%s=%d", name, s.RestartCount))
		}
	}
	d.out.say("restart counts: %s", strings.Join(counts, " "))
	same := func(a, b string) string {
		if a == b {
			return "unchanged"
		}
		return "CHANGED from " + a
	}
	d.out.say("pod %s: UID %s (%s), IP %s (%s)", after.Name, after.UID, same(string(before.UID), string(after.UID)), after.Status.PodIP, same(before.Status.PodIP, after.Status.PodIP))
	return d.getPods(ctx)
}

// envLine is one of e2e/testapp's log lines shortened to its environment.
func envLine(line string) string {
	var r struct {
		Env json.RawMessage `json:"env"`
	}
	if json.Unmarshal([]byte(strings.TrimPrefix(line, reportPrefix)), &r) != nil {
		return line
	}
	return reportPrefix + `{"env":` + string(r.Env) + `,...}`
}

// containerStatus is the status of the pod's (init or regular) container name.
func containerStatus(p *corev1.Pod, name string) *corev1.ContainerStatus {
	for _, l := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for i := range l {
			if l[i].Name == name {
				return &l[i]
			}
		}
	}
	return nil
}

func (d *demo) step6(ctx context.Context) error {
	d.out.step(6, "A failure you will meet: an object the identity may not read",
		"A second pod of the same ServiceAccount asks for payments-api-key, on which the identity has no role. Without kvinject.io/refresh the agent is a plain init container: it fails at once on 403 (retrying cannot help), writes the reason to its termination message and exits non-zero, so the app never starts with a missing file. The kubelet reports it, and kubectl shows it.")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: failingPod, Namespace: namespace, Annotations: map[string]string{
			"kvinject.io/inject":                  "true",
			"kvinject.io/secret-payments-api-key": "payments-api-key",
		}},
		Spec: corev1.PodSpec{
			ServiceAccountName: saName,
			RestartPolicy:      corev1.RestartPolicyNever,
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr(true),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{Name: "report", Image: appImage, ImagePullPolicy: corev1.PullNever,
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr(false),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				}}},
		},
	}
	d.out.say("$ kubectl run report ...   # annotations kvinject.io/inject: \"true\", kvinject.io/secret-payments-api-key: payments-api-key")
	if _, err := d.cluster.Kube.CoreV1().Pods(namespace).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create pod %s: %w", failingPod, err)
	}
	var got *corev1.Pod
	if err := d.poll(ctx, 2*time.Minute, "pod "+failingPod+" to fail", func() error {
		p, err := d.cluster.Kube.CoreV1().Pods(namespace).Get(ctx, failingPod, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if p.Status.Phase != corev1.PodFailed {
			return fmt.Errorf("phase %s", p.Status.Phase)
		}
		got = p
		return nil
	}); err != nil {
		return err
	}
	for _, s := range got.Status.InitContainerStatuses {
		if t := s.State.Terminated; t != nil && s.Name == agentName {
			d.out.say("%s exited with code %d; container report never started", s.Name, t.ExitCode)
		}
	}
	if d.kubectl == "" {
		d.out.say("(kubectl is not installed; the pod status that kubectl describe pod shows:)")
		for _, s := range got.Status.InitContainerStatuses {
			if t := s.State.Terminated; t != nil {
				d.out.block(fmt.Sprintf("%s:\n  State:      Terminated\n    Reason:   %s\n    Message:  %s\n    Exit Code:    %d",
					s.Name, t.Reason, strings.ReplaceAll(t.Message, "\n", "\n  "), t.ExitCode))
			}
		}
		return nil
	}
	out, err := d.kubectlRun(ctx, nil, "get", "pod", failingPod, "-n", namespace)
	if err != nil {
		return err
	}
	d.out.say("$ kubectl get pod %s -n %s", failingPod, namespace)
	d.out.block(out)
	out, err = d.kubectlRun(ctx, nil, "describe", "pod", failingPod, "-n", namespace)
	if err != nil {
		return err
	}
	d.out.say("$ kubectl describe pod %s -n %s    (the init container's state)", failingPod, namespace)
	d.out.block(describeState(out, agentName))
	return nil
}

// shutdown is step 7: it stops everything that was started, in reverse
// order, and checks that no child process is left. It runs after an error
// and on Ctrl-C too.
func (d *demo) shutdown() {
	d.out.step(7, "Shut everything down",
		"The webhook first (it finishes in-flight reviews), the emulator, then the node (the kubelet, every container through containerd, containerd and its shims), kube-scheduler, kube-controller-manager, kube-apiserver and etcd; the mounts, cgroups and kernel settings the node changed are undone.")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if d.webhook != nil {
		if err := d.webhook.stop(ctx); err != nil {
			d.out.say("webhook: %v", err)
		} else {
			d.out.say("webhook: stopped, exit code 0")
		}
	}
	if d.srv != nil {
		d.srv.Close()
		d.out.say("emulator: stopped")
	}
	if d.cluster != nil {
		if err := d.cluster.Stop(); err != nil {
			d.out.say("cluster: %v", err)
		} else {
			d.out.say("kubelet, containerd, kube-scheduler, kube-controller-manager, kube-apiserver, etcd: stopped")
		}
	}
	if left := children(); len(left) > 0 {
		d.out.say("processes left behind: %v", left)
	} else {
		d.out.say("no process left behind (no child of pid %d in /proc)", os.Getpid())
	}
	if !d.started.IsZero() {
		d.out.say("demo took %s", since(d.started))
	}
}

func (d *demo) apply(ctx context.Context, yaml []byte) error {
	if d.kubectl != "" {
		out, err := d.kubectlRun(ctx, yaml, "apply", "-f", "-")
		if err != nil {
			return err
		}
		d.out.block(out)
		return nil
	}
	names, err := createAll(ctx, d.cluster.Client, yaml)
	if err != nil {
		return err
	}
	for _, n := range names {
		d.out.block(n + " created")
	}
	return nil
}

// kubectlRun runs kubectl against the demo cluster. Its stderr (the version
// skew warning of an older client) is shown only when it fails.
func (d *demo) kubectlRun(ctx context.Context, stdin []byte, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, d.kubectl, append([]string{"--kubeconfig", d.cluster.Kubeconfig}, args...)...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("kubectl %s: %w\n%s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// waitForPod waits for kube-controller-manager to create a pod of the
// Deployment, and reports a webhook denial if that is what stops it.
func (d *demo) waitForPod(ctx context.Context) (*corev1.Pod, error) {
	deadline := time.Now().Add(90 * time.Second)
	for {
		pods, err := d.cluster.Kube.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err == nil && len(pods.Items) > 0 {
			sort.Slice(pods.Items, func(i, j int) bool { return pods.Items[i].Name < pods.Items[j].Name })
			return &pods.Items[0], nil
		}
		if time.Now().After(deadline) {
			events, _ := d.cluster.Kube.CoreV1().Events(namespace).List(ctx, metav1.ListOptions{})
			var msgs []string
			for _, e := range events.Items {
				msgs = append(msgs, e.InvolvedObject.Kind+"/"+e.InvolvedObject.Name+": "+e.Message)
			}
			return nil, fmt.Errorf("no pod of Deployment web after 90s; events:\n%s\nkube-controller-manager log:\n%s", strings.Join(msgs, "\n"), tailString(d.cluster.ControllerManagerLog(), 4000))
		}
		if err := sleep(ctx, 200*time.Millisecond); err != nil {
			return nil, err
		}
	}
}

// startWebhook runs `kvinject webhook` on loopback with a certificate from a
// throw-away CA and registers it through the MutatingWebhookConfiguration of
// manifests/, then waits until the API server actually calls it.
func (d *demo) startWebhook(ctx context.Context) error {
	certDir := filepath.Join(d.tmp, "webhook-tls")
	caPEM, err := fakeazure.NewServingCertDir(certDir)
	if err != nil {
		return err
	}
	port, err := freePort()
	if err != nil {
		return err
	}
	health, err := freePort()
	if err != nil {
		return err
	}
	args := []string{"webhook",
		"--kubeconfig", d.cluster.Kubeconfig,
		"--host", "127.0.0.1", "--port", fmt.Sprint(port), "--cert-dir", certDir,
		"--metrics-bind-address", "0", "--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", health),
		"--agent-image", "ghcr.io/kvinject/kvinject:demo",
		// The emulator is a custom cloud: its own Entra authority, a vault URL
		// as the default vault, no instance discovery (that would call the
		// public cloud) and a Key Vault challenge resource that does not match
		// the vault's 127.0.0.1 host.
		"--vault", d.vaultURL,
		"--cloud", "Custom", "--authority-host", d.srv.AuthorityHost(), "--vault-suffix", "vault.kvinject.test",
		"--disable-instance-discovery", "--disable-challenge-resource-verification",
		// The emulator's CA, from a ConfigMap in the pod's namespace.
		"--ca-configmap", caConfigMap,
	}
	d.webhook, err = startProcess(d.o.kvinject, args, filepath.Join(d.tmp, "webhook.log"))
	if err != nil {
		return err
	}
	ready := fmt.Sprintf("http://127.0.0.1:%d/readyz", health)
	if err := d.poll(ctx, 60*time.Second, "webhook /readyz", func() error {
		if d.webhook.exited() {
			return fmt.Errorf("webhook exited:\n%s", d.webhook.log())
		}
		resp, err := http.Get(ready)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%s: %s", ready, resp.Status)
		}
		return nil
	}); err != nil {
		return err
	}
	d.out.say("webhook: %s webhook on https://127.0.0.1:%d%s (serving certificate from a throw-away CA)", filepath.Base(d.o.kvinject), port, "/mutate-pods")
	d.out.say("  defaults: --vault=%s --cloud=Custom --authority-host=%s --ca-configmap=%s", d.vaultURL, d.srv.AuthorityHost(), caConfigMap)

	mwc, source, err := d.webhookConfiguration()
	if err != nil {
		return err
	}
	url := fmt.Sprintf("https://127.0.0.1:%d/mutate-pods", port)
	for i := range mwc.Webhooks {
		mwc.Webhooks[i].ClientConfig = admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM}
	}
	// cert-manager's CA injector is not running; the caBundle is set directly.
	delete(mwc.Annotations, "cert-manager.io/inject-ca-from")
	if _, err := d.cluster.Kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create MutatingWebhookConfiguration %s: %w", mwc.Name, err)
	}
	d.out.say("registered MutatingWebhookConfiguration %q from %s: matchConditions, failurePolicy and", mwc.Name, source)
	d.out.say("  namespaceSelector as shipped; clientConfig.service → %s with the CA as caBundle", url)

	// The API server picks the configuration up asynchronously: wait until a
	// dry-run pod with kvinject.io/inject: "True" is answered by the webhook
	// (it denies any value but "true" and "false").
	return d.poll(ctx, 60*time.Second, "the API server to call the webhook", func() error {
		_, err := d.cluster.Kube.CoreV1().Pods("default").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "webhook-check", Annotations: map[string]string{"kvinject.io/inject": "True", "kvinject.io/secret-x": "x"}},
			Spec:       corev1.PodSpec{ServiceAccountName: "default", Containers: []corev1.Container{{Name: "c", Image: "registry.example/c:1"}}},
		}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil && strings.Contains(err.Error(), "kvinject:") {
			return nil
		}
		if err == nil {
			return fmt.Errorf("dry-run pod admitted without the webhook")
		}
		return err
	})
}

// webhookConfiguration is the MutatingWebhookConfiguration as `kubectl
// kustomize manifests/` renders it (manifests/webhook.yaml without kubectl).
func (d *demo) webhookConfiguration() (*admissionregistrationv1.MutatingWebhookConfiguration, string, error) {
	var rendered []byte
	source := "kubectl kustomize manifests/"
	if d.kubectl != "" {
		out, err := exec.Command(d.kubectl, "kustomize", "manifests").Output()
		if err != nil {
			return nil, "", fmt.Errorf("kubectl kustomize manifests: %w", err)
		}
		rendered = out
	} else {
		source = "manifests/webhook.yaml"
		b, err := os.ReadFile("manifests/webhook.yaml")
		if err != nil {
			return nil, "", err
		}
		rendered = b
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	found, err := findObject(rendered, "MutatingWebhookConfiguration", &mwc)
	if err != nil {
		return nil, "", fmt.Errorf("%s: %w", source, err)
	}
	if !found {
		return nil, "", fmt.Errorf("%s has no MutatingWebhookConfiguration", source)
	}
	return &mwc, source, nil
}

func (d *demo) poll(ctx context.Context, timeout time.Duration, what string, f func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := f()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("waiting for %s: %w", what, err)
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

func ptr[T any](v T) *T { return &v }

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

func since(t time.Time) string { return time.Since(t).Round(10 * time.Millisecond).String() }

func tailString(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// appContainer is the pod's first regular container.
func appContainer(p *corev1.Pod) *corev1.Container { return &p.Spec.Containers[0] }

// mountPath is where c mounts the secrets volume.
func mountPath(c *corev1.Container) string {
	for _, m := range c.VolumeMounts {
		if m.Name == "kvinject-secrets" {
			return m.MountPath
		}
	}
	return "/mnt/secrets"
}

// summarize shows a file's content in one or a few lines: text as is, PEM as
// its blocks (and a certificate chain by subjects).
func summarize(data []byte) string {
	if !bytes.Contains(data, []byte("-----BEGIN ")) {
		s := strings.TrimRight(string(data), "\n")
		if strings.Contains(s, "\n") {
			return "\n        " + strings.ReplaceAll(s, "\n", "\n        ")
		}
		return fmt.Sprintf(" %q", s)
	}
	var parts []string
	for rest := data; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type == "CERTIFICATE" {
			if c, err := x509.ParseCertificate(blk.Bytes); err == nil {
				parts = append(parts, "CERTIFICATE "+c.Subject.CommonName)
				continue
			}
		}
		parts = append(parts, blk.Type)
	}
	return " PEM: " + strings.Join(parts, ", ")
}

// agentLog renders the agent's JSON log lines from offset on, one short line each.
func agentLog(logs string, offset int) string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(logs[offset:]), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) != nil {
			if l != "" {
				out = append(out, l)
			}
			continue
		}
		line := fmt.Sprint(m["level"], " ", m["msg"])
		keys := make([]string, 0, len(m))
		for k := range m {
			if k != "time" && k != "level" && k != "msg" {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			line += fmt.Sprintf(" %s=%v", k, m[k])
		}
		out = append(out, line)
	}
	return strings.Join(out, "\n")
}

// describeState is container name's header and its State … Restart Count
// lines (state, reason, the whole message, exit code, times, readiness) from
// kubectl describe pod output.
func describeState(describe, name string) string {
	var out []string
	header, in := false, false
	for _, l := range strings.Split(describe, "\n") {
		t := strings.TrimSpace(l)
		switch {
		case !header && t == name+":":
			header = true
			out = append(out, l)
		case header && !in && strings.HasPrefix(t, "State:"):
			in = true
			out = append(out, l)
		case in && strings.HasPrefix(t, "Restart Count:"):
			return strings.Join(append(out, l), "\n")
		case in:
			out = append(out, l)
		}
	}
	return describe
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
