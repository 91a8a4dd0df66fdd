# syntax=docker/dockerfile:1
#
# The kvinject image for people who build with Docker. It is equivalent to
# `make image` (hack/image, which needs no container engine): the same static
# binaries, built with the same flags, on scratch with the same files written by
# the same code (hack/image -rootfs): /kvinject (the webhook), /kvinject-agent
# (the in-pod agent), /etc/ssl/certs/ca-certificates.crt
# from the pinned golang.org/x/crypto/x509roots/fallback module, and
# /etc/passwd + /etc/group naming the non-root user 65532. No shell.
#
#   docker buildx build --platform linux/amd64,linux/arm64 \
#     --build-arg VERSION=$(git describe --tags --always --dirty) \
#     --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg SOURCE_DATE_EPOCH=$(git log -1 --format=%ct) \
#     --build-arg CREATED=$(date -u -d @$(git log -1 --format=%ct) +%Y-%m-%dT%H:%M:%SZ) \
#     -t ghcr.io/you/kvinject:TAG --push .
#
# See docs/install.md ("Building the image") for how the two paths compare.

# Same Go release as go.mod's toolchain, so the binaries match make image's.
ARG GO_VERSION=1.26.8

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
ARG TARGETOS TARGETARCH
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The same flags as the Makefile's image target.
RUN for c in kvinject kvinject-agent; do \
      CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath -buildvcs=false \
        -ldflags "-s -w -X main.version=${VERSION}" -o /out/$c ./cmd/$c || exit 1; \
    done \
 && go run ./hack/image -rootfs /rootfs -binary "$TARGETOS/$TARGETARCH=/out/kvinject" -agent "$TARGETOS/$TARGETARCH=/out/kvinject-agent"

FROM scratch
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED
COPY --from=build /rootfs/ /
USER 65532:65532
ENTRYPOINT ["/kvinject"]
# BuildKit takes the config's created time from the SOURCE_DATE_EPOCH build
# arg; CREATED is the same instant as RFC 3339 for the label.
LABEL org.opencontainers.image.source="https://github.com/kvinject/kvinject" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.title="kvinject" \
      org.opencontainers.image.description="Azure Key Vault objects in Kubernetes pods: admission webhook and in-pod agent"
