"""Errors that services raise on purpose, and the HTTP status each one means.

A service raises one of these for a request it refuses; nameko carries the class name
and arguments to the caller, and the gateway turns them back into an error response
of the design's shape: `{"error": {"code": ..., "message": ...}}`. Anything else that
escapes a service is a bug and becomes a 500 without details.
"""

from __future__ import annotations

import json
from typing import Any


class ServiceError(Exception):
    """Base of every deliberate refusal. `code` is stable and machine-readable."""

    status = 400
    code = "bad_request"

    def __init__(self, message: str, code: str | None = None,
                 details: dict | str | None = None):
        details = _details(details)
        # Details travel as JSON text: nameko turns every non-string value inside exception
        # arguments into a string, so numbers and nulls would not survive as themselves.
        super().__init__(message, code or self.code, json.dumps(details, default=str))
        self.message = message
        if code:
            self.code = code
        self.details = details

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return error


class InvalidInput(ServiceError):
    status = 422
    code = "validation_failed"


class AuthenticationFailed(ServiceError):
    status = 401
    code = "unauthorized"


class PaymentRequired(ServiceError):
    status = 402
    code = "plan_limit_reached"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class Gone(ServiceError):
    status = 410
    code = "gone"


class RateLimited(ServiceError):
    status = 429
    code = "rate_limited"


class Unavailable(ServiceError):
    status = 503
    code = "unavailable"


class BadGateway(ServiceError):
    status = 502
    code = "upstream_error"


SERVICE_ERRORS: dict[str, type[ServiceError]] = {
    cls.__name__: cls
    for cls in (
        ServiceError,
        InvalidInput,
        AuthenticationFailed,
        PaymentRequired,
        Forbidden,
        NotFound,
        Conflict,
        Gone,
        RateLimited,
        Unavailable,
        BadGateway,
    )
}


def _details(value: dict | str | None) -> dict:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return dict(value) if isinstance(value, dict) else {}


def rebuild(exc_type: str, exc_args: list) -> ServiceError | None:
    """Turn a remote error's class name and arguments back into a ServiceError."""
    cls = SERVICE_ERRORS.get(exc_type)
    if cls is None:
        return None
    message, code, details = [*exc_args, None, None, None][:3]
    return cls(str(message or cls.code), code=code, details=details)  # details: JSON text
