#!/usr/bin/env bash
# Assembles a CPU-only libtorch 2.13.0 (what tch 0.26 expects) from PyPI wheels,
# because torch-sys cannot download libtorch without internet access.
# Idempotent and safe to interrupt: everything is built in a temp dir and renamed
# into the cache at the end. Prints the libtorch directory on stdout.
set -euo pipefail

TORCH_VERSION=2.13.0
CUDART_VERSION=13.0.96
CUPTI_VERSION=13.0.85
cache="${QATC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qatc}"
dest="$cache/libtorch-$TORCH_VERSION-cpu"

if [ -f "$dest/build-version" ] && [ -e "$dest/lib/libtorch_cpu.so" ]; then
    echo "$dest"
    exit 0
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/.libtorch-tmp.XXXXXX")
trap 'rm -rf "$work"' EXIT

log() { echo "[setup-libtorch] $*" >&2; }
PY=${PYTHON:-python3}

log "downloading torch==$TORCH_VERSION and the two CUDA runtime wheels libtorch_cpu links (one-off, ~540 MB)"
wheels="$cache/wheels"
mkdir -p "$wheels"
$PY -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" \
    "torch==$TORCH_VERSION" "nvidia-cuda-runtime==$CUDART_VERSION" "nvidia-cuda-cupti==$CUPTI_VERSION" >&2

log "extracting libraries and headers"
$PY - "$wheels" "$work" "$TORCH_VERSION" <<'PY'
import glob, os, sys, zipfile
wheels, out, version = sys.argv[1:]
lib = os.path.join(out, "lib"); os.makedirs(lib, exist_ok=True)
inc = os.path.join(out, "include")

def one(pattern):
    found = sorted(glob.glob(os.path.join(wheels, pattern)))
    if not found:
        sys.exit(f"no wheel matching {pattern} in {wheels}")
    return found[-1]

def copy(z, member, target):
    os.makedirs(os.path.dirname(target), exist_ok=True)
    with z.open(member) as src, open(target, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)

with zipfile.ZipFile(one(f"torch-{version}-*.whl")) as z:
    libs = {"libtorch_cpu.so", "libc10.so", "libgomp.so.1"}
    full = ""
    for m in z.namelist():
        base = os.path.basename(m)
        if m.startswith("torch/lib/") and base in libs:
            copy(z, m, os.path.join(lib, base)); libs.discard(base)
        elif m.startswith("torch/include/") and not m.endswith("/"):
            copy(z, m, os.path.join(inc, m[len("torch/include/"):]))
        elif m == "torch/version.py":
            for line in z.read(m).decode().splitlines():
                if line.startswith("__version__"):
                    full = line.split("=", 1)[1].strip().strip("'\"")
    if libs:
        sys.exit(f"torch wheel lacks {sorted(libs)}")
for pattern, name in [("nvidia_cuda_runtime-*.whl", "libcudart.so.13"),
                      ("nvidia_cuda_cupti-*.whl", "libcupti.so.13")]:
    with zipfile.ZipFile(one(pattern)) as z:
        members = [m for m in z.namelist() if m.endswith("/" + name)]
        if not members:
            sys.exit(f"{pattern} lacks {name}")
        copy(z, members[0], os.path.join(lib, name))
with open(os.path.join(out, "build-version"), "w") as f:
    f.write((full or version) + "\n")
PY

# torch-sys links -ltorch; the wheel's real libtorch.so needs CUDA, libtorch_cpu has all tch uses.
ln -s libtorch_cpu.so "$work/lib/libtorch.so"
ln -s libgomp.so.1 "$work/lib/libgomp.so"

rm -rf "$dest"
mv "$work" "$dest"
trap - EXIT
log "libtorch ready in $dest"
echo "$dest"
