#!/usr/bin/env bash
# Regenerates src/export/tflite/generated.rs from src/export/tflite/schema.fbs
# with planus-cli (the code generator matching the `planus` runtime crate in Cargo.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
version=1.3.0
cache="${QATC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qatc}/planus-$version"
if [ ! -x "$cache/bin/planus" ]; then
    cargo install --locked planus-cli --version "$version" --root "$cache"
fi
out=src/export/tflite/generated.rs
"$cache/bin/planus" rust -o "$out.tmp" src/export/tflite/schema.fbs
mv "$out.tmp" "$out"
echo "wrote $out"
