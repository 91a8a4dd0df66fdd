//go:build !linux

package codepages

// Release is a no-op off Linux.
func Release() error { return nil }
