"""What every stage's `compute_loss` returns, so one generic train/eval step serves all three.

Metrics stay detached tensors on the model's device until someone reads them: `float()` on a CUDA
tensor waits for the GPU, and one such wait per metric per step starves it (issue 15.12). The
training loop reads them at its log steps only, all in one transfer (`read_metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

Metric = torch.Tensor | float  # a detached 0-d tensor (any device) or a plain number


@dataclass
class LossOutput:
    loss: torch.Tensor  # () the scalar to minimise
    metrics: dict[str, Metric] = field(default_factory=dict)  # detached, unread: read_metrics turns them into floats


def read_metrics(metrics: dict[str, Metric]) -> dict[str, float]:
    """Metrics -> plain floats, with one device-to-host transfer for all the tensors together."""
    tensors = {key: value for key, value in metrics.items() if isinstance(value, torch.Tensor)}
    out = {key: float(value) for key, value in metrics.items() if not isinstance(value, torch.Tensor)}
    if tensors:
        values = torch.stack([value.detach().float().reshape(()) for value in tensors.values()]).tolist()
        out.update(zip(tensors, values))
    return {key: out[key] for key in metrics}  # the caller's order


def mean_metric(values: list[Metric]) -> Metric:
    """The mean of one metric's values, unread: a 0-d tensor when they are all tensors, else a float."""
    if values and all(isinstance(v, torch.Tensor) for v in values):
        return torch.stack([v.detach().float().reshape(()) for v in values]).mean()
    return sum(float(v) for v in values) / max(len(values), 1)


def mean_metrics(history: dict[str, list[Metric]]) -> dict[str, float]:
    """The mean of each metric over the steps since the last log (lists of tensors or floats), read once."""
    return read_metrics({key: mean_metric(values) for key, values in history.items()})
