package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// The node runs inside namespaces the test run creates: a network namespace
// with no link to the machine's (only lo, and the pods' bridge inside it), a
// mount namespace (every mount the kubelet, containerd and runc make dies with
// it) and a PID namespace (every process, shims included, dies with it).
//
// Isolate gives a test binary (or the demo) that shape, in three roles named
// by roleEnv:
//
//  1. outer (unset): on the host. Downloads the modules the tests read at
//     run time (cert-manager's CRDs), cleans what killed earlier runs left that
//     namespaces do not take away (cgroups, kernel sysctls the kubelet changed,
//     scratch dirs), then runs this same binary as the init of new namespaces
//     (util-linux unshare), waits, and cleans the same things for this run.
//  2. init: PID 1 of the namespaces. Brings lo up, creates the pods' bridge,
//     puts tmpfs over the two paths the kubelet and containerd hardcode, runs
//     the binary again as the test and reaps every orphan (shims double-fork)
//     until the test exits, whose status it returns.
//  3. test: runs the tests with the node (NodeRunDir says where it lives).

const (
	roleEnv = "KVINJECT_NODE_ROLE"
	// runEnv carries the outer process's PID: it names the run's directory
	// and cgroup, so a later run can tell whether their owner still lives.
	runEnv = "KVINJECT_NODE_RUN"
	// runPrefix starts the name of each run's scratch dir and cgroup root.
	runPrefix = "kvinject-node-"
	// nsenterFile, in the run's directory, holds the PID that
	// `nsenter --target` needs to enter the run's namespaces.
	nsenterFile = "nsenter-pid"
	// Bridge is the pods' bridge inside the run's network namespace and
	// BridgeIP its address: the one pods reach the test process on (the
	// emulator listens there). 198.18.0.0/15 is the benchmarking range
	// (RFC 2544), unused anywhere else; nothing routes out of the namespace.
	Bridge    = "kvi0"
	BridgeIP  = "198.18.0.1"
	podSubnet = "198.18.0.0/24"
)

// hardcoded are the paths outside our directories that the kubelet,
// containerd and libcni (its result cache) use whatever their flags say; init covers each with a tmpfs in
// the mount namespace (the empty directory itself is left on the host).
var hardcoded = []string{"/var/lib/kubelet", "/run/containerd", "/var/lib/cni"}

// Outside reports whether this process runs on the machine, not (as init or
// test) inside namespaces Isolate made: the place for downloads and builds.
func Outside() bool { return os.Getenv(roleEnv) == "" }

// InNode reports whether this process is the test inside a node's namespaces.
func InNode() bool { return os.Getenv(roleEnv) == "test" }

// NodeRunDir is this run's scratch directory (containerd, kubelet, logs).
func NodeRunDir() string { return filepath.Join(os.TempDir(), runPrefix+os.Getenv(runEnv)) }

// EnterCommand is the command line that runs a command (kubectl, say)
// inside this run's network and mount namespaces from a shell on the machine.
func EnterCommand() string {
	b, err := os.ReadFile(filepath.Join(NodeRunDir(), nsenterFile))
	if err != nil {
		return ""
	}
	return "nsenter --target " + strings.TrimSpace(string(b)) + " --net --mount --"
}

// nodeCgroupRoot is the kubelet's cgroupRoot for this run.
func nodeCgroupRoot() string { return "/" + runPrefix + os.Getenv(runEnv) }

// Isolate runs the calling binary inside a node's namespaces (see above).
// done=false means: go on, in this process (either this is the test inside
// the namespaces, or the node cannot run here, see NodeAssets; the tests
// needing a node then skip or fail). done=true means the binary ran inside
// and exited with code: exit with it.
func Isolate() (code int, done bool) {
	switch os.Getenv(roleEnv) {
	case "test":
		return 0, false
	case "init":
		return initNamespaces(), true
	}
	if _, err := NodeAssets(); err != nil || os.Getuid() != 0 {
		return 0, false
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "isolate: %v\n", err)
		return 1, true
	}
	// Downloads first: nothing inside reaches the module proxy.
	if _, err := CertManagerCRDDir(context.Background()); err != nil {
		fmt.Fprintf(os.Stderr, "isolate: %v\n", err)
	}
	cleanLeftovers()
	run := strconv.Itoa(os.Getpid())
	cmd := exec.Command("unshare", append([]string{"--net", "--mount", "--pid", "--fork", "--kill-child",
		"--mount-proc", "--propagation", "private", "--", self}, os.Args[1:]...)...)
	cmd.Env = append(os.Environ(), roleEnv+"=init", runEnv+"="+run)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	// If this process dies, unshare dies, and with --kill-child the
	// namespaces' init and so everything in them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	// unshare does not pass signals on: hand SIGINT and SIGTERM to the
	// namespaces' init (unshare's child), which hands them to the test.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "isolate: run in new namespaces (unshare from util-linux): %v\n", err)
		return 1, true
	}
	// How to reach the run's namespaces from the machine (nsenter --target):
	// unshare itself is in the new network and mount namespaces.
	_ = os.MkdirAll(filepath.Join(os.TempDir(), runPrefix+run), 0o755)
	_ = os.WriteFile(filepath.Join(os.TempDir(), runPrefix+run, nsenterFile), []byte(strconv.Itoa(cmd.Process.Pid)), 0o644)
	go func() {
		for sig := range sigs {
			b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", cmd.Process.Pid, cmd.Process.Pid))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, sig.(syscall.Signal))
				}
			}
		}
	}()
	err = cmd.Wait()
	cleanRun(run)
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return exit.ExitCode(), true
	case err != nil:
		fmt.Fprintf(os.Stderr, "isolate: run in new namespaces (unshare from util-linux): %v\n", err)
		return 1, true
	}
	return 0, true
}

// initNamespaces is PID 1 of the namespaces.
func initNamespaces() int {
	setup := [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"ip", "link", "add", Bridge, "type", "bridge"},
		{"ip", "addr", "add", BridgeIP + "/24", "dev", Bridge},
		{"ip", "link", "set", Bridge, "up"},
	}
	for _, p := range hardcoded {
		setup = append(setup, []string{"mkdir", "-p", p}, []string{"mount", "-t", "tmpfs", "-o", "mode=0755", "tmpfs", p})
	}
	for _, args := range setup {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "isolate: %s: %v\n%s", strings.Join(args, " "), err, out)
			return 1
		}
	}
	cmd := exec.Command("/proc/self/exe", os.Args[1:]...)
	cmd.Env = append(os.Environ(), roleEnv+"=test")
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "isolate: start %s: %v\n", os.Args[0], err)
		return 1
	}
	go func() {
		for s := range sigs {
			_ = cmd.Process.Signal(s)
		}
	}()
	// Reap every child; the test's status ends the loop (and, as PID 1
	// exits, the kernel kills whatever is left in the namespace).
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, syscall.EINTR) {
			continue
		}
		if err != nil {
			fmt.Fprintf(os.Stderr, "isolate: wait: %v\n", err)
			return 1
		}
		if pid == cmd.Process.Pid {
			if ws.Signaled() {
				return 128 + int(ws.Signal())
			}
			return ws.ExitStatus()
		}
	}
}

// cleanLeftovers cleans up after runs whose outer process is gone.
func cleanLeftovers() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), runPrefix+"*"))
	for _, d := range dirs {
		run := strings.TrimPrefix(filepath.Base(d), runPrefix)
		pid, err := strconv.Atoi(run)
		if err != nil || syscall.Kill(pid, 0) == nil || pid == os.Getpid() {
			continue // not ours, or its owner lives
		}
		fmt.Fprintf(os.Stderr, "isolate: cleaning up after run %s (killed?)\n", run)
		cleanRun(run)
	}
}

// cleanRun restores the sysctls the kubelet changed, removes the run's
// cgroups (deepest first; their processes died with the PID namespace) and
// its directory (its mounts died with the mount namespace).
func cleanRun(run string) {
	dir := filepath.Join(os.TempDir(), runPrefix+run)
	restoreSysctls(filepath.Join(dir, sysctlFile))
	roots, _ := filepath.Glob("/sys/fs/cgroup/*/" + runPrefix + run)
	for _, r := range roots {
		if err := removeCgroup(r); err != nil {
			fmt.Fprintf(os.Stderr, "isolate: %v\n", err)
		}
	}
	if err := os.RemoveAll(dir); err != nil {
		fmt.Fprintf(os.Stderr, "isolate: remove %s: %v\n", dir, err)
	}
}

// removeCgroup removes a cgroup directory tree, children first.
func removeCgroup(dir string) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	for _, e := range entries {
		if e.IsDir() {
			if err := removeCgroup(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	if err := syscall.Rmdir(dir); err != nil && !errors.Is(err, syscall.ENOENT) {
		return fmt.Errorf("remove cgroup %s: %w", dir, err)
	}
	return nil
}
