#!/usr/bin/env bash
# `make demo`: set up what is missing, build qatc, then build the seed model.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo build --release --locked
./target/release/qatc build examples/fashion/cnn.qat "$@"
