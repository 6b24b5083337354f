#!/usr/bin/env bash
# Makes sure Fashion-MNIST (gzipped IDX files) is on this machine, from Debian's
# dataset-fashion-mnist package. Prints the data directory on stdout.
set -euo pipefail
dir="${QATC_FASHION_MNIST:-/usr/share/datasets/fashion-mnist}"
need=(train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz)

have_all() { for f in "${need[@]}"; do [ -s "$dir/$f" ] || return 1; done; }

if ! have_all; then
    if [ "$dir" != /usr/share/datasets/fashion-mnist ]; then
        echo "[setup-data] QATC_FASHION_MNIST=$dir lacks one of: ${need[*]}" >&2
        exit 1
    fi
    echo "[setup-data] installing Debian package dataset-fashion-mnist" >&2
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq >&2
    $sudo apt-get install -y -qq dataset-fashion-mnist >&2
    have_all || { echo "[setup-data] package installed but $dir is incomplete" >&2; exit 1; }
fi
echo "$dir"
