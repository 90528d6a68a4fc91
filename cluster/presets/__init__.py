"""Preset files: one YAML per size (`tiny`, `small`, `paper`), one section per component.

`--preset NAME` picks a file shipped here; `--preset-file PATH` takes a user's own; `--set
section.field=value` overrides single fields. Each component reads only its own section, but every
section is checked against its typed config when the preset is loaded (`world_model.config.check_sections`), so a bad
value stops a command before it starts anything.

The files are read by `genie_common.presets` (so the lower floors reach them without importing `cluster`);
this package holds them and gives the CLI its names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genie_common.presets import PRESET_DIR, SECTIONS, known_presets

__all__ = ["PRESET_DIR", "SECTIONS", "known_presets", "load_preset"]


def load_preset(name: str | None = None, path: str | Path | None = None,
                overrides: list[str] | None = None) -> dict[str, Any]:
    """`world_model.config.load_preset_sections`: imported when called, `genie --help` stays light."""
    from world_model.config import load_preset_sections

    return load_preset_sections(name, path, overrides)
