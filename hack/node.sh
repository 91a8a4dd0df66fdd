#!/usr/bin/env bash
# Makes a real Kubernetes node possible on this machine for one release and
# prints the directory holding kubelet and kube-scheduler on stdout (progress
# goes to stderr):
#
#   KVINJECT_NODE_ASSETS=$(hack/node.sh 1.37.2) go test ./e2e/...
#
# 1. kubelet and kube-scheduler come from the Go module proxy, built in the
#    throw-away module hack/controlplane.sh generates for the same release (so
#    they share its module download and build cache) under its lock, into
#    ~/.cache/kvinject/node/v<version>.
# 2. containerd, runc, the CNI plugins (bridge, host-local, loopback), ip and
#    unshare come from Debian: hack/debian.sh installs what is missing (root
#    only; the e2e harness needs root anyway). Debian bookworm ships containerd 1.6, which the
#    kubelet drives through CRI v1 (see ../../shared notes: it pairs).
# Idempotent: a complete build leaves a stamp file; later runs only check it.
set -euo pipefail

K8S_VERSION="${1:-1.37.2}"
K8S_VERSION="${K8S_VERSION#v}"
if [[ ! "$K8S_VERSION" =~ ^1\.([0-9]+)\.([0-9]+)$ ]]; then
	echo "node.sh: Kubernetes version must look like 1.37.2, got '$1'" >&2
	exit 2
fi
K8S_MINOR="${BASH_REMATCH[1]}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="${KVINJECT_CACHE:-$HOME/.cache/kvinject}"
OUT="$ROOT/node/v$K8S_VERSION"
STAMP="$OUT/.stamp"
BINARIES=(kubelet kube-scheduler)
GO="${GO:-go}"
# Debian package => a file it installs that the node needs.
# (ip and unshare set up the run's namespaces: e2e/cluster.Isolate.)
PACKAGES=(containerd:/usr/bin/containerd runc:/usr/sbin/runc
	containernetworking-plugins:/usr/lib/cni/bridge iproute2:/usr/sbin/ip util-linux:/usr/bin/unshare)

log() { echo "node: $*" >&2; }

# --- Debian packages --------------------------------------------------------
"$HERE/debian.sh" "${PACKAGES[@]}"

# --- kubelet, kube-scheduler ------------------------------------------------
complete() {
	[[ -f "$STAMP" ]] && grep -qx "kubernetes v$K8S_VERSION" "$STAMP" || return 1
	local b
	for b in "${BINARIES[@]}"; do [[ -x "$OUT/$b" ]] || return 1; done
}
if complete; then
	echo "$OUT"
	exit 0
fi

# The control plane's build writes the throw-away module (and holds the lock
# while it does); build after it, in that module, under the same lock.
"$HERE/controlplane.sh" "$K8S_VERSION" >/dev/null
CP="$ROOT/controlplane"
k8s_src="$CP/src/v$K8S_VERSION/kubernetes"
[[ -f "$k8s_src/go.mod" ]] || { log "no throw-away module at $k8s_src (hack/controlplane.sh changed?)"; exit 1; }
mkdir -p "$OUT"
exec 9>"$CP/.lock-v$K8S_VERSION"
if ! flock -n 9; then
	log "another build of v$K8S_VERSION is running; waiting for it"
	flock 9
fi
if complete; then
	echo "$OUT"
	exit 0
fi

export GOWORK=off GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 GO111MODULE=on
ldflags="-s -w"
ldflags+=" -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION"
ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
ldflags+=" -X k8s.io/component-base/version.gitMinor=$K8S_MINOR"
ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
ldflags+=" -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION"
ldflags+=" -X k8s.io/client-go/pkg/version.gitMajor=1"
ldflags+=" -X k8s.io/client-go/pkg/version.gitMinor=$K8S_MINOR"

t=$SECONDS
log "compiling kubelet and kube-scheduler v$K8S_VERSION (fresh build cache: ~5 min on 2 cores)"
tmp="$k8s_src/node-bin"
rm -rf "$tmp" && mkdir -p "$tmp"
(cd "$k8s_src" && "$GO" build -trimpath -ldflags "$ldflags" -o "$tmp/" \
	k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-scheduler >&2)
mv "$tmp/kubelet" "$tmp/kube-scheduler" "$OUT/"
printf 'kubernetes v%s\n' "$K8S_VERSION" >"$STAMP"
log "kubelet, kube-scheduler built in $((SECONDS - t))s: $OUT"
echo "$OUT"
