# kvinject developer entry points. `make test` is what CI runs.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

GO ?= go
# Kubernetes release the e2e tests and the demo run against (hack/controlplane.sh builds it).
K8S_VERSION ?= 1.37.2
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN := bin/kvinject
AGENT_BIN := bin/kvinject-agent

.PHONY: all build test unit e2e bench demo image fmt vet controlplane tools release

all: build

# Two binaries: kvinject (webhook, offline injector) and kvinject-agent (the
# in-pod agent, small: no Kubernetes client linked in). One image holds both.
build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/kvinject
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(AGENT_BIN) ./cmd/kvinject-agent

# Container image without a container engine (hack/image, docs/install.md):
# static binaries (kvinject, kvinject-agent) for IMAGE_PLATFORMS, one OCI index in _out/kvinject-oci (and
# _out/kvinject-oci.tar), one docker archive per platform. Reproducible: file
# times and the created label come from the commit, not from the clock.
IMAGE ?= ghcr.io/kvinject/kvinject
IMAGE_PLATFORMS ?= linux/amd64 linux/arm64
IMAGE_OUT ?= _out
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)

image:
	for p in $(IMAGE_PLATFORMS); do \
	  for c in kvinject kvinject-agent; do \
	    CGO_ENABLED=0 GOOS=$${p%/*} GOARCH=$${p#*/} $(GO) build -trimpath -buildvcs=false \
	      -ldflags '$(LDFLAGS)' -o $(IMAGE_OUT)/bin/$${p/\//-}/$$c ./cmd/$$c; \
	  done; \
	done
	$(GO) run ./hack/image -out $(IMAGE_OUT) -repo $(IMAGE) -version $(VERSION) -revision $(REVISION) \
	  -created $(SOURCE_DATE_EPOCH) $(foreach p,$(IMAGE_PLATFORMS),-binary $(p)=$(IMAGE_OUT)/bin/$(subst /,-,$(p))/kvinject -agent $(p)=$(IMAGE_OUT)/bin/$(subst /,-,$(p))/kvinject-agent)

# A release: `make release VERSION=v0.1.0`. Builds the image stamped with
# VERSION (make image), then hack/release writes into _out/release the SBOM
# (CycloneDX, from both binaries' Go module graph), the OCI layout with the SBOM
# attached to the image index, a kustomize overlay and a chart copy that pin
# the image by tag and digest, install.yaml (the overlay rendered) and the
# chart packaged as kvinject-<version>.tgz (helm push-able), and the kubectl
# plugin's archives with its krew manifest (hack/krew: _out/release/krew). Tag the
# commit first (git tag VERSION) so the version and the source agree.
release:
	@[[ "$(origin VERSION)" == "command line" ]] || { echo "make release needs VERSION=vX.Y.Z on the command line"; exit 2; }
	$(MAKE) image VERSION=$(VERSION)
	$(GO) run ./hack/release -version $(VERSION) -repo $(IMAGE) -created $(SOURCE_DATE_EPOCH) \
	  -layout _out/kvinject-oci -binary _out/bin/linux-amd64/kvinject -binary _out/bin/linux-amd64/kvinject-agent -out _out/release
	$(GO) run ./hack/krew -version $(VERSION) -created $(SOURCE_DATE_EPOCH) -out _out/release/krew \
	  $(foreach p,$(IMAGE_PLATFORMS),-binary $(p)=_out/bin/$(subst /,-,$(p))/kvinject)
	assets=$$(hack/controlplane.sh $(K8S_VERSION)); tools=$$(hack/tools.sh); \
	$$assets/kubectl kustomize _out/release/kustomize >_out/release/install.yaml; \
	$$tools/kvinject-helm lint _out/release/chart/kvinject; \
	$$tools/kvinject-helm package -out _out/release _out/release/chart/kvinject

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

# Packages whose tests need the control plane: they run in e2e, not unit.
E2E_PKGS := ./e2e ./e2e/cluster ./hack/demo ./charts/e2e

# Unit tests: everything but E2E_PKGS. The manifests tests render with the
# kubectl that hack/controlplane.sh builds, the chart tests (charts/) with
# Helm's engine and linter and promtool, which hack/tools.sh builds from
# pinned tool modules (hack/tools/*), so the machine needs none of them.
unit:
	assets=$$(hack/controlplane.sh $(K8S_VERSION)); tools=$$(hack/tools.sh); \
	require_az=$$([[ $$(id -u) == 0 ]] && echo 1 || true); \
	PATH=$$tools:$$assets:$$PATH KVINJECT_REQUIRE_AZ=$$require_az \
	  $(GO) test -count=1 $$($(GO) list ./... | grep -v -e '/e2e$$' -e '/e2e/cluster$$' -e '/hack/demo$$' -e '/charts/e2e$$')

# Helm's chart tools and promtool (fresh: minutes; cached: seconds).
tools:
	hack/tools.sh >/dev/null

# kube-apiserver, kube-controller-manager and etcd for K8S_VERSION, built from the
# Go module proxy into ~/.cache/kvinject (fresh: minutes; cached: seconds), and
# the node: kubelet and kube-scheduler the same way, containerd, runc and the
# CNI plugins from Debian when missing (hack/node.sh).
controlplane:
	hack/controlplane.sh $(K8S_VERSION) >/dev/null
	hack/node.sh $(K8S_VERSION) >/dev/null

# End-to-end tests on that control plane and a real node (as root: the node
# runs in namespaces the run creates, see e2e/cluster); they fail (not skip)
# without them. One package at a time: each starts its own clusters. Some
# run against the oldest supported release too (OLDEST_K8S_VERSION).
OLDEST_K8S_VERSION ?= 1.33.13
e2e:
	assets=$$(hack/controlplane.sh $(K8S_VERSION)); oldest=$$(hack/controlplane.sh $(OLDEST_K8S_VERSION)); \
	node=$$(hack/node.sh $(K8S_VERSION)); tools=$$(hack/tools.sh); \
	PATH=$$tools:$$assets:$$PATH KUBEBUILDER_ASSETS=$$assets KVINJECT_OLDEST_ASSETS=$$oldest KVINJECT_NODE_ASSETS=$$node KVINJECT_REQUIRE_E2E=1 \
	  $(GO) test -count=1 -p 1 -timeout=25m $(E2E_PKGS)

# The whole product live on a real node (hack/demo, as root), in namespaces of
# its own: control plane and node (built on the first run), webhook, Key Vault
# emulator, the example's pods. KEEP=1 leaves it running until Ctrl-C and
# prints KUBECONFIG and how to reach it.
demo: build
	$(GO) run ./hack/demo --kvinject $(BIN) --k8s-version $(K8S_VERSION) $(if $(KEEP),--keep)

test: vet unit e2e

# Benchmarks (docs/performance.md), bounded to a few minutes: Go benchmarks of
# the review path, the real webhook under load on loopback beside a bare HTTPS
# floor server, agent init against the round-trip floor, the startup probe,
# the idle sidecar and ten at once, a 50-agent storm, a 100-sidecar fleet, the
# binary sizes; on a real node (as root, in namespaces of the run's own):
# pod create → app Running plain and injected, the agents' working set.
# Results in _out/bench/results.{md,json}.
bench:
	assets=$$(hack/controlplane.sh $(K8S_VERSION)); node=$$(hack/node.sh $(K8S_VERSION)); \
	KUBEBUILDER_ASSETS=$$assets KVINJECT_NODE_ASSETS=$$node $(GO) run ./hack/bench -out _out/bench
