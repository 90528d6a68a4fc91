#!/usr/bin/env bash
# Every CUDA path of genie-redux on this machine's GPU(s), each step timed and printed PASS/FAIL; exit 1 if any
# failed. CPU tests cannot catch what only breaks on a GPU (CUDA tensors at .numpy(), NCCL collectives on CPU
# tensors, bf16 autocast, a learner placed on the wrong node), so run this on a GPU machine (a `gpu` node of
# cluster.yaml: `ray attach cluster.yaml` then run it in the container) after changes to training, eval, the
# PPO learner or play. Without a GPU it says so and exits 0.
#
#   scripts/gpu_check.sh [WORK_DIR]      (default: a fresh temp folder, removed at the end unless KEEP=1)
#
# Steps: a small random dataset (CPU); tokenizer, LAM and dynamics with --gpus-per-worker 1 through Ray Train's
# NCCL backend, validation included, bf16 on and off; DDP over 2 GPUs when there are 2; `genie eval` of each
# model kind on the GPU; one PPO iteration with the learner on the GPU; the play stepper on the GPU.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}

gpus=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>/dev/null || echo 0)
if [ "${gpus:-0}" -lt 1 ]; then
  echo "gpu_check: SKIPPED: no CUDA GPU here (torch.cuda.is_available() is False); run it on a GPU machine"
  exit 0
fi
"$PY" -c "import torch; print('gpu_check:', torch.cuda.device_count(), 'x', torch.cuda.get_device_name(0), '| torch', torch.__version__, '| CUDA', torch.version.cuda, '| bf16', torch.cuda.is_bf16_supported())"

work=${1:-$(mktemp -d /tmp/genie-gpu-check-XXXX)}
mkdir -p "$work"
export WANDB_MODE=offline RAY_USAGE_STATS_ENABLED=0
genie() { "$PY" -m cluster.cli "$@"; }
failed=() passed=0 began=$SECONDS

step() {  # step NAME COMMAND...: run it, log to $work/NAME.log, print PASS/FAIL with its seconds
  local name=$1 start=$SECONDS
  shift
  if "$@" >"$work/$name.log" 2>&1; then
    printf 'PASS  %-28s %4ss\n' "$name" $((SECONDS - start)); passed=$((passed + 1))
  else
    printf 'FAIL  %-28s %4ss  (log: %s; last lines below)\n' "$name" $((SECONDS - start)) "$work/$name.log"
    tail -n 15 "$work/$name.log" | sed 's/^/      /'
    failed+=("$name")
  fi
}

# few steps, validation at step 10 (so the NCCL all-reduce of validation runs), tiny preset's models
TRAIN=(--preset tiny --steps 20 --set world_model.train.val_every=10 --set world_model.train.val_windows=8
       --set world_model.train.checkpoint_every=10 --workers 1 --gpus-per-worker 1 --no-wandb --no-progress)
EVAL=(--data "$work/data" --split val --episodes 4 --horizon 4 --maskgit-steps 2 --workers 1 --gpus-per-worker 1
      --batch-size 4 --samples 1 --no-progress)

step collect genie collect --agent random --episodes 16 --seed 3 --max-episode-frames 100 --val-fraction 0.25 \
  --test-fraction 0 --episodes-per-shard 4 --envs-per-worker 4 --workers 2 --no-progress --out "$work/data"
step train-tokenizer-bf16 genie train tokenizer --data "$work/data" --out "$work/tokenizer" "${TRAIN[@]}"
step train-tokenizer-fp32 genie train tokenizer --data "$work/data" --out "$work/tokenizer-fp32" "${TRAIN[@]}" --no-bf16
step train-lam-bf16 genie train lam --data "$work/data" --out "$work/lam" "${TRAIN[@]}"
# from the token cache (tiny's scrolled copy path: cached references and scrolls, pinned and moved to the device),
# the path a long GPU run takes (train.token_cache auto)
step train-dynamics-bf16 genie train dynamics --data "$work/data" --out "$work/dynamics" --tokenizer "$work/tokenizer" \
  "${TRAIN[@]}" --set world_model.train.token_cache=true
step train-dynamics-fp32 genie train dynamics --data "$work/data" --out "$work/dynamics-fp32" \
  --tokenizer "$work/tokenizer" "${TRAIN[@]}" --no-bf16
# torch.compile of the DDP-wrapped step, and the key dropped for guidance (action_dropout) on the device
step train-dynamics-compile-guided genie train dynamics --data "$work/data" --out "$work/dynamics-guided" \
  --tokenizer "$work/tokenizer" "${TRAIN[@]}" --compile --set world_model.dynamics.action_dropout=0.1
if [ "$gpus" -ge 2 ]; then
  step train-tokenizer-ddp-2gpu genie train tokenizer --data "$work/data" --out "$work/tokenizer-ddp" \
    "${TRAIN[@]}" --workers 2  # the last --workers wins
else
  echo "skip  train-tokenizer-ddp-2gpu         (one GPU: DDP over 2 GPUs needs 2)"
fi
step eval-tokenizer genie eval --model "$work/tokenizer" --out "$work/eval-tokenizer" "${EVAL[@]}"
step eval-lam genie eval --model "$work/lam" --out "$work/eval-lam" "${EVAL[@]}"
step eval-dynamics genie eval --model "$work/dynamics" --out "$work/eval-dynamics" "${EVAL[@]}" --control-steps 2
step eval-dynamics-fp32 genie eval --model "$work/dynamics" --out "$work/eval-dynamics-fp32" "${EVAL[@]}" --control-steps 2 \
  --no-bf16
step eval-dynamics-guided genie eval --model "$work/dynamics-guided" --out "$work/eval-dynamics-guided" "${EVAL[@]}" \
  --control-steps 2 --guidance 2
step ppo-learner-on-gpu genie agent train --preset tiny --steps 2048 --gpus-per-learner 1 --no-progress \
  --out "$work/agent"
step play-stepper-on-gpu "$PY" - "$work/dynamics" <<'EOF'
"""The play stepper (genie play's model replica) on CUDA: encode a context, step twice, decode."""
import sys

import numpy as np
import torch

from cluster.play.stepper import StepInput, Stepper
from world_model.runs import load_world_model

loaded = load_world_model(sys.argv[1], map_location="cuda")
assert loaded.model.dynamics.device.type == "cuda", loaded.model.dynamics.device
frames = np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
for bf16 in (True, False):  # bfloat16 autocast (play's default on GPUs) and float32 with TF32 matmuls
    stepper = Stepper(loaded.model, bf16=bf16)
    tokens = list(stepper.encode(frames[-stepper.context_frames:]))
    generator = torch.Generator(device="cuda").manual_seed(0)
    for action in (1, 5):
        context = np.stack(tokens[-stepper.context_frames:])
        actions = np.array([0] * (len(context) - 1) + [action])
        out = stepper.step([StepInput(context, actions, 2, 1.0)], generator)[0]
        tokens.append(out.tokens)
    frame = stepper.decode(np.stack(tokens[-stepper.context_frames:]))
    assert out.frame.dtype == np.uint8 and frame.dtype == np.uint8
    print("stepper bf16" if bf16 else "stepper fp32", "frames", np.asarray(out.frame).shape, "decoded", frame.shape)
EOF

echo "gpu_check: $passed passed, ${#failed[@]} failed in $((SECONDS - began)) s${failed:+: ${failed[*]}}"
[ "${KEEP:-0}" = 1 ] || [ -n "${1:-}" ] || rm -rf "$work"
[ ${#failed[@]} -eq 0 ]
