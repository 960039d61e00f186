"""The root of every headway exception, the one renderer of API errors in OpenAI's envelope, and validation
errors as one line that names the option or field."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, ClassVar


class HeadwayError(Exception):
    """Root of headway's exceptions."""


class ApiError(HeadwayError):
    """An error an HTTP API answers with: `{"error": {message, type, param, code}}` (OpenAI's and vLLM's
    envelope). Subclasses set the status and the error type."""

    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "internal_error"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param = message, param

    def body(self) -> bytes:
        return json.dumps(
            {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.status}},
            separators=(",", ":"),
        ).encode()


def option_error(err: Any) -> str:
    """A pydantic ValidationError of a CLI's settings as one line naming the option: `--time-scale: …`
    (settings fields are the options' names with `-` for `_`; a whole-model check names none)."""
    first = err.errors()[0]
    where = f"--{'-'.join(str(x) for x in first['loc']).replace('_', '-')}: " if first["loc"] else ""
    return where + str(first["msg"]).removeprefix("Value error, ")


_RELATIVE_FIELD = re.compile(r"[A-Za-z]\w*(?:\[\d+\])*(?: \([^()]*\))?")
_LEADING_PATH = re.compile(rf"^({_RELATIVE_FIELD.pattern}(?:\.{_RELATIVE_FIELD.pattern})*): ")


def field_path(loc: Sequence[str | int]) -> str:
    """A pydantic error location as Kubernetes writes a field path: `spec.candidates[1].pool`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def field_error(err: Any) -> str:
    """The first error of a resource's pydantic ValidationError as one line naming the field:
    `spec.signals.keywords[0].patterns[0]: not a regular expression (…)`.

    Validators that check a whole object report where in it the problem is as the start of their
    message (`patterns[0]: …`, `rules[2] (code).candidates: …`); that part is joined onto the error's
    location, so the path always runs from the resource's root."""
    first = err.errors()[0]
    loc = list(first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    if m := _LEADING_PATH.match(message):
        inner = m.group(1)
        # A field validator's own name starts its message (`patterns[1]: …` for the list `patterns`).
        if loc and isinstance(loc[-1], str) and re.match(rf"{re.escape(loc[-1])}(?!\w)", inner):
            loc = loc[:-1]
        outer = field_path(loc)
        return f"{outer}.{inner}: {message[m.end() :]}" if outer else f"{inner}: {message[m.end() :]}"
    path = field_path(loc)
    return f"{path}: {message}" if path else message
