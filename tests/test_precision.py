"""Inference precision on GPUs (world_model/precision.py): what evaluation and play run a model in."""

import contextlib

import torch

from tests.test_world_model import _fast_dynamics, random_video, tiny_tokenizer
from world_model.generation import WorldModel


def test_under_bf16_autocast_frames_stay_float32_and_carried_patches_exact():
    """Evaluation and play autocast to bfloat16 on GPUs (world_model/precision.py): the frames they score and show
    must not be bf16, or a patch the dream keeps would no longer be the previous frame's exact pixels (bf16 cannot
    hold k/255) and still frames would lose their exact match. The CPU's bf16 autocast stands in for CUDA's."""
    from world_model.precision import inference_precision

    torch.manual_seed(0)
    tokenizer = tiny_tokenizer().eval()
    world = WorldModel(tokenizer, _fast_dynamics(carry_unchanged=True).eval())
    video, _ = random_video(batch=2, frames=4)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        context = tokenizer.tokenize(video[:, :2])  # (B, 2, h, w)
        shown = world.show(video[:, :2], context, context[:, -1:])  # a dream that keeps every token: (B, 1, H, W, C)
        decoded = tokenizer.detokenize(context)  # (B, 2, H, W, C)
    assert shown.dtype == torch.float32 and decoded.dtype == torch.float32
    assert torch.equal(shown[:, 0], torch.as_tensor(video[:, 1]).float() / 255.0)
    assert isinstance(inference_precision("cpu", bf16=True), contextlib.nullcontext)  # CPUs stay float32
