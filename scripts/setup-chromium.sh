#!/usr/bin/env bash
# Makes sure a headless browser is on this machine for the report.html test
# (Debian's chromium package). Prints its command on stdout; exits non-zero (after
# saying why) when it cannot be installed, which the caller treats as a warning.
set -euo pipefail
for b in chromium chromium-browser; do
    if command -v "$b" >/dev/null; then
        echo "$b"
        exit 0
    fi
done
echo "[setup-chromium] installing Debian package chromium (for the report.html test)" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq >&2 && $sudo apt-get install -y -qq chromium >&2 || {
    echo "[setup-chromium] could not install chromium" >&2
    exit 1
}
command -v chromium
