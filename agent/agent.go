// Package agent is what runs in every injected pod: it signs in with workload
// identity, fetches the configured Key Vault objects, renders the files and
// publishes them as one atomic snapshot (see package snapshot).
//
// Modes:
//
//   - init fetches once. Transient errors (no response, 408, 429, 5xx, and a
//     sign-in that got no response) are retried with jittered exponential
//     backoff, honouring Retry-After, until the deadline; anything else (401,
//     403, 404, AADSTS errors, a template that does not render) fails at once.
//     On failure the reason, with what to fix, goes to the termination message
//     file, which kubectl describe pod shows.
//   - sidecar does the same first, then fetches again every Refresh (±10%
//     jitter). A failed cycle keeps the last good files untouched and is
//     retried sooner, backing off up to Refresh. With Refresh 0 it fetches
//     once and then waits for SIGTERM. SIGTERM (context cancellation) ends it
//     with success.
//   - probe (Probe) passes once a complete snapshot is published and marked
//     ready: ..data resolves and the ..ready marker exists.
//
// The first fetch of a sidecar waits a random delay below StartJitter (by
// default a tenth of Refresh, at most one second), so a rollout does not hit
// the vault all at once; init does not wait, because app containers wait for it.
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

	"github.com/kvinject/kvinject/agent/codepages"
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
	maxStartJitter        = time.Second
)

// Options configure Run.
type Options struct {
	Mode Mode
	// Config is read from KVINJECT_CONFIG when nil.
	Config *config.Config
	// Identity is read from the AZURE_* variables when zero.
	Identity keyvault.Identity
	// Getenv reads the environment; nil means os.Getenv.
	Getenv func(string) string
	// Deadline bounds the first fetch, retries included.
	Deadline time.Duration
	// TerminationLog receives the failure reason; empty disables it.
	TerminationLog string
	// StartJitter bounds the random delay before the first fetch. Zero means
	// the default (sidecar: Refresh/10 up to 1s; init: none); negative, none.
	StartJitter time.Duration
	Logger      *slog.Logger
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
	defer func() {
		if err != nil && o.TerminationLog != "" {
			if werr := writeTermination(o.TerminationLog, o.explain(err)); werr != nil {
				o.Logger.Error("write termination message", "path", o.TerminationLog, "error", werr.Error())
			}
		}
	}()
	if o.Mode != ModeInit && o.Mode != ModeSidecar {
		return fmt.Errorf("unknown mode %q: want %q or %q", o.Mode, ModeInit, ModeSidecar)
	}
	if err := o.load(); err != nil {
		o.Logger.Error("invalid configuration", "error", err.Error())
		return err
	}
	a, err := newAgent(o)
	if err != nil {
		o.Logger.Error("invalid configuration", "error", err.Error())
		return err
	}
	if o.Mode == ModeInit {
		return a.runInit(ctx)
	}
	return a.runSidecar(ctx)
}

// Probe reports nil once dir holds a complete, ready snapshot.
func Probe(dir string) error {
	return snapshot.Ready(dir)
}

type agent struct {
	o       Options
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

// load fills Config and Identity from the environment the injector sets.
func (o *Options) load() error {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	if o.Config == nil {
		raw := getenv(config.EnvVar)
		if raw == "" {
			return fmt.Errorf("%s is not set: the agent is configured by the kvinject webhook; run it in an injected pod", config.EnvVar)
		}
		c, err := config.Load([]byte(raw))
		if err != nil {
			return err
		}
		o.Config = c
	}
	if o.Identity == (keyvault.Identity{}) && slices.ContainsFunc(o.Config.Files, func(f config.File) bool { return f.Object != nil }) {
		id, err := keyvault.IdentityFromEnv(getenv)
		if err != nil {
			return err
		}
		o.Identity = id
	}
	return nil
}

func newAgent(o Options) (*agent, error) {
	c := o.Config
	if err := checkFiles(c.Files); err != nil {
		return nil, err
	}
	a := &agent{o: o, log: o.Logger, writer: &snapshot.Writer{Dir: c.Dir}, limits: render.DefaultLimits}
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
		kv, err := keyvault.New(c.Cloud, o.Identity)
		if err != nil {
			return nil, err
		}
		a.kv = kv
	}
	a.log = a.log.With("clientId", o.Identity.ClientID)
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

func (a *agent) startJitter() time.Duration {
	max := a.o.StartJitter
	if max == 0 && a.o.Mode == ModeSidecar {
		max = min(time.Duration(a.o.Config.Refresh)/10, maxStartJitter)
	}
	if max <= 0 {
		return 0
	}
	return rand.N(max)
}

// first runs the first cycle: jitter, then fetch with retries until the deadline.
func (a *agent) first(ctx context.Context) error {
	if err := sleep(ctx, a.startJitter()); err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, a.o.Deadline)
	defer cancel()
	if err := a.cycle(cctx); err != nil {
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
	a.log.Info("done", "files", len(a.o.Config.Files))
	return nil
}

func (a *agent) runSidecar(ctx context.Context) error {
	a.metrics = newMetrics()
	if addr := a.o.Config.MetricsAddr; addr != "" {
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
	interval := time.Duration(a.o.Config.Refresh)
	if interval <= 0 {
		a.log.Info("fetched once; no refresh configured, waiting for termination")
		<-ctx.Done()
		a.log.Info("terminating")
		return nil
	}
	next := jitter(interval)
	failures := 0
	for {
		a.log.Debug("next fetch", "in", next.String())
		if sleep(ctx, next) != nil {
			a.log.Info("terminating")
			return nil
		}
		// A cycle never runs into the next one.
		cctx, cancel := context.WithTimeout(ctx, min(interval, a.o.Deadline))
		err := a.cycle(cctx)
		cancel()
		switch {
		case ctx.Err() != nil:
			a.log.Info("terminating")
			return nil
		case err != nil:
			failures++
			next = failureBackoff(failures, interval)
			// A vault that said when to come back is not asked sooner.
			for _, fe := range fetchErrors(err) {
				next = max(next, fe.Failure.RetryAfter)
			}
			a.log.Error("refresh failed; keeping the last good files", "error", err.Error(), "failures", failures, "retryIn", next.String())
		default:
			failures = 0
			next = jitter(interval)
		}
		a.idle()
	}
}

// idle prepares a sidecar for the wait until the next cycle: it closes the
// connections, hands the garbage of the fetch (TLS, JSON, certificate
// parsing) back to the OS now rather than whenever the scavenger gets to it,
// and lets the kernel reclaim the executable's pages (package codepages).
func (a *agent) idle() {
	if a.kv != nil {
		a.kv.CloseIdleConnections()
	}
	debug.FreeOSMemory()
	if err := codepages.Release(); err != nil {
		a.log.Debug("release code pages", "error", err.Error())
	}
}

// jitter spreads d by ±10%.
func jitter(d time.Duration) time.Duration {
	return d - d/10 + rand.N(d/5+1)
}

// failureBackoff is the wait after the n-th failed cycle in a row: 5s, 10s,
// 20s … up to the interval, jittered.
func failureBackoff(n int, interval time.Duration) time.Duration {
	d := 5 * time.Second
	for i := 1; i < n && d < interval; i++ {
		d *= 2
	}
	return jitter(min(d, interval))
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
