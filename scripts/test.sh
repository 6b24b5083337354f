#!/usr/bin/env bash
# `make test`: set up what is missing, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
cargo test --release --locked --all-targets "$@"
