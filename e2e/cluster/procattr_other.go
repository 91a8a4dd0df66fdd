//go:build unix && !linux

package cluster

import "syscall"

// procAttr puts a child in its own process group so Stop can end it with its children.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}
