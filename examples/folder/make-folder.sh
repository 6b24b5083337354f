#!/usr/bin/env bash
# Makes build/fashion-folder: Fashion-MNIST (on this machine) as a folder of coloured
# 32x32 PNG and JPEG files, train/<class>/ and val/<class>/ (see make_folder.rs for
# what the images are). Usage: bash examples/folder/make-folder.sh [TRAIN_PER_CLASS] [VAL_PER_CLASS]
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/env.sh
cargo run --release --locked --quiet --example make_folder -- build/fashion-folder "${1:-500}" "${2:-200}"
