#!/usr/bin/env bash
# Assembles libtorch 2.13.0 (what tch 0.26 expects) from PyPI wheels, because torch-sys
# cannot download libtorch without internet access.
#   scripts/setup-libtorch.sh          CPU-only (the default, what the tests use), ~540 MB of wheels
#   scripts/setup-libtorch.sh --cuda   with CUDA 13 and NCCL, for `--device cuda` and data-parallel
#                                      training on GPUs (ProcessGroupNCCL); ~2.5 GB of wheels,
#                                      3.6 GB on disk
# Idempotent and safe to interrupt: everything is built in a temp dir and renamed
# into the cache at the end. Prints the libtorch directory on stdout.
set -euo pipefail

TORCH_VERSION=2.13.0
CUDART_VERSION=13.0.96
CUPTI_VERSION=13.0.85
# What torch 2.13.0's wheel requires on Linux (its Requires-Dist, through cuda-toolkit 13.0.3's
# extras), pinned so that a CUDA libtorch assembled later is the same one. Not needed by
# libtorch: triton and cuda-bindings (Python only), cusolverMg, npp, nvjpeg.
CUDA_WHEELS=(
    "nvidia-cuda-runtime==$CUDART_VERSION"
    "nvidia-cuda-cupti==$CUPTI_VERSION"
    "nvidia-cuda-nvrtc==13.0.88"
    "nvidia-nvjitlink==13.0.88"
    "nvidia-nvtx==13.0.85"
    "nvidia-cublas==13.1.1.3"
    "nvidia-cufft==12.0.0.61"
    "nvidia-cufile==1.15.1.6"
    "nvidia-curand==10.4.0.35"
    "nvidia-cusolver==12.0.4.66"
    "nvidia-cusparse==12.6.3.3"
    "nvidia-cudnn-cu13==9.20.0.48"
    "nvidia-cusparselt-cu13==0.8.1"
    "nvidia-nccl-cu13==2.29.7"
    "nvidia-nvshmem-cu13==3.4.5"
    # Headers only, not torch's dependencies: what cuda_runtime.h and cuda_fp16.h include,
    # needed to compile qatc's NCCL bridge against ATen's CUDA headers.
    "nvidia-cuda-crt==13.0.88"
    "nvidia-cuda-cccl==13.0.85"
)

variant=cpu
case "${1:-}" in
    "") ;;
    --cuda) variant=cu130 ;;
    *)
        echo "usage: $0 [--cuda]" >&2
        exit 2
        ;;
esac

cache="${QATC_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/qatc}"
dest="$cache/libtorch-$TORCH_VERSION-$variant"
# The last file each variant writes: its presence means the directory is complete.
if [ "$variant" = cpu ]; then ready="$dest/lib/libtorch_cpu.so"; else ready="$dest/cuda/include/nccl.h"; fi

if [ -f "$dest/build-version" ] && [ -e "$ready" ]; then
    echo "$dest"
    exit 0
fi

mkdir -p "$cache"
work=$(mktemp -d "$cache/.libtorch-tmp.XXXXXX")
trap 'rm -rf "$work"' EXIT

log() { echo "[setup-libtorch] $*" >&2; }
PY=${PYTHON:-python3}

wheels="$cache/wheels"
mkdir -p "$wheels"
if [ "$variant" = cpu ]; then
    log "downloading torch==$TORCH_VERSION and the two CUDA runtime wheels libtorch_cpu links (one-off, ~540 MB)"
    $PY -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" \
        "torch==$TORCH_VERSION" "nvidia-cuda-runtime==$CUDART_VERSION" "nvidia-cuda-cupti==$CUPTI_VERSION" >&2
else
    log "downloading torch==$TORCH_VERSION and the ${#CUDA_WHEELS[@]} nvidia wheels it runs on (one-off, ~2.5 GB)"
    $PY -m pip download --quiet --no-deps --only-binary=:all: -d "$wheels" \
        "torch==$TORCH_VERSION" "${CUDA_WHEELS[@]}" >&2
fi

log "extracting libraries and headers"
$PY - "$wheels" "$work" "$TORCH_VERSION" "$variant" "${CUDA_WHEELS[@]}" <<'PY'
import glob, os, sys, zipfile
wheels, out, version, variant, *cuda_wheels = sys.argv[1:]
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

def is_library(base):
    return base.endswith(".so") or ".so." in base

with zipfile.ZipFile(one(f"torch-{version}-*.whl")) as z:
    if variant == "cpu":
        libs = {"libtorch_cpu.so", "libc10.so", "libgomp.so.1"}
    else:
        # Every library of torch/lib but the Python bindings (they need libpython).
        libs = {os.path.basename(m) for m in z.namelist()
                if m.startswith("torch/lib/") and m.count("/") == 2 and is_library(os.path.basename(m))}
        libs.discard("libtorch_python.so")
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

if variant == "cpu":
    for pattern, name in [("nvidia_cuda_runtime-*.whl", "libcudart.so.13"),
                          ("nvidia_cuda_cupti-*.whl", "libcupti.so.13")]:
        with zipfile.ZipFile(one(pattern)) as z:
            members = [m for m in z.namelist() if m.endswith("/" + name)]
            if not members:
                sys.exit(f"{pattern} lacks {name}")
            copy(z, members[0], os.path.join(lib, name))
else:
    # All of every nvidia wheel's libraries next to libtorch's (their RPATH has $ORIGIN),
    # and their headers (CUDA's, NCCL's, cuDNN's) in cuda/include for qatc's NCCL bridge.
    cuda_inc = os.path.join(out, "cuda", "include")
    for spec in cuda_wheels:
        name, ver = spec.split("==")
        with zipfile.ZipFile(one(f"{name.replace('-', '_')}-{ver}-*.whl")) as z:
            for m in z.namelist():
                parts = m.split("/")
                if m.endswith("/") or len(parts) < 4 or parts[0] != "nvidia":
                    continue
                if parts[2] == "lib" and len(parts) == 4 and is_library(parts[3]):
                    copy(z, m, os.path.join(lib, parts[3]))
                elif parts[2] == "include":
                    copy(z, m, os.path.join(cuda_inc, *parts[3:]))
    # The linker's names (-lcudart, -lnccl) for libraries shipped only as libX.so.N.
    for base in sorted(os.listdir(lib)):
        if ".so." in base:
            link = os.path.join(lib, base.split(".so.")[0] + ".so")
            if not os.path.lexists(link):
                os.symlink(base, link)
    if not os.path.exists(os.path.join(cuda_inc, "nccl.h")):
        sys.exit("the NCCL wheel has no include/nccl.h")
with open(os.path.join(out, "build-version"), "w") as f:
    f.write((full or version) + "\n")
PY

if [ "$variant" = cpu ]; then
    # torch-sys links -ltorch; the wheel's real libtorch.so needs CUDA, libtorch_cpu has all tch uses.
    ln -s libtorch_cpu.so "$work/lib/libtorch.so"
    ln -s libgomp.so.1 "$work/lib/libgomp.so"
fi

rm -rf "$dest"
mv "$work" "$dest"
trap - EXIT
log "libtorch ready in $dest"
echo "$dest"
