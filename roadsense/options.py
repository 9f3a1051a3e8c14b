"""Settings fields that are also command-line options, so each setting is declared once.

A dataclass field made with `option(...)` holds its type, default and documentation like any
field, plus how the command line spells it: flag names, help, a lower bound, an environment
variable, and the words for None (``none`` for `none_word` fields, 0 for `zero_none` ones).
`roadsense.cli.options` turns these fields into typer options, so a default lives in the
dataclass and nowhere else. `same_as` re-declares another class's field where a second
settings object takes the same setting (a sweep's base seed is `TrainSettings.seed`).
"""

from __future__ import annotations

from dataclasses import MISSING, field, fields
from typing import Any


def option(default: Any = MISSING, *, help: str | None = None,
           flags: tuple[str, ...] | None = None, min: float | None = None,
           none_word: bool = False, zero_none: bool = False, envvar: str | None = None) -> Any:
    """A dataclass field that is also a command-line option; no `default`: a required option.
    `flags`: the option's names (default ``--field-name``; ``--x/--no-x`` for a switch pair);
    `none_word`: the CLI (and a TOML file) spell None as ``none``; `zero_none`: as 0;
    `envvar`: the environment variable read when the flag is not given."""
    meta = {"cli": {"help": help, "flags": flags, "min": min, "none_word": none_word,
                    "zero_none": zero_none, "envvar": envvar}}
    if default is MISSING:
        return field(metadata=meta)
    return field(default=default, metadata=meta)


def same_as(cls: type, name: str, **changes: Any) -> Any:
    """Field `name` of dataclass `cls` declared again: the same default and option, with
    `changes` to its option (e.g. ``help=...``) on top."""
    (source,) = [f for f in fields(cls) if f.name == name]
    meta = {"help": None, "flags": None, "min": None, "none_word": False, "zero_none": False,
            "envvar": None} | dict(source.metadata.get("cli", {})) | changes
    if source.default_factory is not MISSING:
        return field(default_factory=source.default_factory, metadata={"cli": meta})
    return field(default=source.default, metadata={"cli": meta})
