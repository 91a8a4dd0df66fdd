#!/usr/bin/env bash
# Builds the chart and monitoring test tools from the Go module proxy into a
# cache outside the repository and prints the directory that holds them:
#
#   PATH=$(hack/tools.sh):$PATH go test ./charts/...
#
#   kvinject-helm  hack/tools/helm: Helm's chart loader, engine and linter
#                  (helm.sh/helm/v3, pinned in its go.mod)
#   promtool       github.com/prometheus/prometheus/cmd/promtool, pinned in
#                  hack/tools/promtool/go.mod, built with the upstream
#                  remove_all_sd tag (no service discovery plugins: the tests
#                  only check and unit-test rules)
#   promqlnames    hack/tools/promtool/promqlnames: the metric names a PromQL
#                  expression selects, by Prometheus's own parser
#   az             Debian's azure-cli, in /usr/bin (hack/debian.sh, as root):
#                  grants/az_test.go parses the az commands kvinject grants
#                  writes with it; without root and az that test skips
#
# Each tool module has its own go.mod and go.sum, so the product's go.mod
# never pulls in Helm's or Prometheus's dependency trees. The cache key is a
# hash of each module's files: a build is redone only when they change.
# Idempotent and serialised like hack/controlplane.sh: a complete build
# leaves a stamp; concurrent runs wait on a lock.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
GO="${GO:-go}"
CACHE="${KVINJECT_CACHE:-$HOME/.cache/kvinject}/tools"
log() { echo "tools: $*" >&2; }

key() { # hash of a tool module's sources
	(cd "$ROOT/hack/tools/$1" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) | LC_ALL=C sort |
		xargs sha256sum | sha256sum | cut -c1-16)
}
if [[ $(id -u) == 0 ]]; then
	"$ROOT/hack/debian.sh" azure-cli:/usr/bin/az
elif [[ ! -x /usr/bin/az ]]; then
	log "no az (Debian's azure-cli; root installs it): the az output test will skip"
fi

HELM_KEY="$(key helm)"
PROM_KEY="$(key promtool)"
OUT="$CACHE/bin-$HELM_KEY-$PROM_KEY"
STAMP="$OUT/.stamp"
complete() { [[ -f "$STAMP" && -x "$OUT/kvinject-helm" && -x "$OUT/promtool" && -x "$OUT/promqlnames" ]]; }

if complete; then echo "$OUT"; exit 0; fi
mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
if command -v flock >/dev/null && ! flock -n 9; then
	log "another build is running; waiting for it"
	flock 9
fi
if complete; then echo "$OUT"; exit 0; fi

export GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 GO111MODULE=on
tmp="$OUT.tmp"
rm -rf "$tmp" && mkdir -p "$tmp"
start=$SECONDS
log "building kvinject-helm (fresh: a few minutes on 2 cores)"
(cd "$ROOT/hack/tools/helm" && "$GO" build -trimpath -ldflags "-s -w" -o "$tmp/kvinject-helm" . >&2)
log "building promtool and promqlnames (fresh: several minutes on 2 cores)"
(cd "$ROOT/hack/tools/promtool" && "$GO" build -trimpath -tags remove_all_sd -ldflags "-s -w" -o "$tmp/" \
	github.com/prometheus/prometheus/cmd/promtool ./promqlnames >&2)
{ echo "helm $HELM_KEY"; echo "promtool $PROM_KEY"; } >"$tmp/.stamp"
rm -rf "$OUT" && mv "$tmp" "$OUT"
log "done in $((SECONDS - start))s: $OUT"
echo "$OUT"
