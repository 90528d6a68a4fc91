#!/usr/bin/env bash
# The README's test command: set up, then run the whole test suite (real Procgen, real local Ray).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest "$@"
