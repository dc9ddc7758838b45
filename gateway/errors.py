"""Every failure becomes `{"error": {"code", "message"}}` with the right status.

No stack trace, exception text from a library or internal name ever reaches a client:
unexpected errors are logged with the request id and answered with a bare 500 that
carries the same id, so support can find the log line.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, current_app, g, jsonify, request
from werkzeug.exceptions import HTTPException, MethodNotAllowed, NotFound

from shared.errors import ServiceError

log = logging.getLogger(__name__)

# Codes for the statuses Flask/werkzeug raise on their own.
HTTP_CODES = {
    400: ("bad_request", "the request could not be understood"),
    401: ("unauthorized", "authentication is required"),
    403: ("forbidden", "this is not allowed"),
    404: ("not_found", "there is nothing here"),
    405: ("method_not_allowed", "this method is not allowed here"),
    406: ("not_acceptable", "this endpoint only answers application/json"),
    409: ("conflict", "the request conflicts with the current state"),
    413: ("payload_too_large", "the request body is too large"),
    414: ("uri_too_long", "the URL is too long"),
    415: ("unsupported_media_type", "send the body as application/json"),
    422: ("validation_failed", "the request body is not valid"),
    429: ("rate_limited", "too many requests; try again later"),
    431: ("headers_too_large", "the request headers are too large"),
    500: ("internal_error", "something went wrong on our side"),
    502: ("upstream_error", "a service we depend on failed"),
    503: ("service_unavailable", "the service is temporarily unavailable"),
    504: ("upstream_timeout", "a service did not answer in time"),
}


class ApiError(Exception):
    """An error answer chosen by the gateway itself."""

    def __init__(self, status: int, code: str, message: str, details: dict | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, details: dict | None = None,
                   headers: dict[str, str] | None = None) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    if status >= 500 and getattr(g, "request_id", None):
        body["request_id"] = g.request_id
    response = jsonify({"error": body})
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


# The web site (gateway/site) registers here how its failures become pages.
PAGE_RENDERER = "jicm.error_page"
PAGE_BLUEPRINTS = "jicm.page_blueprints"


def _as_page(exc: BaseException) -> Response | None:
    """A failure on a web page (or an unknown address a browser asked for) as a page."""
    render = current_app.extensions.get(PAGE_RENDERER)
    if render is None:
        return None
    if _blueprint(exc) in current_app.extensions.get(PAGE_BLUEPRINTS, ()):
        return render(exc)
    # An address that exists nowhere, asked for by a browser: our 404 page.
    unknown = request.url_rule is None and isinstance(exc, NotFound)
    if unknown and not request.path.startswith(("/api/", "/webhooks/")) and (
            request.accept_mimetypes.accept_html):
        return render(exc)
    return None


def _blueprint(exc: BaseException) -> str | None:
    """The blueprint of the request's route; for a wrong method, of the route it missed."""
    if request.blueprint or not isinstance(exc, MethodNotAllowed) or not exc.valid_methods:
        return request.blueprint
    adapter = current_app.url_map.bind_to_environ(request.environ)
    try:
        endpoint, _ = adapter.match(method=exc.valid_methods[0])
    except HTTPException:
        return None
    return endpoint.rpartition(".")[0] or None


def register_error_handlers(app: Flask) -> None:
    """Route every exception to a JSON answer (or, for the web site, a page)."""

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        page = _as_page(exc)
        if page is not None:
            return page
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError) -> Response:
        page = _as_page(exc)
        if page is not None:
            return page
        headers = {}
        retry_after = exc.details.get("retry_after_seconds") if exc.details else None
        if retry_after:
            headers["Retry-After"] = str(retry_after)
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="jicm"'
        return error_response(exc.status, exc.code, exc.message, exc.details, headers)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        page = _as_page(exc)
        if page is not None:
            return page
        status = exc.code or 500
        code, message = HTTP_CODES.get(status, ("http_error", "the request failed"))
        headers = {"Allow": exc.valid_methods} if getattr(exc, "valid_methods", None) else {}
        if headers:
            headers["Allow"] = ", ".join(exc.valid_methods)
        return error_response(status, code, message, headers=headers)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        page = _as_page(exc)
        if page is not None:
            return page
        log.exception("unhandled error")
        code, message = HTTP_CODES[500]
        return error_response(500, code, message)
