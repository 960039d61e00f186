"""Simulator errors, rendered as vLLM renders them: `{"error": {"message", "type", "param", "code"}}`.

HeadwayError
└── ApiError                 (renders the envelope, headway.api.errors)
    └── SimError             500 InternalServerError
        ├── BadRequest       400 BadRequestError
        └── ModelNotFound    404 NotFoundError
"""

from __future__ import annotations

from typing import ClassVar

from headway.api.errors import ApiError


class SimError(ApiError):
    error_type: ClassVar[str] = "InternalServerError"


class BadRequest(SimError):
    status, error_type = 400, "BadRequestError"


class ModelNotFound(SimError):
    status, error_type = 404, "NotFoundError"
