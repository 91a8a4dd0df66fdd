package podrunner

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/kvinject/kvinject/agent/config"
)

// TerminationLogEnv is the agent's environment twin of --termination-log; the
// runner sets it to the host file behind terminationMessagePath.
const TerminationLogEnv = "KVINJECT_TERMINATION_LOG"

// maxTerminationMessage is what kubelet reads of a termination message file.
const maxTerminationMessage = 4096

// Container is one container of the pod, run as a local process.
type Container struct {
	Name string
	// Init is true for init containers, Sidecar for those with restartPolicy Always.
	Init, Sidecar bool
	// Skipped is true for a regular container whose command has no binary in
	// Options.Commands: it was not run.
	Skipped bool
	// Binary, Args and Env are what the process was started with (Env after
	// the rewrites described in the package documentation).
	Binary string
	Args   []string
	Env    []string
	// MetricsAddr is the loopback address the agent's metrics listener was
	// moved to, when KVINJECT_CONFIG asked for one.
	MetricsAddr string

	spec    *corev1.Container
	pod     *Pod
	dir     string // working directory
	termLog string // host file behind terminationMessagePath
	logs    lockedBuffer

	mu       sync.Mutex
	cmd      *exec.Cmd
	done     chan struct{}
	started  time.Time
	finished time.Time
	ready    bool
	exitCode int
	message  string
}

func (p *Pod) newContainer(spec *corev1.Container, init bool) (*Container, error) {
	c := &Container{
		Name:    spec.Name,
		Init:    init,
		Sidecar: init && spec.RestartPolicy != nil && *spec.RestartPolicy == corev1.ContainerRestartPolicyAlways,
		spec:    spec,
		pod:     p,
		done:    make(chan struct{}),
	}
	if len(spec.Command) == 0 || p.o.Commands[spec.Command[0]] == "" {
		c.Skipped = true
		return c, nil
	}
	for _, m := range spec.VolumeMounts {
		if _, ok := p.volumes[m.Name]; !ok {
			return nil, fmt.Errorf("podrunner: container %q mounts volume %q, which the runner cannot lay out (only emptyDir and projected volumes are supported)", c.Name, m.Name)
		}
	}
	var err error
	if c.dir, err = p.scratch("containers", c.Name); err != nil {
		return nil, err
	}
	c.termLog = filepath.Join(c.dir, "termination-log")
	c.Binary, c.Args = p.o.Commands[spec.Command[0]], append(append([]string{}, spec.Command[1:]...), spec.Args...)
	if c.Env, err = p.env(c, spec); err != nil {
		return nil, err
	}
	return c, nil
}

// env is the container's environment with the rewrites the package
// documentation lists.
func (p *Pod) env(c *Container, spec *corev1.Container) ([]string, error) {
	env := []string{"HOSTNAME=" + p.Pod.Name}
	for _, e := range spec.Env {
		v := e.Value
		if e.ValueFrom != nil {
			var err error
			if v, err = p.fieldRef(e); err != nil {
				return nil, fmt.Errorf("podrunner: container %q env %s: %w", c.Name, e.Name, err)
			}
		}
		if h, ok := p.mapPath(spec, v); ok {
			v = h
		}
		if e.Name == config.EnvVar {
			var err error
			if v, err = p.rewriteConfig(c, spec, v); err != nil {
				return nil, fmt.Errorf("podrunner: container %q env %s: %w", c.Name, e.Name, err)
			}
		}
		env = append(env, e.Name+"="+v)
	}
	env = append(env, TerminationLogEnv+"="+c.termLog)
	if p.o.CAFile != "" {
		env = append(env, "SSL_CERT_FILE="+p.o.CAFile)
	}
	return env, nil
}

func (p *Pod) fieldRef(e corev1.EnvVar) (string, error) {
	f := e.ValueFrom.FieldRef
	if f == nil {
		return "", errors.New("only valueFrom.fieldRef is supported")
	}
	switch f.FieldPath {
	case "metadata.name":
		return p.Pod.Name, nil
	case "metadata.namespace":
		return p.Pod.Namespace, nil
	case "metadata.uid":
		return string(p.Pod.UID), nil
	case "spec.serviceAccountName":
		return p.Pod.Spec.ServiceAccountName, nil
	}
	return "", fmt.Errorf("fieldRef %s is not supported", f.FieldPath)
}

// rewriteConfig maps the agent's dir to the host and moves its metrics
// listener to a free loopback port.
func (p *Pod) rewriteConfig(c *Container, spec *corev1.Container, v string) (string, error) {
	cfg, err := config.Load([]byte(v))
	if err != nil {
		return "", err
	}
	h, ok := p.mapPath(spec, cfg.Dir)
	if !ok {
		return "", fmt.Errorf("dir %s is not inside a volumeMount", cfg.Dir)
	}
	cfg.Dir = h
	if cfg.MetricsAddr != "" {
		if c.MetricsAddr, err = freeLoopback(); err != nil {
			return "", err
		}
		cfg.MetricsAddr = c.MetricsAddr
	}
	b, err := json.Marshal(cfg)
	return string(b), err
}

func freeLoopback() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("podrunner: free loopback port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func (c *Container) start() error {
	cmd := exec.Command(c.Binary, c.Args...)
	cmd.Env, cmd.Dir = c.Env, c.dir
	cmd.Stdout, cmd.Stderr = &c.logs, &c.logs
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("podrunner: start container %q (%s): %w", c.Name, c.Binary, err)
	}
	c.mu.Lock()
	c.cmd, c.started = cmd, time.Now()
	c.mu.Unlock()
	c.pod.log.Info("container started", "container", c.Name, "pid", cmd.Process.Pid, "args", c.Args)
	go func() {
		err := cmd.Wait()
		code := 0
		if err != nil {
			code = -1
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				code = ee.ExitCode() // -1 when killed by a signal
			}
		}
		msg := c.readTerminationMessage(code)
		c.mu.Lock()
		c.exitCode, c.message, c.finished = code, msg, time.Now()
		c.mu.Unlock()
		c.pod.log.Info("container exited", "container", c.Name, "exitCode", code)
		close(c.done)
	}()
	return nil
}

// readTerminationMessage reads the message as kubelet does: the file, capped;
// with FallbackToLogsOnError and a failure, the log tail when the file is empty.
func (c *Container) readTerminationMessage(code int) string {
	b, _ := os.ReadFile(c.termLog)
	if len(b) > maxTerminationMessage {
		b = b[:maxTerminationMessage]
	}
	if len(b) == 0 && code != 0 && c.spec.TerminationMessagePolicy == corev1.TerminationMessageFallbackToLogsOnError {
		b = c.logs.tail(80, 2048)
	}
	return string(b)
}

// waitStarted runs the startup probe until it passes (true), or the container
// exits, the probe's failureThreshold is reached or ctx ends (false). Without a
// startup probe a sidecar counts as started at once, as in kubelet.
func (c *Container) waitStarted(ctx context.Context) bool {
	pr := c.spec.StartupProbe
	if pr == nil {
		c.setReady()
		return true
	}
	if pr.Exec == nil {
		c.pod.log.Error("startup probe is not exec; treating as passed", "container", c.Name)
		c.setReady()
		return true
	}
	period := time.Duration(max(pr.PeriodSeconds, 1)) * time.Second
	if pr.PeriodSeconds == 0 {
		period = 10 * time.Second
	}
	timeout := time.Duration(max(pr.TimeoutSeconds, 1)) * time.Second
	threshold := max(int(pr.FailureThreshold), 1)
	if pr.FailureThreshold == 0 {
		threshold = 3
	}
	wait := time.Duration(pr.InitialDelaySeconds) * time.Second
	for failures := 0; failures < threshold; {
		select {
		case <-c.done:
			return false
		case <-ctx.Done():
			return false
		case <-time.After(wait):
		}
		wait = period
		err := c.probe(ctx, pr.Exec.Command, timeout)
		if err == nil {
			c.pod.log.Info("startup probe passed", "container", c.Name)
			c.setReady()
			return true
		}
		failures++
		c.pod.log.Debug("startup probe failed", "container", c.Name, "error", err)
	}
	c.pod.log.Error("startup probe failed too often; stopping the container", "container", c.Name, "failureThreshold", threshold)
	_ = c.terminate(ctx)
	return false
}

// probe runs an exec probe command the way the container runs: mapped binary,
// the container's environment and working directory.
func (c *Container) probe(ctx context.Context, command []string, timeout time.Duration) error {
	if len(command) == 0 || c.pod.o.Commands[command[0]] == "" {
		return fmt.Errorf("probe command %q has no binary in Options.Commands", command)
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(pctx, c.pod.o.Commands[command[0]], command[1:]...)
	cmd.Env, cmd.Dir = c.Env, c.dir
	cmd.SysProcAttr = sysProcAttr()
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, bytes.TrimSpace(out))
	}
	return nil
}

func (c *Container) setReady() {
	c.mu.Lock()
	c.ready = true
	c.mu.Unlock()
}

// terminate sends SIGTERM, and SIGKILL when ctx ends first.
func (c *Container) terminate(ctx context.Context) error {
	c.mu.Lock()
	cmd := c.cmd
	c.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-c.done:
		return nil
	default:
	}
	_ = signalGroup(cmd.Process, sigterm)
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
	}
	_ = signalGroup(cmd.Process, sigkill)
	<-c.done
	return fmt.Errorf("podrunner: container %q did not stop on SIGTERM in time; killed", c.Name)
}

// Done is closed when the process has exited.
func (c *Container) Done() <-chan struct{} { return c.done }

// Wait waits for the process to exit and returns its exit code.
func (c *Container) Wait(ctx context.Context) (int, error) {
	select {
	case <-c.done:
		return c.ExitCode(), nil
	case <-ctx.Done():
		return 0, fmt.Errorf("podrunner: wait for container %q: %w", c.Name, ctx.Err())
	}
}

// Exited reports whether the process has exited.
func (c *Container) Exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// ExitCode is the process's exit code (-1 when a signal killed it); 0 while
// it runs.
func (c *Container) ExitCode() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.exitCode
}

// TerminationMessage is what kubelet would put in the container's terminated
// state: the termination message file after exit.
func (c *Container) TerminationMessage() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.message
}

// Ready reports whether a sidecar's startup probe has passed.
func (c *Container) Ready() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ready
}

// Logs returns stdout and stderr so far, interleaved (kubectl logs).
func (c *Container) Logs() string { return c.logs.String() }

// status is the container's state as kubelet would report it.
func (c *Container) status() corev1.ContainerStatus {
	s := corev1.ContainerStatus{Name: c.Name, Image: c.spec.Image}
	if c.Skipped {
		s.State.Waiting = &corev1.ContainerStateWaiting{Reason: "NotRun", Message: "podrunner has no image runtime: only containers whose command maps to a local binary run"}
		return s
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		s.State.Waiting = &corev1.ContainerStateWaiting{Reason: "PodInitializing"}
		return s
	}
	s.ContainerID = fmt.Sprintf("podrunner://%d", c.cmd.Process.Pid)
	s.ImageID = s.Image
	started := true
	s.Started = &started
	if !c.finished.IsZero() {
		reason := "Completed"
		if c.exitCode != 0 {
			reason = "Error"
		}
		s.State.Terminated = &corev1.ContainerStateTerminated{
			ExitCode: int32(c.exitCode), Reason: reason, Message: c.message,
			StartedAt: metav1.NewTime(c.started), FinishedAt: metav1.NewTime(c.finished),
			ContainerID: s.ContainerID,
		}
		return s
	}
	s.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(c.started)}
	s.Ready = c.ready || !c.Init
	return s
}

// lockedBuffer is a bytes.Buffer safe for one writer and concurrent readers.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// tail returns at most the last lines lines and max bytes.
func (l *lockedBuffer) tail(lines, max int) []byte {
	s := strings.TrimRight(l.String(), "\n")
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	out := strings.Join(parts, "\n")
	if len(out) > max {
		out = out[len(out)-max:]
	}
	return []byte(out)
}

// PID is the process id, 0 before the container started.
func (c *Container) PID() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cmd == nil {
		return 0
	}
	return c.cmd.Process.Pid
}
