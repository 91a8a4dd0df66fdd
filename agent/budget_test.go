package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/kvinject/kvinject/agent"
	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/e2e/fakeazure"
)

// Key Vault budget (docs/performance.md): a vault serves 4,000 GETs per 10 s,
// so a fleet costs pods × distinct objects / interval GETs. These tests hold
// the agent to the two terms of that formula it controls: requests per cycle,
// and when the first cycle of a rollout happens.

// cycles counts completed fetch cycles in the sidecar's log.
func (h *harness) cycles() int {
	return len(h.logLines("files written")) + len(h.logLines("files unchanged"))
}

// TestBudgetOneGetPerDistinctObjectPerCycle: five files naming three distinct
// objects cost three GETs a cycle, every cycle, and the whole run costs one
// token request (the token outlives the run).
func TestBudgetOneGetPerDistinctObjectPerCycle(t *testing.T) {
	h := newHarness(t)
	h.secret("db-password", "budget-db-Qq1")
	h.secret("api-key", "budget-api-Ww2")
	h.secret("stripe", "budget-stripe-Ee3")
	c := h.config(300*time.Millisecond,
		secretFile(h, "db-password", "db-password", ""),
		secretFile(h, "db-password.copy", "db-password", ""),
		secretFile(h, "api-key", "api-key", ""),
		secretFile(h, "stripe", "stripe", ""),
		config.File{Name: "app.env", Mode: 0o440, Template: `DB={{ secret "db-password" }} API={{ secret "api-key" }}`},
	)
	const distinct = 3
	stop := h.start(c)
	const want = 5
	eventually(t, fmt.Sprintf("%d sidecar cycles", want), 60*time.Second, func() bool { return h.cycles() >= want })
	// The next cycle is at least 270ms away: stopping now never cuts one short.
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	n := h.cycles()
	gets := h.srv.Count(fakeazure.EndpointGetSecret, h.clientID)
	tokens := h.srv.Count(fakeazure.EndpointToken, h.clientID)
	challenges := h.srv.Count(fakeazure.EndpointChallenge, fakeazure.AnyClient)
	t.Logf("%d cycles: %d GETs, %d token requests, %d unauthenticated challenge requests", n, gets, tokens, challenges)
	if gets != n*distinct {
		t.Errorf("%d cycles of %d distinct objects made %d GETs, want exactly %d", n, distinct, gets, n*distinct)
	}
	if tokens != 1 {
		t.Errorf("%d token requests in a run shorter than the token's lifetime, want 1", tokens)
	}
	// The SDK learns the vault's tenant and scope from a 401 challenge to an
	// unauthenticated request: the first cycle sends one, later cycles none.
	if challenges != 1 {
		t.Errorf("%d unauthenticated challenge requests over %d cycles, want 1 (the first GET of the first cycle)", challenges, n)
	}
}

// TestBudgetFirstCycleOneChallengePerVaultClient: the first cycle's
// concurrent GETs to a vault draw one 401 challenge from it, not one each
// (the first GET goes alone until the challenge is known). The SDK keeps
// what it learned per client, and the agent has one client per vault and
// collection, so a vault read for secrets and keys is challenged twice.
func TestBudgetFirstCycleOneChallengePerVaultClient(t *testing.T) {
	h := newHarness(t)
	const other = "shop-kv-other"
	otherURL, err := h.srv.AddVault(other)
	must(t, err)
	must(t, h.srv.Grant(other, h.clientID, fakeazure.RoleSecretsUser, "*"))
	must(t, h.srv.Grant(other, h.clientID, fakeazure.RoleCryptoUser, "*"))
	const (
		secrets      = 20 // in the harness's vault
		otherSecrets = 5
		otherKeys    = 5
	)
	var files []config.File
	for i := range secrets {
		name := fmt.Sprintf("app-%02d", i)
		h.secret(name, fmt.Sprintf("challenge-%02d-Yy6", i))
		files = append(files, secretFile(h, name, name, ""))
	}
	for i := range otherSecrets {
		name, value := fmt.Sprintf("other-%d", i), fmt.Sprintf("other-challenge-%d-Uu7", i)
		v, err := h.srv.SetSecret(other, name, value, "")
		must(t, err)
		h.remember("secret "+other+"/"+name+"@"+v, value)
		files = append(files, config.File{Name: name, Mode: 0o440,
			Object: &config.Object{Vault: otherURL, Kind: config.KindSecret, Name: name}})
	}
	for i := range otherKeys {
		name := fmt.Sprintf("signing-%d", i)
		_, err := h.srv.AddKey(other, name, "EC")
		must(t, err)
		files = append(files, config.File{Name: name + ".pub", Mode: 0o444,
			Object: &config.Object{Vault: otherURL, Kind: config.KindKey, Name: name}})
	}
	if err := h.run(t.Context(), agent.ModeInit, h.config(0, files...)); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		vault    string
		ep       fakeazure.Endpoint
		clientID string
		want     int
	}{
		{vaultName, fakeazure.EndpointChallenge, fakeazure.AnyClient, 1},
		{vaultName, fakeazure.EndpointGetSecret, h.clientID, secrets},
		{other, fakeazure.EndpointChallenge, fakeazure.AnyClient, 2}, // its secrets client and its keys client
		{other, fakeazure.EndpointGetSecret, h.clientID, otherSecrets},
		{other, fakeazure.EndpointGetKey, h.clientID, otherKeys},
	} {
		if got := h.srv.CountVault(c.vault, c.ep, c.clientID); got != c.want {
			t.Errorf("vault %s: %d %s requests in the first cycle, want %d", c.vault, got, c.ep, c.want)
		}
	}
	if tokens := h.srv.Count(fakeazure.EndpointToken, h.clientID); tokens != 1 {
		t.Errorf("%d token requests, want 1 (both vaults take the same token)", tokens)
	}
}

// TestBudgetFirstFetchesSpreadOverJitterWindow starts 100 sidecars at once,
// as a rollout does, with the default start jitter (a tenth of the refresh
// interval, at most 1 s), and checks that their first requests reach Azure
// spread over that window rather than together. Each agent's first request
// is its token request, so the emulator's arrival times of token requests
// are the agents' start times after jitter; their GETs follow one sign-in
// later.
func TestBudgetFirstFetchesSpreadOverJitterWindow(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 100 agents")
	}
	const (
		agents = 100
		window = time.Second // the default: min(refresh/10, 1s) for the 2m refresh below
		bins   = 10
	)
	arrivals := &arrivalLog{}
	h := newHarnessWith(t, fakeazure.Options{CA: ca, Logger: slog.New(arrivals)})
	h.secret("db-password", "spread-Rr4")
	base := h.config(2*time.Minute, secretFile(h, "db-password", "db-password", ""))
	base.MetricsAddr = ""

	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	start := time.Now()
	for range agents {
		c := *base
		c.Dir = t.TempDir()
		env := h.env(&c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = agent.Run(ctx, agent.Options{
				Mode:   agent.ModeSidecar,
				Getenv: func(k string) string { return env[k] },
				Logger: slog.New(slog.DiscardHandler),
			})
		}()
	}
	eventually(t, "every agent's first GET", 60*time.Second, func() bool {
		return len(arrivals.times(fakeazure.EndpointGetSecret)) == agents
	})
	cancel()
	wg.Wait()

	if gets := h.srv.Count(fakeazure.EndpointGetSecret, h.clientID); gets != agents {
		t.Errorf("%d agents made %d GETs, want one each", agents, gets)
	}
	// Each agent's delay is uniform over the window, so a tenth of it
	// expects 10 first GETs and the middle 80% of them span 0.8 s. Agents
	// started without jitter would arrive together, within the time sign-in
	// takes. A busy machine only delays and smears arrivals (it serves them
	// at its own pace), so these bounds hold under load too.
	report := func(ep fakeazure.Endpoint) (peak int, p10, p90 time.Duration) {
		var ds []time.Duration
		counts := map[int]int{}
		for _, at := range arrivals.times(ep) {
			d := at.Sub(start)
			ds = append(ds, d)
			counts[int(d/(window/bins))]++
		}
		slices.Sort(ds)
		hist := make([]int, int(ds[len(ds)-1]/(window/bins))+1)
		for i := range hist {
			hist[i] = counts[i]
			peak = max(peak, counts[i])
		}
		p10, p90 = ds[len(ds)/10], ds[len(ds)*9/10]
		t.Logf("%s arrivals per %s after start: %v; p10 %s, p90 %s", ep, window/bins, hist, p10.Round(time.Millisecond), p90.Round(time.Millisecond))
		return peak, p10, p90
	}
	if n := len(arrivals.times(fakeazure.EndpointToken)); n != agents {
		t.Errorf("%d token requests from %d agents, want one each", n, agents)
	}
	report(fakeazure.EndpointToken)
	peak, p10, p90 := report(fakeazure.EndpointGetSecret)
	if peak > 40 {
		t.Errorf("%d of %d first GETs arrived within %s of each other, want them spread over the %s jitter window (≤ 40)", peak, agents, window/bins, window)
	}
	if p90-p10 < 4*window/10 {
		t.Errorf("the middle 80%% of first GETs arrived within %s, want them spread over the %s jitter window (≥ %s)", p90-p10, window, 4*window/10)
	}
}

// arrivalLog is a slog.Handler for the emulator's per-request debug lines:
// it keeps the arrival time of every request by endpoint.
type arrivalLog struct {
	mu sync.Mutex
	at map[fakeazure.Endpoint][]time.Time
}

func (l *arrivalLog) Enabled(context.Context, slog.Level) bool { return true }

func (l *arrivalLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key != "endpoint" {
			return true
		}
		l.mu.Lock()
		defer l.mu.Unlock()
		if l.at == nil {
			l.at = map[fakeazure.Endpoint][]time.Time{}
		}
		ep := fakeazure.Endpoint(a.Value.String())
		l.at[ep] = append(l.at[ep], r.Time)
		return false
	})
	return nil
}

func (l *arrivalLog) times(ep fakeazure.Endpoint) []time.Time {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]time.Time(nil), l.at[ep]...)
}

func (l *arrivalLog) WithAttrs([]slog.Attr) slog.Handler { return l }
func (l *arrivalLog) WithGroup(string) slog.Handler      { return l }
