//go:build !linux

package podrunner

import (
	"os"
	"syscall"
)

var sigterm, sigkill os.Signal = syscall.SIGTERM, os.Kill

func sysProcAttr() *syscall.SysProcAttr { return nil }

func signalGroup(p *os.Process, sig os.Signal) error { return p.Signal(sig) }
