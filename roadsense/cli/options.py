"""Typer options generated from settings dataclasses, so a command declares no default itself.

`settings_options(cls)` makes one option per `option(...)` field of `cls`
(`roadsense.options`): its flags, help, bound, environment variable and default come from the
field. `with_options` gives a ``**values`` command the options of several such groups plus its
own, and refuses two options with one name or one flag; `values_for` hands each settings class
its share of the values typer parsed.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from dataclasses import MISSING, fields
from typing import Annotated, Any, TypeVar, get_args, get_type_hints

import typer
from typer.models import OptionInfo

F = TypeVar("F", bound=Callable[..., Any])
_KEYWORD = inspect.Parameter.KEYWORD_ONLY


def settings_options(cls: type, *, only: Iterable[str] | None = None,
                     help: dict[str, str] | None = None) -> list[inspect.Parameter]:
    """One typer option per `option(...)` field of dataclass `cls`, in field order; a field
    without a default is a required option. `help` names plain fields (of a class declared
    without `option`, e.g. `roadsense.cloud.gate.StabilityCriteria`) to offer as well, with
    their help text; `only` keeps the fields it names. The CLI takes `none_word` fields as
    plain strings and `zero_none` ones as numbers (`roadsense.rllib.settings.cli_value`)."""
    hints = get_type_hints(cls)
    help = help or {}
    wanted = None if only is None else set(only)
    params = []
    for f in fields(cls):
        meta = f.metadata.get("cli")
        if meta is None and f.name in help:
            meta = {"help": help[f.name]}
        if meta is None or (wanted is not None and f.name not in wanted):
            continue
        kind = hints[f.name]
        if meta.get("none_word") and f.default is not None:
            kind = str
        elif meta.get("zero_none"):
            kind = float
        if f.default is not MISSING:
            default = f.default
        elif f.default_factory is not MISSING:
            default = f.default_factory()
        else:
            default = inspect.Parameter.empty  # a required option
        opt = typer.Option(*(meta.get("flags") or ()), help=meta.get("help"), min=meta.get("min"),
                           envvar=meta.get("envvar"))
        params.append(inspect.Parameter(f.name, _KEYWORD, default=default,
                                        annotation=Annotated[kind, opt]))
    missing = (wanted or set()) - {p.name for p in params}
    if missing:
        raise TypeError(f"{cls.__name__} has no option field {sorted(missing)}")
    return params


def plain_option(name: str, kind: Any, default: Any, help: str,
                 *flags: str) -> inspect.Parameter:
    """A command's own option, one that is no setting (e.g. ``--set KEY=JSON``)."""
    return inspect.Parameter(name, _KEYWORD, default=default,
                             annotation=Annotated[kind, typer.Option(*flags, help=help)])


def flags_of(param: inspect.Parameter) -> list[str]:
    """The flag names of a generated option (``--spot/--no-spot`` gives both)."""
    info = next(a for a in get_args(param.annotation) if isinstance(a, OptionInfo))
    decls = [d for d in (info.default, *(info.param_decls or ())) if isinstance(d, str)]
    if not decls:
        decls = ["--" + param.name.replace("_", "-")]
    return [name for d in decls for name in d.split("/")]


def with_options(*groups: list[inspect.Parameter], context: bool = False) -> Callable[[F], F]:
    """Give a ``**values`` command the options of `groups` (typer reads ``__signature__``);
    `context`: a first ``ctx`` parameter (typer's `Context`). A name or flag declared twice is
    a TypeError when the command is defined."""

    def apply(func: F) -> F:
        params = [p for group in groups for p in group]
        seen: dict[str, str] = {}
        for p in params:
            for key in (p.name, *flags_of(p)):
                if key in seen:
                    raise TypeError(f"{func.__name__}: option {key!r} is declared twice "
                                    f"({seen[key]} and {p.name})")
                seen[key] = p.name
        head = [inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                  annotation=typer.Context)] if context else []
        func.__signature__ = inspect.Signature(head + params)  # type: ignore[attr-defined]
        return func

    return apply


def values_for(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """The values of `cls`'s fields among `values` (repeatable options as lists)."""
    names = {f.name for f in fields(cls)}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if k in names}

