"""Calling services from a request: one pooled RPC client per process, errors translated.

A service's deliberate refusal (a `shared.errors.ServiceError`) comes back as the same
error with its status; a service that is absent or silent becomes 503 or 504; anything
else a service raised is a bug there and becomes a 500 here, logged with its type.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from flask import current_app, g

from gateway.errors import ApiError
from gateway.instruments import observe_rpc
from shared.errors import rebuild
from shared.rpc.client import RpcClientPool
from shared.rpc.errors import RemoteError, RpcTimeout, ServiceUnavailable

log = logging.getLogger(__name__)

POOL_KEY = "jicm.rpc"


def rpc_pool() -> RpcClientPool:
    return current_app.extensions[POOL_KEY]


def call(service: str, method: str, *args: Any, timeout: float | None = None) -> Any:
    """Call `service.method(*args)` on behalf of the current request."""
    context = {"request_id": getattr(g, "request_id", None)}
    started = time.monotonic()
    outcome = "ok"
    try:
        return rpc_pool().call(service, method, *args, timeout=timeout, context=context)
    except RemoteError as exc:
        known = rebuild(exc.exc_type, exc.exc_args)
        if known is not None:
            outcome = "refused"
            raise known from None
        outcome = "error"
        log.error("%s.%s raised %s: %s", service, method, exc.exc_type, exc.value)
        raise ApiError(500, "internal_error", "something went wrong on our side") from None
    except RpcTimeout:
        outcome = "timeout"
        log.warning("%s.%s timed out", service, method)
        raise ApiError(504, "upstream_timeout",
                       f"the {service} service did not answer in time") from None
    except ServiceUnavailable:
        outcome = "unavailable"
        log.warning("%s.%s: service unavailable", service, method)
        raise ApiError(503, "service_unavailable",
                       f"the {service} service is unavailable; try again shortly",
                       headers={"Retry-After": "5"}) from None
    finally:
        observe_rpc(service, method, outcome, time.monotonic() - started)
