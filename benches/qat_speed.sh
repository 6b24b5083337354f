#!/usr/bin/env bash
# Training speed of the seed model, qatc against PyTorch eager-mode QAT, measured in
# the same run on the same machine: same model, batch size 128, 2 threads, the same
# Fashion-MNIST images. Prints images/s for float and QAT training and the ratios.
#   bash benches/qat_speed.sh [IMAGES]      (default 20000 images per epoch)
# Installs PyTorch 2.13.0 from PyPI into ~/.cache/qatc/pyenv when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
n=${1:-20000}
venv="${QATC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qatc}/pyenv"
if ! "$venv/bin/python" -c "import torch, numpy" 2>/dev/null; then
    echo "[bench] installing torch 2.13.0 into $venv (one-off)" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q torch==2.13.0 numpy safetensors
fi
cargo build --release --locked -q

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/seed.yaml" <<YAML
data:
  dir: $QATC_FASHION_MNIST
  train_limit: $n
  test_limit: 1000
train:
  epochs: 1
  batch_size: 128
  learning_rate: 0.001
qat:
  epochs: 1
  learning_rate: 0.0001
ptq:
  calibration_samples: 500
YAML
export OMP_NUM_THREADS=2
echo "[bench] qatc: 1 float + 1 QAT epoch on $n images" >&2
./target/release/qatc build examples/fashion/cnn.qat --recipe "$tmp/seed.yaml" --out "$tmp/out" -q >/dev/null
echo "[bench] PyTorch eager: 1 float + 1 QAT epoch on $n images" >&2
"$venv/bin/python" benches/qat_speed.py "$QATC_FASHION_MNIST" "$n" > "$tmp/torch.json"
python3 - "$tmp/out/report.json" "$tmp/torch.json" <<'PY'
import json, sys
q = json.load(open(sys.argv[1])); t = json.load(open(sys.argv[2]))
qf, qq = q["float"]["train_images_per_second"], q["qat"]["train_images_per_second"]
print(f"{'training (img/s)':<18}{'qatc':>10}{'PyTorch':>10}{'ratio':>8}")
print(f"{'float':<18}{qf:>10.0f}{t['float']:>10.0f}{qf / t['float']:>7.2f}x")
print(f"{'QAT':<18}{qq:>10.0f}{t['qat']:>10.0f}{qq / t['qat']:>7.2f}x")
print(f"(PyTorch {t['torch']}, batch 128, 2 threads)")
PY
