"""Simulator errors, rendered as vLLM renders them: `{"error": {"message", "type", "param", "code"}}`.

HeadwayError
└── SimError                 (status, error type)
    ├── BadRequest           400 BadRequestError
    ├── ModelNotFound        404 NotFoundError
    └── ServerError          500 InternalServerError
"""

from __future__ import annotations

import json
from typing import ClassVar

from headway.api.errors import HeadwayError


class SimError(HeadwayError):
    status: ClassVar[int] = 500
    error_type: ClassVar[str] = "InternalServerError"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.param = message, param

    def body(self) -> bytes:
        return json.dumps(
            {"error": {"message": self.message, "type": self.error_type, "param": self.param, "code": self.status}},
            separators=(",", ":"),
        ).encode()


class BadRequest(SimError):
    status, error_type = 400, "BadRequestError"


class ModelNotFound(SimError):
    status, error_type = 404, "NotFoundError"
