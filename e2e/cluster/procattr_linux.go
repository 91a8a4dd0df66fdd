package cluster

import "syscall"

// procAttr puts a child in its own process group (so Stop can end it with its
// children) and has the kernel kill it if the test process dies first.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
