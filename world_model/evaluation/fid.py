"""Fréchet distance and FID from a local Inception feature extractor (never downloaded).

FID = ||mu_1 - mu_2||^2 + Tr(S_1 + S_2 - 2 (S_1 S_2)^(1/2)) between Gaussian fits of two feature
sets. The weights must be a local TorchScript file: the Inception-v3 (2015-12-05) TorchScript
that StyleGAN2-ADA / clean-fid use (`inception-2015-12-05.pt`), which takes uint8 NCHW images of
any size and returns 2048-d pool features with `return_features=True`. Any TorchScript module
mapping uint8 (N, 3, H, W) to (N, features) works the same way (FID numbers are only comparable
between runs that used the same extractor, which results.json records by file name and hash).
Without the file, FID is skipped with a message saying how to get it; nothing is downloaded.

Shapes: N images (the frames of a batch, flattened), H x W x C pixels; `features` the extractor's width (2048).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genie_common.errors import ConfigError

FID_HOWTO = (
    "pass --inception-weights PATH to a local TorchScript Inception (e.g. StyleGAN2-ADA's "
    "inception-2015-12-05.pt, fetched once by you on a machine with internet access)"
)


@dataclass(frozen=True)
class GaussianFit:
    mean: np.ndarray  # (features,)
    covariance: np.ndarray  # (features, features)
    count: int


def fit_gaussian(features: np.ndarray) -> GaussianFit:
    """(N, features) -> mean and (unbiased) covariance; N >= 2 is needed for a covariance."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ConfigError(f"features must be (N, D), got shape {features.shape}")
    if features.shape[0] < 2:
        raise ConfigError(f"a covariance needs at least 2 feature vectors, got {features.shape[0]}; evaluate "
                          "more episodes")
    return GaussianFit(features.mean(0), np.cov(features, rowvar=False), features.shape[0])


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """Symmetric square root of a positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(a: GaussianFit, b: GaussianFit) -> float:
    """Fréchet distance of two Gaussians.

    Tr((S_a S_b)^(1/2)) = Tr((S_a^(1/2) S_b S_a^(1/2))^(1/2)): the inner matrix is symmetric PSD, so
    eigh is exact and stable (scipy's sqrtm on the non-symmetric product can return complex noise).
    """
    if a.mean.shape != b.mean.shape:
        raise ConfigError(f"feature sizes differ: {a.mean.shape[0]} vs {b.mean.shape[0]}")
    root_a = _sqrt_psd(a.covariance)
    inner = root_a @ b.covariance @ root_a
    trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0, None)).sum())
    distance = float(((a.mean - b.mean) ** 2).sum() + np.trace(a.covariance) + np.trace(b.covariance) - 2 * trace_sqrt)
    return max(distance, 0.0)  # tiny negative values are round-off


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class InceptionFeatures:
    """A local TorchScript feature extractor: uint8 frames (N, H, W, C) -> (N, features)."""

    def __init__(self, path: str | os.PathLike, device: str | torch.device = "cpu") -> None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no Inception weights file there; {FID_HOWTO}")
        try:
            self.module = torch.jit.load(str(path), map_location=device).eval()
        except Exception as err:  # any unreadable file gets one clear message
            raise ConfigError(f"{path}: not a TorchScript module ({err}); {FID_HOWTO}") from err
        self.device = torch.device(device)
        self._takes_return_features = True

    @torch.no_grad()
    def __call__(self, frames: np.ndarray | torch.Tensor, batch: int = 64) -> np.ndarray:
        frames = torch.as_tensor(frames)
        if frames.dtype != torch.uint8:
            frames = (frames.clamp(0, 1) * 255).round().to(torch.uint8)
        nchw = frames.reshape(-1, *frames.shape[-3:]).permute(0, 3, 1, 2).contiguous()  # (N, C, H, W)
        out = []
        for start in range(0, nchw.shape[0], batch):
            chunk = nchw[start : start + batch].to(self.device)
            if self._takes_return_features:
                try:
                    features = self.module(chunk, return_features=True)
                except (RuntimeError, TypeError):
                    self._takes_return_features = False
            if not self._takes_return_features:
                features = self.module(chunk)
            out.append(features.reshape(chunk.shape[0], -1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def fid(real_features: np.ndarray, generated_features: np.ndarray) -> float:
    """FID between two (N, features) feature sets (N may differ)."""
    return frechet_distance(fit_gaussian(real_features), fit_gaussian(generated_features))
