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
    for path in sorted([*(REPO / "world_model" / "evaluation").glob("*.py"),
                        *(REPO / "cluster" / "play").glob("*.py")]):
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
    result = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0 and "SKIPPED: no CUDA GPU" in result.stdout, result.stdout + result.stderr


def test_tensors_made_for_collectives_are_made_on_the_workers_device():
    """NCCL (Ray Train's backend on GPUs) reduces no CPU tensors: in every training function that calls a
    collective, each tensor built there with torch.tensor/zeros/ones/full names its device (on CPU, gloo takes
    either, so a CPU run cannot catch a missing one; the first multi-GPU validation would)."""
    import ast

    missing = []
    for path in sorted((REPO / "world_model" / "training").glob("*.py")):
        for function in ast.walk(ast.parse(path.read_text())):
            if not isinstance(function, ast.FunctionDef):
                continue
            calls = [n for n in ast.walk(function) if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)]
            collective = any(c.func.attr in ("all_reduce", "broadcast", "all_gather", "reduce") and
                             isinstance(c.func.value, ast.Name) and c.func.value.id == "dist" for c in calls)
            for call in calls if collective else []:
                built = isinstance(call.func.value, ast.Name) and call.func.value.id == "torch" and \
                    call.func.attr in ("tensor", "zeros", "ones", "full", "empty")
                if built and not any(k.arg == "device" for k in call.keywords):
                    missing.append(f"{path.relative_to(REPO)}:{call.lineno} in {function.name}()")
    assert not missing, "tensors without a device in functions that call collectives:\n" + "\n".join(missing)
