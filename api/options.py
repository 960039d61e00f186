"""Command-line options generated from a component's settings model.

The settings model is the one place a default, a bound and a description are written; the CLI is made
from it, so `--help` cannot drift from what the component does. Each field becomes `--field-name`
(other spellings via `flags`); a nested settings model becomes one option per sub-field with a prefix
(`timeouts.idle_s` → `--timeout-idle-s`); a field a flag cannot spell (a mapping, a weights object) takes
a parser from the command (`parsers`). Options that are not settings (a log level, an event loop) are
passed as `extra` parameters and handed to `run` by name.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo


@dataclass(frozen=True)
class Parser:
    """A field given as text and turned into its value by `parse` (a ValueError names the problem)."""

    parse: Callable[[str], Any]
    metavar: str
    help: str | None = None


@dataclass(frozen=True)
class _Option:
    param: str
    """The Python parameter name (unique across nested fields)."""
    path: tuple[str, ...]
    """Where the value goes in the settings model."""
    decls: tuple[str, ...]
    parser: Parser | None
    repeated: bool


def settings_command(
    model: type[BaseModel],
    run: Callable[..., None],
    *,
    name: str,
    doc: str,
    flags: Mapping[str, Sequence[str]] | None = None,
    parsers: Mapping[str, Parser] | None = None,
    prefixes: Mapping[str, str] | None = None,
    extra: Sequence[inspect.Parameter] = (),
) -> Callable[..., None]:
    """A function typer can register: its parameters are `model`'s fields (plus `extra`); called, it
    builds the model and calls `run(settings, **extra_values)`. Invalid values exit 2 with one line that
    names the option."""
    flags, parsers, prefixes = flags or {}, parsers or {}, prefixes or {}
    options: list[_Option] = []
    params: list[inspect.Parameter] = []
    for field_name, info in model.model_fields.items():
        nested = _model_of(info.annotation)
        if nested is not None and field_name not in parsers:
            prefix = prefixes.get(field_name, field_name)
            for sub, sub_info in nested.model_fields.items():
                param = f"{prefix}_{sub}"
                decl = f"--{param.replace('_', '-')}"
                opt, p = _option(param, (field_name, sub), (decl,), sub_info, None)
                options.append(opt)
                params.append(p)
            continue
        decls = tuple(flags.get(field_name, (f"--{field_name.replace('_', '-')}",)))
        opt, p = _option(field_name, (field_name,), decls, info, parsers.get(field_name))
        options.append(opt)
        params.append(p)
    extra_names = [p.name for p in extra]
    by_path = {o.path: o for o in options}

    def command(**given: Any) -> None:
        values: dict[str, Any] = {}
        for o in options:
            value = given[o.param]
            if value is None:
                continue  # not given: the model's default applies
            if o.parser is not None:
                try:
                    value = o.parser.parse(value)
                except (OSError, ValueError) as e:
                    _fail(f"{o.decls[0]} {value}: {e}")
            elif o.repeated:
                value = tuple(value)
            target = values
            for key in o.path[:-1]:
                target = target.setdefault(key, {})
            target[o.path[-1]] = value
        try:
            settings = model.model_validate(values)
        except ValidationError as e:
            _fail(_message(e, by_path))
        run(settings, **{n: given[n] for n in extra_names})

    all_params = [*params, *extra]
    command.__signature__ = inspect.Signature(all_params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in all_params}
    command.__name__ = command.__qualname__ = name
    command.__doc__ = doc
    return command


def _option(
    param: str, path: tuple[str, ...], decls: tuple[str, ...], info: FieldInfo, parser: Parser | None
) -> tuple[_Option, inspect.Parameter]:
    required = info.is_required()
    if parser is not None:
        cli_type: Any = str | None
        help_text = parser.help or info.description
        option = typer.Option(*decls, help=help_text, metavar=parser.metavar)
        repeated = False
    else:
        inner, repeated = _cli_type(info.annotation, param)
        cli_type = inner | None
        help_text = info.description or ""
        choices = _choices(info.annotation)
        if choices:
            help_text = f"{help_text} One of: {', '.join(choices)}.".strip()
        if required:
            help_text = f"{help_text} (required)".strip()
        elif not repeated and (default := info.get_default(call_default_factory=True)) is not None:
            help_text = f"{help_text} (default: {default})".strip()
        option = typer.Option(*decls, help=help_text, show_default=False)
    annotation = Annotated[cli_type, option]
    # Every option defaults to None ("not given"): the settings model supplies defaults and reports a
    # missing required one, so every mistake reads the same, in one line.
    p = inspect.Parameter(param, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)
    return _Option(param, path, decls, parser, repeated), p


def _cli_type(annotation: Any, param: str) -> tuple[Any, bool]:
    """(the type typer parses, whether the option repeats); Optional is stripped (None means not given)."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        if len(inner) == 1:
            return _cli_type(inner[0], param)
    if origin is tuple:
        args = get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis and args[0] in (str, int, float):
            return list[args[0]], True  # type: ignore[valid-type]
    if origin is Literal:  # the model checks the choice: a wrong one reads like every other mistake
        return str, False
    if annotation in (str, int, float, bool, Path):
        return annotation, False
    raise TypeError(f"settings field {param!r} ({annotation}) needs a Parser to be a CLI option")


def _choices(annotation: Any) -> list[str]:
    if get_origin(annotation) in (Union, types.UnionType):
        return [c for a in get_args(annotation) for c in _choices(a)]
    return [str(a) for a in get_args(annotation)] if get_origin(annotation) is Literal else []


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None


def _message(err: ValidationError, by_path: Mapping[tuple[str, ...], _Option]) -> str:
    first = err.errors()[0]
    loc = tuple(str(x) for x in first["loc"])
    msg = str(first["msg"]).removeprefix("Value error, ")
    for n in range(len(loc), 0, -1):
        if loc[:n] in by_path:
            return f"{by_path[loc[:n]].decls[0]}: {msg}"
    return msg


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


def verbose_parameter() -> inspect.Parameter:
    """`--verbose/-v`, the debug-logging switch every command has (an `extra` of settings_command)."""
    return inspect.Parameter(
        "verbose",
        inspect.Parameter.KEYWORD_ONLY,
        default=False,
        annotation=Annotated[bool, typer.Option("--verbose", "-v", help="Log at DEBUG level.")],
    )
