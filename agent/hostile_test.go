package agent_test

import (
	"encoding/base64"
	"encoding/hex"
	"io"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/kvinject/kvinject/agent"
	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/e2e/fakeazure"
)

// hostileTemplates reads the corpus shared with the injector's admission test.
func hostileTemplates(t *testing.T) (names, texts []string) {
	t.Helper()
	b, err := os.ReadFile("config/testdata/hostile-templates.txt")
	must(t, err)
	for _, entry := range strings.Split(string(b), "\n--- ")[1:] {
		name, text, _ := strings.Cut(entry, "\n")
		names, texts = append(names, name), append(texts, strings.TrimSuffix(text, "\n"))
	}
	if len(names) < 30 {
		t.Fatalf("corpus has %d entries", len(names))
	}
	return names, texts
}

// dbValue is distinctive, so that any 8 bytes of it, of its base64 or of its
// hex found in an output is a leak.
const dbValue = "Qx7vLp2Wm9KdR4tYb6NcJ3sFh8GzE5u!" // not base64

// fragments are the pieces of v the scan looks for.
func fragments(v string) []string {
	var out []string
	for _, s := range []string{v, base64.StdEncoding.EncodeToString([]byte(v)), hex.EncodeToString([]byte(v))} {
		for i := 0; i+8 <= len(s); i += 4 {
			out = append(out, s[i:i+8])
		}
	}
	return out
}

func scanFragments(t *testing.T, what string, outputs map[string]string) {
	t.Helper()
	for where, text := range outputs {
		for _, f := range fragments(dbValue) {
			if strings.Contains(text, f) {
				t.Errorf("%s: %s reveal a part of the value (%q)", what, where, f)
				break
			}
		}
	}
}

// TestHostileTemplatesRevealNoValue runs every template of the corpus, and
// templates that are allowed but hostile in size or work, through the agent
// with real values in the vault. Each must fail with an error naming the
// file and position; no output channel (the log, the returned error, the
// termination message) holds any part of a value or of its base64 or hex.
func TestHostileTemplatesRevealNoValue(t *testing.T) {
	names, texts := hostileTemplates(t)
	deep := strings.Repeat("trim (", 10001) + `secret "db-password"` + strings.Repeat(")", 10001)
	type tc struct {
		name, text string
		checked    bool   // denied before any fetch
		want       string // in the termination message
	}
	var cases []tc
	for i := range names {
		cases = append(cases, tc{names[i], texts[i], true, "app.tmpl:1:"})
	}
	cases = append(cases,
		tc{"base64 chained 60 times", `{{ secret "db-password"` + strings.Repeat(" | base64", 60) + " }}", false, "templates compute more than"},
		tc{"20 MB of output", strings.Repeat(`{{ chain "tls" }}`, 12000), false, "larger than 1048576 bytes"},
		tc{"10001 nested calls", "{{ " + deep + " }}", true, "max expression depth exceeded"},
		tc{"value that is not base64", `{{ secret "db-password" | base64decode }}`, false, "app.tmpl:1:26: base64decode: input is not valid standard base64"},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := newHarness(t)
			h.secret("db-password", dbValue)
			h.cert("tls", fakeazure.CertificateOptions{})
			cfg := h.config(0, secretFile(h, "db-password", "db-password", ""),
				config.File{Name: "tls", Mode: 0o440, Object: h.object(config.KindCert, "tls", "")},
				config.File{Name: "app.tmpl", Mode: 0o440, Template: c.text})
			err := h.run(t.Context(), agent.ModeInit, cfg, func(o *agent.Options) { o.Deadline = 20 * time.Second })
			if err == nil {
				t.Fatalf("rendered; files: %v", h.read("app.tmpl")[:20])
			}
			msg := h.termination()
			if !strings.Contains(msg, c.want) {
				t.Errorf("termination message does not contain %q:\n%s", c.want, msg)
			}
			if gets := h.srv.Count(fakeazure.EndpointGetSecret, h.clientID); c.checked && gets != 0 {
				t.Errorf("%d GETs for a template the agent must deny before fetching", gets)
			}
			if _, err := os.Lstat(h.dir + "/app.tmpl"); err == nil {
				t.Errorf("a file was written")
			}
			scanFragments(t, c.name, map[string]string{"logs": h.logs.String(), "termination message": msg, "error": err.Error()})
		})
	}
}

// TestRenderFailureInRefreshRevealsNoValue: a sidecar whose template stops
// rendering after a rotation (the new value is not base64) keeps its files
// and shows the failure in its log and metrics, with no part of the value.
func TestRenderFailureInRefreshRevealsNoValue(t *testing.T) {
	h := newHarness(t)
	h.secret("db-password", base64.StdEncoding.EncodeToString([]byte("first")))
	c := h.config(100*time.Millisecond, secretFile(h, "db-password", "db-password", ""),
		config.File{Name: "app.tmpl", Mode: 0o440, Template: `p={{ secret "db-password" | base64decode }}`})
	stop := h.start(c)
	eventually(t, "the first snapshot", 30*time.Second, func() bool { return agent.Probe(h.dir) == nil })
	h.secret("db-password", dbValue)
	eventually(t, "a failed refresh", 30*time.Second, func() bool {
		return metric(t, h, `kvinject_agent_cycles_total{result="error"}`) >= 2
	})
	if got := h.read("app.tmpl"); got != "p=first" {
		t.Errorf("app.tmpl = %q after a failed render, want the last good file", got)
	}
	lines := h.logLines("serving metrics")
	resp, err := http.Get("http://" + lines[0]["addr"].(string) + "/metrics")
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	must(t, stop())
	if !strings.Contains(h.logs.String(), "app.tmpl:1:28: base64decode: input is not valid standard base64") {
		t.Errorf("the log does not explain the failed render")
	}
	scanFragments(t, "refresh", map[string]string{"logs": h.logs.String(), "metrics": string(body)})
}
