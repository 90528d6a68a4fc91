"""Preset files read: one YAML per size (`tiny`, `small`, `paper`, ...), one section per component.

`--preset NAME` picks a file shipped in `cluster/presets/` (package data beside this package, read by path so
that no floor imports `cluster` to find them); `--preset-file PATH` takes a user's own; `--set
section.field=value` overrides single fields. This module reads a file and applies the overrides; each
section's fields are checked against its typed config by the floor that owns it (`check`, see
`world_model.config.load_preset_sections`), so a bad value stops a command before it starts anything.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import yaml

from genie_common.errors import ConfigError

PRESET_DIR = Path(__file__).resolve().parent.parent / "cluster" / "presets"
SECTIONS = ("agent", "data", "world_model", "pipeline")


def known_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def read_preset(name: str | None = None, path: str | Path | None = None, overrides: list[str] | None = None,
                check: Callable[[dict[str, Any], str], None] | None = None) -> dict[str, Any]:
    """The sections of the preset file `path` (else the shipped preset `name`, default tiny), `overrides`
    applied, the section names checked; then `check(sections, file)` checks their fields."""
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
        apply_override(values, item)
    check_section_names(values, str(file))
    if check is not None:
        check(values, str(file))
    return values


def apply_override(values: dict[str, Any], item: str) -> None:
    """`section.field=value` (a YAML value) into the nested dict `values`."""
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


def check_section_names(values: dict[str, Any], source: str) -> None:
    """Only the known sections, each a mapping of fields."""
    unknown = sorted(set(values) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"preset {source}: unknown section(s) {unknown}; sections: {', '.join(SECTIONS)}")
    for name in SECTIONS:
        if not isinstance(values.get(name) or {}, dict):
            raise ConfigError(f"preset {source}: {name} must be a section of fields, got {values[name]!r}")
