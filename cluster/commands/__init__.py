"""Command groups of `genie`, one module each, found at start-up (no central list to edit).

A module here defines `ORDER` (its place in `genie --help`) and `register(commands)`, which adds
its sub-parsers to the `commands` sub-parser action and sets `handler=function(args) -> int` on
each leaf parser with `set_defaults`. Handlers raise the user-facing errors listed in
`cluster.cli.user_errors()`; the CLI prints them as `genie: error: ...` without a traceback.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def command_modules() -> list[ModuleType]:
    modules = [importlib.import_module(f"{__name__}.{info.name}") for info in pkgutil.iter_modules(__path__)]
    return sorted(modules, key=lambda m: getattr(m, "ORDER", 100))
