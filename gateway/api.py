"""Declaring API operations: one decorator validates the request and documents it.

`@operation(blueprint, "POST", "/api/v1/accounts", body=SignUp, response=Account, ...)`
registers the view with Flask, parses and validates the JSON body with the very
pydantic model that the OpenAPI document is generated from, authenticates when asked,
and serialises the answer through the response model. The OpenAPI document can
therefore not describe a request the gateway would refuse, or the other way round.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from flask import Blueprint, Response, jsonify, request
from pydantic import BaseModel, ValidationError

from gateway.auth import authenticate_request
from gateway.errors import ApiError


@dataclass(frozen=True)
class Operation:
    """One documented HTTP operation."""

    method: str
    rule: str
    summary: str
    tag: str
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    auth: bool = True
    errors: tuple[int, ...] = ()
    description: str = ""
    content_type: str = "application/json"
    # The media type of the refusals it decides, when not that of its answer (a download
    # whose failures are pages).
    error_content_type: str | None = None


OPERATIONS: list[Operation] = []


def operation(
    blueprint: Blueprint,
    method: str,
    rule: str,
    *,
    summary: str,
    tag: str,
    body: type[BaseModel] | None = None,
    response: type[BaseModel] | None = None,
    status: int = 200,
    auth: bool = True,
    errors: tuple[int, ...] = (),
    description: str = "",
    content_type: str = "application/json",
    error_content_type: str | None = None,
) -> Callable:
    """Register a view as a validated, documented API operation.

    The view receives the validated body model (if `body`) as its first argument and
    the URL parameters as keyword arguments; it returns a dict, a model, a Flask
    Response, or None (for an empty answer).
    """
    op = Operation(method, rule, summary, tag, body, response, status, auth, errors,
                   description, content_type, error_content_type=error_content_type)
    OPERATIONS.append(op)

    def decorate(view: Callable) -> Callable:
        @wraps(view)
        def handle(**params: Any) -> Response:
            if op.auth:
                authenticate_request()
            args = (parse_body(op.body),) if op.body else ()
            result = view(*args, **params)
            return _respond(op, result)

        blueprint.add_url_rule(rule, endpoint=view.__name__, view_func=handle, methods=[method])
        return handle

    return decorate


def parse_body(model: type[BaseModel]) -> BaseModel:
    """The request's JSON body validated by `model`, or a precise 4xx error."""
    if not request.is_json:
        raise ApiError(415, "unsupported_media_type",
                       "send the body as JSON with Content-Type: application/json")
    raw = request.get_data(cache=True)
    try:
        data = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "validation_failed", "the body must be a JSON object")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed in JSON")


def _validation_error(exc: ValidationError) -> ApiError:
    problems = [
        {"field": ".".join(str(part) for part in error["loc"]) or "body",
         "message": _message(error)}
        for error in exc.errors(include_url=False, include_input=False)
    ]
    first = problems[0]
    return ApiError(422, "validation_failed", f"{first['field']}: {first['message']}",
                    details={"errors": problems})


def _message(error: dict) -> str:
    if error["type"] == "extra_forbidden":
        return "is not a known field"
    if error["type"] == "missing":
        return "is required"
    return error["msg"]


def _respond(op: Operation, result: Any) -> Response:
    if isinstance(result, Response):
        return result
    if result is None:
        return Response(status=op.status if op.status != 200 else 204)
    if op.response is not None:
        model = result if isinstance(result, op.response) else op.response.model_validate(result)
        result = model.model_dump(mode="json")
    response = jsonify(result)
    response.status_code = op.status
    return response
