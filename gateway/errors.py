"""Gateway errors, rendered once in OpenAI's envelope `{"error": {message, type, param, code}}`.

HeadwayError
└── GatewayError            (status, OpenAI error type)
    ├── InvalidRequest      400 invalid_request_error
    ├── BodyTooLarge        413 invalid_request_error
    ├── ModelNotFound       404 not_found_error
    ├── Overloaded          429 rate_limit_error
    ├── NoReadyEndpoint     503 service_unavailable
    └── UpstreamFailed      502 upstream_error
"""

from __future__ import annotations

import json
from typing import ClassVar

from headway.api.errors import HeadwayError


class GatewayError(HeadwayError):
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


class InvalidRequest(GatewayError):
    status, error_type = 400, "invalid_request_error"


class BodyTooLarge(GatewayError):
    status, error_type = 413, "invalid_request_error"


class ModelNotFound(GatewayError):
    status, error_type = 404, "not_found_error"


class Overloaded(GatewayError):
    status, error_type = 429, "rate_limit_error"


class NoReadyEndpoint(GatewayError):
    status, error_type = 503, "service_unavailable"


class UpstreamFailed(GatewayError):
    status, error_type = 502, "upstream_error"
