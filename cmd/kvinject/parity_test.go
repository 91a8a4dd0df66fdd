package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/kvinject/kvinject/injector"
	"github.com/kvinject/kvinject/webhook"
)

type saLookup map[string]*corev1.ServiceAccount

func (s saLookup) ServiceAccount(_ context.Context, namespace, name string) (*corev1.ServiceAccount, error) {
	if sa, ok := s[namespace+"/"+name]; ok {
		return sa, nil
	}
	return nil, apierrors.NewNotFound(corev1.Resource("serviceaccounts"), name)
}

// TestInjectGivesTheWebhooksPods runs every golden input of the injector
// through `kvinject inject` and through the webhook's handler, both with the
// same defaults flags (the built-in ones, and a set of non-default ones), and
// requires the same pod, or a denial from both. The webhook's API server is
// the one kvinject inject assumes (injector.Newest), or, with
// --server-version and --server-feature-gates, the one they name.
func TestInjectGivesTheWebhooksPods(t *testing.T) {
	inputs, err := filepath.Glob("../../injector/testdata/golden/*.yaml")
	if err != nil || len(inputs) == 0 {
		t.Fatalf("no golden inputs: %v", err)
	}
	flagSets := map[string][]string{
		"defaults": {"--agent-image", "example.com/kvinject:1"},
		"non-default": {"--agent-image", "example.com/kvinject:2", "--agent-image-pull-policy", "Always",
			"--vault", "default-kv", "--client-id", "00000000-0000-0000-0000-0000000000c1", "--tenant-id", "contoso.example",
			"--cloud", "AzureUSGovernmentCloud", "--disable-instance-discovery", "--refresh", "5m", "--sidecar", "classic",
			"--mount-path", "/srv/kv", "--file-mode", "0400", "--agent-cpu-request", "5m", "--agent-memory-request", "",
			"--agent-cpu-limit", "1", "--agent-memory-limit", "96Mi", "--volume-size-limit", "8Mi"},
	}
	// The API server each flag set stands for: what the webhook reads.
	servers := map[string]injector.Server{
		"defaults":    {Version: injector.Newest},
		"non-default": {Version: injector.Newest},
		"old server":  {Version: "v1.33.13"},
		"gates off":   {Version: "v1.37.2", Gates: map[string]bool{"EnvFiles": false, "RestartAllContainersOnContainerExits": false}},
	}
	// Flags of kvinject inject only: the webhook reads its server instead.
	serverFlags := map[string][]string{
		"old server": {"--server-version", "v1.33.13"},
		"gates off":  {"--server-version", "v1.37.2", "--server-feature-gates", "EnvFiles=false,RestartAllContainersOnContainerExits=false"},
	}
	flagSets["old server"] = flagSets["defaults"]
	flagSets["gates off"] = flagSets["defaults"]
	denied := map[string]int{}
	defer func() {
		// env.yaml and on-change-restart.yaml at least.
		for _, set := range []string{"old server", "gates off"} {
			if denied[set] < 2 {
				t.Errorf("%s: only %d inputs were denied by both; the comparison proves little", set, denied[set])
			}
		}
	}()
	injected := 0
	defer func() {
		if injected < 2*4 {
			t.Errorf("only %d of the cases were injected; the comparison proves little", injected)
		}
	}()
	for _, in := range inputs {
		raw, err := os.ReadFile(in)
		if err != nil {
			t.Fatal(err)
		}
		docs := strings.Split(string(raw), "\n---\n")
		var pod corev1.Pod
		if err := yaml.Unmarshal([]byte(docs[0]), &pod); err != nil {
			t.Fatal(err)
		}
		sas := saLookup{}
		for _, d := range docs[1:] {
			var sa corev1.ServiceAccount
			if err := yaml.Unmarshal([]byte(d), &sa); err == nil && sa.Kind == "ServiceAccount" {
				sas[sa.Namespace+"/"+sa.Name] = &sa
			}
		}
		// The webhook needs the pod's ServiceAccount to exist; offline, one
		// without annotations stands in, as kvinject inject assumes.
		saName := pod.Spec.ServiceAccountName
		if saName == "" {
			saName = "default"
		}
		if _, ok := sas[pod.Namespace+"/"+saName]; !ok {
			sas[pod.Namespace+"/"+saName] = &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: saName, Namespace: pod.Namespace}}
		}
		for setName, args := range flagSets {
			t.Run(filepath.Base(in)+"/"+setName, func(t *testing.T) {
				var out, errOut bytes.Buffer
				cliArgs := append(append(append([]string{}, args...), serverFlags[setName]...), "-f", "-")
				code := runInject(context.Background(), "kvinject", cliArgs, strings.NewReader(string(raw)), &out, &errOut)

				fs := flag.NewFlagSet("webhook", flag.ContinueOnError)
				df := webhook.BindDefaultsFlags(fs)
				if err := fs.Parse(args); err != nil {
					t.Fatal(err)
				}
				d, err := df.Defaults()
				if err != nil {
					t.Fatal(err)
				}
				server := servers[setName]
				h := &webhook.Handler{Defaults: d, ServiceAccounts: sas, Log: slog.New(slog.DiscardHandler),
					Server: func() injector.Server { return server }}
				podJSON, _ := json.Marshal(&pod)
				body, _ := json.Marshal(&admissionv1.AdmissionReview{
					TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
					Request: &admissionv1.AdmissionRequest{UID: "u", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
						Operation: admissionv1.Create, Namespace: pod.Namespace, Object: runtime.RawExtension{Raw: podJSON}},
				})
				rec := httptest.NewRecorder()
				req := httptest.NewRequest(http.MethodPost, webhook.Path, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				h.ServeHTTP(rec, req)
				respBody, _ := io.ReadAll(rec.Body)
				var review admissionv1.AdmissionReview
				if err := json.Unmarshal(respBody, &review); err != nil || review.Response == nil {
					t.Fatalf("webhook answer %s: %v", respBody, err)
				}
				resp := review.Response
				if !resp.Allowed {
					if code != 1 {
						t.Errorf("webhook denied (%s), kvinject inject exited %d:\n%s", resp.Result.Message, code, errOut.String())
					}
					if strings.Contains(resp.Result.Message, "the API server") && strings.Contains(errOut.String(), "the API server") {
						denied[setName]++
					}
					return
				}
				if code != 0 {
					t.Fatalf("webhook allowed, kvinject inject exited %d:\n%s", code, errOut.String())
				}
				webhookPod := podJSON
				if resp.Patch != nil {
					injected++
					p, err := jsonpatch.DecodePatch(resp.Patch)
					if err != nil {
						t.Fatal(err)
					}
					if webhookPod, err = p.Apply(podJSON); err != nil {
						t.Fatal(err)
					}
				}
				var fromWebhook, fromCLI corev1.Pod
				if err := json.Unmarshal(webhookPod, &fromWebhook); err != nil {
					t.Fatal(err)
				}
				if err := yaml.Unmarshal([]byte(strings.Split(out.String(), "\n---\n")[0]), &fromCLI); err != nil {
					t.Fatal(err)
				}
				w, _ := json.MarshalIndent(&fromWebhook, "", " ")
				c, _ := json.MarshalIndent(&fromCLI, "", " ")
				if !bytes.Equal(w, c) {
					t.Errorf("kvinject inject and the webhook differ\nwebhook: %s\ninject:  %s", w, c)
				}
			})
		}
	}
}
