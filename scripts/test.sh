#!/usr/bin/env bash
# Set up .venv/ (first run only) and run the whole test suite: bash scripts/test.sh [pytest args]
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
.venv/bin/ruff check sdan_basicsr tests bench sdan_basicsr_autoload.py setup.py
exec .venv/bin/python -m pytest -q -p no:cacheprovider tests "$@"
