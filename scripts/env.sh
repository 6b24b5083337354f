# Sourced by the Makefile and CI: sets up what is missing and exports what cargo needs.
# Usage: source scripts/env.sh    (QATC_CUDA=1 source scripts/env.sh: the CUDA libtorch, with NCCL)
_qatc_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LIBTORCH="$(bash "$_qatc_root/scripts/setup-libtorch.sh" ${QATC_CUDA:+--cuda})" || return 1
QATC_FASHION_MNIST="$(bash "$_qatc_root/scripts/setup-data.sh")" || return 1
# Test peers (onnxruntime, LiteRT) live in qatc's own venv, first on PATH, so that
# `python3 -m pip install` in the tests never touches the system Python.
QATC_VENV="$(bash "$_qatc_root/scripts/setup-venv.sh")" || return 1
export PATH="$QATC_VENV/bin:$PATH" VIRTUAL_ENV="$QATC_VENV"
export LIBTORCH QATC_FASHION_MNIST QATC_VENV
# torch-sys checks the version itself; the wheel's ABI is the C++11 one.
export LIBTORCH_CXX11_ABI=1
unset _qatc_root
