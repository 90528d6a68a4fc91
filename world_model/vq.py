"""Cosine-similarity vector quantiser with commitment loss, straight-through gradients and dead-code restarts.

Why cosine codes: with inputs and codes l2-normalised, the nearest code is the one of highest
cosine similarity, code vectors cannot drift in norm, and more of the codebook stays in use
(ViT-VQGAN; GenieRedux). Why restarts: codes that no input picks get no gradient and stay dead
for ever; re-seeding them from current encoder outputs puts them back where the data is. The
restart can be switched off (`restart_dead_codes=False`) to study the plain quantiser.

Shapes: N vectors to quantise, D their width, K codes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from world_model.config import QuantizerConfig


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor  # (..., D) unit-norm code vectors, with straight-through gradient to the input
    ids: torch.Tensor  # (...) int64 code index per vector
    loss: torch.Tensor  # () codebook + beta * commitment loss
    usage: torch.Tensor  # () fraction of codes used in this batch
    perplexity: torch.Tensor  # () exp(entropy) of the batch's code histogram


def codebook_usage(ids: torch.Tensor, codebook_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(fraction of codes used, perplexity) of a batch of code ids (any shape)."""
    counts = torch.bincount(ids.reshape(-1), minlength=codebook_size).to(torch.float64)  # (K,)
    probabilities = counts / counts.sum().clamp(min=1)  # (K,)
    entropy = -(probabilities * probabilities.clamp(min=1e-12).log()).sum()  # ()
    return (counts > 0).to(torch.float32).mean(), entropy.exp().to(torch.float32)


class VectorQuantizer(nn.Module):
    def __init__(self, config: QuantizerConfig) -> None:
        super().__init__()
        self.config = config
        self.codebook = nn.Parameter(torch.randn(config.codebook_size, config.code_dim))  # (K, D)
        # training steps since each code was last chosen; persistent so a resumed run keeps it
        self.register_buffer("steps_unused", torch.zeros(config.codebook_size, dtype=torch.long))  # (K,)
        # set once the codebook has been seeded from the first training batch (k-means-style data init)
        self.register_buffer("initialized", torch.tensor(False))  # ()
        self.restarted_codes: int | torch.Tensor = 0  # codes restarted by the last forward (a metric)
        self._seen_initialized = False  # `initialized` read once True, never again: reading it waits for the device

    def normalized_codebook(self) -> torch.Tensor:
        return F.normalize(self.codebook, dim=-1)  # (K, D)

    def lookup(self, ids: torch.Tensor) -> torch.Tensor:
        """Unit-norm code vectors of `ids` (...) -> (..., D)."""
        return self.normalized_codebook()[ids]

    def forward(self, inputs: torch.Tensor) -> QuantizerOutput:
        # inputs: (..., D)
        flat = F.normalize(inputs.reshape(-1, inputs.shape[-1]), dim=-1)  # (N, D)
        if self.training and not self._seen_initialized:
            if not bool(self.initialized):
                self._seed_from(flat.detach())
            self._seen_initialized = True
        codes = self.normalized_codebook()  # (K, D)
        # the nearest code in fp32 even under bf16 autocast: bf16 similarities round close codes together, and a
        # token id must not depend on whether training (bf16 on a GPU) or evaluation (fp32) computed it
        with torch.autocast(device_type=flat.device.type, enabled=False):
            ids = (flat.detach().float() @ codes.detach().float().t()).argmax(dim=-1)  # (N,) highest cosine similarity
        chosen = codes[ids]  # (N, D)
        codebook_loss = F.mse_loss(chosen, flat.detach())  # moves codes towards inputs
        commitment_loss = F.mse_loss(flat, chosen.detach())  # keeps inputs near their codes
        loss = codebook_loss + self.config.commitment * commitment_loss
        straight_through = flat + (chosen - flat).detach()  # (N, D): value of the code, gradient of the input
        usage, perplexity = codebook_usage(ids, self.config.codebook_size)
        if self.training and self.config.restart_dead_codes:
            self._restart_dead_codes(ids, flat.detach())
        return QuantizerOutput(
            quantized=straight_through.reshape(inputs.shape),  # (..., D)
            ids=ids.reshape(inputs.shape[:-1]),  # (...)
            loss=loss,
            usage=usage,
            perplexity=perplexity,
        )

    @torch.no_grad()
    def _seed_from(self, vectors: torch.Tensor) -> None:
        """Codes drawn from the first batch's encoder outputs (N, D): random codes far from every
        input would never be chosen, and all inputs would collapse onto the few nearest ones."""
        picks = torch.randint(0, vectors.shape[0], (self.config.codebook_size,), device=vectors.device)  # (K,)
        self.codebook.data.copy_(F.normalize(vectors[picks] + 0.01 * torch.randn_like(vectors[picks]), dim=-1))
        self.initialized.fill_(True)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self._seen_initialized = False  # loaded weights bring their own `initialized`
        super()._load_from_state_dict(*args, **kwargs)

    @torch.no_grad()
    def _restart_dead_codes(self, ids: torch.Tensor, vectors: torch.Tensor) -> None:
        # ids: (N,); vectors: (N, D) unit-norm encoder outputs of this batch
        used = torch.bincount(ids, minlength=self.config.codebook_size) > 0  # (K,)
        self.steps_unused.add_(1).masked_fill_(used, 0)
        if vectors.is_cuda:
            self._restart_dead_codes_on_device(vectors)
            return
        dead = (self.steps_unused >= self.config.dead_code_window).nonzero().flatten()  # (n_dead,)
        self.restarted_codes = int(dead.numel())
        if dead.numel() == 0:
            return
        picks = torch.randint(0, vectors.shape[0], (dead.numel(),), device=vectors.device)  # (n_dead,)
        noise = 0.01 * torch.randn_like(vectors[picks])  # (n_dead, D): restarted codes must not coincide
        self.codebook.data[dead] = F.normalize(vectors[picks] + noise, dim=-1)
        self.steps_unused[dead] = 0

    @torch.no_grad()
    def _restart_dead_codes_on_device(self, vectors: torch.Tensor) -> None:
        """_restart_dead_codes without reading anything back: a replacement is drawn for every code and kept
        where the code is dead (the CPU path's `nonzero` and its count wait for an accelerator every step).
        The same rule, another draw of random numbers."""
        dead = self.steps_unused >= self.config.dead_code_window  # (K,)
        picks = torch.randint(0, vectors.shape[0], (self.config.codebook_size,), device=vectors.device)  # (K,)
        fresh = F.normalize(vectors[picks] + 0.01 * torch.randn_like(vectors[picks]), dim=-1)  # (K, D)
        self.codebook.data.copy_(torch.where(dead.unsqueeze(-1), fresh.to(self.codebook.dtype), self.codebook.data))
        self.steps_unused.masked_fill_(dead, 0)
        self.restarted_codes = dead.sum()  # () unread
