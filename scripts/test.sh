#!/usr/bin/env bash
# The test command: formatting, lints, the whole workspace's tests (libtorch from the cached venv).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
echo "== cargo fmt --check"
cargo fmt --all --check
echo "== cargo clippy --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test --workspace"
cargo test --workspace
