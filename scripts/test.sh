#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, the tiny guests on this host's KVM,
# and stock Linux guests inside the emulated AMD-V host, and the web console's browser tests
# (crates/fvd/tests/web.rs: Playwright drives Debian's Chromium against a real fvd). CI runs
# exactly this (.ci/run). install-deps.sh builds the web console (tsc and vite) first.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/install-deps.sh
echo "==> cargo fmt --check"
cargo fmt --all -- --check
echo "==> cargo clippy -D warnings"
cargo clippy --workspace --all-targets --quiet -- -D warnings
echo "==> cargo test"
cargo test --workspace
