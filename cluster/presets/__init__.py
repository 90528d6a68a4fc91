"""Preset files: one YAML per size (`tiny`, `small`, `paper`), one section per component.

`--preset NAME` picks a file shipped here; `--preset-file PATH` takes a user's own; `--set
section.field=value` overrides single fields. Each component reads only its own section.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from rl_agent.coinrun_env import ConfigError

PRESET_DIR = Path(__file__).resolve().parent


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
        target[parts[-1]] = yaml.safe_load(raw)
    return values
