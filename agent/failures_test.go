package agent_test

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/kvinject/kvinject/agent"
	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/e2e/fakeazure"
)

// TestFailureClasses: each failure that gets no usable answer ends in the
// termination message with its own cause and Fix line, and permanent ones
// fail at once instead of after the deadline. (A certificate for another
// name and DNS failures need names other than loopback addresses: package
// keyvault and TestExplainNetworkClasses test them.)
func TestFailureClasses(t *testing.T) {
	closedPort := func() string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		must(t, err)
		defer l.Close()
		return l.Addr().String()
	}
	for _, tc := range []struct {
		name     string
		opts     func() fakeazure.Options
		change   func(h *harness, c *config.Config, env map[string]string)
		fast     bool // fails before the deadline, with one attempt
		want     []string
		deadline time.Duration
	}{
		{name: "untrusted certificate", fast: true,
			opts: func() fakeazure.Options {
				other, err := fakeazure.NewCA()
				must(t, err)
				return fakeazure.Options{CA: other}
			},
			want: []string{"is not signed by a CA the agent trusts", `issued by "CN=fakeazure test CA`, "Fix: if a TLS-inspecting proxy or a private CA signs", "kvinject.io/ca-configmap", "--ca-configmap", "SSL_CERT_DIR"}},
		{name: "vault of another tenant", fast: true,
			change: func(h *harness, c *config.Config, env map[string]string) {
				env["AZURE_TENANT_ID"] = "11111111-2222-3333-4444-555555555555"
			},
			want: []string{"the vault's challenge names tenant", "Fix: vault https://127.0.0.1:", "set kvinject.io/tenant-id"}},
		{name: "wrong authority", fast: true,
			change: func(h *harness, c *config.Config, env map[string]string) { c.Cloud.AuthorityHost = h.vaultURL },
			want:   []string{"sign-in failed: HTTP 401", "Fix: the authority host https://127.0.0.1:", "not as Entra ID does", "kvinject.io/cloud"}},
		{name: "connection refused", deadline: 3 * time.Second,
			change: func(h *harness, c *config.Config, env map[string]string) {
				c.Files[0].Object.Vault = "https://" + closedPort() + "/"
			},
			want: []string{"refused (gave up after", "Fix: nothing accepts connections at 127.0.0.1:"}},
		{name: "timeout", deadline: 2 * time.Second,
			change: func(h *harness, c *config.Config, env map[string]string) {
				h.srv.SetLatency(fakeazure.Target{}, time.Minute)
			},
			want: []string{"no answer from 127.0.0.1:", "before the deadline", "Fix: no answer from 127.0.0.1:", "egress from the pod is probably blocked"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := fakeazure.Options{CA: ca}
			if tc.opts != nil {
				opts = tc.opts()
			}
			h := newHarnessWith(t, opts)
			h.secret("s", "value-Cc5")
			c := h.config(0, secretFile(h, "s", "s", ""))
			env := h.env(c)
			if tc.change != nil {
				tc.change(h, c, env)
				for k, v := range h.env(c) {
					if k == config.EnvVar {
						env[k] = v
					}
				}
			}
			deadline := cmpOr(tc.deadline, 20*time.Second)
			start := time.Now()
			err := h.run(t.Context(), agent.ModeInit, c, func(o *agent.Options) {
				o.Deadline = deadline
				o.Getenv = func(k string) string { return env[k] }
			})
			elapsed := time.Since(start)
			if err == nil {
				t.Fatal("init succeeded")
			}
			msg := h.termination()
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("termination message lacks %q:\n%s", w, msg)
				}
			}
			if tc.fast && (elapsed > deadline/2 || strings.Contains(msg, "gave up")) {
				t.Errorf("a permanent failure took %s (deadline %s):\n%s", elapsed, deadline, msg)
			}
			if !tc.fast && !strings.Contains(msg, "deadline") {
				t.Errorf("a transient failure was not retried until the deadline:\n%s", msg)
			}
		})
	}
}

func cmpOr(d, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return d
}
