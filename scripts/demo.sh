#!/usr/bin/env bash
# The README's main job: set up, then run the whole GenieRedux study on the `tiny` preset on a local
# Ray instance (PPO explorer, four data sets, tokenizer/LAM/dynamics, TA fine-tuning, evaluation)
# and write the report. Output goes to ${OUT:-runs/tiny}; running it again reuses finished stages.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
OUT=${OUT:-runs/tiny}
export PYTHONWARNINGS=ignore
.venv/bin/genie pipeline --preset tiny --out "$OUT" "$@"
echo "report: $OUT/report.html (self-contained; Markdown: $OUT/report.md)"
