"""The gateway's Flask application factory: `gunicorn "gateway.app:create_app()"`.

The gateway is routes, authentication and the RPC client; business rules live in the
services. It keeps nothing durable, so any number of replicas can run behind a load
balancer.
"""

from __future__ import annotations

import re
import sys
import uuid

from flask import Flask, Response, current_app, g, request
from werkzeug.middleware.proxy_fix import ProxyFix

from gateway.auth import SESSIONS_KEY
from gateway.errors import register_error_handlers
from gateway.instruments import init_instruments
from gateway.routes import (
    accounts,
    billing,
    checkin_link,
    health,
    links,
    messages,
    metrics,
    privacy,
    released,
    switches,
    trusted_contacts,
)
from gateway.sessions import Sessions
from gateway.site import init_site
from shared import logging as jicm_logging
from shared.config import SETTINGS_CONFIG_KEY, ConfigError, Settings, load_settings
from shared.rpc.client import RpcClientPool

REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{8,64}")
BLUEPRINTS = (health.bp, accounts.bp, billing.bp, links.bp, messages.bp, released.bp,
              switches.bp, checkin_link.bp, trusted_contacts.bp, metrics.bp,
              privacy.bp)

API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"


def create_app(settings: Settings | None = None, rpc: RpcClientPool | None = None,
               sessions: Sessions | None = None) -> Flask:
    """Build the gateway. Without arguments, settings come from the environment.

    Sessions are cached as the settings say (gateway/sessions.py); a given `rpc` pool (a
    test's) comes without a session cache unless `sessions` is given too.
    """
    if settings is None:
        settings = _settings_or_exit()
        jicm_logging.configure_logging("gateway", settings.log_level, settings.log_format)
    # The site's blueprint serves /static; the gateway itself has no static folder.
    app = Flask(__name__, static_folder=None)
    app.config.update(
        {SETTINGS_CONFIG_KEY: settings, "MAX_CONTENT_LENGTH": settings.max_body_bytes}
    )
    app.json.sort_keys = False
    app.extensions["jicm.rpc"] = rpc or RpcClientPool(
        settings.amqp_uri, size=16, timeout=settings.rpc_timeout
    )
    if sessions is None:
        sessions = Sessions() if rpc is not None else Sessions.from_settings(settings)
    app.extensions[SESSIONS_KEY] = sessions
    if settings.trusted_proxies:
        n = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)
    for blueprint in BLUEPRINTS:
        app.register_blueprint(blueprint)
    init_site(app, settings)
    register_error_handlers(app)
    app.before_request(_bind_request_id)
    init_instruments(app)
    app.after_request(_secure_headers)
    app.teardown_request(_unbind_request_id)
    return app


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        print(f"gateway: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _bind_request_id() -> None:
    incoming = request.headers.get("X-Request-ID", "")
    g.request_id = incoming if REQUEST_ID_PATTERN.fullmatch(incoming) else str(uuid.uuid4())
    g.log_token = jicm_logging.request_id.set(g.request_id)


def _unbind_request_id(exc: BaseException | None = None) -> None:
    token = g.pop("log_token", None)
    if token is not None:
        jicm_logging.request_id.reset(token)


def _secure_headers(response: Response) -> Response:
    headers = response.headers
    headers["X-Request-ID"] = g.get("request_id", "")
    headers["X-Content-Type-Options"] = "nosniff"
    headers["X-Frame-Options"] = "DENY"
    headers["Referrer-Policy"] = "no-referrer"
    headers["Cross-Origin-Opener-Policy"] = "same-origin"
    headers["Cross-Origin-Resource-Policy"] = "same-origin"
    headers["Permissions-Policy"] = "camera=(), microphone=(), geolocation=(), interest-cohort=()"
    headers.setdefault("Content-Security-Policy", API_CSP)
    headers.setdefault("Cache-Control", "no-store")
    if request.scheme == "https" or _public_url_is_https():
        headers["Strict-Transport-Security"] = "max-age=63072000; includeSubDomains"
    return response


def _public_url_is_https() -> bool:
    return current_app.config[SETTINGS_CONFIG_KEY].public_url.startswith("https://")
