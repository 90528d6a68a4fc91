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
        section, dot, field = key.partition(".")
        if not sep or not dot or not field:
            raise ConfigError(f"override {item!r} must look like section.field=value, e.g. agent.lr=0.001")
        values.setdefault(section, {})[field] = yaml.safe_load(raw)
    return values
