#!/usr/bin/env bash
# Set up .venv/ (first run only), then the main job: make the demo SR-RAW tree, train SDAN on it,
# test SDAN and bicubic on the held-out scenes, print the table and write a side-by-side PNG.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
exec .venv/bin/python -m sdan_basicsr.tools.demo "$@"
