#!/usr/bin/env bash
# Installs the Debian packages a test needs, only those missing:
#
#   hack/debian.sh containerd:/usr/bin/containerd runc:/usr/sbin/runc ...
#
# Each argument is package:file, the file of the package that the tests run.
# 1. A package whose file is there is skipped: on a prepared machine this
#    script does nothing and needs no network.
# 2. The rest are installed with apt-get, as root only (otherwise it says what
#    to install and fails), one apt run at a time from our scripts (a lock in
#    the kvinject cache), with nothing on stdout.
set -euo pipefail

CACHE="${KVINJECT_CACHE:-$HOME/.cache/kvinject}"
log() { echo "debian: $*" >&2; }

missing=()
for p in "$@"; do
	[[ "$p" == *:/* ]] || { log "argument '$p' is not package:/path/of/its/file"; exit 2; }
	[[ -x "${p#*:}" ]] || missing+=("${p%%:*}")
done
((${#missing[@]} == 0)) && exit 0
if [[ $(id -u) != 0 ]]; then
	log "missing ${missing[*]}; install as root: apt-get install ${missing[*]}"
	exit 1
fi
log "installing ${missing[*]} from Debian"
mkdir -p "$CACHE" && exec 8>"$CACHE/.apt.lock"
flock 8
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >&2
apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
