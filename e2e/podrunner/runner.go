package podrunner

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Options configure Start.
type Options struct {
	// Kube reaches the API server: reading the pod, TokenRequest, ConfigMaps,
	// status updates. Required.
	Kube kubernetes.Interface
	// Commands maps a container's command[0], a path inside its image, to a
	// binary on this machine, e.g. {"/kvinject": "/tmp/build/kvinject"}. An
	// init container whose command is not here is an error; a regular one is
	// not run (Container.Skipped).
	Commands map[string]string
	// CAFile, if set, is passed as SSL_CERT_FILE to every process: the node's
	// trust store, standing in for the public roots Azure chains to.
	CAFile string
	// Dir is the scratch root for volumes, working directories and termination
	// messages. Default: a new temporary directory that Stop removes.
	Dir string
	// Logger receives one line per container start, exit and probe result.
	// Default: discard.
	Logger *slog.Logger
}

// Pod is a pod being run.
type Pod struct {
	// Pod is the pod as read from the API server when Start began.
	Pod *corev1.Pod
	// Dir is the scratch root (see Options.Dir).
	Dir string

	o       Options
	ownsDir bool
	log     *slog.Logger
	cancel  context.CancelFunc // stops token refreshers
	wg      sync.WaitGroup     // token refreshers
	volumes map[string]string  // volume name → host directory

	refreshAfter func(ttl time.Duration) time.Duration

	mu         sync.Mutex
	init       []*Container
	containers []*Container
	phase      corev1.PodPhase
	stopped    bool
}

// Start reads the pod namespace/name from the API server, lays out its volumes
// and runs its init containers, then starts its regular containers that have a
// binary. It returns when every init container has completed (or, for a
// sidecar, passed its startup probe) and the regular containers are started
// (Phase Running), or when one init container failed (Phase Failed, with that
// container's exit code and termination message). The error is for what keeps
// the runner itself from working (no pod, unsupported volume, TokenRequest
// refused); the returned Pod must be stopped in any case when it is not nil.
func Start(ctx context.Context, o Options, namespace, name string) (*Pod, error) {
	if o.Kube == nil {
		return nil, errors.New("podrunner: Options.Kube is required")
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	pod, err := o.Kube.CoreV1().Pods(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("podrunner: read pod %s/%s: %w", namespace, name, err)
	}
	p := &Pod{Pod: pod, Dir: o.Dir, o: o, log: o.Logger.With("pod", namespace+"/"+name), volumes: map[string]string{}, phase: corev1.PodPending, refreshAfter: refreshAfter}
	if p.Dir == "" {
		if p.Dir, err = os.MkdirTemp("", "podrunner-"+name+"-"); err != nil {
			return nil, fmt.Errorf("podrunner: scratch dir: %w", err)
		}
		p.ownsDir = true
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	p.cancel = cancel
	if err := p.layOutVolumes(ctx, rctx); err != nil {
		p.Stop(context.Background())
		return nil, err
	}
	for i := range pod.Spec.InitContainers {
		c, err := p.newContainer(&pod.Spec.InitContainers[i], true)
		if err != nil {
			p.Stop(context.Background())
			return nil, err
		}
		p.mu.Lock()
		p.init = append(p.init, c)
		p.mu.Unlock()
		if c.Skipped {
			p.Stop(context.Background())
			return nil, fmt.Errorf("podrunner: init container %q: command %q has no binary in Options.Commands", c.Name, c.spec.Command)
		}
		if err := c.start(); err != nil {
			p.Stop(context.Background())
			return nil, err
		}
		ok := false
		if c.Sidecar {
			ok = c.waitStarted(ctx)
		} else {
			select {
			case <-c.done:
				ok = c.exitCode == 0
			case <-ctx.Done():
			}
		}
		if !ok {
			p.setPhase(corev1.PodFailed)
			return p, ctx.Err()
		}
	}
	for i := range pod.Spec.Containers {
		c, err := p.newContainer(&pod.Spec.Containers[i], false)
		if err != nil {
			p.Stop(context.Background())
			return nil, err
		}
		p.mu.Lock()
		p.containers = append(p.containers, c)
		p.mu.Unlock()
		if c.Skipped {
			continue
		}
		if err := c.start(); err != nil {
			p.Stop(context.Background())
			return nil, err
		}
	}
	p.setPhase(corev1.PodRunning)
	return p, nil
}

func (p *Pod) setPhase(ph corev1.PodPhase) {
	p.mu.Lock()
	p.phase = ph
	p.mu.Unlock()
}

// Phase is Running once every init container completed or started, Failed
// when one did not (see Failed).
func (p *Pod) Phase() corev1.PodPhase {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.phase
}

// Failed returns the init container that kept the pod from starting, or nil.
func (p *Pod) Failed() *Container {
	if p.Phase() != corev1.PodFailed {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.init[len(p.init)-1]
}

// Container returns the init or regular container name, or nil if it was not
// reached (an earlier init container failed) or does not exist.
func (p *Pod) Container(name string) *Container {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range append(append([]*Container{}, p.init...), p.containers...) {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// HostPath returns the host path behind path as container sees it, when path
// is inside one of the container's volumeMounts: for example where the app
// container "web" finds /mnt/secrets/db-password.
func (p *Pod) HostPath(container, path string) (string, error) {
	for _, list := range [][]corev1.Container{p.Pod.Spec.InitContainers, p.Pod.Spec.Containers} {
		for i := range list {
			if list[i].Name == container {
				if h, ok := p.mapPath(&list[i], path); ok {
					return h, nil
				}
				return "", fmt.Errorf("podrunner: %s is not inside a volumeMount of container %q", path, container)
			}
		}
	}
	return "", fmt.Errorf("podrunner: pod %s has no container %q", p.Pod.Name, container)
}

// Stop terminates every running container (SIGTERM, then SIGKILL after the
// pod's terminationGracePeriodSeconds or when ctx ends), stops refreshing
// tokens and removes the scratch root if Start created it. It is safe to call
// more than once.
func (p *Pod) Stop(ctx context.Context) error {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return nil
	}
	p.stopped = true
	// Regular containers first, then sidecars in reverse order, as kubelet.
	var order []*Container
	for i := len(p.containers) - 1; i >= 0; i-- {
		order = append(order, p.containers[i])
	}
	for i := len(p.init) - 1; i >= 0; i-- {
		order = append(order, p.init[i])
	}
	p.mu.Unlock()

	grace := 30 * time.Second
	if g := p.Pod.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	gctx, cancel := context.WithTimeout(ctx, grace)
	defer cancel()
	var errs []error
	for _, c := range order {
		if err := c.terminate(gctx); err != nil {
			errs = append(errs, err)
		}
	}
	p.cancel()
	p.wg.Wait()
	if p.ownsDir {
		if err := os.RemoveAll(p.Dir); err != nil {
			errs = append(errs, fmt.Errorf("podrunner: remove %s: %w", p.Dir, err))
		}
	}
	return errors.Join(errs...)
}

func (p *Pod) scratch(parts ...string) (string, error) {
	d := filepath.Join(append([]string{p.Dir}, parts...)...)
	if err := os.MkdirAll(d, 0o755); err != nil {
		return "", fmt.Errorf("podrunner: %w", err)
	}
	return d, nil
}
