package agent_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
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

// TestBudgetRefreshPhasesSpread: 100 sidecars started at one instant fetch
// at once (apps wait for that), then refresh on phases spread uniformly over
// the interval: from the second cycle on, no tenth of the interval carries
// much more than a tenth of the fleet's GETs. Fleets in step would put all
// 100 GETs of a cycle into one tenth. (make bench measures the same with 5
// objects and 1-s bins: docs/performance.md.)
func TestBudgetRefreshPhasesSpread(t *testing.T) {
	if testing.Short() {
		t.Skip("starts 100 agents")
	}
	const (
		agents   = 100
		interval = 4 * time.Second
		bins     = 10
		cycles   = 3 // the first fetch and two refreshes
	)
	arrivals := &arrivalLog{}
	h := newHarnessWith(t, fakeazure.Options{CA: ca, Logger: slog.New(arrivals)})
	h.secret("db-password", "spread-Rr4")
	base := h.config(interval, secretFile(h, "db-password", "db-password", ""))
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
	eventually(t, "three GETs per agent", 60*time.Second, func() bool {
		return len(arrivals.times(fakeazure.EndpointGetSecret)) >= cycles*agents
	})
	cancel()
	wg.Wait()

	gets := arrivals.times(fakeazure.EndpointGetSecret)
	slices.SortFunc(gets, func(a, b time.Time) int { return a.Compare(b) })
	// The first refresh is due Refresh/2 after the start at the earliest;
	// on a loaded machine the first GETs may still be coming then.
	refreshes := gets[agents:]
	if n := len(arrivals.times(fakeazure.EndpointToken)); n != agents {
		t.Errorf("%d token requests from %d agents, want one each", n, agents)
	}
	// Refreshes by phase: where in the interval (from the start) each fell.
	hist := make([]int, bins)
	for _, at := range refreshes {
		hist[int(at.Sub(start)%interval*bins/interval)]++
	}
	peak, mean := slices.Max(hist), float64(len(refreshes))/bins
	t.Logf("refresh GETs by phase (tenths of %s): %v; peak/mean %.2f", interval, hist, float64(peak)/mean)
	// A uniform phase puts about mean = 10-20 GETs in each tenth; 3x the mean
	// is far above chance and far below a fleet in step.
	if float64(peak) > 3*mean {
		t.Errorf("peak tenth of the interval has %d refresh GETs, mean %.1f: the fleet is in step", peak, mean)
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

// TestRefreshPacesFetches: a refresh spaces its fetches (at most one GET a
// second, all within half the interval) while the first fetch asks for
// every object at once, and the refresh still publishes one snapshot.
func TestRefreshPacesFetches(t *testing.T) {
	const (
		interval = 4 * time.Second
		objects  = 4
		pace     = interval / (2 * objects) // 500 ms, under the 1-s cap
	)
	arrivals := &arrivalLog{}
	h := newHarnessWith(t, fakeazure.Options{CA: ca, Logger: slog.New(arrivals)})
	var files []config.File
	for i := range objects {
		name := fmt.Sprintf("paced-%d", i)
		h.secret(name, "value-Pp"+strconv.Itoa(i))
		files = append(files, secretFile(h, name, name, ""))
	}
	stop := h.start(h.config(interval, files...))
	eventually(t, "one refresh", 30*time.Second, func() bool {
		return len(arrivals.times(fakeazure.EndpointGetSecret)) >= 2*objects
	})
	must(t, stop())
	gets := arrivals.times(fakeazure.EndpointGetSecret)
	slices.SortFunc(gets, func(a, b time.Time) int { return a.Compare(b) })
	first, refresh := gets[:objects], gets[objects:2*objects]
	spread := func(ts []time.Time) time.Duration { return ts[len(ts)-1].Sub(ts[0]) }
	t.Logf("first fetch spread %s, refresh spread %s (paced %s apart)", spread(first), spread(refresh), pace)
	// The starts are (objects-1)·pace apart; one pace absorbs a slow first GET.
	if got, want := spread(refresh), (objects-2)*pace; got < want {
		t.Errorf("a refresh's %d GETs came within %s, want them paced over at least %s", objects, got, want)
	}
	if got := spread(first); got >= (objects-2)*pace {
		t.Errorf("the first fetch's %d GETs came over %s: the app waits on it, it must not be paced", objects, got)
	}
	if n := len(h.logLines("files written")); n != 1 {
		t.Errorf("%d snapshots written, want the first only (the refresh found nothing new)", n)
	}
}
