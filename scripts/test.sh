#!/usr/bin/env bash
# `make test`: set up what is missing, then the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
# The report test renders report.html in a real browser; only the tests need one.
bash scripts/setup-chromium.sh >/dev/null || echo "warning: no chromium; the report test says so (and fails under CI=true)" >&2
# Both binaries: `qatc` (light/, no libtorch) and `qatc-train`; the tests run `qatc`, which
# Cargo builds only for the workspace, not for the qatc package's tests.
cargo build --release --locked
# The qatc package's targets: light/ has none of its own (its sources are src/, tested here).
cargo test --release --locked -p qatc --all-targets "$@"
