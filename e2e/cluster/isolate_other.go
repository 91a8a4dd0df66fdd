//go:build !linux

package cluster

import (
	"context"
	"errors"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Isolate needs Linux namespaces: elsewhere the tests run without a node.
func Isolate() (code int, done bool) { return 0, false }

// Outside reports whether this process runs on the machine: always, here.
func Outside() bool { return true }

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

// EnterCommand is empty off Linux.
func EnterCommand() string { return "" }

// The node needs Linux: elsewhere Options.Node fails.

const (
	NodeAssetsEnv = "KVINJECT_NODE_ASSETS"
	NodeName      = "127.0.0.1"
	NodeTaint     = "kvinject.io/e2e-node"
	PauseImage    = "kvinject.local/pause:1"
)

var NodeToleration = corev1.Toleration{Key: NodeTaint, Operator: corev1.TolerationOpEqual, Value: "true", Effect: corev1.TaintEffectNoSchedule}

var errNoNode = errors.New("the e2e node needs Linux")

func NodeAssets() (string, error) { return "", errNoNode }

type node struct{ dir string }

func (n *node) stop(context.Context) error                { return nil }
func (n *node) ImportImage(context.Context, string) error { return errNoNode }

func nodeAPIServerArgs(*envtest.APIServer, string) error { return errNoNode }

func startNode(context.Context, *Cluster, bool, time.Duration) (*node, error) { return nil, errNoNode }
