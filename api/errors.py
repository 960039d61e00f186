"""The root of every headway exception, and the one renderer of API errors in OpenAI's envelope."""

from __future__ import annotations

import json
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
