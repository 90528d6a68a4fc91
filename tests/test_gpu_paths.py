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
