package main

import (
	"os"
	"syscall"
)

// procAttr keeps a terminal's Ctrl-C from reaching the child directly (the demo
// stops it in order) and has the kernel kill it if the demo dies first.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

func terminate(p *os.Process) error { return p.Signal(syscall.SIGTERM) }
