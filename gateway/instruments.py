"""What the gateway counts: requests and their latency per route, and the time each RPC
to a service took, per route, service and method.

gunicorn runs several worker processes; each counts in its own memory-mapped file under
`PROMETHEUS_MULTIPROC_DIR` (set by gateway/gunicorn_conf.py), and /metrics adds the
workers' files up, so every worker answers a scrape with the figures of them all.
"""

from __future__ import annotations

import time

from flask import Flask, Response, g, has_request_context, request
from prometheus_client import Counter, Histogram

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

REQUESTS = Counter("jicm_http_requests", "HTTP requests answered, by route, method and status",
                   ["route", "method", "status"])
REQUEST_SECONDS = Histogram("jicm_http_request_duration_seconds",
                            "time to answer an HTTP request, by route and method",
                            ["route", "method"], buckets=LATENCY_BUCKETS)
RPC_SECONDS = Histogram("jicm_gateway_rpc_duration_seconds",
                        "time an RPC took as the gateway saw it, by route, service, method and "
                        "outcome: ok, refused, timeout, unavailable, error",
                        ["route", "service", "method", "outcome"], buckets=LATENCY_BUCKETS)

UNMATCHED = "unmatched"  # every request no route took counts under one label


def current_route() -> str:
    """The route template of this request (`/api/v1/messages/<message_id>`), never its path."""
    rule = request.url_rule if has_request_context() else None
    return rule.rule if rule is not None else UNMATCHED


def observe_rpc(service: str, method: str, outcome: str, seconds: float) -> None:
    RPC_SECONDS.labels(current_route(), service, method, outcome).observe(seconds)


def init_instruments(app: Flask) -> None:
    """Time and count every request the app answers."""
    app.before_request(_start_clock)
    app.after_request(_count_request)


def _start_clock() -> None:
    g.started_at = time.monotonic()


def _count_request(response: Response) -> Response:
    started = g.get("started_at")
    route, method = current_route(), request.method
    if started is not None:
        REQUEST_SECONDS.labels(route, method).observe(time.monotonic() - started)
    REQUESTS.labels(route, method, str(response.status_code)).inc()
    return response
