#!/usr/bin/env bash
# The independent-verifier check of the audit log formats: installs Go and
# golang.org/x/mod from Debian's packages (install-go.sh, idempotent), then
# runs the tests in which Go's reference sumdb/note and sumdb/tlog check
# logs this project wrote. `cargo test --workspace` lists those tests as
# ignored (a machine with only the Rust toolchain has no Go); .ci/run runs
# this script after it.
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tlog/verifier/install-go.sh
# `--workspace` resolves features as `cargo test --workspace` does, so its
# build is reused rather than done again for this package alone.
cargo test --workspace --test independent_verifier -- --ignored
