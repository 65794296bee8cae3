#!/usr/bin/env bash
# Installs what tlog/tests/independent_verifier.rs needs: a Go toolchain and
# the sources of golang.org/x/mod (sumdb/note, sumdb/tlog), from Debian's
# packages. Idempotent: does nothing when both are already there.
#
# Debian bookworm: golang-go (Go 1.19) and golang-golang-x-mod-dev (x/mod
# 0.7.0, installed as a GOPATH tree under /usr/share/gocode). The test builds
# the verifier with GO111MODULE=off GOPATH=/usr/share/gocode, offline.
set -euo pipefail

XMOD=/usr/share/gocode/src/golang.org/x/mod/sumdb/tlog

if command -v go >/dev/null 2>&1 && [ -d "$XMOD" ]; then
    echo "go and golang.org/x/mod are installed: $(go version)"
    exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
# Try with the current package lists first; refresh them only if that fails.
if ! $SUDO apt-get install -y --no-install-recommends golang-go golang-golang-x-mod-dev; then
    $SUDO apt-get update
    $SUDO apt-get install -y --no-install-recommends golang-go golang-golang-x-mod-dev
fi

command -v go >/dev/null 2>&1 || { echo "go is still not on PATH" >&2; exit 1; }
[ -d "$XMOD" ] || { echo "$XMOD is missing" >&2; exit 1; }
echo "installed: $(go version)"
