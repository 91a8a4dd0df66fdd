package agent

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/kvinject/kvinject/agent/config"
	"github.com/kvinject/kvinject/agent/envfile"
	"github.com/kvinject/kvinject/agent/keyvault"
	"github.com/kvinject/kvinject/agent/render"
	"github.com/kvinject/kvinject/agent/snapshot"
)

// Backoff between attempts at one object in a first fetch (backoff).
const (
	// backoffFloor: no retry comes sooner, so a 429 or 503 without
	// Retry-After (Key Vault often sends none) waits at least this long.
	backoffFloor = time.Second
	// backoffBase doubles per failed attempt up to backoffCap. The cap is
	// chosen for a storm: a throttled agent retries an object every 3 s on
	// average (1 s + U[0, 4 s]), and once the vault answers again every
	// agent's next try is at most 5 s away (docs/performance.md measures a
	// 50-agent storm).
	backoffBase = time.Second
	backoffCap  = 4 * time.Second
)

// FetchError is a failed object: the last failure after all attempts.
type FetchError struct {
	Ref      keyvault.Ref
	Kind     string
	Files    []string
	Failure  keyvault.Failure
	Attempts int
	// GaveUp is set when a retryable failure outlasted the deadline.
	GaveUp bool
}

func (e *FetchError) Error() string {
	return fmt.Sprintf("%s %s in vault %s: %s", e.Kind, objectName(e.Ref), e.Ref.Vault, failureText(e.Failure))
}

func objectName(r keyvault.Ref) string {
	if r.Version != "" {
		return r.Name + "@" + r.Version
	}
	return r.Name
}

func failureText(f keyvault.Failure) string {
	s := ""
	if f.SignIn {
		s = "sign-in failed"
	}
	if f.Status != 0 {
		if s != "" {
			s += ": "
		}
		s += fmt.Sprintf("HTTP %d", f.Status)
		if f.Code != "" {
			s += " " + f.Code
		}
	}
	if f.Message != "" {
		if s != "" {
			s += ": "
		}
		s += f.Message
	}
	return s
}

// cycle fetches every object, renders the files and publishes them. Nothing
// is written unless every object was fetched and every file rendered. With
// retry, transient failures are retried until ctx ends; without, each
// object is tried once. pace spaces the starts of the fetches (see
// refreshPace); 0 starts them all at once.
// changed reports whether the cycle published a new snapshot.
func (a *agent) cycle(ctx context.Context, retry bool, pace time.Duration) (changed bool, err error) {
	objects, err := a.fetchAll(ctx, retry, pace)
	if err == nil {
		changed, err = a.publish(objects)
	}
	a.metrics.cycle(err)
	return changed, err
}

func (a *agent) publish(objects map[string]render.Object) (bool, error) {
	files, notAfter, err := render.Files(a.cfg.Files, objects, a.limits)
	if err != nil {
		return false, err
	}
	if files, err = a.withEnvFile(files); err != nil {
		return false, err
	}
	changed, err := a.writer.Write(files)
	if err != nil {
		return false, fmt.Errorf("write files: %w", err)
	}
	a.metrics.published(a.cfg.Files, changed, notAfter)
	if changed {
		a.log.Info("files written", "files", len(files), "dir", a.cfg.Dir)
	} else {
		a.log.Debug("files unchanged")
	}
	return changed, nil
}

// errSiblingFailed ends the fetches of a cycle that has already failed.
var errSiblingFailed = errors.New("another object failed")

// fetchAll gets every distinct object once, concurrently, the i-th starting
// i·pace after the first. The first failure stops further attempts (the
// cycle fails anyway) but lets requests in flight finish, so every object
// that fails at once is reported together.
func (a *agent) fetchAll(ctx context.Context, retry bool, pace time.Duration) (map[string]render.Object, error) {
	stopCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	if a.kv != nil {
		a.kv.SignInAhead(ctx)
	}
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		sem      = make(chan struct{}, keyvault.MaxConcurrent)
		objects  = map[string]render.Object{}
		failures = make([]error, len(a.fetches)) // in config order
		failed   bool
	)
	for i, f := range a.fetches {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if sleep(stopCtx, time.Duration(i)*pace) != nil {
				return
			}
			select {
			case sem <- struct{}{}:
			case <-stopCtx.Done():
				return
			}
			defer func() { <-sem }()
			obj, err := a.fetchOne(ctx, stopCtx, f, retry)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case errors.Is(err, errSiblingFailed):
			case err != nil:
				failures[i], failed = err, true
				stop(errSiblingFailed)
			default:
				for _, name := range f.files {
					objects[name] = obj
				}
			}
		}()
	}
	wg.Wait()
	if failed {
		return nil, errors.Join(failures...)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return objects, nil
}

// fetchOne gets one object; with retry it retries transient failures until
// ctx ends or stopCtx says the cycle has failed.
func (a *agent) fetchOne(ctx, stopCtx context.Context, f *fetch, retry bool) (render.Object, error) {
	deadline, hasDeadline := ctx.Deadline()
	fe := &FetchError{Ref: f.ref, Kind: string(f.kind), Files: f.files}
	for attempt := 1; ; attempt++ {
		if stopCtx.Err() != nil {
			return render.Object{}, a.ended(stopCtx, fe, attempt-1)
		}
		start := time.Now()
		obj, version, err := a.kv.Get(ctx, f.ref)
		elapsed := time.Since(start)
		if version == "" {
			version = cmp.Or(f.ref.Version, "latest")
		}
		attrs := []any{
			"vault", f.ref.Vault, "kind", string(f.kind), "object", f.ref.Name, "version", version,
			"files", f.files, "attempt", attempt, "duration", elapsed.Round(time.Millisecond).String(),
		}
		if err == nil {
			a.metrics.fetch("success", elapsed)
			a.log.Info("fetch", append(attrs, "result", "success")...)
			return obj, nil
		}
		if ctx.Err() != nil {
			return obj, a.ended(ctx, fe, attempt-1)
		}
		fail := keyvault.Classify(err)
		result := "error"
		if fail.Retryable {
			result = "retryable_error"
		}
		a.metrics.fetch(result, elapsed)
		a.log.Warn("fetch", append(attrs, "result", result, "status", fail.Status, "code", fail.Code, "error", failureText(fail))...)
		fe.Failure, fe.Attempts = fail, attempt
		if !fail.Retryable || !retry {
			return obj, fe
		}
		wait := max(backoff(attempt), fail.RetryAfter)
		if hasDeadline && time.Now().Add(wait).After(deadline) {
			fe.GaveUp = true
			return obj, fe
		}
		if sleep(stopCtx, wait) != nil {
			return obj, a.ended(stopCtx, fe, attempt)
		}
	}
}

// refreshPace is the spacing of a refresh's fetches: at most one GET per
// second per agent, and the whole refresh within half its interval. Spacing
// them turns each sidecar's burst into a trickle, so a fleet's per-second
// rate stays near its mean even where the random phases of step 2 of
// runSidecar bunch. The price: a snapshot's objects are read up to
// (n-1)·pace apart instead of one round trip apart. Key Vault has no
// multi-object read, so separately stored objects were never read
// atomically; what must change together belongs in one object (a
// certificate holds its key).
func refreshPace(interval time.Duration, objects int) time.Duration {
	if objects < 2 {
		return 0
	}
	return min(time.Second, interval/time.Duration(2*objects))
}

// ended explains a fetch that ctx ended after the given failed attempts.
func (a *agent) ended(ctx context.Context, fe *FetchError, attempts int) error {
	cause := context.Cause(ctx)
	if !errors.Is(cause, context.DeadlineExceeded) {
		return cause // a sibling failed, or the agent is terminating
	}
	fe.GaveUp = true
	if attempts == 0 {
		host := strings.TrimSuffix(strings.TrimPrefix(fe.Ref.Vault, "https://"), "/")
		fe.Failure = keyvault.Failure{Class: keyvault.ClassTimeout, Host: host, Message: "no answer from " + host + " before the deadline", Retryable: true}
		fe.Attempts = 1
	}
	return fe
}

// backoff is the wait after the n-th failed attempt: the floor plus full
// jitter over an exponential window, floor + U[0, min(cap, base·2^(n-1))].
func backoff(n int) time.Duration {
	d := backoffBase
	for i := 1; i < n && d < backoffCap; i++ {
		d *= 2
	}
	return backoffFloor + rand.N(min(d, backoffCap)+1)
}

// withEnvFile adds config.EnvFile to a cycle's files when the pod has
// environment variables, so the variables and the files are one snapshot. A
// value the env-file format cannot carry fails the cycle, as a file that
// does not render does: nothing is published.
func (a *agent) withEnvFile(files []snapshot.File) ([]snapshot.File, error) {
	if len(a.cfg.Env) == 0 {
		return files, nil
	}
	byName := make(map[string][]byte, len(files))
	for _, f := range files {
		byName[f.Name] = f.Data
	}
	vars := make([]envfile.Var, 0, len(a.cfg.Env)+1)
	vars = append(vars, envfile.Var{Name: config.EnvCheck, Value: []byte(config.EnvCheckValue)})
	for _, e := range a.cfg.Env {
		vars = append(vars, envfile.Var{Name: e.Name, Value: byName[e.File]})
	}
	data, err := envfile.Encode(vars)
	if err != nil {
		var ee *envfile.Error
		if errors.As(err, &ee) {
			return nil, fmt.Errorf("%w, from file %s (%s)\n  Fix: store a value the env file can carry, or read it from the file instead of %s%s",
				err, a.envSource(ee.Name), a.objectOf(a.envSource(ee.Name)), envAnnotation, ee.Name)
		}
		return nil, err
	}
	// The kubelet reads it as root; the group may read it too, as the other
	// files, so that apps that read every file of the mount (.NET's
	// key-per-file, Spring's configtree) do not fail on it. It holds nothing
	// the targeted containers do not get as variables anyway.
	return append(files, snapshot.File{Name: config.EnvFile, Mode: 0o440, Data: data}), nil
}

// envAnnotation is the injector's annotation prefix for variables, for the
// fix in error messages (the agent does not import the injector).
const envAnnotation = "kvinject.io/env-"

// envSource is the file that feeds variable name.
func (a *agent) envSource(name string) string {
	for _, e := range a.cfg.Env {
		if e.Name == name {
			return e.File
		}
	}
	return ""
}

// objectOf describes what file is rendered from: an object or a template.
func (a *agent) objectOf(file string) string {
	for _, f := range a.cfg.Files {
		if f.Name != file {
			continue
		}
		if f.Object != nil {
			return fmt.Sprintf("%s %s in vault %s", f.Object.Kind, f.Object.Name, f.Object.Vault)
		}
		return "a template"
	}
	return "no file"
}
