#!/usr/bin/env bash
# The power-loss tests (tests/tests/powerloss.rs): an order server and a
# router on a file system that drops every write not made durable
# (tests/powerloss/lazyfs.py, FUSE), cut many times under load.
#
# Installs what they need from Debian's packages when missing (idempotent):
# fuse3 (the kernel's /dev/fuse helper tools) and python3-fusepy (which
# brings libfuse2). Builds the two server binaries, then runs the tests that
# `cargo test --workspace` lists as ignored. Needs root (to mount) and
# /dev/fuse; .ci/run runs this after the Go verifier.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ ! -e /dev/fuse ]; then
    echo "/dev/fuse is missing: the power-loss tests need FUSE" >&2
    exit 1
fi

if ! command -v fusermount3 >/dev/null 2>&1 || ! /usr/bin/python3 -c 'import fusepy' 2>/dev/null; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
        SUDO="sudo"
    fi
    export DEBIAN_FRONTEND=noninteractive
    # Try with the current package lists first; refresh them only if that fails.
    if ! $SUDO apt-get install -y --no-install-recommends fuse3 python3-fusepy; then
        $SUDO apt-get update
        $SUDO apt-get install -y --no-install-recommends fuse3 python3-fusepy
    fi
fi
/usr/bin/python3 -c 'import fusepy' || { echo "python3-fusepy is still not importable" >&2; exit 1; }

# `--workspace` (and `--tests` for the binaries, as the test harness
# builds them) resolves features as `cargo test --workspace` does, so after
# it nothing is compiled again; `-p` alone would resolve them for those
# packages only and rebuild their dependencies.
cargo build --workspace --bins --tests
# The two tests use their own mounts and directories, and run side by side
# (about 37 s against 64 s one after the other on two cores).
cargo test --workspace --test powerloss -- --ignored
