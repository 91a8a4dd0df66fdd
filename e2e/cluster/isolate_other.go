//go:build !linux

package cluster

// Isolate needs Linux namespaces: elsewhere the tests run without a node.
func Isolate() (code int, done bool) { return 0, false }

// InNode reports whether this process is the test inside a node's namespaces.
func InNode() bool { return false }

// NodeRunDir is this run's scratch directory; there is none off Linux.
func NodeRunDir() string { return "" }

func nodeCgroupRoot() string { return "" }

const (
	Bridge    = "kvi0"
	BridgeIP  = "198.18.0.1"
	podSubnet = "198.18.0.0/24"
)
