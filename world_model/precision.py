"""How a model runs its matmuls on a GPU: TF32 for float32 work, bfloat16 autocast for inference and training.

Why one place: training, evaluation and play must agree on it (a token id must not depend on which of them
computed it: the VQ's nearest-code search stays float32 under autocast, world_model/vq.py), and on a CPU every
one of them stays float32 (bf16 matmuls on a 2-core CPU are slower, and the study's numbers are measured there).
"""

from __future__ import annotations

import contextlib

import torch


def use_fast_float32(device: torch.device | str) -> None:
    """On a CUDA device, let float32 matmuls and convolutions use TF32 (Ampere and later: ~8x the fp32 rate at
    a 10-bit mantissa, ample for these models; the default `highest` leaves it off)."""
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def inference_precision(device: torch.device | str, bf16: bool) -> contextlib.AbstractContextManager:
    """The context evaluation and play run a model in: bfloat16 autocast on CUDA when `bf16`, else float32
    (TF32 matmuls on CUDA). Frames a model returns stay float32 either way (Tokenizer.detokenize)."""
    device = torch.device(device)
    use_fast_float32(device)
    if device.type == "cuda" and bf16:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
