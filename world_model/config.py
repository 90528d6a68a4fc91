"""Typed configs of the three world-model stages and the named presets `tiny`, `small`, `paper`.

Why dataclasses (not free dicts): a checkpoint records its config as a plain dict and rebuilds
the model from it, so every field must have one name, one type and one default, and an unknown
field in a saved or user-given config must be an error rather than silently ignored.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from genie_common.config import check_known_fields
from genie_common.errors import ConfigError  # one error type for every bad option in the project
from genie_common.presets import read_preset

FRAME_SIZE = 64  # CoinRun frames are 64x64x3 (docs/design.md, 'The episode record')
FRAME_CHANNELS = 3
NUM_ENV_ACTIONS = 15  # Procgen's discrete action set

STAGES = ("tokenizer", "lam", "dynamics")
Conditioning = Literal["latent", "ground_truth"]


@dataclass(frozen=True)
class TransformerConfig:
    """An ST-transformer stack: `depth` blocks of spatial attention, causal temporal attention, MLP."""

    dim: int = 512
    depth: int = 8
    heads: int = 8
    mlp_ratio: float = 4.0
    attention: Literal["sdpa", "naive"] = "sdpa"  # "naive" = explicit softmax(QK^T)V, for the benchmark
    peg_init: Literal["zero", "random"] = "zero"  # the PEG conv's start: zero (no PEG at first) or PyTorch's default

    def __post_init__(self) -> None:
        if self.peg_init not in ("zero", "random"):
            raise ConfigError(f"peg_init must be 'zero' or 'random', got {self.peg_init!r}")
        for name in ("dim", "depth", "heads"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.mlp_ratio <= 0:
            raise ConfigError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if self.dim % self.heads:
            raise ConfigError(f"dim {self.dim} is not divisible by heads {self.heads}")
        if self.attention not in ("sdpa", "naive"):
            raise ConfigError(f"attention must be 'sdpa' or 'naive', got {self.attention!r}")


@dataclass(frozen=True)
class QuantizerConfig:
    """Cosine-similarity vector quantiser (codes and inputs l2-normalised)."""

    codebook_size: int = 1024
    code_dim: int = 32
    commitment: float = 0.25  # beta of the commitment loss
    restart_dead_codes: bool = True  # re-seed unused codes from batch vectors
    dead_code_window: int = 100  # training steps a code may go unused before it is restarted

    def __post_init__(self) -> None:
        if self.codebook_size < 1 or self.code_dim < 1:
            raise ConfigError(f"codebook_size and code_dim must be positive, got {self.codebook_size} and "
                              f"{self.code_dim}")


@dataclass(frozen=True)
class TokenizerConfig:
    """ST-ViViT VQ-VAE: frames -> (h, w) token ids per frame -> frames."""

    image_size: int = FRAME_SIZE
    channels: int = FRAME_CHANNELS
    patch: int = 4
    frames: int = 16  # training window length
    encoder: TransformerConfig = field(default_factory=lambda: TransformerConfig(512, 8, 8))
    decoder: TransformerConfig = field(default_factory=lambda: TransformerConfig(512, 8, 8))
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    encoder_temporal: bool = True  # False: each frame's tokens from that frame alone (see tokenizer.py)

    def __post_init__(self) -> None:
        if self.image_size % self.patch:
            raise ConfigError(f"image_size {self.image_size} is not divisible by patch {self.patch}")

    @property
    def grid(self) -> int:
        return self.image_size // self.patch


@dataclass(frozen=True)
class LAMConfig:
    """Latent action model: one latent action per transition from a small codebook."""

    image_size: int = FRAME_SIZE
    channels: int = FRAME_CHANNELS
    patch: int = 16
    frames: int = 16
    encoder: TransformerConfig = field(default_factory=lambda: TransformerConfig(512, 8, 8))
    decoder: TransformerConfig = field(default_factory=lambda: TransformerConfig(512, 8, 8))
    quantizer: QuantizerConfig = field(
        default_factory=lambda: QuantizerConfig(codebook_size=7, code_dim=32, restart_dead_codes=True)
    )

    def __post_init__(self) -> None:
        if self.image_size % self.patch:
            raise ConfigError(f"image_size {self.image_size} is not divisible by patch {self.patch}")

    @property
    def num_actions(self) -> int:
        return self.quantizer.codebook_size

    @property
    def grid(self) -> int:
        return self.image_size // self.patch


@dataclass(frozen=True)
class DynamicsConfig:
    """MaskGIT dynamics over tokenizer tokens, conditioned on latent (GenieRedux) or true (-G) actions."""

    vocab_size: int = 1024  # the tokenizer's codebook size
    grid: int = 16  # tokens per side of a frame (the tokenizer's image_size // patch)
    frames: int = 16
    transformer: TransformerConfig = field(default_factory=lambda: TransformerConfig(512, 12, 8))
    conditioning: Conditioning = "ground_truth"
    num_env_actions: int = NUM_ENV_ACTIONS  # used when conditioning == "ground_truth"
    latent_action_dim: int = 32  # the LAM's code_dim, used when conditioning == "latent"
    mask_ratio_min: float = 0.5  # training mask ratio ~ U(mask_ratio_min, 1)
    sampling_steps: int = 25  # MaskGIT steps per generated frame
    temperature: float = 1.0  # initial sampling temperature, annealed linearly to 0
    # What lets a small dynamics learn the game quickly (README, "What the dynamics needs"); the
    # defaults are the paper's plain MaskGIT, which `paper` keeps.
    token_init: Literal["random", "codebook"] = "random"  # codebook: token embeddings start from the tokenizer's codes
    tie_embeddings: bool = False  # logits = hidden . token embeddings^T (MaskGIT's tied output layer)
    copy_bias: float = 0.0  # initial logit bonus for the predecessor frame's token at each position (0 = no copy path)
    spatial_positions: Literal["none", "sincos", "learned"] = "none"  # absolute (h, w) embedding added to every frame
    last_frame_mask_share: float = 0.0  # share of training windows with a clean context and only the last frame masked
    # the loss's weight on masked tokens that differ from their copy reference (the frame before, or its scrolled
    # copy) against 1 on those that copy it: most tokens copy, so the few a key changes (the agent's sprite, what
    # scrolls into view) weigh little in a plain cross-entropy; 1 = the paper's unweighted loss
    changed_token_weight: float = 1.0
    carry_unchanged: bool = False  # decoding: a patch whose token stays the same keeps the previous frame's pixels
    # where the action enters: "input" adds it to every token of its frame once (the paper); "adaptive_norm" also
    # scales and shifts every block's normalised inputs by it (DiT's adaLN, zero-initialised: starts as "input")
    action_conditioning: Literal["input", "adaptive_norm"] = "input"
    # classifier-free guidance on the key: training replaces this share of the transitions' actions by the
    # "no action" vector, so the sampler can contrast a frame's logits with and without its key and follow
    # logits_none + guidance * (logits_key - logits_none); guidance 1 = plain sampling (the paper)
    action_dropout: float = 0.0
    guidance: float = 1.0
    # what the copy path copies: "previous", the frame before at each position; "scrolled", the frame before
    # shifted by a whole-pixel scroll of the scene that a small head predicts from the frame before, its own
    # scroll and the key (world_model/scroll.py: CoinRun's camera follows the agent, so the key's first effect is
    # a scroll, and a scroll of under a patch re-codes most 4x4 patches; copying the scrolled frame keeps them)
    copy_reference: Literal["previous", "scrolled"] = "previous"
    max_scroll: int = 6  # px per axis the scroll head can predict (each axis a (2 max_scroll + 1)-way choice)
    scroll_loss_weight: float = 1.0  # the scroll head's cross-entropy beside the tokens'
    scroll_temperature: float = 1.0  # the scroll's draw: softmax(logits / this); 0 = the most likely scroll
    # how a rollout turns the head's distribution into a scroll: "sample", a whole-pixel scroll drawn at
    # scroll_temperature; "expected", its expected scroll (sub-pixel), added to a camera position the rollout
    # carries, shifting the frame by the whole pixels that position crosses: a 0.4 px a step scroll then moves the
    # dream a pixel every 2-3 steps (a draw at temperature 0.5 mostly rounds it to 0), and the head reads back the
    # sub-pixel scroll it was trained on (world_model/scroll.py, Scroller)
    scroll_draw: Literal["sample", "expected"] = "sample"
    # the head picks the change from the scroll into the frame before (whole px per axis) instead of the scroll
    # itself: a running agent keeps its speed unless the key, gravity or a wall changes it. Why: trained on the
    # random agent's data (its sideways scroll 0 in 80% of frames), a head that picks the scroll itself learnt
    # "mostly 0" and picked the running agent's sideways scroll in 25% of Diverse frames, where "the same as
    # before" is right in 69% (README, "What the dynamics needs")
    scroll_relative: bool = False
    # how the scroll head reads frame t-1's transformer output: "mean", its mean over positions; "attention", the
    # key's own weighted sums over positions (scroll_pool_heads of them; a query from the key plus a learned
    # per-position bias, both starting at 0, so the head starts as "mean"). Why: whether a key moves the camera
    # depends on what is next to the agent (a wall, the ground under it), a few of the 256 positions that a mean
    # dilutes; the lookup of key x scroll before, which sees none of it, dreams worse forks than the head
    scroll_pool: Literal["mean", "attention"] = "mean"
    scroll_pool_heads: int = 2
    # pixels [top, bottom, left, right) of the frame that the scrolled copy path does NOT shift: where the agent is,
    # whom CoinRun's camera follows, so it stays put on screen while the level scrolls. Why: shifted with the level,
    # the reference carried the agent's sprite away from where it is in 99% of frames that scroll by 2 px or more
    # (the box's pixels match the frame before unshifted at 8.8 of 255 on average, shifted at 49; the whole frame
    # the other way round: 14.5 against 5.6), so the dynamics had to redraw the agent every frame, and its dreams lost
    # it within a few frames. None: the whole frame scrolls (the presets before 2026-12-02)
    camera_locked_box: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.copy_reference not in ("previous", "scrolled"):
            raise ConfigError(f"copy_reference must be 'previous' or 'scrolled', got {self.copy_reference!r}")
        if self.copy_reference == "scrolled" and not self.copy_bias:
            raise ConfigError("copy_reference 'scrolled' needs a copy path: set copy_bias > 0 (e.g. 3)")
        if not 1 <= self.max_scroll <= 16:
            raise ConfigError(f"max_scroll must lie in [1, 16] px, got {self.max_scroll}")
        if self.scroll_temperature < 0:
            raise ConfigError(f"scroll_temperature must be >= 0 (0 = the most likely scroll), got "
                              f"{self.scroll_temperature}")
        if self.scroll_draw not in ("sample", "expected"):
            raise ConfigError(f"scroll_draw must be 'sample' or 'expected', got {self.scroll_draw!r}")
        if self.scroll_loss_weight < 0:
            raise ConfigError(f"scroll_loss_weight must be >= 0, got {self.scroll_loss_weight}")
        if self.camera_locked_box is not None:
            box = self.camera_locked_box
            if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(isinstance(v, int) for v in box)
                    and 0 <= box[0] < box[1] and 0 <= box[2] < box[3]):
                raise ConfigError("camera_locked_box must be 4 whole pixels [top, bottom, left, right) with top < "
                                  f"bottom and left < right, e.g. [24, 38, 29, 35]; got {box!r}")
            if self.copy_reference != "scrolled":
                raise ConfigError("camera_locked_box is the part of the frame a scrolled copy path does not shift: "
                                  "it needs copy_reference 'scrolled' (with copy_reference 'previous', set "
                                  "camera_locked_box to null too)")
            object.__setattr__(self, "camera_locked_box", tuple(box))
        if self.scroll_pool not in ("mean", "attention"):
            raise ConfigError(f"scroll_pool must be 'mean' or 'attention', got {self.scroll_pool!r}")
        if not 1 <= self.scroll_pool_heads <= 16:
            raise ConfigError(f"scroll_pool_heads must lie in [1, 16], got {self.scroll_pool_heads}")
        if not 0.0 <= self.action_dropout < 1.0:
            raise ConfigError(f"action_dropout must lie in [0, 1), got {self.action_dropout}")
        if self.guidance < 0:
            raise ConfigError(f"guidance must be >= 0 (1 = no guidance), got {self.guidance}")
        if self.guidance != 1.0 and self.action_dropout == 0.0:
            raise ConfigError(f"guidance {self.guidance} needs a dynamics trained with action_dropout > 0 "
                              "(this one never "
                              "learnt a frame without its key); use guidance 1, or train with e.g. action_dropout 0.1")
        if self.token_init not in ("random", "codebook"):
            raise ConfigError(f"token_init must be 'random' or 'codebook', got {self.token_init!r}")
        if self.spatial_positions not in ("none", "sincos", "learned"):
            raise ConfigError(
                f"spatial_positions must be 'none', 'sincos' or 'learned', got {self.spatial_positions!r}")
        if self.action_conditioning not in ("input", "adaptive_norm"):
            raise ConfigError("action_conditioning must be 'input' or 'adaptive_norm', got "
                              f"{self.action_conditioning!r}")
        if self.changed_token_weight <= 0:
            raise ConfigError(f"changed_token_weight must be > 0 (1 = unweighted), got {self.changed_token_weight}")
        if not 0.0 <= self.last_frame_mask_share <= 1.0:
            raise ConfigError(f"last_frame_mask_share must lie in [0, 1], got {self.last_frame_mask_share}")
        if self.conditioning not in ("latent", "ground_truth"):
            raise ConfigError(f"conditioning must be 'latent' or 'ground_truth', got {self.conditioning!r}")
        if not 0.0 <= self.mask_ratio_min <= 1.0:
            raise ConfigError(f"mask_ratio_min must lie in [0, 1], got {self.mask_ratio_min}")
        if self.sampling_steps < 1:
            raise ConfigError(f"sampling_steps must be at least 1, got {self.sampling_steps}")


@dataclass(frozen=True)
class OptimConfig:
    """The paper's optimiser: AdamW, wd on matrices only, warmup then cosine to min_lr at the last step."""

    lr: float = 1e-4
    min_lr: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 1e-4
    warmup_steps: int = 1000
    total_steps: int = 100_000
    grad_clip: float = 10.0

    def __post_init__(self) -> None:
        if self.total_steps < 1 or not 0 <= self.warmup_steps < self.total_steps:
            raise ConfigError(f"need 0 <= warmup_steps < total_steps, got {self.warmup_steps} and {self.total_steps}")
        if self.min_lr > self.lr:
            raise ConfigError(f"min_lr {self.min_lr} exceeds lr {self.lr}")


@dataclass(frozen=True)
class TrainSettings:
    """How a stage is trained, apart from the optimiser: batching, validation, checkpoints, logging."""

    micro_batch: int = 0  # windows per worker per forward pass; 0 = the worker's whole share of the batch
    val_every: int = 1000  # optimiser steps between validations (and at the last step)
    val_windows: int = 256  # fixed validation windows, the same at every validation
    checkpoint_every: int = 1000  # steps between checkpoints (and at the last step)
    keep_checkpoints: int = 3  # Ray Train checkpoints kept (latest ones); best.pt is kept apart
    sample_every: int = 1000  # steps between sample images
    log_every: int = 10  # steps between metric rows
    # dynamics: train on the token cache (frozen tokenizer/LAM ids encoded once per run, world_model/token_cache.py):
    # true always; false encodes every window's frames at every step (the same losses); auto uses a cache that is
    # already there, and builds one only when the run's steps would encode at least as many frames as building it
    token_cache: bool | str = "auto"
    # what fine-tuning a tokenizer (`--init`, the TA stage) trains: "all" its weights (the paper), or "decoder" alone
    # (encoder and codebook frozen): every frame keeps its token ids, so a dynamics fine-tuned on the new data goes
    # on from its base instead of relearning a vocabulary (tiny: all-weights fine-tuning kept 4% of the ids)
    tokenizer_finetune: str = "all"

    def __post_init__(self) -> None:
        for name in ("val_every", "val_windows", "checkpoint_every", "keep_checkpoints", "sample_every", "log_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if self.micro_batch < 0:
            raise ConfigError(f"train.micro_batch must be >= 0 (0 = no accumulation), got {self.micro_batch}")
        if not (isinstance(self.token_cache, bool) or self.token_cache == "auto"):
            raise ConfigError(f"train.token_cache must be true, false or auto, got {self.token_cache!r}")
        if self.tokenizer_finetune not in ("all", "decoder"):
            raise ConfigError(f"train.tokenizer_finetune must be all or decoder, got {self.tokenizer_finetune!r}")


@dataclass(frozen=True)
class Preset:
    """A consistent size for every stage (docs/design.md, 'Presets'), read from `cluster/presets/<name>.yaml`
    (`world_model:`)."""

    name: str
    tokenizer: TokenizerConfig
    lam: LAMConfig
    dynamics: DynamicsConfig
    optim: OptimConfig
    batch_size: int
    train: TrainSettings = field(default_factory=TrainSettings)
    # per-stage optimiser fields over `optim` (e.g. {"dynamics": {"lr": 1e-3}}): the stages need not share one lr
    stage_optim: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for stage in self.stage_optim:
            if stage not in STAGES:
                raise ConfigError(f"stage_optim names unknown stage {stage!r}; stages: {', '.join(STAGES)}")
            self.optim_for(stage)  # validates the merged settings now, not at the start of training
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        for stage in ("tokenizer", "lam"):  # the data contract: every stage reads CoinRun's frames as they are
            config = getattr(self, stage)
            if (config.image_size, config.channels) != (FRAME_SIZE, FRAME_CHANNELS):
                raise ConfigError(f"{stage}.image_size {config.image_size} and channels {config.channels} must be "
                                  f"{FRAME_SIZE} and {FRAME_CHANNELS}: "
                                  f"CoinRun frames are {FRAME_SIZE}x{FRAME_SIZE} RGB")
        if self.dynamics.vocab_size != self.tokenizer.quantizer.codebook_size:
            raise ConfigError(f"dynamics.vocab_size {self.dynamics.vocab_size} must equal the tokenizer's "
                              f"quantizer.codebook_size {self.tokenizer.quantizer.codebook_size}")
        if self.dynamics.grid != self.tokenizer.grid:
            raise ConfigError(f"dynamics.grid {self.dynamics.grid} must equal the tokenizer's image_size // patch = "
                              f"{self.tokenizer.grid}")

    def optim_for(self, stage: str) -> OptimConfig:
        """The optimiser of one stage: `optim` with that stage's `stage_optim` fields over it."""
        fields = self.stage_optim.get(stage) or {}
        return config_from_dict(OptimConfig, {**config_to_dict(self.optim), **fields}) if fields else self.optim

    def stage_config(self, stage: str) -> Any:
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        return getattr(self, stage)


def preset_from_sections(name: str, sections: dict[str, Any]) -> Preset:
    """Build a Preset from the `world_model:` section of a preset file (missing fields take defaults)."""
    known = {"tokenizer", "lam", "dynamics", "optim", "stage_optim", "batch_size", "train"}
    unknown = set(sections) - known
    if unknown:
        raise ConfigError(f"unknown world_model field(s) {sorted(unknown)}; known: {sorted(known)}")
    return Preset(
        name=name,
        tokenizer=config_from_dict(TokenizerConfig, sections.get("tokenizer") or {}),
        lam=config_from_dict(LAMConfig, sections.get("lam") or {}),
        dynamics=config_from_dict(DynamicsConfig, sections.get("dynamics") or {}),
        optim=config_from_dict(OptimConfig, sections.get("optim") or {}),
        batch_size=coerce_value("world_model", "batch_size", 84, sections.get("batch_size", 84)),
        train=config_from_dict(TrainSettings, sections.get("train") or {}),
        stage_optim={str(k): dict(v or {}) for k, v in (sections.get("stage_optim") or {}).items()},
    )


def load_preset(name: str | None = "tiny", path: str | None = None, overrides: list[str] | None = None) -> Preset:
    """The world-model preset of a named preset file (or `path`), with `world_model.a.b=value` overrides.

    Presets are files (docs/design.md, 'Conventions'): the same YAML holds the agent, data and world-model sections,
    so one `--preset`/`--preset-file` sizes a whole pipeline. Unknown names list the known ones.
    """
    sections = load_preset_sections(name, path, overrides)
    if "world_model" not in sections:
        raise ConfigError(f"preset {path or name!r} has no world_model: section")
    label = name if path is None else str(path)
    return preset_from_sections(label, sections["world_model"] or {})


def load_preset_sections(name: str | None = None, path: str | None = None,
                         overrides: list[str] | None = None) -> dict[str, Any]:
    """Every section of a preset file (`genie_common.presets.read_preset`), each checked by `check_sections`."""
    return read_preset(name, path, overrides, check=check_sections)


def check_sections(values: dict[str, Any], source: str) -> None:
    """Every section of a preset through its typed config (ConfigError naming the field), before anything runs."""
    from rl_agent.named_datasets import NAMED_DATASETS, RANDOM_TRAIN_HOLD_FIELDS
    from rl_agent.ppo_config import PPOSettings

    if values.get("world_model"):
        preset_from_sections(source, values["world_model"])
    if values.get("agent"):
        try:
            PPOSettings.from_dict(dict(values["agent"]))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"preset {source}: agent: {err}") from None
        fields = {f.name: f for f in dataclasses.fields(PPOSettings)}
        defaults = {name: f.default for name, f in fields.items()}
        for field_name, value in values["agent"].items():  # numbers and switches by their defaults' types
            if value is None and field_name in fields and allows_none(fields[field_name]):
                continue  # `vf_clip: null` (no clipping), as the presets' comments say
            if isinstance(defaults.get(field_name), (bool, int, float)):
                coerce_value("agent", field_name, defaults[field_name], value)
    counts = {d.preset_count for d in NAMED_DATASETS.values()}
    known = counts | {"episodes_per_shard"} | set(RANDOM_TRAIN_HOLD_FIELDS)
    for field_name, value in (values.get("data") or {}).items():
        if field_name not in known:
            raise ConfigError(f"preset {source}: unknown data field {field_name!r}; known: {sorted(known)}")
        if value is None and field_name in RANDOM_TRAIN_HOLD_FIELDS:
            continue  # null: the paper's uniform random agent
        if field_name == "random_train_hold_prob":
            if not 0.0 <= coerce_value("data", field_name, 0.0, value) < 1.0:
                raise ConfigError(f"data.{field_name} must be in [0, 1) (null: none), got {value!r}")
        elif coerce_value("data", field_name, 1, value) < 1:
            raise ConfigError(f"data.{field_name} must be at least 1, got {value!r}")


# ---- dict round trip (for checkpoints and command-line overrides) -----------------------------
C = TypeVar("C")


def config_to_dict(config: Any) -> dict[str, Any]:
    """A nested plain dict (only str/int/float/bool/list), safe for `torch.load(weights_only=True)`."""
    values = dataclasses.asdict(config)
    return _lists(values)


def _lists(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _lists(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_lists(v) for v in value]
    return value


def config_from_dict(cls: type[C], values: dict[str, Any]) -> C:
    """Rebuild a (nested) config dataclass; unknown keys are an error naming the known ones."""
    check_known_fields(cls, values, f"{cls.__name__} field")
    known = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, value in values.items():
        default = _field_default(known[name])
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            kwargs[name] = config_from_dict(type(default), value)
        elif value is None and allows_none(known[name]):
            kwargs[name] = None
        else:
            kwargs[name] = coerce_value(cls.__name__, name, default, value)
    return cls(**kwargs)


def coerce_value(owner: str, name: str, default: Any, value: Any) -> Any:
    """Numbers given as text (YAML reads `1e-5` as a string) become numbers; a wrong type is an error."""
    if isinstance(default, tuple):
        if not isinstance(value, (list, tuple)) or len(value) != len(default):
            raise ConfigError(f"{owner}.{name} must be a list of {len(default)} values such as {list(default)}, "
                              f"got {value!r}")
        return tuple(coerce_value(owner, f"{name}[{i}]", d, v) for i, (d, v) in enumerate(zip(default, value)))
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{owner}.{name} must be true or false, got {value!r}")
    if isinstance(default, (int, float)) and not isinstance(value, bool):
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise ConfigError(f"{owner}.{name} must be a number, got {value!r}") from None
        if isinstance(value, (int, float)):
            if isinstance(default, int) and not isinstance(default, bool):
                if float(value) != int(value):
                    raise ConfigError(f"{owner}.{name} must be a whole number, got {value!r}")
                return int(value)
            return float(value)
        raise ConfigError(f"{owner}.{name} must be a number, got {value!r}")
    return value


def allows_none(f: dataclasses.Field) -> bool:
    """Whether the field is declared optional (`float | None`, `Optional[...]`): null is then a value, not a typo."""
    declared = f.type if isinstance(f.type, str) else repr(f.type)
    return "None" in declared or "Optional" in declared


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None
