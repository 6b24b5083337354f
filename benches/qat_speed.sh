#!/usr/bin/env bash
# Training speed, qatc against PyTorch eager-mode QAT (torch.ao) and TensorFlow with
# tfmot QAT, measured in the same run on the same machine: the same model, 2 threads,
# the same Fashion-MNIST images. Prints images/s for float and QAT training, the median
# and range over interleaved rounds, and qatc's ratio to each peer.
#   bash benches/qat_speed.sh                    seed model, 20000 images, 1 round
#   ROUNDS=3 BUSY=1 bash benches/qat_speed.sh    3 rounds quiet, then 3 with one core busy
#   MODELS="seed mnv2" bash benches/qat_speed.sh mnv2: examples/fashion/mobilenet.qat
#                                                at 96x96, batch 64
#   IMAGES=6400 MNV2_IMAGES=640                  images per epoch of each model
# Peers: PyTorch from qatc's venv (scripts/setup-venv.sh) when it has torch, else 2.13.0
# from PyPI into ~/.cache/qatc/pyenv; TensorFlow and tfmot into ~/.cache/qatc/tfenv
# (one-off installs; TF=0 skips TensorFlow).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
models=${MODELS:-seed}
rounds=${ROUNDS:-1}
cache="${QATC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qatc}"
torch_py="$QATC_VENV/bin/python"
if ! "$torch_py" -c "import torch, numpy" 2>/dev/null; then
    torch_py="$cache/pyenv/bin/python"
    if ! "$torch_py" -c "import torch, numpy" 2>/dev/null; then
        echo "[bench] installing torch 2.13.0 into $cache/pyenv (one-off)" >&2
        python3 -m venv "$cache/pyenv"
        "$cache/pyenv/bin/pip" install -q torch==2.13.0 numpy
    fi
fi
tf_py="$cache/tfenv/bin/python"
if [ "${TF:-1}" = 1 ] && ! "$tf_py" -c "import tensorflow_model_optimization, tf_keras" 2>/dev/null; then
    echo "[bench] installing tensorflow-cpu, tf-keras, tensorflow-model-optimization into $cache/tfenv (one-off)" >&2
    python3 -m venv "$cache/tfenv"
    "$cache/tfenv/bin/pip" install -q tensorflow-cpu tf-keras tensorflow-model-optimization
fi
cargo build --release --locked -q

tmp=$(mktemp -d)
busy_pid=
trap '[ -n "$busy_pid" ] && kill "$busy_pid" 2>/dev/null; rm -rf "$tmp"' EXIT
export OMP_NUM_THREADS=2 TF_CPP_MIN_LOG_LEVEL=3
sed 's/input image: f32\[1, 28, 28\]/input image: f32[1, 96, 96]/' examples/fashion/mobilenet.qat \
    > "$tmp/mnv2.qat"

# run MODEL LOAD ROUND: one measurement of each framework, appended to $tmp/results.
run() {
    local model=$1 load=$2 round=$3 qat n batch size
    case $model in
        seed) qat=examples/fashion/cnn.qat n=${IMAGES:-20000} batch=128 size=28 ;;
        mnv2) qat=$tmp/mnv2.qat n=${MNV2_IMAGES:-1280} batch=64 size=96 ;;
        *) echo "unknown model $model (seed or mnv2)" >&2; exit 2 ;;
    esac
    cat > "$tmp/recipe.yaml" <<YAML
data:
  dir: $QATC_FASHION_MNIST
  train_limit: $n
  test_limit: 200
train:
  epochs: 1
  batch_size: $batch
  learning_rate: 0.001
qat:
  epochs: 1
  learning_rate: 0.0001
ptq:
  calibration_samples: 256
YAML
    echo "[bench] $model $load round $round (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
    rm -rf "$tmp/out"
    ./target/release/qatc build "$qat" --recipe "$tmp/recipe.yaml" --out "$tmp/out" -q >/dev/null
    python3 -c 'import json,sys; q=json.load(open(sys.argv[1])); print(json.dumps({"float": q["float"]["train_images_per_second"], "qat": q["qat"]["train_images_per_second"]}))' \
        "$tmp/out/report.json" | sed "s/^/$model $load qatc /" >> "$tmp/results"
    "$torch_py" benches/qat_speed.py "$QATC_FASHION_MNIST" "$n" "$model" "$batch" "$size" \
        | sed "s/^/$model $load PyTorch /" >> "$tmp/results"
    if [ "${TF:-1}" = 1 ]; then
        "$tf_py" benches/qat_speed_tf.py "$QATC_FASHION_MNIST" "$n" "$model" "$batch" "$size" 2>/dev/null \
            | sed "s/^/$model $load TF /" >> "$tmp/results"
    fi
}

loads=quiet
[ "${BUSY:-0}" = 1 ] && loads="quiet busy"
for load in $loads; do
    if [ "$load" = busy ]; then
        # One core kept busy by another process, as on a shared machine.
        yes > /dev/null &
        busy_pid=$!
    fi
    for round in $(seq "$rounds"); do
        for model in $models; do run "$model" "$load" "$round"; done
    done
    if [ -n "$busy_pid" ]; then kill "$busy_pid"; wait "$busy_pid" 2>/dev/null || true; busy_pid=; fi
done

python3 - "$tmp/results" "$rounds" <<'PY'
import json, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    model, load, who, data = line.split(" ", 3)
    for stage, v in json.loads(data).items():
        if stage in ("float", "qat"):
            rows.setdefault((model, load, stage), {}).setdefault(who, []).append(v)
print(f"img/s, median [min-max] of {sys.argv[2]} round(s); 2 threads")
print(f"{'model':<6}{'load':<7}{'stage':<7}{'qatc':>20}{'PyTorch':>20}{'TF/tfmot':>20}{'vs PyTorch':>12}{'vs TF':>8}")
def cell(v):
    return f"{statistics.median(v):.0f} [{min(v):.0f}-{max(v):.0f}]" if v else "-"
for (model, load, stage), by in rows.items():
    q, t, f = by.get("qatc", []), by.get("PyTorch", []), by.get("TF", [])
    ratio = lambda a, b: f"{statistics.median(a) / statistics.median(b):.2f}x" if a and b else "-"
    print(f"{model:<6}{load:<7}{stage:<7}{cell(q):>20}{cell(t):>20}{cell(f):>20}{ratio(q, t):>12}{ratio(q, f):>8}")
PY
