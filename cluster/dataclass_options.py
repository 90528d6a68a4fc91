"""Command-line options made from a typed config's fields, and the config made back from the parsed options.

A field declared with `genie_common.config.option(...)` documents itself: its help, its flag when that is not
`--field-name`, and the check of its values travel in the field's metadata; its default and type are the field's
own. So a command restates none of them: `add_options(parser, EvalConfig, ["context", "horizon"])` adds
`--context` and `--horizon` (in that order, so a command keeps its options in the order its help shows them),
and `config_from_args(EvalConfig, args, names, model=...)` builds the config from what was parsed, with the
fields that are no options given by the command. Parsed values keep argparse's names (`args.no_bf16` for
`--no-bf16`, `args.envs_per_worker` for `--envs-per-worker`), so what reads them needs no change.

How a field becomes an option: `X | None` is an option of type X with default None; a whole number or real is
checked by its `range` (cluster.arguments' parsers, one line and exit 2 when bad); `path='storage'` is a
`storage_location`; `tuple[str, ...]` (or `list[str]`) is a comma-separated list (of `storage_location`s with
`path='storage'`); a bool whose default is False is a switch that sets it, one whose default is True a `--no-...`
switch that clears it; no default means a required option.

Options that override a preset (`add_options(..., overriding="agent")`) default to the preset's value, not the
field's: unless given they are absent from what was parsed, their help names the preset key they override, and
`overrides_from_args` returns the ones given, to lay over the preset's section.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, Callable, Iterable

from cluster.arguments import (fraction, non_negative_float, non_negative_int, positive_float, positive_int,
                               storage_location)

_RANGES: dict[tuple[type, str], Callable[[str], Any]] = {
    (int, "positive"): positive_int, (int, "non_negative"): non_negative_int,
    (float, "positive"): positive_float, (float, "non_negative"): non_negative_float, (float, "fraction"): fraction,
}


def comma_list(text: str) -> tuple[str, ...]:
    """`a, b,c` -> ('a', 'b', 'c') (empty items dropped)."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def storage_list(text: str) -> tuple[str, ...]:
    """`a, s3://b/c` -> ('a', 's3://b/c'), each item checked as a `storage_location`."""
    return tuple(storage_location(part) for part in comma_list(text))


storage_list.path_kind = "storage"  # type: ignore[attr-defined]  (tests find every path argument by this)


def flag_of(field: dataclasses.Field) -> str:
    """The option that sets `field`: its metadata's `flag`, else `--field-name`."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _dest(field: dataclasses.Field) -> str:
    return flag_of(field)[2:].replace("-", "_")  # argparse's own name for the option's value


def _fields(cls: type, names: Iterable[str]) -> list[dataclasses.Field]:
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise TypeError(f"{cls.__name__} has no field(s) {unknown}")
    chosen = [by_name[n] for n in names]
    for field in chosen:
        if "help" not in field.metadata:
            raise TypeError(f"{cls.__name__}.{field.name} has no help: declare it with genie_common.config.option")
    return chosen


def _kind(hint: Any) -> type:
    """int for `int` and `int | None`, tuple for `tuple[str, ...]`, ..."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (hint,) = [a for a in typing.get_args(hint) if a is not type(None)]
    return typing.get_origin(hint) or hint


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def _negated(field: dataclasses.Field, kind: type) -> bool:
    """A bool that is on by default: its option is a `--no-...` switch."""
    return kind is bool and _default(field) is True


def add_options(parser: argparse.ArgumentParser, cls: type, names: Iterable[str], *, overriding: str | None = None,
                metavars: dict[str, str] | None = None, **types_by_field: Callable[[str], Any]) -> None:
    """Add an option for each named field of the dataclass `cls`, in the order given. `types_by_field` replaces the
    argparse type of a field where the command knows better (e.g. a `local_path` with its own reason), `metavars`
    the name --help gives a field's value (e.g. {'gpus_per_worker': 'N'}; default: the flag in capitals). With
    `overriding` (a preset section, e.g. 'agent') each option overrides that section's value of its field: its
    default is the preset's, and only a given option lands in the parsed values (see `overrides_from_args`)."""
    hints = typing.get_type_hints(cls)
    for field in _fields(cls, names):
        meta, kind, default, flag = field.metadata, _kind(hints[field.name]), _default(field), flag_of(field)
        options: dict[str, Any] = {"help": meta["help"]}
        if overriding is not None:
            if kind is bool:
                raise TypeError(f"{cls.__name__}.{field.name}: a switch cannot override a preset (use --set)")
            options["help"] += f" (default: the preset's {overriding}.{field.name})"
        if kind is bool:
            if _negated(field, kind) and not flag.startswith("--no-"):
                raise TypeError(f"{cls.__name__}.{field.name} is on by default: its flag must be --no-...")
            options["action"] = "store_true"
        else:
            if overriding is not None:  # absent unless given, and no "(default: None)" in --help
                options["default"] = argparse.SUPPRESS
            elif default is dataclasses.MISSING:
                options["required"] = True
            else:
                options["default"] = ",".join(default) if kind in (tuple, list) and default is not None else default
            if field.name in types_by_field:
                options["type"] = types_by_field[field.name]
            elif kind in (tuple, list):
                options["type"] = storage_list if meta.get("path") == "storage" else comma_list
            elif meta.get("path") == "storage":
                options["type"] = storage_location
            elif kind in (int, float):
                options["type"] = _RANGES[(kind, meta["range"])] if "range" in meta else kind
            if "choices" in meta:
                options["choices"] = list(meta["choices"])
            if field.name in (metavars or {}):
                options["metavar"] = metavars[field.name]
        parser.add_argument(flag, **options)


def config_from_args(cls: type, args: argparse.Namespace, names: Iterable[str], /, **values: Any) -> Any:
    """The dataclass `cls` from the options `add_options` added for `names`, plus `values` for its other fields (any
    name, `args` too: the first three parameters are positional only)."""
    hints = typing.get_type_hints(cls)
    for field in _fields(cls, names):
        value, kind = getattr(args, _dest(field)), _kind(hints[field.name])
        if kind is list and value is not None:
            value = list(value)  # parsed as a tuple
        values[field.name] = not value if _negated(field, kind) else value
    return cls(**values)


def overrides_from_args(cls: type, args: argparse.Namespace, names: Iterable[str]) -> dict[str, Any]:
    """{field: value} for the options that `add_options(..., overriding=...)` added for `names` and that were given."""
    given = vars(args)
    return {field.name: given[_dest(field)] for field in _fields(cls, names) if _dest(field) in given}
