//go:build !linux

package main

import (
	"os"
	"syscall"
)

func procAttr() *syscall.SysProcAttr { return nil }

func terminate(p *os.Process) error { return p.Signal(os.Interrupt) }
