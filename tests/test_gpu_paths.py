"""CUDA paths checked on a CPU machine: what can be checked without a GPU (the rest: scripts/gpu_check.sh)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_evaluation_and_play_copy_tensors_to_the_cpu_before_numpy():
    """`genie eval --gpus-per-worker 1` and `genie play` keep models and metrics on the GPU; `.numpy()` of a CUDA
    tensor raises, so every tensor leaves the device with `.cpu()` first (a no-op on a CPU run, so CPU tests
    cannot catch a missing one)."""
    bare = []
    for path in sorted([*(REPO / "world_model" / "evaluation").glob("*.py"), *(REPO / "cluster" / "play").glob("*.py")]):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for match in re.finditer(r"\.numpy\(\)", code):
                if not code[: match.start()].endswith(".cpu()"):
                    bare.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not bare, "\n".join(bare)


def test_gpu_check_skips_cleanly_without_a_gpu():
    """On a CPU machine the check says it skipped and exits 0 (CI and laptops run it harmlessly)."""
    import subprocess

    import torch

    if torch.cuda.is_available():
        import pytest

        pytest.skip("a GPU is here: run scripts/gpu_check.sh itself")
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "SKIPPED: no CUDA GPU" in result.stdout, result.stdout + result.stderr
