#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, the tiny guests on this host's KVM,
# and stock Linux guests inside the emulated AMD-V host. CI runs exactly this (.ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo test"
cargo test --workspace
