#!/usr/bin/env bash
# The README's main job: set up, then collect a small random-agent CoinRun dataset with
# 2 parallel collectors, verify it and describe it. Output goes to ${OUT:-runs/demo}.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
OUT=${OUT:-runs/demo}
export PYTHONWARNINGS=ignore
.venv/bin/genie collect --agent random --episodes 64 --workers 2 --seed 0 --episodes-per-shard 32 --out "$OUT/data/random"
.venv/bin/genie data verify "$OUT/data/random"
.venv/bin/genie data stats "$OUT/data/random" --plot "$OUT/random_stats.png"
echo "report: $OUT/random_stats.png (dataset in $OUT/data/random)"
