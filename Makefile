# kvinject developer entry points. `make test` is what CI runs.
SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c

GO ?= go
# Kubernetes release the e2e tests and the demo run against (hack/controlplane.sh builds it).
K8S_VERSION ?= 1.37.2
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
BIN := bin/kvinject

.PHONY: all build test unit e2e bench demo image fmt vet

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/kvinject

vet:
	$(GO) vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { echo "gofmt needed:"; gofmt -l $$(git ls-files '*.go'); exit 1; }

# Unit tests: everything but the e2e suite (which needs the control plane).
unit:
	$(GO) test -count=1 $$($(GO) list ./... | grep -v /e2e$$)

test: vet unit
