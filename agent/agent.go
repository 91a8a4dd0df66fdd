// Package agent is what runs in every injected pod: it signs in with workload
// identity, fetches the configured Key Vault objects, renders the files and
// publishes them as one atomic snapshot (see package snapshot).
//
// Modes:
//
//   - init fetches once, at once. Transient errors (408, 429, 5xx; connection
//     refused, timeouts, a resolver failure) are retried after 1 s plus full
//     jitter over an exponential window capped at 4 s (cycle.go: backoff),
//     honouring Retry-After, until the deadline; anything else (401, 403,
//     404, AADSTS errors, an untrusted certificate, a name that does not
//     resolve, a template that does not render) fails at once.
//     On failure the reason, with what to fix, goes to the termination message
//     file, which kubectl describe pod shows.
//   - sidecar does the same first, then refreshes every Refresh (see
//     runSidecar for the schedule). A failed refresh keeps the last good
//     files untouched and waits for the next slot. With Refresh 0 it fetches
//     once and then waits for SIGTERM. SIGTERM (context cancellation) ends
//     it with success.
//   - probe (Probe) passes once a complete snapshot is published and marked
//     ready: ..data resolves and the ..ready marker exists.
//
// Logs are JSON (log/slog). Every GET produces one audit line: vault, object,
// version, client id, result. No value is ever logged or returned in an error.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"slices"
	"time"

	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/agent/keyvault"
	"github.com/kvinject/kvinject/agent/render"
	"github.com/kvinject/kvinject/agent/snapshot"
)

// Mode is how the agent runs.
type Mode string

const (
	ModeInit    Mode = "init"
	ModeSidecar Mode = "sidecar"
)

// Defaults for Options.
const (
	DefaultDeadline       = 2 * time.Minute
	DefaultTerminationLog = "/dev/termination-log"
)

// Options configure Run.
type Options struct {
	Mode Mode
	// Getenv reads the environment (KVINJECT_CONFIG and the AZURE_*
	// variables the injector sets); nil means os.Getenv.
	Getenv func(string) string
	// Deadline bounds the first fetch, retries included.
	Deadline time.Duration
	// TerminationLog receives the failure reason; empty disables it.
	TerminationLog string
	Logger         *slog.Logger
}

// Run runs the agent until it is done (init), or ctx is canceled (sidecar).
// On failure it writes the termination message and returns the error.
func Run(ctx context.Context, o Options) (err error) {
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	if o.Deadline <= 0 {
		o.Deadline = DefaultDeadline
	}
	p := &pod{deadline: o.Deadline}
	defer func() {
		if err != nil && !errors.Is(err, ErrRestart) && o.TerminationLog != "" {
			if werr := writeTermination(o.TerminationLog, p.explain(err)); werr != nil {
				o.Logger.Error("write termination message", "path", o.TerminationLog, "error", werr.Error())
			}
		}
	}()
	if o.Mode != ModeInit && o.Mode != ModeSidecar {
		return fmt.Errorf("unknown mode %q: want %q or %q", o.Mode, ModeInit, ModeSidecar)
	}
	if err := p.load(o.Getenv); err != nil {
		o.Logger.Error("invalid configuration", "error", err.Error())
		return err
	}
	a, err := newAgent(o, p)
	if err != nil {
		o.Logger.Error("invalid configuration", "error", err.Error())
		return err
	}
	if o.Mode == ModeInit {
		return a.runInit(ctx)
	}
	return a.runSidecar(ctx)
}

// ErrRestart is Run's result when a sidecar with OnChange restart published
// a new snapshot: the process exits with config.RestartExitCode. It is not a
// failure and writes no termination message.
var ErrRestart = errors.New("new snapshot published: restart the pod's containers")

// Probe reports nil once dir holds a complete, ready snapshot.
func Probe(dir string) error {
	return snapshot.Ready(dir)
}

type agent struct {
	o Options
	*pod
	log     *slog.Logger
	kv      *keyvault.Client
	writer  *snapshot.Writer
	fetches []*fetch // one per distinct object
	metrics *metrics
	limits  render.Limits
}

// fetch is one distinct object and the files that use it.
type fetch struct {
	ref   keyvault.Ref
	kind  config.Kind // of the first file, for messages
	files []string
}

// pod is what the agent was told by the injector, and what the
// termination message explains failures with.
type pod struct {
	cfg      *config.Config // nil until loaded
	id       keyvault.Identity
	deadline time.Duration
}

// load reads the configuration and identity from the environment the
// injector sets.
func (p *pod) load(getenv func(string) string) error {
	if getenv == nil {
		getenv = os.Getenv
	}
	raw := getenv(config.EnvVar)
	if raw == "" {
		return fmt.Errorf("%s is not set: the agent is configured by the kvinject webhook; run it in an injected pod", config.EnvVar)
	}
	c, err := config.Load([]byte(raw))
	if err != nil {
		return err
	}
	p.cfg = c
	if slices.ContainsFunc(c.Files, func(f config.File) bool { return f.Object != nil }) {
		if p.id, err = keyvault.IdentityFromEnv(getenv); err != nil {
			return err
		}
	}
	return nil
}

func newAgent(o Options, p *pod) (*agent, error) {
	c := p.cfg
	if err := checkFiles(c.Files); err != nil {
		return nil, err
	}
	a := &agent{o: o, pod: p, log: o.Logger, writer: &snapshot.Writer{Dir: c.Dir}, limits: render.DefaultLimits}
	byRef := map[keyvault.Ref]*fetch{}
	for _, f := range c.Files {
		if f.Object == nil {
			continue
		}
		ref, err := keyvault.RefOf(*f.Object)
		if err != nil {
			return nil, fmt.Errorf("file %s: %w", f.Name, err)
		}
		ft, ok := byRef[ref]
		if !ok {
			ft = &fetch{ref: ref, kind: f.Object.Kind}
			byRef[ref] = ft
			a.fetches = append(a.fetches, ft)
		}
		ft.files = append(ft.files, f.Name)
	}
	if fi, err := os.Stat(c.Dir); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("dir %s: not a directory the agent can write (is the volume mounted?): %v", c.Dir, err)
	}
	// A snapshot may fill half the volume: the old one stays until the swap.
	if capacity := snapshot.Capacity(c.Dir); capacity > 0 {
		a.limits.Total = int(min(int64(a.limits.Total), capacity/2))
		a.limits.File = min(a.limits.File, a.limits.Total)
	}
	if len(a.fetches) > 0 {
		kv, err := keyvault.New(c.Cloud, p.id)
		if err != nil {
			return nil, err
		}
		a.kv = kv
	}
	a.log = a.log.With("clientId", p.id.ClientID)
	return a, nil
}

func checkFiles(files []config.File) error {
	var errs []error
	seen := map[string]bool{}
	for i, f := range files {
		if err := snapshot.CheckName(f.Name); err != nil {
			errs = append(errs, fmt.Errorf("files[%d]: %w", i, err))
		}
		if seen[f.Name] {
			errs = append(errs, fmt.Errorf("files[%d]: file name %q appears twice", i, f.Name))
		}
		seen[f.Name] = true
		if f.Mode&^0o777 != 0 {
			errs = append(errs, fmt.Errorf("file %s: mode %#o: only permission bits are allowed", f.Name, uint32(f.Mode)))
		}
		if (f.Object == nil) == (f.Template == "") {
			errs = append(errs, fmt.Errorf("file %s: exactly one of object and template must be set", f.Name))
		}
	}
	if err := render.Check(files); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// first runs the first cycle at once (the app waits for it), retrying
// transient failures until the deadline.
func (a *agent) first(ctx context.Context) error {
	cctx, cancel := context.WithTimeout(ctx, a.deadline)
	defer cancel()
	if _, err := a.cycle(cctx, true, 0); err != nil {
		return err
	}
	if err := a.writer.MarkReady(); err != nil {
		return err
	}
	return nil
}

func (a *agent) runInit(ctx context.Context) error {
	if err := a.first(ctx); err != nil {
		a.log.Error("fetch failed", "error", err.Error())
		return err
	}
	a.log.Info("done", "files", len(a.cfg.Files))
	return nil
}

// runSidecar fetches at once and then refreshes on a fixed schedule:
//
//  1. The first fetch is immediate and retried until the deadline, as in
//     init: the app waits for it.
//  2. The sidecar draws its phase: the first refresh comes at
//     start + Refresh/2 + U[0, Refresh), and every later one exactly one
//     Refresh after the slot before. A fleet started at one instant thus has
//     its refreshes spread uniformly over the interval from the second cycle
//     on, and keeps them spread (no drift, no per-cycle jitter to re-bunch).
//  3. A refresh tries each object once, its fetches spaced by refreshPace
//     (at most one GET a second, all within Refresh/2), so that where
//     phases bunch the vault sees a trickle rather than bursts; the files
//     are published once, after the last. A failure keeps the last good files
//     and waits for the next slot, or for the first slot after a
//     Retry-After the vault gave, so an outage never raises the sidecar's
//     request rate above its healthy one (one GET per object per Refresh).
//  4. A cycle never runs into the next slot: it is bounded by Refresh.
//  5. With OnChange restart, a refresh that published a new snapshot ends
//     the sidecar with ErrRestart (exit RestartExitCode), and the kubelet
//     restarts the pod's containers. Only a refresh does: the first cycle
//     of a process never does, whether it wrote or found the snapshot the
//     restarted apps are about to read, so a restart cannot trigger the
//     next one, and each needs a real change in the vault seen by two
//     cycles of one process. Replicas restart when their own refresh sees
//     the change, so step 2's phases spread them over one Refresh.
//  6. With an OnChange hook, a refresh that published a new snapshot POSTs
//     to it (callHook) before the next slot; the first cycle does not (the
//     app starts after it).
func (a *agent) runSidecar(ctx context.Context) error {
	start := time.Now()
	a.metrics = newMetrics(time.Duration(a.cfg.Refresh))
	if addr := a.cfg.MetricsAddr; addr != "" {
		stop, err := a.metrics.serve(addr, a.log)
		if err != nil {
			return err
		}
		defer stop()
	}
	if err := a.first(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // SIGTERM before the first fetch finished
		}
		a.log.Error("fetch failed", "error", err.Error())
		return err
	}
	a.idle()
	interval := time.Duration(a.cfg.Refresh)
	if interval <= 0 {
		a.log.Info("fetched once; no refresh configured, waiting for termination")
		<-ctx.Done()
		a.log.Info("terminating")
		return nil
	}
	pace := refreshPace(interval, len(a.fetches))
	slot := start.Add(interval/2 + rand.N(interval))
	for {
		a.log.Debug("next fetch", "in", time.Until(slot).Round(time.Millisecond).String())
		if sleep(ctx, time.Until(slot)) != nil {
			a.log.Info("terminating")
			return nil
		}
		cctx, cancel := context.WithTimeout(ctx, min(interval, a.deadline))
		changed, err := a.cycle(cctx, false, pace)
		cancel()
		if ctx.Err() != nil {
			a.log.Info("terminating")
			return nil
		}
		if changed && a.cfg.OnChange == config.OnChangeRestart {
			a.log.Info("new snapshot published; exiting to restart the pod's containers", "exitCode", config.RestartExitCode)
			return ErrRestart
		}
		if changed && a.cfg.OnChange != "" && a.cfg.OnChange != config.OnChangeRestart {
			a.callHook(ctx, a.cfg.OnChange)
		}
		notBefore := time.Now()
		if err != nil {
			// A vault that said when to come back is not asked sooner.
			for _, fe := range fetchErrors(err) {
				if at := time.Now().Add(fe.Failure.RetryAfter); at.After(notBefore) {
					notBefore = at
				}
			}
		}
		for !slot.After(notBefore) {
			slot = slot.Add(interval)
		}
		if err != nil {
			a.log.Error("refresh failed; keeping the last good files", "error", err.Error(), "retryIn", time.Until(slot).Round(time.Millisecond).String())
		}
		a.idle()
	}
}

// idle prepares a sidecar for the wait until the next cycle: it closes the
// connections and hands the garbage of the fetch (TLS, JSON, certificate
// parsing) back to the OS now rather than whenever the scavenger gets to it.
func (a *agent) idle() {
	if a.kv != nil {
		a.kv.CloseIdleConnections()
	}
	debug.FreeOSMemory()
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
