#!/usr/bin/env bash
# Build the video benchmark's clips (bench/video_bench.py) in datasets/video_opencv, or the folder given (relative to
# the repository), kept when already built: the sample videos of Debian's opencv-doc (installed here if missing; root
# or sudo) cut into clips, vtest.avi and Megamind.avi for training, tree.avi held out, plus generated pans of
# photographs with moving objects; GT, LR x4 and x16 (sdan_basicsr/tools/make_video_demo.py, BENCH_SET).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-datasets/video_opencv}"
VIDEOS=/usr/share/doc/opencv-doc/examples/data
if [ ! -f "$VIDEOS/tree.avi" ]; then
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends opencv-doc
fi
cd "$ROOT"
.venv/bin/python -m sdan_basicsr.tools.make_video_demo --bench --out "$OUT"
