#!/usr/bin/env bash
# The Python environment for the test peers (onnxruntime, ai-edge-litert, numpy):
# a venv in qatc's cache, never the system Python. Creates it when missing (tests
# install the peers into it on first use) and prints its directory on stdout.
# Safe to interrupt: a venv is complete only once `.qatc-complete` is written, and an
# incomplete one is made again (a venv records its path, so it is made in place).
set -euo pipefail

cache="${QATC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qatc}"
dest="$cache/venv"
if [ -f "$dest/.qatc-complete" ] && [ -x "$dest/bin/python3" ]; then
    echo "$dest"
    exit 0
fi
mkdir -p "$cache"
rm -rf "$dest"
if ! "${PYTHON:-python3}" -m venv "$dest" >&2; then
    rm -rf "$dest"
    echo "[setup-venv] cannot create a venv in $dest: install python3-venv (Debian) and retry" >&2
    exit 1
fi
touch "$dest/.qatc-complete"
echo "$dest"
