"""Preset files: one YAML per size (`tiny`, `small`, `paper`), one section per component.

`--preset NAME` picks a file shipped here; `--preset-file PATH` takes a user's own; `--set
section.field=value` overrides single fields. Each component reads only its own section, but every
section is checked against its typed config when the preset is loaded (`check_sections`), so a bad
value stops a command before it starts anything.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from rl_agent.coinrun_env import ConfigError

PRESET_DIR = Path(__file__).resolve().parent
SECTIONS = ("agent", "data", "world_model", "pipeline")


def known_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name: str | None = None, path: str | Path | None = None, overrides: list[str] | None = None) -> dict[str, Any]:
    if path is not None:
        file = Path(path)
        if not file.is_file():
            raise ConfigError(f"preset file {file} does not exist")
    else:
        name = name or "tiny"
        file = PRESET_DIR / f"{name}.yaml"
        if not file.is_file():
            raise ConfigError(f"unknown preset {name!r}; known presets: {', '.join(known_presets())} "
                              f"(or pass your own with --preset-file)")
    try:
        values = yaml.safe_load(file.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"preset file {file} is not valid YAML: {err}") from err
    if not isinstance(values, dict):
        raise ConfigError(f"preset file {file} must hold sections (agent:, data:, ...)")
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        parts = key.split(".")
        if not sep or len(parts) < 2 or not all(parts):
            raise ConfigError(f"override {item!r} must look like section.field=value, e.g. agent.lr=0.001 "
                              f"or world_model.tokenizer.encoder.dim=128")
        target = values
        for part in parts[:-1]:
            child = target.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"override {item!r}: {part} is a value, not a section")
            target = child
        try:
            target[parts[-1]] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            problem = str(getattr(err, "problem", None) or err).splitlines()[0]
            raise ConfigError(f"override {item!r}: {raw!r} is not a value ({problem}); write numbers as 0.001, "
                              f"lists as [0.9, 0.99], text as is") from None
    check_sections(values, str(file))
    return values


def check_sections(values: dict[str, Any], source: str) -> None:
    """Every section of a preset through its typed config (ConfigError naming the field), before anything runs."""
    from rl_agent.named_datasets import NAMED_DATASETS
    from rl_agent.ppo_config import PPOSettings
    from world_model.config import coerce_value, preset_from_sections

    unknown = sorted(set(values) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"preset {source}: unknown section(s) {unknown}; sections: {', '.join(SECTIONS)}")
    for name in SECTIONS:
        if not isinstance(values.get(name) or {}, dict):
            raise ConfigError(f"preset {source}: {name} must be a section of fields, got {values[name]!r}")
    if values.get("world_model"):
        preset_from_sections(source, values["world_model"])
    if values.get("agent"):
        try:
            PPOSettings.from_dict(dict(values["agent"]))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"preset {source}: agent: {err}") from None
        defaults = {f.name: f.default for f in dataclasses.fields(PPOSettings)}
        for field, value in values["agent"].items():  # numbers and switches by their defaults' types
            if isinstance(defaults.get(field), (bool, int, float)):
                coerce_value("agent", field, defaults[field], value)
    counts = {d.preset_count for d in NAMED_DATASETS.values()}
    for field, value in (values.get("data") or {}).items():
        if field not in counts | {"episodes_per_shard"}:
            raise ConfigError(f"preset {source}: unknown data field {field!r}; known: {sorted(counts | {'episodes_per_shard'})}")
        if coerce_value("data", field, 1, value) < 1:
            raise ConfigError(f"data.{field} must be at least 1, got {value!r}")
