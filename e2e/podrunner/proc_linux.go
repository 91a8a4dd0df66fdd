package podrunner

import (
	"os"
	"syscall"
)

var sigterm, sigkill = syscall.SIGTERM, syscall.SIGKILL

// sysProcAttr puts each container in its own process group and kills it when
// the runner dies, so a crashed test or demo leaves no process behind.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// signalGroup signals the container's whole process group.
func signalGroup(p *os.Process, sig syscall.Signal) error {
	return syscall.Kill(-p.Pid, sig)
}
