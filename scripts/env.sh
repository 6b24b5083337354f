# Sourced by the Makefile and CI: sets up what is missing and exports what cargo needs.
# Usage: source scripts/env.sh
_qatc_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LIBTORCH="$(bash "$_qatc_root/scripts/setup-libtorch.sh")" || return 1
QATC_FASHION_MNIST="$(bash "$_qatc_root/scripts/setup-data.sh")" || return 1
export LIBTORCH QATC_FASHION_MNIST
# torch-sys checks the version itself; the wheel's ABI is the C++11 one.
export LIBTORCH_CXX11_ABI=1
unset _qatc_root
