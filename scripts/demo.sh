#!/usr/bin/env bash
# The README's main job: set up, then run the whole GenieRedux study on the `tiny` preset on a local
# Ray instance (PPO explorer, four data sets, tokenizer/LAM/dynamics, TA fine-tuning, evaluation)
# and write the report. Output goes to ${OUT:-runs/$PRESET}; running it again reuses finished tasks.
# PRESET=laptop bash scripts/demo.sh runs the same study trained long enough to act out the keys (< 2 h).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
PRESET=${PRESET:-tiny}
OUT=${OUT:-runs/$PRESET}
export PYTHONWARNINGS=ignore
.venv/bin/genie pipeline --preset "$PRESET" --out "$OUT" "$@"
echo "report: $OUT/report.html (self-contained; Markdown: $OUT/report.md)"
