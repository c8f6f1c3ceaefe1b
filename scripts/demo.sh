#!/usr/bin/env bash
# The demo: builds everything and runs what exists so far of the pipeline.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release -p lorkd-trainer -p lorkd-tools
./target/release/lorkd-train
