#!/usr/bin/env bash
# Install the free photographs that the pretrained SDAN trains on (Debian packages; root or sudo):
# plasma-workspace-wallpapers (Plasma's wallpapers; the photographs used are LGPL-3, their authors in each
# metadata.json) and opencv-doc (OpenCV's sample data, Apache-2.0 AND BSD-3-Clause). Which files of them are photographs: sdan_basicsr/tools/make_demo.py, DEBIAN_PHOTOS.
set -euo pipefail
if [ -d /usr/share/wallpapers/Path ] && [ -f /usr/share/doc/opencv-doc/examples/data/baboon.jpg ]; then
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends plasma-workspace-wallpapers opencv-doc
