"""Gateway errors, rendered once in OpenAI's envelope `{"error": {message, type, param, code}}`.

HeadwayError
└── ApiError                    (renders the envelope, headway.api.errors)
    └── GatewayError            500 internal_error
        ├── InvalidRequest      400 invalid_request_error
        │   └── RouteRejected   400 (a model route's guard or rule)
        ├── Unauthorized        401 invalid_api_key        (gateway.auth)
        ├── BodyTooLarge        413 invalid_request_error
        ├── ModelNotFound       404 not_found_error
        ├── UnknownRequest      404 not_found_error    (feedback for no routed request)
        ├── FeedbackConflict    409 invalid_request_error
        ├── Overloaded          429 rate_limit_error
        ├── NoReadyEndpoint     503 service_unavailable
        └── UpstreamFailed      502 upstream_error
"""

from __future__ import annotations

from typing import ClassVar

from headway.api.errors import ApiError


class GatewayError(ApiError):
    error_type: ClassVar[str] = "internal_error"


class InvalidRequest(GatewayError):
    status, error_type = 400, "invalid_request_error"


class RouteRejected(InvalidRequest):
    """A model route's guard or rule refused the request: the client must change it, not retry it."""


class UnknownRequest(GatewayError):
    status, error_type = 404, "not_found_error"


class FeedbackConflict(GatewayError):
    status, error_type = 409, "invalid_request_error"


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
