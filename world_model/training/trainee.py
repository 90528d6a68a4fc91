"""Build the trainee, the module a training run optimises (world_model/steps.py), from the job: a fresh or
`--init` model, and for the dynamics its frozen tokenizer (and LAM), whose sizes decide the dynamics' vocabulary
and grid."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from genie_common import storage
from world_model.checkpoint import CheckpointError, load_checkpoint, load_model
from world_model.config import Preset
from world_model.dynamics import Dynamics
from world_model.lam import LatentActionModel
from world_model.runs import FROZEN_LAM, FROZEN_TOKENIZER, resolve_checkpoint
from world_model.steps import DynamicsTrainee
from world_model.tokenizer import Tokenizer
from world_model.training.job import TrainJob

MODEL_CLASSES = {"tokenizer": Tokenizer, "lam": LatentActionModel, "dynamics": Dynamics}


def dynamics_config(job: TrainJob, preset: Preset, tokenizer: Tokenizer, lam: LatentActionModel | None):
    """The preset's dynamics, sized to the tokenizer it reads (vocabulary, grid) and the LAM's code size."""
    config = dataclasses.replace(
        preset.dynamics,
        vocab_size=tokenizer.config.quantizer.codebook_size,
        grid=tokenizer.config.grid,
        conditioning=job.conditioning,
    )
    if lam is not None:
        config = dataclasses.replace(config, latent_action_dim=lam.config.quantizer.code_dim)
    return config


def build_trainee(job: TrainJob, preset: Preset, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """(the trainee, whose `compute_loss` is trained; the stage model that checkpoints export): the same module for
    the tokenizer and the LAM, a `DynamicsTrainee` and its dynamics for the dynamics."""
    init = load_checkpoint(resolve_checkpoint(job.init, job.stage), job.stage) if job.init else None
    if job.stage != "dynamics":
        config = init.config if init is not None else preset.stage_config(job.stage)
        if init is not None and job.stage == "tokenizer":
            # a fine-tuned tokenizer keeps what its ids mean: dynamics models read them, and a restarted code
            # hands its id to new content (TA fine-tuning with restarts left the TA dynamics a mere copier)
            quantizer = dataclasses.replace(config.quantizer, restart_dead_codes=False)
            config = dataclasses.replace(config, quantizer=quantizer)
        model = MODEL_CLASSES[job.stage](config)
        if init is not None:
            model.load_state_dict(init.model_state)
            if job.stage == "tokenizer" and preset.train.tokenizer_finetune == "decoder":
                freeze_encoder(model)
        model = model.to(device)
        return model, model
    tokenizer = load_model(storage.local_copy(storage.join(job.out, FROZEN_TOKENIZER)), "tokenizer").to(device)
    lam = None
    if job.conditioning == "latent":
        lam = load_model(storage.local_copy(storage.join(job.out, FROZEN_LAM)), "lam").to(device)
    config = dynamics_config(job, preset, tokenizer, lam)
    if init is not None:
        if init.config.conditioning != config.conditioning or init.config.vocab_size != config.vocab_size:
            raise CheckpointError(
                f"--init {job.init} is a {init.config.conditioning} dynamics over {init.config.vocab_size} tokens; "
                f"this run trains a {config.conditioning} dynamics over {config.vocab_size} tokens"
            )
        config = init.config
    dynamics = Dynamics(config)
    if init is not None:
        dynamics.load_state_dict(init.model_state)
    elif config.token_init == "codebook":  # a fresh run starts its token embeddings from the frozen tokenizer's codes
        dynamics.init_token_embeddings(tokenizer.quantizer.normalized_codebook(), job.seed)
    dynamics = dynamics.to(device)
    return DynamicsTrainee(dynamics, tokenizer, lam).to(device), dynamics


def freeze_encoder(tokenizer: Tokenizer) -> None:
    """Fine-tune only the decoder: frames -> ids stays the base tokenizer's, id for id (`train.tokenizer_finetune`)."""
    for part in (tokenizer.patch_embedding, tokenizer.encoder, tokenizer.to_code, tokenizer.quantizer):
        part.requires_grad_(False)
