"""Search spaces of `genie tune`: which world-model fields a sweep varies, and the concrete trials.

A space is a YAML mapping of field -> values (a `sizes.yaml`):

    width: [32, 64, 128]                 # a list: grid search, every value (x every other list)
    depth: {choice: [1, 2]}              # drawn at random, once per trial
    heads: 4                             # a single value: fixed for every trial
    lr: {loguniform: [0.0003, 0.003]}    # also uniform: [lo, hi], randint: [lo, hi] (inclusive; optional step)
    tokenizer.quantizer.code_dim: [8, 16]  # any field of the preset's world_model: section, by path

Short names apply to the stage being swept: `width` (= dim), `depth`, `heads`, `mlp_ratio` set
every transformer stack of the stage (encoder and decoder, or the dynamics' transformer);
`codebook_size`, `code_dim` its quantizer; `lr` (min_lr follows at the preset's ratio unless it is
swept too) and `batch_size`.

Why the trials are drawn here, in the driver, rather than by Tune's own sampler: every trial
(grid point x sample) is then built through the preset dataclasses *before* any trial starts, so
an unknown field, a negative width or heads that do not divide the width is refused up front with
the field named, instead of failing as an errored trial minutes into a cluster sweep; and the list
of trials is fixed data that an interrupted sweep resumes exactly (`Tuner.restore`).
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import random
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from genie_common.errors import ConfigError
from world_model.config import STAGES, DynamicsConfig, LAMConfig, OptimConfig, TokenizerConfig, TrainSettings

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "randint")
MAX_TRIALS = 1000  # more is almost surely a typo in a grid (and would take days)

SECTIONS: dict[str, type] = {"tokenizer": TokenizerConfig, "lam": LAMConfig, "dynamics": DynamicsConfig,
                             "optim": OptimConfig, "train": TrainSettings}
NON_NEGATIVE_INTS = {"warmup_steps", "micro_batch"}  # int fields that may be 0; every other int field must be >= 1


def stacks(stage: str) -> list[str]:
    """Paths of the transformer stacks of a stage."""
    return ["dynamics.transformer"] if stage == "dynamics" else [f"{stage}.encoder", f"{stage}.decoder"]


def shorthand(stage: str, name: str) -> list[str] | None:
    """The field paths a short name sets for `stage`, or None when `name` is not a short name."""
    if name in ("width", "dim", "depth", "heads", "mlp_ratio"):
        leaf = "dim" if name == "width" else name
        return [f"{stack}.{leaf}" for stack in stacks(stage)]
    if name in ("codebook_size", "code_dim"):
        if stage == "dynamics":
            raise ConfigError(f"search space field {name!r}: the dynamics' vocabulary is its tokenizer's codebook; "
                              f"sweep it with `genie tune tokenizer`, then train dynamics on the chosen tokenizer")
        paths = [f"{stage}.quantizer.{name}"]
        if stage == "tokenizer" and name == "codebook_size":
            paths.append("dynamics.vocab_size")  # the preset requires them equal
        return paths
    if name == "lr":
        return ["optim.lr"]
    if name in ("batch_size", "batch"):
        return ["batch_size"]
    return None


def field_type(path: str) -> type:
    """The Python type of a `section.a.b` field of the world_model: section; unknown paths are refused."""
    parts = path.split(".")
    if parts == ["batch_size"]:
        return int
    if parts[0] not in SECTIONS:
        raise ConfigError(f"search space field {path!r} is unknown: a path starts with one of "
                          f"{', '.join(sorted(SECTIONS))} or batch_size, or is a short name "
                          f"(width, depth, heads, mlp_ratio, codebook_size, code_dim, lr, batch_size)")
    cls: Any = SECTIONS[parts[0]]
    for i, part in enumerate(parts[1:], start=1):
        if not dataclasses.is_dataclass(cls):
            raise ConfigError(
                f"search space field {path!r} is unknown: {'.'.join(parts[:i])} is a value, not a section")
        hints = typing.get_type_hints(cls)
        if part not in hints:
            raise ConfigError(f"search space field {path!r} is unknown: {cls.__name__} "
                              f"({'.'.join(parts[:i])}) has {', '.join(f.name for f in dataclasses.fields(cls))}")
        cls = hints[part]
    if dataclasses.is_dataclass(cls):
        raise ConfigError(f"search space field {path!r} is a section; name one of its fields: "
                          f"{', '.join(f.name for f in dataclasses.fields(cls))}")
    return cls if isinstance(cls, type) else object


@dataclass(frozen=True)
class Dimension:
    """One swept field: `paths` it sets, and either `grid` values or a `distribution` drawn per trial."""

    name: str  # as written in the space file
    paths: tuple[str, ...]
    grid: tuple[Any, ...] = ()
    distribution: str | None = None  # one of DISTRIBUTIONS
    args: tuple[Any, ...] = ()
    step: int | None = None  # randint: multiples of `step` only (e.g. widths divisible by the heads)

    def draw(self, rng: random.Random) -> Any:
        if self.distribution == "choice":
            return rng.choice(self.args)
        low, high = self.args
        if self.distribution == "uniform":
            return rng.uniform(low, high)
        if self.distribution == "loguniform":
            return math.exp(rng.uniform(math.log(low), math.log(high)))
        step = self.step or 1
        first = -(-int(low) // step) * step  # the smallest multiple of step >= low
        return rng.randrange(first, int(high) + 1, step)


@dataclass(frozen=True)
class TrialSpec:
    """One trial: its base preset and the field values it sets on top (plain data, stored in Tune's config)."""

    index: int
    preset: str  # preset name, or a preset file path when `preset_file` is True
    preset_file: bool
    values: dict[str, Any]  # short name or path -> value, as written in the space
    overrides: list[str]  # world_model.a.b=value, for TrainJob.overrides
    seed: int
    params: int = 0  # trainable parameters of the stage model (filled in by the sweep)

    @property
    def name(self) -> str:
        return f"trial-{self.index:03d}"

    def label(self) -> str:
        preset = Path(self.preset).stem if self.preset_file else self.preset
        parts = [f"preset={preset}"] + [f"{k}={_short(v)}" for k, v in self.values.items()]
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrialSpec":
        return cls(**values)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@dataclass
class SearchSpace:
    """The parsed space of one stage; `trials()` draws the concrete list."""

    stage: str
    dimensions: list[Dimension] = field(default_factory=list)

    @classmethod
    def empty(cls, stage: str) -> "SearchSpace":
        return cls(stage, [])

    @classmethod
    def from_file(cls, path: str | Path, stage: str) -> "SearchSpace":
        file = Path(path)
        if not file.is_file():
            raise ConfigError(
                f"--space {file}: no such file (a YAML mapping of field: values, see `genie tune --help`)")
        try:
            values = yaml.safe_load(file.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"--space {file} is not valid YAML: {err}") from err
        return cls.from_mapping(values, stage, source=str(file))

    @classmethod
    def from_mapping(cls, values: Any, stage: str, source: str = "search space") -> "SearchSpace":
        if stage not in STAGES:
            raise ConfigError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
        if not isinstance(values, dict) or not values:
            raise ConfigError(f"{source} must be a non-empty mapping of field: values, e.g. `width: [32, 64]`")
        if set(values) == {"world_model"} and isinstance(values["world_model"], dict):
            values = values["world_model"]
        dimensions = [parse_dimension(str(name), spec, stage) for name, spec in values.items()]
        seen: dict[str, str] = {}
        for dim in dimensions:
            for path in dim.paths:
                if path in seen:
                    raise ConfigError(f"search space fields {seen[path]!r} and {dim.name!r} both set {path}")
                seen[path] = dim.name
        return cls(stage, dimensions)

    @property
    def paths(self) -> set[str]:
        return {path for dim in self.dimensions for path in dim.paths}

    def points(self, samples: int, seed: int) -> list[dict[str, Any]]:
        """Every grid combination x `samples` draws of the distributions: name -> value per trial."""
        if samples < 1:
            raise ConfigError(f"--samples must be at least 1, got {samples}")
        grid = [d for d in self.dimensions if d.distribution is None]
        drawn = [d for d in self.dimensions if d.distribution is not None]
        size = math.prod(len(d.grid) for d in grid) * samples
        if size > MAX_TRIALS:
            raise ConfigError(f"the space makes {size} trials (grid x --samples); at most {MAX_TRIALS}: "
                              f"use distributions ({{choice: [...]}}) with --samples instead of large grids")
        rng = random.Random(seed)
        points = []
        for combo in itertools.product(*[d.grid for d in grid]):
            for sample in range(samples):
                point = {d.name: v for d, v in zip(grid, combo)}
                point.update({d.name: d.draw(rng) for d in drawn})
                point["__sample__"] = sample
                points.append(point)
        return points

    def overrides(self, point: dict[str, Any], base_lr_ratio: float | None) -> list[str]:
        """`world_model.a.b=value` overrides of one point (lr drags min_lr along at the preset's ratio)."""
        out = []
        for dim in self.dimensions:
            for path in dim.paths:
                out.append(f"world_model.{path}={_yaml_scalar(point[dim.name])}")
        if "optim.lr" in self.paths and "optim.min_lr" not in self.paths and base_lr_ratio is not None:
            lr = next(point[d.name] for d in self.dimensions if "optim.lr" in d.paths)
            out.append(f"world_model.optim.min_lr={_yaml_scalar(float(lr) * base_lr_ratio)}")
        return out


def _yaml_scalar(value: Any) -> str:
    """A value as `--set` parses it back (yaml.safe_load): floats keep an exponent or a dot."""
    if isinstance(value, float):
        text = repr(value)  # YAML 1.1 reads 1e-05 as a string: it wants a dot and a signed exponent
        if "e" in text:
            mantissa, exponent = text.split("e")
            text = f"{mantissa if '.' in mantissa else mantissa + '.0'}e{'' if exponent[0] in '+-' else '+'}{exponent}"
        return text
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_yaml_scalar(v) for v in value) + "]"
    return str(value)


def parse_dimension(name: str, spec: Any, stage: str) -> Dimension:
    key = name[len("world_model."):] if name.startswith("world_model.") else name
    paths = shorthand(stage, key) or [key]
    types = {field_type(path) for path in paths}
    kind = types.pop() if len(types) == 1 else object

    def check_value(value: Any, where: str) -> Any:
        if kind is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"search space field {name!r}: {where} {value!r} must be an integer")
            least = 0 if paths[0].split(".")[-1] in NON_NEGATIVE_INTS else 1
            if value < least:
                raise ConfigError(f"search space field {name!r}: {where} {value} must be at least {least}")
        elif kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"search space field {name!r}: {where} {value!r} must be a number")
            value = float(value)
        return value

    if isinstance(spec, list):
        if not spec:
            raise ConfigError(f"search space field {name!r}: an empty list of values")
        return Dimension(name, tuple(paths), grid=tuple(check_value(v, "value") for v in spec))
    if isinstance(spec, dict):
        extra = set(spec) - set(DISTRIBUTIONS) - {"step"}
        chosen = [k for k in DISTRIBUTIONS if k in spec]
        if extra or len(chosen) != 1:
            raise ConfigError(f"search space field {name!r}: give a list (grid) or exactly one of "
                              f"{', '.join(DISTRIBUTIONS)} (e.g. {{choice: [32, 64]}}); got keys {sorted(spec)}")
        distribution = chosen[0]
        args = spec[distribution]
        if not isinstance(args, list) or not args:
            raise ConfigError(f"search space field {name!r}: {distribution} takes a list, e.g. "
                              f"{{{distribution}: [1, 2]}}")
        if distribution == "choice":
            return Dimension(name, tuple(paths), distribution="choice",
                             args=tuple(check_value(v, "choice") for v in args))
        if len(args) != 2:
            raise ConfigError(f"search space field {name!r}: {distribution} takes [low, high], got {args}")
        if distribution == "randint" and kind is not int:
            raise ConfigError(f"search space field {name!r}: randint is for integer fields; use uniform or loguniform")
        if distribution in ("uniform", "loguniform") and kind is int:
            raise ConfigError(f"search space field {name!r} is an integer field: use randint or choice")
        low, high = (check_value(v, bound) for v, bound in zip(args, ("low", "high")))
        if not low < high:
            raise ConfigError(f"search space field {name!r}: {distribution} needs low < high, got {low} and {high}")
        if distribution == "loguniform" and low <= 0:
            raise ConfigError(f"search space field {name!r}: loguniform needs low > 0, got {low}")
        step = spec.get("step")
        if step is not None:
            if distribution != "randint" or isinstance(step, bool) or not isinstance(step, int) or step < 1:
                raise ConfigError(f"search space field {name!r}: step is a positive integer, for randint only")
            if high // step * step < low:
                raise ConfigError(f"search space field {name!r}: no multiple of step {step} lies in [{low}, {high}]")
        return Dimension(name, tuple(paths), distribution=distribution, args=(low, high), step=step)
    return Dimension(name, tuple(paths), grid=(check_value(spec, "value"),))
