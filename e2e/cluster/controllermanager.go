package cluster

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// controllers is every default controller except those that manage nodes or
// need signing keys the test cluster does not have (cloud controllers are no
// longer in kube-controller-manager as of 1.33). Unknown names are fatal, so
// each must exist from 1.33 on.
var controllers = strings.Join([]string{
	"*",
	"-node-ipam-controller",
	"-node-lifecycle-controller",
	"-taint-eviction-controller",
	"-persistentvolume-attach-detach-controller",
	"-serviceaccount-token-controller",
	"-certificatesigningrequest-signing-controller",
}, ",")

// controllerList is controllers, with a node also the node lifecycle
// controllers: they take the not-ready taint off the node once it is Ready.
func controllerList(withNode bool) string {
	if !withNode {
		return controllers
	}
	return strings.NewReplacer(",-node-lifecycle-controller", "", ",-taint-eviction-controller", "").Replace(controllers)
}

// controllerManager is a kube-controller-manager process in its own process group.
type controllerManager struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error
}

func startControllerManager(ctx context.Context, c *Cluster, assets string, withNode bool, timeout time.Duration) (*controllerManager, error) {
	user, err := c.Env.AddUser(envtest.User{Name: "system:kube-controller-manager", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return nil, fmt.Errorf("provision kube-controller-manager user: %w", err)
	}
	kubeconfig, err := user.KubeConfig()
	if err != nil {
		return nil, fmt.Errorf("kube-controller-manager kubeconfig: %w", err)
	}
	kubeconfigPath := filepath.Join(c.Dir, "kube-controller-manager.kubeconfig")
	caPath := filepath.Join(c.Dir, "ca.crt")
	logPath := filepath.Join(c.Dir, "kube-controller-manager.log")
	if err := os.WriteFile(kubeconfigPath, kubeconfig, 0o600); err != nil {
		return nil, fmt.Errorf("write kube-controller-manager kubeconfig: %w", err)
	}
	// Published into every namespace as kube-root-ca.crt, as in a real cluster.
	// With a node it also holds the CA of the API server's certificate for
	// the bridge address (nodeAPIServerArgs).
	rootCA := append([]byte(nil), c.Env.ControlPlane.GetAPIServer().SecureServing.CA...)
	if withNode {
		b, err := os.ReadFile(filepath.Join(NodeRunDir(), "kubelet-pki", "ca.crt"))
		if err != nil {
			return nil, err
		}
		rootCA = append(rootCA, b...)
	}
	if err := os.WriteFile(caPath, rootCA, 0o600); err != nil {
		return nil, fmt.Errorf("write API server CA: %w", err)
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create kube-controller-manager log: %w", err)
	}
	defer logFile.Close() // the child holds its own descriptor

	cmd := exec.Command(filepath.Join(assets, "kube-controller-manager"),
		"--kubeconfig="+kubeconfigPath,
		"--controllers="+controllerList(withNode),
		"--leader-elect=false",
		"--use-service-account-credentials=false",
		"--root-ca-file="+caPath,
		"--secure-port=0", // no serving: nothing to probe, no port to collide
		"--v=1",
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start kube-controller-manager: %w", err)
	}
	m := &controllerManager{cmd: cmd, logPath: logPath, exited: make(chan struct{})}
	go func() {
		m.waitErr = cmd.Wait()
		close(m.exited)
	}()

	// Ready when its controllers act: the serviceaccount controller creates
	// the default ServiceAccount of the default namespace.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, func(ctx context.Context) (bool, error) {
		select {
		case <-m.exited:
			return false, fmt.Errorf("kube-controller-manager exited: %v", m.waitErr)
		default:
		}
		_, err := c.Kube.CoreV1().ServiceAccounts("default").Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
	if err != nil {
		log := m.output()
		return nil, errors.Join(fmt.Errorf("wait for kube-controller-manager: %w\n%s", err, log), m.stop())
	}
	return m, nil
}

// stop ends the whole process group: SIGTERM, then SIGKILL after a grace period.
func (m *controllerManager) stop() error {
	pgid := m.cmd.Process.Pid
	select {
	case <-m.exited:
		return nil
	default:
	}
	_ = syscall.Kill(-pgid, syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		<-m.exited
	}
	return nil
}

// output returns the last part of the process's log.
func (m *controllerManager) output() string { return tail(m.logPath) }
